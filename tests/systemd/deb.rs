//! The Debian package as admins get it: built by cargo-deb from `[package.metadata.deb]`,
//! checked by lintian (errors fail), then installed with apt in a booted container and taken
//! through install, the README's fstab line, the service, an upgrade under a reader, remove
//! and purge (`package.sh`).
//!
//! The package is built from the binaries this test run already has (linked into a scratch
//! `release/` directory, `cargo deb --no-build`), so no release build runs here: what is under
//! test is the packaging, and the binaries are the ones every other test exercises. Two
//! revisions (`-1`, `-2`) of the same build give the upgrade a real version change.
//!
//! The container has a private network (loopback only) like every systemd test: apt resolves
//! the package's dependencies from what the Debian root has installed, which is what they must
//! be satisfied by on any bookworm VM (the test fails if apt would need to download anything).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use super::{boot_with, found, skip};

struct Debs {
    _dir: tempfile::TempDir,
    first: PathBuf,
    second: PathBuf,
}

/// Both revisions, built once per test run; `None` (after `skip`) where cargo-deb is missing.
fn debs() -> Option<&'static Debs> {
    static DEBS: OnceLock<Result<Debs, String>> = OnceLock::new();
    match DEBS.get_or_init(build) {
        Ok(debs) => Some(debs),
        Err(why) => skip(why),
    }
}

fn build() -> Result<Debs, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let has_cargo_deb = Command::new(&cargo).args(["deb", "--version"]).output();
    if !has_cargo_deb.is_ok_and(|o| o.status.success()) {
        return Err("no cargo-deb (cargo install cargo-deb --locked)".into());
    }
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let release = dir.path().join("target/release");
    std::fs::create_dir_all(&release).map_err(|e| e.to_string())?;
    for (name, bin) in [
        ("metadatafs", env!("CARGO_BIN_EXE_metadatafs")),
        ("metadatafs-emulator", env!("CARGO_BIN_EXE_metadatafs-emulator")),
    ] {
        std::fs::copy(bin, release.join(name)).map_err(|e| format!("{bin}: {e}"))?;
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let mut built = Vec::new();
    for revision in ["1", "2"] {
        let out = dir.path().join(format!("metadatafs_{revision}.deb"));
        let output = Command::new(&cargo)
            .args(["deb", "--no-build", "--locked", "--fast", "--deb-revision", revision])
            .arg("--manifest-path")
            .arg(&manifest)
            .arg("-o")
            .arg(&out)
            .env("CARGO_TARGET_DIR", dir.path().join("target"))
            .output()
            .map_err(|e| format!("cargo deb: {e}"))?;
        if !output.status.success() {
            return Err(format!("cargo deb failed: {}", String::from_utf8_lossy(&output.stderr)));
        }
        built.push(out);
    }
    let second = built.pop().unwrap();
    let first = built.pop().unwrap();
    Ok(Debs { _dir: dir, first, second })
}

#[test]
fn lintian_finds_no_error_in_the_deb() {
    let Some(debs) = debs() else { return };
    if !found("lintian") {
        skip::<()>("no lintian (apt-get install lintian)");
        return;
    }
    let output = Command::new("lintian")
        .args(["--info", "--display-info", "--pedantic"])
        .arg(&debs.first)
        .output()
        .expect("run lintian");
    let report = String::from_utf8_lossy(&output.stdout);
    eprintln!("lintian:\n{report}{}", String::from_utf8_lossy(&output.stderr));
    let errors: Vec<&str> = report.lines().filter(|l| l.starts_with("E: ")).collect();
    assert!(errors.is_empty(), "lintian errors:\n{}", errors.join("\n"));
    // Warnings are kept only with a reason: in packaging/debian/lintian-overrides.
    let warnings: Vec<&str> = report.lines().filter(|l| l.starts_with("W: ")).collect();
    assert!(warnings.is_empty(), "lintian warnings without an override:\n{}", warnings.join("\n"));
}

#[test]
fn the_deb_installs_serves_upgrades_under_a_reader_and_purges_clean() {
    let Some(debs) = debs() else { return };
    let binds = vec![
        (debs.first.clone(), "/debs/metadatafs_0.1.0-1_amd64.deb".to_string()),
        (debs.second.clone(), "/debs/metadatafs_0.1.0-2_amd64.deb".to_string()),
    ];
    let Some(outcome) = boot_with("package", binds) else { return };
    outcome.assert_passed();
}
