//! Hostile credential files in `mtls_dir`: a FIFO, a directory, a device, a symlink loop or a
//! huge file never wedges the daemon. At mount, `mtls=on` fails at once with one line naming
//! the file; swapped in after mounting, reads still end within `timeout` and SIGTERM still
//! stops the daemon; and what is wrong is logged once, not at every poll.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{eventually, Emulator, Mount, DEADLINE};

fn mkfifo(path: &Path) {
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
}

/// Runs `metadatafs` (background mode: it returns once mounted or failed) for at most 10 s:
/// (how long it took, exit ok, stderr). A process still running then is killed.
fn mount_attempt(mtls_dir: &Path) -> (Duration, bool, String) {
    let mountpoint = tempfile::tempdir().unwrap();
    let start = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_metadatafs"))
        .args(["--endpoint", "127.0.0.1:9"])
        .arg(mountpoint.path())
        .arg("-o")
        .arg(format!("mtls=on,mtls_dir={},timeout=2", mtls_dir.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if start.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = start.elapsed();
    let mut stderr = String::new();
    if status.is_some() {
        use std::io::Read;
        child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    }
    if common::is_mounted(mountpoint.path()) {
        common::detach(mountpoint.path());
    }
    (took, status.is_some_and(|s| s.success()), stderr)
}

#[test]
fn mtls_on_refuses_anything_but_a_sane_regular_file_at_once_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let creds = |name: &str| {
        let d = dir.path().join(name);
        std::fs::create_dir(&d).unwrap();
        std::fs::write(d.join("root.crt"), "not read past its type check\n").unwrap();
        d
    };
    let fifo = creds("fifo");
    mkfifo(&fifo.join("client.key"));
    let directory = creds("directory");
    std::fs::create_dir(directory.join("client.key")).unwrap();
    let device = creds("device");
    std::os::unix::fs::symlink("/dev/zero", device.join("client.key")).unwrap();
    let looped = creds("loop");
    std::os::unix::fs::symlink("other", looped.join("client.key")).unwrap();
    std::os::unix::fs::symlink("client.key", looped.join("other")).unwrap();
    let huge = creds("huge");
    let file = std::fs::File::create(huge.join("client.key")).unwrap();
    file.set_len(64 << 20).unwrap();

    for (dir, what) in [
        (&fifo, "a FIFO, not a credentials file"),
        (&directory, "a directory, not a credentials file"),
        (&device, "a device, not a credentials file"),
        (&looped, "a symlink loop"),
        (&huge, "larger than 1024 KiB: not a credentials file"),
    ] {
        let (took, ok, stderr) = mount_attempt(dir);
        assert!(took < Duration::from_secs(5), "{what}: took {took:?}");
        assert!(!ok, "{what}: mounted");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{what}: {stderr}");
        let named = format!("{}: {what}", dir.join("client.key").display());
        assert!(stderr.contains(&named), "{what}: {stderr}");
        assert!(!stderr.contains("missing"), "{what}: {stderr}");
    }
}

#[test]
fn a_fifo_swapped_in_after_mounting_stalls_no_read_nor_sigterm_and_is_logged_once() {
    let tls = tempfile::tempdir().unwrap();
    let served = tls.path().join("served");
    let emu = Emulator::start(&["--tls", served.to_str().unwrap()]);
    let ours = tls.path().join("ours");
    std::fs::create_dir(&ours).unwrap();
    for file in ["root.crt", "client.key"] {
        std::fs::copy(served.join(file), ours.join(file)).unwrap();
    }
    let options = format!("mtls=on,mtls_dir={},ttl=0,timeout=2", ours.display());
    let mut mount =
        Mount::start_with(&["--endpoint", &emu.addr], &["-o", &options], &[("RUST_LOG", "info")]);
    assert_eq!(mount.read("project/project-id").unwrap(), b"emulated-project");

    std::fs::remove_file(ours.join("client.key")).unwrap();
    mkfifo(&ours.join("client.key"));
    eventually("the daemon to notice the FIFO", DEADLINE, || {
        mount.log_text().contains("a FIFO, not a credentials file").then_some(())
    });
    // The server now refuses the credentials the daemon holds: every read fails over to
    // re-reading the files, which hold a FIFO.
    let (status, body) = emu.control("POST", "tls/rotate", r#"{"grace_ms": 0}"#);
    assert_eq!(status, 200, "{body}");
    for path in ["instance/zone", "instance/hostname", "project/project-id"] {
        let start = Instant::now();
        let path = mount.path(path);
        let read = std::thread::spawn(move || std::fs::read(path).map(|_| ()));
        eventually("a read to end", Duration::from_secs(8), || read.is_finished().then_some(()));
        let result = read.join().unwrap();
        assert!(start.elapsed() < Duration::from_secs(5), "a read took {:?}", start.elapsed());
        assert_eq!(result.unwrap_err().raw_os_error(), Some(libc::EIO));
    }
    // Polled every second, and at every failed read: said once.
    let log = mount.log_text();
    assert_eq!(log.matches("a FIFO").count(), 1, "{log}");

    let start = Instant::now();
    let status = mount.signal(libc::SIGTERM);
    assert!(status.success(), "{status}");
    assert!(start.elapsed() < Duration::from_secs(5), "SIGTERM took {:?}", start.elapsed());
}
