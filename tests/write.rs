//! Guest attributes through the mount (`-o guest_attributes`), checked on the emulator's side,
//! and everything else staying read-only.

mod common;

use std::io::Write;
use std::os::fd::IntoRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{as_nobody, Emulator, Mount};

const GA: &str = "instance/guest-attributes";

fn errno(result: std::io::Result<impl Sized>) -> i32 {
    result.err().and_then(|e| e.raw_os_error()).expect("an error")
}

/// Write `value` to `path` and close it, returning the error of `close()` itself.
fn write_and_close(path: &Path, value: &[u8]) -> std::io::Result<()> {
    let mut file = std::fs::File::create(path)?;
    file.write_all(value)?;
    // SAFETY: we own the descriptor, and close it once.
    if unsafe { libc::close(file.into_raw_fd()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[test]
fn a_guest_attribute_round_trip_is_seen_by_the_metadata_server() {
    let emu = Emulator::start(&[]);
    let mount = Mount::start(&emu.addr, &["-o", "guest_attributes"]);
    std::fs::create_dir(mount.path(&format!("{GA}/myns"))).unwrap();
    let listed: Vec<String> = std::fs::read_dir(mount.path(GA))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(listed.contains(&"myns".to_string()), "mkdir shows the namespace: {listed:?}");
    assert_eq!(emu.get(&format!("{GA}/myns/")).0, 404, "mkdir alone sends nothing");

    write_and_close(&mount.path(&format!("{GA}/myns/key-1")), b"hello").unwrap();
    assert_eq!(emu.get(&format!("{GA}/myns/key-1")), (200, b"hello".to_vec()));
    assert_eq!(mount.read(&format!("{GA}/myns/key-1")).unwrap(), b"hello");

    std::fs::write(mount.path(&format!("{GA}/myns/key-1")), "world\n").unwrap();
    assert_eq!(emu.get(&format!("{GA}/myns/key-1")), (200, b"world\n".to_vec()));
    assert_eq!(mount.read(&format!("{GA}/myns/key-1")).unwrap(), b"world\n");
    let meta = std::fs::metadata(mount.path(&format!("{GA}/myns/key-1"))).unwrap();
    assert_eq!(meta.len(), 6);

    std::fs::remove_file(mount.path(&format!("{GA}/myns/key-1"))).unwrap();
    assert_eq!(emu.get(&format!("{GA}/myns/key-1")).0, 404, "rm DELETEs");
    assert!(std::fs::metadata(mount.path(&format!("{GA}/myns/key-1"))).is_err());

    // rmdir: a namespace without keys goes; one with keys stays (ENOTEMPTY).
    std::fs::create_dir(mount.path(&format!("{GA}/empty"))).unwrap();
    std::fs::remove_dir(mount.path(&format!("{GA}/empty"))).unwrap();
    assert_eq!(errno(std::fs::remove_dir(mount.path(&format!("{GA}/hostkeys")))), libc::ENOTEMPTY);
    let listed: Vec<String> = std::fs::read_dir(mount.path(GA))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    // The emptied one stays, as a directory does, until it is removed (so `rm -r` works).
    assert_eq!(listed, ["hostkeys", "myns"], "the removed namespace is gone");
    std::fs::remove_dir(mount.path(&format!("{GA}/myns"))).unwrap();
    let listed: Vec<String> = std::fs::read_dir(mount.path(GA))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(listed, ["hostkeys"], "the emptied and the removed namespace are gone");

    // Names: letters, digits, _ and - only, checked before anything is sent.
    std::fs::read_dir(mount.path(GA)).unwrap().for_each(drop);
    std::fs::read_dir(mount.path(&format!("{GA}/hostkeys"))).unwrap().for_each(drop);
    emu.settle();
    let before = emu.total_count();
    assert_eq!(errno(std::fs::create_dir(mount.path(&format!("{GA}/bad.ns")))), libc::EINVAL);
    let bad_key = std::fs::write(mount.path(&format!("{GA}/hostkeys/a.b")), "x");
    assert_eq!(errno(bad_key), libc::EINVAL);
    assert_eq!(emu.total_count(), before);
}

#[test]
fn the_servers_refusal_surfaces_at_close() {
    let emu = Emulator::start(&[]);
    let mount = Mount::start(&emu.addr, &["-o", "guest_attributes"]);
    std::fs::read_dir(mount.path(&format!("{GA}/hostkeys"))).unwrap().for_each(drop);
    let fault = format!(r#"{{"prefix":"/computeMetadata/v1/{GA}/hostkeys/refused","status":403}}"#);
    assert_eq!(emu.control("POST", "faults", &fault).0, 200);
    let closed = write_and_close(&mount.path(&format!("{GA}/hostkeys/refused")), b"v");
    assert_eq!(closed.unwrap_err().raw_os_error(), Some(libc::EACCES), "403 → EACCES at close");
    emu.control("DELETE", "faults", "");

    // Guest attributes disabled on the VM: the MDS's 403 "disabled" is EACCES.
    let disable = emu.control("PUT", "values/instance/attributes/enable-guest-attributes", "FALSE");
    assert_eq!(disable.0, 200);
    let mount = Mount::start(&emu.addr, &["-o", "guest_attributes"]);
    let denied = std::fs::create_dir(mount.path(&format!("{GA}/ns")));
    assert_eq!(errno(denied), libc::EACCES);
}

#[test]
fn guest_attribute_writes_are_paced_under_the_servers_burst_limit() {
    let emu = Emulator::start(&[]);
    let mount = Mount::start(&emu.addr, &["-o", "guest_attributes"]);
    std::fs::create_dir(mount.path(&format!("{GA}/paced"))).unwrap();
    let start = Instant::now();
    for i in 0..6 {
        write_and_close(&mount.path(&format!("{GA}/paced/k{i}")), b"v").unwrap();
    }
    // Three may go at once; the fourth waits until the first is a second old.
    assert!(start.elapsed() >= Duration::from_secs(1), "{:?}", start.elapsed());
    // The emulator, like the MDS, drops writes above the limit: all six arrived.
    for i in 0..6 {
        assert_eq!(emu.get(&format!("{GA}/paced/k{i}")), (200, b"v".to_vec()), "k{i}");
    }
}

#[test]
fn without_the_options_everything_is_read_only() {
    let emu = Emulator::start(&[]);
    let mount = Mount::start(&emu.addr, &["-o", "allow_other"]);
    let key = mount.path(&format!("{GA}/hostkeys/ssh-ed25519"));
    assert_eq!(errno(std::fs::write(&key, "x")), libc::EROFS);
    assert_eq!(errno(std::fs::create_dir(mount.path(&format!("{GA}/ns")))), libc::EROFS);
    assert_eq!(errno(std::fs::remove_file(&key)), libc::EROFS);
    assert_eq!(errno(std::fs::write(mount.path("project/project-id"), "x")), libc::EROFS);
    assert_eq!(errno(std::fs::create_dir(mount.path("instance/new"))), libc::EROFS);
    let (status, value) = emu.get(&format!("{GA}/hostkeys/ssh-ed25519"));
    assert_eq!((status, value), (200, std::fs::read(&key).unwrap()), "unchanged");

    // With the option, still only the owner writes.
    let mount = Mount::start(&emu.addr, &["-o", "guest_attributes,allow_other"]);
    let target = mount.path(&format!("{GA}/hostkeys/ssh-ed25519"));
    let cmd = format!("echo x > '{}'", target.display());
    let (ok, stderr) = as_nobody("/bin/sh", &[Path::new("-c"), Path::new(&cmd)]);
    assert!(!ok && stderr.contains("Permission denied"), "{stderr}");
    let (ok, _) = as_nobody("/bin/rm", &[&target]);
    assert!(!ok);
    assert_eq!(emu.get(&format!("{GA}/hostkeys/ssh-ed25519")).0, 200);
    assert_eq!(errno(std::fs::write(mount.path("project/project-id"), "x")), libc::EROFS);
}
