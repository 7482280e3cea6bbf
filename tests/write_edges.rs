//! The write-through's edges through the real daemon: `rm -r` of a guest-attribute namespace,
//! scope lists split across `write()`s or absurdly long, `chmod`/`chown`, and a cached failure
//! that must not log at every lookup.

mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use common::{Emulator, Mount};

const GA: &str = "instance/guest-attributes";
const ACCOUNT: &str = "instance/service-accounts/default";

fn errno(result: std::io::Result<impl Sized>) -> i32 {
    result.err().and_then(|e| e.raw_os_error()).expect("an error")
}

#[test]
fn rm_r_of_a_guest_attribute_namespace_works() {
    let emu = Emulator::start(&[]);
    let mount = Mount::start(&emu.addr, &["-o", "guest_attributes"]);
    let ns = mount.path(&format!("{GA}/doomed"));
    std::fs::create_dir(&ns).unwrap();
    for key in ["a", "b"] {
        std::fs::write(ns.join(key), key).unwrap();
    }
    assert_eq!(emu.get(&format!("{GA}/doomed/a")), (200, b"a".to_vec()));
    let status = std::process::Command::new("rm").arg("-r").arg(&ns).status().unwrap();
    assert!(status.success(), "rm -r failed");
    assert_eq!(emu.get(&format!("{GA}/doomed/")).0, 404);
    assert!(std::fs::metadata(&ns).is_err());
    // A namespace that never was is still ENOENT.
    assert_eq!(errno(std::fs::remove_dir(mount.path(&format!("{GA}/never")))), libc::ENOENT);
}

#[test]
fn a_scope_list_split_across_writes_is_sent_whole_and_a_huge_one_is_refused_cheaply() {
    let emu = Emulator::start(&[]);
    let mount = Mount::start(&emu.addr, &["-o", "scoped_tokens"]);
    let scopes = mount.path(&format!("{ACCOUNT}/scopes"));
    let token_path = format!("{ACCOUNT}/token");
    let before = emu.count(&token_path);
    let mut file = std::fs::OpenOptions::new().write(true).truncate(true).open(&scopes).unwrap();
    for part in ["devstorage.re", "ad_only,logg", "ing.write"] {
        file.write_all(part.as_bytes()).unwrap();
        file.flush().unwrap();
    }
    assert_eq!(emu.count(&token_path), before, "half a scope name was sent");
    drop(file);
    assert_eq!(emu.count(&token_path), before + 1, "sent whole at close");
    let now = String::from_utf8(std::fs::read(&scopes).unwrap()).unwrap();
    assert!(now.contains("devstorage.read_only") && now.contains("logging.write"), "{now}");

    // `echo` still sees a refusal (one write ending in a newline goes through at once).
    let refused = std::fs::write(&scopes, "cloud-platform\n").unwrap_err();
    assert_eq!(refused.raw_os_error(), Some(libc::EINVAL));

    let huge = "logging.write,".repeat(80_000) + "\n";
    let before = emu.total_count();
    let start = Instant::now();
    let err = std::fs::write(&scopes, huge).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EFBIG));
    assert!(start.elapsed() < Duration::from_secs(2), "took {:?}", start.elapsed());
    assert!(emu.total_count() <= before + 1, "a huge list reached the server");
}

#[test]
fn chmod_and_chown_are_eperm_on_writable_files_and_erofs_on_the_others() {
    let emu = Emulator::start(&[]);
    let mount = Mount::start(&emu.addr, &["-o", "guest_attributes"]);
    let key = mount.path(&format!("{GA}/ns1/key"));
    std::fs::create_dir(mount.path(&format!("{GA}/ns1"))).unwrap();
    std::fs::write(&key, "v").unwrap();
    let chmod = |path: &std::path::Path| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
    };
    let chown = |path: &std::path::Path| std::os::unix::fs::chown(path, Some(1), Some(1));
    assert_eq!(errno(chmod(&key)), libc::EPERM);
    assert_eq!(errno(chown(&key)), libc::EPERM);
    let plain = mount.path("project/project-id");
    assert_eq!(errno(chmod(&plain)), libc::EROFS);
    assert_eq!(errno(chown(&plain)), libc::EROFS);
    // `touch` of a writable file is still fine.
    let status = std::process::Command::new("touch").arg(&key).status().unwrap();
    assert!(status.success());
}

#[test]
fn a_cached_failure_is_logged_once_not_at_every_lookup() {
    let emu = Emulator::start(&[]);
    let mount = Mount::start(&emu.addr, &[]);
    let fault = r#"{"prefix":"/computeMetadata/v1/instance/hostname","no_flavor":true}"#;
    assert_eq!(emu.control("POST", "faults", fault).0, 200);
    for _ in 0..50 {
        assert_eq!(errno(mount.read("instance/hostname")), libc::EIO);
    }
    let log = mount.log_text();
    let lines = log.lines().filter(|l| l.contains("instance/hostname")).count();
    assert!((1..=2).contains(&lines), "{lines} lines:\n{log}");
}
