//! Mutual TLS, end to end: the real daemon against `metadatafs-emulator --tls` on loopback,
//! with the credentials in the GCE layout, rotated mid-run through the control endpoint.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;

use common::{eventually, Emulator, Mount, DEADLINE};

const VALUE: &str = "project/project-id";
const TOKEN: &str = "instance/service-accounts/default/token";
const INFO: &[(&str, &str)] = &[("RUST_LOG", "info")];

/// An emulator serving HTTPS with its credentials in `dir/creds`.
struct TlsEmulator {
    emu: Emulator,
    dir: tempfile::TempDir,
}

impl TlsEmulator {
    fn start() -> TlsEmulator {
        let dir = tempfile::tempdir().unwrap();
        let creds = dir.path().join("creds");
        let emu = Emulator::start(&["--tls", creds.to_str().unwrap()]);
        TlsEmulator { emu, dir }
    }

    fn creds(&self) -> PathBuf {
        self.dir.path().join("creds")
    }

    fn mtls_dir_option(&self, mode: &str) -> String {
        format!("mtls={mode},mtls_dir={},ttl=0", self.creds().display())
    }

    /// `GET /emulator/tls`.
    fn tls(&self) -> serde_json::Value {
        let (status, body) = self.emu.control("GET", "tls", "");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    fn requests(&self) -> (u64, u64) {
        let tls = self.tls();
        (tls["https_requests"].as_u64().unwrap(), tls["http_requests"].as_u64().unwrap())
    }

    fn port(&self) -> &str {
        self.emu.addr.rsplit(':').next().unwrap()
    }

    /// curl as the GCE docs show it, with metadata.google.internal resolved to the emulator.
    fn curl(&self, root: &Path, client: Option<&Path>, path: &str) -> (bool, String) {
        let mut curl = Command::new("curl");
        curl.args(["-sS", "--fail", "--max-time", "10", "-H", "Metadata-Flavor: Google"])
            .arg("--resolve")
            .arg(format!("metadata.google.internal:{}:127.0.0.1", self.port()))
            .arg("--cacert")
            .arg(root);
        if let Some(client) = client {
            curl.arg("-E").arg(client);
        }
        let url =
            format!("https://metadata.google.internal:{}/computeMetadata/v1/{path}", self.port());
        let output = curl.arg(url).output().expect("run curl");
        let text = if output.status.success() { output.stdout } else { output.stderr };
        (output.status.success(), String::from_utf8_lossy(&text).into_owned())
    }
}

fn mount_on(emu: &TlsEmulator, options: &str) -> Mount {
    Mount::start_with(&["--endpoint", &emu.emu.addr], &["-o", options], INFO)
}

fn read_string(mount: &Mount, path: &str) -> String {
    String::from_utf8(mount.read(path).unwrap()).unwrap()
}

/// A directory holding `root.crt` from one place and `client.key` from another.
fn mixed_credentials(root_from: &Path, client_from: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(root_from.join("root.crt"), dir.path().join("root.crt")).unwrap();
    std::fs::copy(client_from.join("client.key"), dir.path().join("client.key")).unwrap();
    dir
}

#[test]
fn the_emulator_writes_the_gce_layout_and_curl_uses_it_as_the_docs_show() {
    let emu = TlsEmulator::start();
    let creds = emu.creds();
    let client = std::fs::read_to_string(creds.join("client.key")).unwrap();
    let key_at = client.find("-----BEGIN PRIVATE KEY-----").expect("a private key");
    let cert_at = client.find("-----BEGIN CERTIFICATE-----").expect("a certificate");
    assert!(key_at < cert_at, "key first, then the certificate");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(creds.join("client.key")).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "client.key is private");

    let (ok, out) = emu.curl(&creds.join("root.crt"), Some(&creds.join("client.key")), VALUE);
    assert!(ok, "{out}");
    assert_eq!(out, "emulated-project");
    // Without a client certificate the emulator refuses the connection.
    let (ok, out) = emu.curl(&creds.join("root.crt"), None, VALUE);
    assert!(!ok, "served without a client certificate: {out}");
    assert_eq!(emu.tls()["refused_handshakes"], 1);
    // Plain HTTP stays available, as on a VM.
    assert_eq!(emu.emu.get(VALUE), (200, b"emulated-project".to_vec()));
}

#[test]
fn mtls_on_reads_values_and_tokens_over_https_only() {
    let emu = TlsEmulator::start();
    let mount = mount_on(&emu, &emu.mtls_dir_option("on"));
    assert_eq!(read_string(&mount, VALUE), "emulated-project");
    let token: serde_json::Value = serde_json::from_str(&read_string(&mount, TOKEN)).unwrap();
    assert!(token["access_token"].as_str().unwrap().starts_with("ya29.emulated."));
    let (https, http) = emu.requests();
    assert!(https >= 2, "{https} HTTPS requests");
    assert_eq!(http, 0, "no plain HTTP under mtls=on");
    // The TLS name is the MDS's, as with curl on GCE, though we connect to an IP.
    assert_eq!(emu.tls()["last_server_name"], "metadata.google.internal");
    assert!(mount.log_text().contains("over HTTPS with mutual TLS"), "{}", mount.log_text());
}

#[test]
fn a_wrong_root_is_eio_logged_as_a_misconfigured_endpoint() {
    let emu = TlsEmulator::start();
    let stranger = TlsEmulator::start();
    let creds = mixed_credentials(&stranger.creds(), &emu.creds());
    let options = format!("mtls=on,mtls_dir={}", creds.path().display());
    let mount = mount_on(&emu, &options);
    let err = mount.read(VALUE).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO));
    let err = mount.read(TOKEN).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO));
    let log = mount.log_text();
    assert!(
        log.contains("misconfigured endpoint?") && log.contains("TLS handshake failed"),
        "{log}"
    );
    assert!(!log.contains("emulated-project") && !log.contains("ya29."), "{log}");
    assert_eq!(emu.requests(), (0, 0), "nothing answered, not even over HTTP");
}

#[test]
fn auto_without_credentials_uses_plain_http() {
    let emu = TlsEmulator::start();
    let empty = tempfile::tempdir().unwrap();
    let options = format!("mtls=auto,mtls_dir={}", empty.path().display());
    let mount = mount_on(&emu, &options);
    assert_eq!(read_string(&mount, VALUE), "emulated-project");
    let (https, http) = emu.requests();
    assert_eq!((https > 0, http > 0), (false, true));
    assert!(mount.log_text().contains("over plain HTTP"), "{}", mount.log_text());
}

#[test]
fn auto_with_credentials_uses_https_and_falls_back_once_when_the_handshake_fails() {
    let emu = TlsEmulator::start();
    // GCE_METADATA_MTLS_MODE=default is auto.
    let env = [("RUST_LOG", "info"), ("GCE_METADATA_MTLS_MODE", "default")];
    let dir = format!("mtls_dir={},ttl=0", emu.creds().display());
    let good = Mount::start_with(&["--endpoint", &emu.emu.addr], &["-o", &dir], &env);
    assert_eq!(read_string(&good, VALUE), "emulated-project");
    assert_eq!(emu.requests().1, 0);

    let stranger = TlsEmulator::start();
    let creds = mixed_credentials(&stranger.creds(), &emu.creds());
    let options = format!("mtls=auto,mtls_dir={},ttl=0", creds.path().display());
    let mount = mount_on(&emu, &options);
    for _ in 0..3 {
        assert_eq!(read_string(&mount, VALUE), "emulated-project");
    }
    let log = mount.log_text();
    assert_eq!(log.matches("mtls=auto: using plain HTTP").count(), 1, "{log}");
    assert!(emu.requests().1 >= 3);

    // The server refusing our certificate (one its CA never signed) is a failed handshake too.
    let creds = mixed_credentials(&emu.creds(), &stranger.creds());
    let options = format!("mtls=auto,mtls_dir={},ttl=0", creds.path().display());
    let refused = emu.tls()["refused_handshakes"].as_u64().unwrap();
    let mount = mount_on(&emu, &options);
    assert_eq!(read_string(&mount, VALUE), "emulated-project");
    let log = mount.log_text();
    assert_eq!(log.matches("mtls=auto: using plain HTTP").count(), 1, "{log}");
    assert!(emu.tls()["refused_handshakes"].as_u64().unwrap() > refused);
}

#[test]
fn auto_switches_to_https_when_the_credentials_appear_after_mounting() {
    // The guest agent may write them after metadatafs has started at boot.
    let emu = TlsEmulator::start();
    let later = tempfile::tempdir().unwrap();
    let options = format!("mtls=auto,mtls_dir={},ttl=0", later.path().display());
    let mount = mount_on(&emu, &options);
    assert_eq!(read_string(&mount, VALUE), "emulated-project");
    assert_eq!(emu.requests().0, 0);
    for file in ["root.crt", "client.key"] {
        std::fs::copy(emu.creds().join(file), later.path().join(file)).unwrap();
    }
    eventually("reads over HTTPS", DEADLINE, || {
        assert_eq!(read_string(&mount, VALUE), "emulated-project");
        (emu.requests().0 > 0).then_some(())
    });
    assert!(mount.log_text().contains("now using HTTPS with mutual TLS"), "{}", mount.log_text());
}

#[test]
fn on_keeps_the_loaded_credentials_when_the_files_vanish() {
    let emu = TlsEmulator::start();
    let copy = mixed_credentials(&emu.creds(), &emu.creds());
    let options = format!("mtls=on,mtls_dir={},ttl=0", copy.path().display());
    let mount = mount_on(&emu, &options);
    assert_eq!(read_string(&mount, VALUE), "emulated-project");
    std::fs::remove_file(copy.path().join("client.key")).unwrap();
    eventually("a warning about the missing file", DEADLINE, || {
        mount.log_text().contains("are gone; keeping the ones loaded").then_some(())
    });
    let served = emu.requests().0;
    assert_eq!(read_string(&mount, "instance/zone"), "projects/523926462582/zones/us-central1-a");
    assert!(emu.requests().0 > served);
    assert_eq!(mount.log_text().matches("are gone").count(), 1);
}

#[test]
fn a_bad_gce_metadata_mtls_mode_refuses_to_mount_with_one_line() {
    let mountpoint = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_metadatafs"))
        .args(["--endpoint", "127.0.0.1:9"])
        .arg(mountpoint.path())
        .env("GCE_METADATA_MTLS_MODE", "always")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert_eq!(
        stderr.trim_end(),
        "metadatafs: GCE_METADATA_MTLS_MODE=always: expected default, strict or none"
    );
    assert!(!common::is_mounted(mountpoint.path()));
}

#[test]
fn on_without_credentials_refuses_to_mount_with_one_line() {
    let empty = tempfile::tempdir().unwrap();
    let mountpoint = tempfile::tempdir().unwrap();
    for (args, env) in [
        (vec!["-o".to_string(), format!("mtls=on,mtls_dir={}", empty.path().display())], None),
        (vec!["-o".to_string(), format!("mtls_dir={}", empty.path().display())], Some("strict")),
    ] {
        let mut command = Command::new(env!("CARGO_BIN_EXE_metadatafs"));
        command.args(["--endpoint", "127.0.0.1:9"]).arg(mountpoint.path()).args(&args);
        if let Some(mode) = env {
            command.env("GCE_METADATA_MTLS_MODE", mode);
        }
        let output = command.output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success());
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        let root = empty.path().join("root.crt");
        assert!(stderr.contains(&format!("{} is missing", root.display())), "{stderr}");
        assert!(!common::is_mounted(mountpoint.path()));
    }
}

/// Reads `VALUE` in a loop until told to stop; returns how many reads failed and how many ran.
fn reader(
    mount: &Mount,
) -> (std::sync::Arc<std::sync::atomic::AtomicBool>, thread::JoinHandle<(u32, u32)>) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let path = mount.path(VALUE);
    let flag = stop.clone();
    let handle = thread::spawn(move || {
        let (mut failed, mut ran) = (0, 0);
        while !flag.load(Ordering::Relaxed) {
            ran += 1;
            if std::fs::read(&path).ok().as_deref() != Some(b"emulated-project".as_slice()) {
                failed += 1;
            }
        }
        (failed, ran)
    });
    (stop, handle)
}

#[test]
fn rotation_mid_run_keeps_reads_working_after_the_old_credentials_are_refused() {
    let emu = TlsEmulator::start();
    let mount = mount_on(&emu, &emu.mtls_dir_option("on"));
    assert_eq!(read_string(&mount, VALUE), "emulated-project");
    let old = tempfile::tempdir().unwrap();
    std::fs::copy(emu.creds().join("client.key"), old.path().join("client.key")).unwrap();

    let (stop, handle) = reader(&mount);
    let (status, body) = emu.emu.control("POST", "tls/rotate", r#"{"grace_ms": 60000}"#);
    assert_eq!(status, 200, "{body}");
    eventually("the daemon to pick up the new credentials", DEADLINE, || {
        mount.log_text().contains("rotated: new connections use them").then_some(())
    });
    let (status, body) = emu.emu.control("POST", "tls/expire", "");
    assert_eq!((status, body.as_str()), (200, r#"{"expired":1}"#));
    // The old credentials are refused now, by curl as by anyone.
    let (ok, _) =
        emu.curl(&emu.creds().join("root.crt"), Some(&old.path().join("client.key")), VALUE);
    assert!(!ok, "old credentials still accepted");
    let served = emu.requests().0;
    eventually("reads after the old credentials were refused", DEADLINE, || {
        (emu.requests().0 > served + 20).then_some(())
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (failed, ran) = handle.join().unwrap();
    assert_eq!(failed, 0, "{failed} of {ran} reads failed during the rotation");
    assert_eq!(emu.tls()["accepted_generations"], serde_json::json!([2]));
}

#[test]
fn rotation_without_grace_costs_no_failed_read() {
    let emu = TlsEmulator::start();
    let mount = mount_on(&emu, &emu.mtls_dir_option("on"));
    assert_eq!(read_string(&mount, VALUE), "emulated-project");
    let (stop, handle) = reader(&mount);
    for _ in 0..3 {
        let served = emu.requests().0;
        // Old credentials refused at once, kept-alive connections included: the daemon must
        // notice at its next request, not at its next poll.
        let (status, body) = emu.emu.control("POST", "tls/rotate", r#"{"grace_ms": 0}"#);
        assert_eq!(status, 200, "{body}");
        eventually("reads with the new credentials", DEADLINE, || {
            (emu.requests().0 > served + 10).then_some(())
        });
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (failed, ran) = handle.join().unwrap();
    assert_eq!(failed, 0, "{failed} of {ran} reads failed across rotations");
    assert!(!mount.log_text().contains("misconfigured"), "{}", mount.log_text());
}

#[test]
fn emulate_serves_https_when_mtls_is_on() {
    let plain = Mount::start_with(&["--emulate"], &[], INFO);
    assert_eq!(read_string(&plain, VALUE), "emulated-project");
    assert!(plain.log_text().contains("over plain HTTP"), "{}", plain.log_text());
    let tls = Mount::start_with(&["--emulate"], &["-o", "mtls=on"], INFO);
    assert_eq!(read_string(&tls, VALUE), "emulated-project");
    assert!(tls.log_text().contains("over HTTPS with mutual TLS"), "{}", tls.log_text());
}

#[test]
fn a_trace_log_over_mtls_holds_no_token_and_no_key_bytes() {
    let emu = TlsEmulator::start();
    let env = [("RUST_LOG", "trace")];
    let options = emu.mtls_dir_option("on");
    let mount = Mount::start_with(&["--endpoint", &emu.emu.addr], &["-o", &options], &env);
    let token = read_string(&mount, "instance/service-accounts/default/access_token");
    let old_key = std::fs::read_to_string(emu.creds().join("client.key")).unwrap();
    assert_eq!(emu.emu.control("POST", "tls/rotate", r#"{"grace_ms": 0}"#).0, 200);
    eventually("a read after the rotation", DEADLINE, || {
        mount.log_text().contains("rotated").then(|| read_string(&mount, VALUE))
    });
    let log = mount.log_text();
    assert!(log.contains("project-id"), "trace logging was on: {log}");
    assert!(!log.contains(&token), "the token leaked into the log");
    let new_key = std::fs::read_to_string(emu.creds().join("client.key")).unwrap();
    for line in (old_key + &new_key).lines().filter(|l| !l.starts_with("-----")) {
        assert!(!log.contains(line), "a line of client.key leaked into the log");
    }
    assert!(!log.contains("PRIVATE KEY"), "{log}");
}
