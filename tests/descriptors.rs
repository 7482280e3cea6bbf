//! Descriptors: the daemon raises its soft `RLIMIT_NOFILE` to the hard limit at start and
//! logs what it got, and the unit asks systemd for enough. Alone in its file: it lowers this
//! test process's own soft limit, which the daemon inherits.

mod common;

use common::{Emulator, Mount};

fn limits(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = text.lines().find(|l| l.starts_with("Max open files")).unwrap();
    let fields: Vec<&str> = line.split_whitespace().collect();
    (fields[3].parse().unwrap(), fields[4].parse().unwrap())
}

#[test]
fn the_daemon_raises_its_soft_descriptor_limit_to_the_hard_one_and_says_so() {
    // SAFETY: getrlimit/setrlimit on a struct we own.
    let mut limit: libc::rlimit = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) }, 0);
    let hard = limit.rlim_max;
    assert!(hard > 512, "the hard limit is too low to test with: {hard}");
    limit.rlim_cur = 256;
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);

    let emu = Emulator::start(&[]);
    let mount = Mount::start_with(&["--endpoint", &emu.addr], &[], &[("RUST_LOG", "info")]);
    assert_eq!(mount.read("project/project-id").unwrap(), b"emulated-project");
    assert_eq!(limits(mount.pid()), (hard, hard));
    let said = format!("descriptors: limit raised from 256 to {hard}");
    assert!(mount.log_text().contains(&said), "{}", mount.log_text());

    let unit = include_str!("../systemd/metadatafs.service");
    assert!(unit.lines().any(|l| l == "LimitNOFILE=65536"), "the unit sets no LimitNOFILE");
}
