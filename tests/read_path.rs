//! The two read paths (README "Read paths"): on a read-only mount a warm `cat` or `ls -l` asks
//! the daemon nothing (no-open); mounts that write, or `read_path=open`, keep an OPEN per
//! `open()`; both serve the same whole values, and `token` says at most the seconds truly left
//! and at most one less. The daemon's own counters (`.metadatafs/status`) say what it was asked.

mod common;

use std::time::Duration;

use common::{Emulator, Mount};

const ACCOUNT: &str = "instance/service-accounts/default";

fn status(mount: &Mount) -> serde_json::Value {
    serde_json::from_slice(&mount.read(".metadatafs/status").unwrap()).unwrap()
}

/// FUSE requests by operation.
fn requests(mount: &Mount) -> serde_json::Map<String, serde_json::Value> {
    status(mount)["fuse_requests"].as_object().unwrap().clone()
}

/// What `op` made the daemon see, beyond what reading the status itself costs.
fn asked(mount: &Mount, op: impl Fn()) -> Vec<(String, i64)> {
    let delta = |a: &serde_json::Map<_, _>, b: &serde_json::Map<String, serde_json::Value>| {
        let mut out: Vec<(String, i64)> = b
            .iter()
            .map(|(k, v)| (k.clone(), v.as_i64().unwrap() - a[k].as_i64().unwrap()))
            .filter(|(k, n)| *n != 0 && k != "forget")
            .collect();
        out.sort();
        out
    };
    let (a, b) = (requests(mount), requests(mount));
    let reading_status = delta(&a, &b);
    let (c, _) = (requests(mount), op());
    let d = requests(mount);
    let mut seen = delta(&c, &d);
    for (op, n) in &reading_status {
        if let Some(entry) = seen.iter_mut().find(|(o, _)| o == op) {
            entry.1 -= n;
        }
    }
    seen.retain(|(_, n)| *n != 0);
    seen
}

fn ls_l(mount: &Mount, dir: &str) -> usize {
    let entries = std::fs::read_dir(mount.path(dir)).unwrap();
    let stat =
        |e: std::io::Result<std::fs::DirEntry>| e.unwrap().path().symlink_metadata().unwrap();
    entries.map(stat).filter(|m| m.len() < u64::MAX).count()
}

#[test]
fn on_a_read_only_mount_a_warm_cat_or_ls_asks_the_daemon_nothing() {
    let emu = Emulator::start(&[]);
    let mount = Mount::start(&emu.addr, &["-o", "ttl=3600,read_path=auto"]);
    assert_eq!(status(&mount)["read_path"]["path"], "no-open", "{}", status(&mount));
    mount.read("project/project-id").unwrap();
    emu.settle(); // the watcher's first dump drops what was read before it, once
    let files = [
        "project/project-id",
        &format!("{ACCOUNT}/access_token"),
        &format!("{ACCOUNT}/authorization"),
    ];
    for file in files {
        // Twice: a directory whose listing the first dump dropped answers its attributes with
        // no TTL until it is listed again, once.
        let first = mount.read(file).unwrap();
        mount.read(file).unwrap();
        assert_eq!(asked(&mount, || assert_eq!(mount.read(file).unwrap(), first)), [], "{file}");
    }
    ls_l(&mount, "instance");
    assert_eq!(asked(&mount, || assert!(ls_l(&mount, "instance") > 10)), [], "a warm ls -l");
    // GNU ls -l also asks each entry for an SELinux context and an ACL: the kernel answers.
    let gnu_ls = || {
        let out = std::process::Command::new("ls").arg("-l").arg(mount.path("instance")).output();
        assert!(out.unwrap().status.success());
    };
    gnu_ls();
    assert_eq!(asked(&mount, gnu_ls), [], "a warm GNU ls -l");
    // The kernel sent OPEN, OPENDIR and FLUSH once, and never again.
    let total = requests(&mount);
    for op in ["open", "opendir", "flush"] {
        assert_eq!(total[op], 1, "{op}: {total:?}");
    }
    assert_eq!(total["release"], 0);
}

#[test]
fn the_open_path_costs_an_open_per_cat_and_serves_the_same_bytes() {
    let emu = Emulator::start(&[]);
    let open = Mount::start(&emu.addr, &["-o", "ttl=3600,read_path=open"]);
    let no_open = Mount::start(&emu.addr, &["-o", "ttl=3600"]);
    open.read("project/project-id").unwrap();
    no_open.read("project/project-id").unwrap();
    emu.settle(); // the watchers' first dumps drop what was read before them, once
    assert_eq!(
        status(&open)["read_path"],
        serde_json::json!({"path": "open", "why": "read_path=open"})
    );
    for file in ["project/project-id", "instance/hostname", &format!("{ACCOUNT}/access_token")] {
        let bytes = open.read(file).unwrap();
        open.read(file).unwrap();
        assert_eq!(bytes, no_open.read(file).unwrap(), "{file}");
        let seen = asked(&open, || assert_eq!(open.read(file).unwrap(), bytes));
        assert_eq!(seen, [("open".to_string(), 1), ("release".to_string(), 1)], "{file}");
    }
    // A mount that writes keeps the open path: writes need handles, close() reports errors.
    let writes = Mount::start(&emu.addr, &["-o", "guest_attributes"]);
    assert_eq!(status(&writes)["read_path"]["path"], "open");
    assert_eq!(status(&writes)["read_path"]["why"], "a write-through option is on");
    let metrics = String::from_utf8(open.read(".metadatafs/metrics").unwrap()).unwrap();
    assert!(metrics.contains("metadatafs_read_path{path=\"open\"} 1\n"), "{metrics}");
}

/// `token`'s `expires_in`, on either path, is never more than the seconds truly left and at
/// most one second less, read after read across several seconds.
fn expires_in_stays_honest(mount: &Mount, emu: &Emulator) {
    let token_path = format!("{ACCOUNT}/token");
    let mut versions = std::collections::BTreeSet::new();
    for _ in 0..25 {
        let bare =
            String::from_utf8(mount.read(&format!("{ACCOUNT}/access_token")).unwrap()).unwrap();
        let truth_before = emu.tokeninfo(&bare)["expires_in"].as_i64().unwrap();
        let json: serde_json::Value =
            serde_json::from_slice(&mount.read(&token_path).unwrap()).unwrap();
        let truth_after = emu.tokeninfo(&bare)["expires_in"].as_i64().unwrap();
        let shown = json["expires_in"].as_i64().unwrap();
        assert!(shown <= truth_before, "expires_in {shown} > the {truth_before} s truly left");
        assert!(shown >= truth_after - 1, "expires_in {shown} < {truth_after} s left, less one");
        versions.insert(shown);
        // Reads spread over more than two seconds: a version lasts at most one.
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(versions.len() >= 2, "one version for 2.5 s: {versions:?}");
}

#[test]
fn token_expires_in_is_never_more_than_the_truth_on_either_path() {
    let emu = Emulator::start(&[]);
    let no_open = Mount::start(&emu.addr, &["-o", "ttl=3600"]);
    expires_in_stays_honest(&no_open, &emu);
    let open = Mount::start(&emu.addr, &["-o", "ttl=3600,read_path=open"]);
    expires_in_stays_honest(&open, &emu);
}

#[test]
fn status_files_are_fresh_at_every_open_and_old_opens_stay_whole() {
    let emu = Emulator::start(&[]);
    let mount = Mount::start(&emu.addr, &[]);
    let uptime = |m: &Mount| status(m)["uptime_seconds"].as_u64().unwrap();
    let first = uptime(&mount);
    // Every open looks the status up again: a later open sees later counters.
    let reads_before = status(&mount)["fuse_requests"]["lookup"].as_u64().unwrap();
    let reads_after = status(&mount)["fuse_requests"]["lookup"].as_u64().unwrap();
    assert!(reads_after > reads_before, "the status was not looked up again");
    assert!(uptime(&mount) >= first);
    // A file held open across a change keeps reading the version it opened, whole.
    use std::io::Read;
    let key = "instance/attributes/held";
    emu.control("PUT", &format!("values/{key}"), "first version");
    let mut held = std::fs::File::open(mount.path(key)).unwrap();
    emu.control("PUT", &format!("values/{key}"), "second, longer version");
    common::eventually("the change", common::DEADLINE, || {
        (mount.read(key).ok()? == b"second, longer version").then_some(())
    });
    let size = held.metadata().unwrap().len();
    let mut bytes = Vec::new();
    held.read_to_end(&mut bytes).unwrap();
    assert_eq!((bytes.as_slice(), size), (&b"first version"[..], 13));
}

#[test]
fn an_added_key_shows_in_a_cached_listing_within_a_second() {
    let emu = Emulator::start(&[]);
    let mount = Mount::start(&emu.addr, &["-o", "ttl=3600"]);
    let names = |m: &Mount| -> Vec<String> {
        let entries = std::fs::read_dir(m.path("instance/attributes")).unwrap();
        entries.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect()
    };
    assert!(!names(&mount).contains(&"brand-new".to_string()));
    mount.read("project/project-id").unwrap(); // the watcher starts with the first read
    std::thread::sleep(Duration::from_millis(300)); // its first dump; not a TTL
    emu.control("PUT", "values/instance/attributes/brand-new", "x");
    let start = std::time::Instant::now();
    common::eventually("the new key in ls", common::DEADLINE, || {
        names(&mount).contains(&"brand-new".to_string()).then_some(())
    });
    assert!(start.elapsed() < Duration::from_secs(3), "took {:?}", start.elapsed());
    emu.control("DELETE", "values/instance/attributes/brand-new", "");
    common::eventually("the removed key gone from ls", common::DEADLINE, || {
        (!names(&mount).contains(&"brand-new".to_string())).then_some(())
    });
}

#[test]
fn without_the_watcher_a_cached_listing_is_fetched_again_after_its_ttl() {
    let emu = Emulator::start(&[]);
    // The watcher's long-poll always fails: only `ttl` keeps listings fresh.
    let fault = r#"{"prefix":"/computeMetadata/v1/?recursive","status":500,"count":100000}"#;
    emu.control("POST", "faults", fault);
    let mount = Mount::start(&emu.addr, &["-o", "ttl=1"]);
    let names = |m: &Mount| -> Vec<String> {
        let entries = std::fs::read_dir(m.path("instance/attributes")).unwrap();
        entries.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect()
    };
    assert!(!names(&mount).contains(&"late-key".to_string()));
    emu.control("PUT", "values/instance/attributes/late-key", "x");
    let start = std::time::Instant::now();
    common::eventually("the new key in ls after the ttl", common::DEADLINE, || {
        names(&mount).contains(&"late-key".to_string()).then_some(())
    });
    assert!(start.elapsed() < Duration::from_secs(5), "took {:?}", start.elapsed());
}

#[test]
fn a_refreshed_token_reaches_the_next_open_before_the_old_one_would_run_out() {
    // The emulator hands out a new token once 12 s are left; the daemon refreshes at 11 s left
    // and gets it. The old `access_token` name would stay current until 5 s were left: seeing
    // the new one while the old still has well over that is the kernel told to forget it.
    let emu = Emulator::start(&["--token-lifetime", "20", "--cache-window", "12"]);
    for read_path in ["auto", "open"] {
        let options = format!("refresh_margin=11,read_path={read_path}");
        let mount = Mount::start(&emu.addr, &["-o", &options]);
        let file = format!("{ACCOUNT}/access_token");
        let old = String::from_utf8(mount.read(&file).unwrap()).unwrap();
        let new = common::eventually("the refreshed token", common::DEADLINE, || {
            let now = String::from_utf8(mount.read(&file).unwrap()).unwrap();
            (now != old).then_some(now)
        });
        let old_left = emu.tokeninfo(&old)["expires_in"].as_i64().unwrap();
        assert!(
            old_left >= 7,
            "{read_path}: seen only as the old name ran out ({old_left} s left)"
        );
        assert_eq!(emu.tokeninfo(&new)["expired"], false);
    }
}
