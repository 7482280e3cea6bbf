//! Waiting reads (`?wait_for_change=true`): they block only their readers, and readers waiting
//! on one name share one upstream request. In a test binary of its own, because it counts this
//! process's threads blocked in FUSE requests to know when every reader is waiting.

mod common;

use std::io::ErrorKind;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::{eventually, Emulator, Mount, DEADLINE};

const ACCOUNT: &str = "instance/service-accounts/default";

fn text(mount: &Mount, path: &str) -> String {
    String::from_utf8(mount.read(path).unwrap_or_else(|e| panic!("{path}: {e}"))).unwrap()
}

/// Threads of this process blocked in a FUSE request, or (a waiting read waits in its lookup)
/// held back by the kernel while another thread looks the same name up.
fn blocked_in_fuse() -> usize {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return 0 };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("wchan")).ok())
        .filter(|wchan| {
            ["fuse", "request_wait_answer", "d_alloc_parallel", "d_wait_lookup"]
                .iter()
                .any(|w| wchan.contains(w))
        })
        .count()
}

#[test]
fn two_hundred_waiting_readers_cost_one_request_and_block_nobody_else() {
    let emu = Emulator::start(&[]);
    let key = "instance/attributes/flag";
    assert_eq!(emu.control("PUT", &format!("values/{key}"), "before").0, 200);
    let mount = Mount::start(&emu.addr, &["-o", "ttl=0"]);
    let name = "instance/attributes/flag?wait_for_change=true&timeout_sec=60";
    let done = Arc::new(AtomicUsize::new(0));
    let readers: Vec<_> = (0..200)
        .map(|_| {
            let (mount, done) = (mount.share(), done.clone());
            std::thread::spawn(move || {
                let value = mount.read(name);
                done.fetch_add(1, Ordering::SeqCst);
                value
            })
        })
        .collect();
    eventually("200 readers waiting in the filesystem", DEADLINE, || {
        (blocked_in_fuse() >= 200).then_some(())
    });
    eventually("the upstream wait", DEADLINE, || (emu.count(key) >= 1).then_some(()));
    // Other reads, cold (ttl=0) and warm, go through while 200 readers wait.
    for _ in 0..20 {
        assert!(!text(&mount, "project/project-id").is_empty());
        assert!(mount.read(&format!("{ACCOUNT}/email")).is_ok());
    }
    assert_eq!(done.load(Ordering::SeqCst), 0, "the waiters are still waiting");
    assert_eq!(emu.control("PUT", &format!("values/{key}"), "after").0, 200);
    for reader in readers {
        assert_eq!(reader.join().unwrap().unwrap(), b"after");
    }
    assert_eq!(emu.count(key), 1, "200 waiting readers, one upstream request");
    // Never cached: the next waiting read waits again (here, until its timeout).
    assert_eq!(
        text(&mount, "instance/attributes/flag?wait_for_change=true&timeout_sec=1"),
        "after"
    );
    assert_eq!(emu.count(key), 2);
    // What the file holds is fixed at lookup: `stat` waits too, and its size is exact.
    let once = "instance/attributes/flag?wait_for_change=true&timeout_sec=1";
    assert_eq!(std::fs::metadata(mount.path(once)).unwrap().len(), 5, "stat waits, size exact");
    assert_eq!(text(&mount, key), "after", "the plain name sees the change");
}

#[test]
fn a_waiting_read_with_a_stale_last_etag_answers_at_once() {
    let emu = Emulator::start(&[]);
    let mount = Mount::start(&emu.addr, &[]);
    let (_, etag_source) = emu.get("instance/zone");
    let zone = text(&mount, "instance/zone?wait_for_change=true&last_etag=0");
    assert_eq!(zone.as_bytes(), etag_source, "a stale last_etag answers at once");
    let err = mount.read("instance/zone?wait_for_change=maybe");
    assert_eq!(err.unwrap_err().kind(), ErrorKind::InvalidInput);
}

/// Found by an adversarial pass: a thread reading a waiting name in a loop was handed the last
/// answer again for 250 ms (thousands of reads), and missed a change made meanwhile until its
/// `timeout_sec` ran out.
#[test]
fn a_loop_of_waiting_reads_neither_spins_nor_misses_a_change() {
    let emu = Emulator::start(&[]);
    let key = "instance/attributes/flag";
    assert_eq!(emu.control("PUT", &format!("values/{key}"), "x0").0, 200);
    let mount = Mount::start(&emu.addr, &[]);
    let name = format!("{key}?wait_for_change=true&timeout_sec=20");
    let shared = mount.share();
    let reader = std::thread::spawn(move || {
        let start = std::time::Instant::now();
        let mut seen = Vec::new();
        while start.elapsed() < std::time::Duration::from_secs(15) {
            let value = String::from_utf8(shared.read(&name).unwrap()).unwrap();
            let done = value == "x2";
            seen.push((value, start.elapsed()));
            if done {
                break;
            }
        }
        seen
    });
    eventually("the reader waiting", DEADLINE, || (emu.count(key) >= 1).then_some(()));
    assert_eq!(emu.control("PUT", &format!("values/{key}"), "x1").0, 200);
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert_eq!(emu.control("PUT", &format!("values/{key}"), "x2").0, 200);
    let seen = reader.join().unwrap();
    let x1 = seen.iter().filter(|(v, _)| v == "x1").count();
    assert!((1..=2).contains(&x1), "x1 read {x1} times, then {:?}", seen.last());
    let (last, at) = seen.last().unwrap();
    assert_eq!(last, "x2", "{} reads", seen.len());
    let first_x1 = seen.iter().find(|(v, _)| v == "x1").unwrap().1;
    assert!(*at - first_x1 < std::time::Duration::from_secs(3), "x2 seen after {at:?}");
}

/// The README's shell loop: a new `cat` each time, so a new thread each time.
#[test]
fn a_shell_loop_of_waiting_reads_sees_every_change_and_does_not_spin() {
    let emu = Emulator::start(&[]);
    let key = "instance/attributes/flag";
    assert_eq!(emu.control("PUT", &format!("values/{key}"), "v0").0, 200);
    let mount = Mount::start(&emu.addr, &[]);
    let name = mount.path(&format!("{key}?wait_for_change=true&timeout_sec=20"));
    let reader = std::thread::spawn(move || {
        let start = std::time::Instant::now();
        let mut seen: Vec<String> = Vec::new();
        while start.elapsed() < std::time::Duration::from_secs(15) {
            let out = std::process::Command::new("cat").arg(&name).output().unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            seen.push(String::from_utf8(out.stdout).unwrap());
            if seen.last().unwrap() == "v5" {
                break;
            }
        }
        seen
    });
    for i in 1..=5 {
        eventually("the loop waiting", DEADLINE, || (emu.count(key) >= i).then_some(()));
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert_eq!(emu.control("PUT", &format!("values/{key}"), &format!("v{i}")).0, 200);
    }
    let seen = reader.join().unwrap();
    for i in 1..=5 {
        let n = seen.iter().filter(|v| **v == format!("v{i}")).count();
        assert!((1..=2).contains(&n), "v{i} printed {n} times in {} reads", seen.len());
    }
}
