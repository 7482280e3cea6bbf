//! mtime is when this mount first saw the current bytes, always: no waiting read, eviction or
//! refetch moves it while the bytes are the same (so `make` and `find -newer` see real
//! changes only), and a real change does move it.

mod common;

use std::time::SystemTime;

use common::{Emulator, Mount};

const VALUE: &str = "project/project-id";

fn mtime(mount: &Mount, path: &str) -> SystemTime {
    std::fs::metadata(mount.path(path)).unwrap().modified().unwrap()
}

#[test]
fn a_waiting_read_with_the_same_bytes_moves_no_mtime() {
    let emu = Emulator::start(&[]);
    // ttl=0: every stat asks the daemon, so the test sees what it answers now.
    let mount = Mount::start(&emu.addr, &["-o", "ttl=0"]);
    let before = mtime(&mount, VALUE);
    let waited = mount.read(&format!("{VALUE}?wait_for_change=true&timeout_sec=1")).unwrap();
    assert_eq!(waited, b"emulated-project");
    assert_eq!(mtime(&mount, VALUE), before, "the same bytes, a new mtime");
    for _ in 0..3 {
        assert_eq!(mtime(&mount, VALUE), before);
    }
    let (status, _) = emu.control("PUT", &format!("values/{VALUE}"), "changed-project");
    assert_eq!(status, 200);
    common::eventually("the change to show", common::DEADLINE, || {
        (mount.read(VALUE).unwrap() == b"changed-project").then_some(())
    });
    assert!(mtime(&mount, VALUE) > before, "a change moves mtime");
}

#[test]
fn eviction_and_refetches_move_no_mtime() {
    let emu = Emulator::start(&[]);
    // A cache of three entries: reading a few other values evicts the first one.
    let mount = Mount::start(&emu.addr, &["-o", "ttl=0,max_entries=3"]);
    let others = ["instance/zone", "instance/hostname", "instance/id", "instance/machine-type"];
    let first = mtime(&mount, VALUE);
    for round in 0..3 {
        for other in others {
            mount.read(other).unwrap();
        }
        let requests = emu.count(VALUE);
        assert_eq!(mtime(&mount, VALUE), first, "round {round}");
        assert!(emu.count(VALUE) > requests, "round {round}: not evicted, the test proves nothing");
    }
}
