//! PyPI `google-auth` against the emulator, unchanged: detection ping, compute-engine credentials
//! (token, email, scopes), ID tokens and `google.auth.default()` (tests/python/google_auth_check.py).
//!
//! If `google.auth` is not importable the test is skipped with a message, unless `CI` is set.

mod emulator_support;

use emulator_support::Emu;

#[test]
fn google_auth_uses_the_emulator() {
    let emu = Emu::start(&[]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/google_auth_check.py");
    let config = tempfile::tempdir().unwrap();
    let out = match std::process::Command::new("python3")
        .arg(script)
        .env("GCE_METADATA_HOST", &emu.addr)
        .env("GCE_METADATA_IP", &emu.addr)
        .env_remove("GOOGLE_APPLICATION_CREDENTIALS")
        .env_remove("NO_GCE_CHECK")
        .env("CLOUDSDK_CONFIG", config.path())
        .output()
    {
        Ok(out) => out,
        Err(e) if std::env::var_os("CI").is_none() => {
            eprintln!("skipped: cannot run python3: {e}");
            return;
        }
        Err(e) => panic!("cannot run python3: {e}"),
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.code() == Some(77) {
        assert!(
            std::env::var_os("CI").is_none(),
            "google-auth is required in CI (pip install google-auth requests): {stdout}"
        );
        eprintln!("skipped: {stdout}(pip install google-auth requests to run this test)");
        return;
    }
    assert!(out.status.success(), "google-auth check failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("all google-auth checks passed"), "{stdout}");
}
