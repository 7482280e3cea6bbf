//! Freshness and the read path, on real mounts of the real daemon against the real emulator:
//! the change watcher makes changes visible within about a second even at `ttl=3600`, every
//! read is whole under change, an idle mount costs only the long-poll, and the watcher rides
//! out outages without a request storm.

mod common;

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{eventually, Emulator, Mount, DEADLINE};

const KEY: &str = "instance/attributes/team";
/// How long a change may take to show; the bench measures the real figure (well under 1 s).
const SOON: Duration = Duration::from_secs(10);

fn put(emu: &Emulator, path: &str, value: &[u8]) {
    let value = String::from_utf8(value.to_vec()).unwrap();
    let (status, body) = emu.control("PUT", &format!("values/{path}"), &value);
    assert_eq!(status, 200, "{body}");
}

fn warm_mount(emu: &Emulator) -> Mount {
    let mount = Mount::start(&emu.addr, &["-o", "ttl=3600"]);
    assert!(mount.read(KEY).is_ok(), "a first read starts the watcher");
    mount
}

/// Reads `path` until it holds `want`, then checks `stat` agrees.
fn wait_for(mount: &Mount, path: &str, want: &[u8]) {
    eventually(&format!("{path} to change"), SOON, || {
        (mount.read(path).ok()? == want).then_some(())
    });
    assert_eq!(std::fs::metadata(mount.path(path)).unwrap().len(), want.len() as u64);
}

#[test]
fn a_change_is_seen_whole_and_with_its_size_at_ttl_3600() {
    let emu = Emulator::start(&[]);
    let mount = warm_mount(&emu);
    let big = vec![b'x'; 5000];
    let cases: [&[u8]; 5] = [b"growing-value", b"grown", b"GROWN", &big, b"small-again"];
    for value in cases {
        put(&emu, KEY, value);
        wait_for(&mount, KEY, value);
    }
    // Server-defined keys, camelCase in the dump, and a key inside an array of objects.
    for (path, value) in [
        ("instance/maintenance-event", "TERMINATE_ON_HOST_MAINTENANCE"),
        ("instance/disks/0/device-name", "renamed-disk"),
        ("instance/network-interfaces/0/access-configs/0/external-ip", "203.0.113.9"),
    ] {
        assert!(mount.read(path).is_ok());
        put(&emu, path, value.as_bytes());
        wait_for(&mount, path, value.as_bytes());
    }
}

/// Version `i`, `len` bytes: a header naming both, then one letter repeated. A cut or mixed
/// read breaks one of the three.
fn version(i: usize, len: usize) -> Vec<u8> {
    let mut v = format!("{i}:{len}:").into_bytes();
    v.resize(len, b'a' + (i % 26) as u8);
    v
}

fn whole(bytes: &[u8]) -> bool {
    let text = String::from_utf8_lossy(bytes);
    let mut parts = text.splitn(3, ':');
    let (Some(i), Some(len), Some(body)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let (Ok(i), Ok(len)) = (i.parse::<usize>(), len.parse::<usize>()) else {
        return false;
    };
    len == bytes.len() && body.bytes().all(|b| b == b'a' + (i % 26) as u8)
}

#[test]
fn readers_never_see_a_cut_or_mixed_value_while_it_cycles_sizes() {
    let emu = Emulator::start(&[]);
    put(&emu, KEY, &version(0, 100));
    let mount = warm_mount(&emu);
    let sizes = [100, 4095, 4096, 4097, 9000, 20, 8192, 4096];
    let stop = Arc::new(AtomicBool::new(false));
    let (reads, bad) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let readers: Vec<_> = (0..3)
        .map(|n| {
            let (mount, stop, reads, bad) =
                (mount.share(), stop.clone(), reads.clone(), bad.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let bytes = if n == 0 {
                        // What Node's readFileSync does: fstat, then exactly st_size bytes.
                        let mut file = File::open(mount.path(KEY)).unwrap();
                        let size = file.metadata().unwrap().len() as usize;
                        let mut buf = vec![0; size];
                        file.read_exact(&mut buf).unwrap();
                        buf
                    } else {
                        mount.read(KEY).unwrap()
                    };
                    reads.fetch_add(1, Ordering::Relaxed);
                    if !whole(&bytes) {
                        bad.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    let mut last = Vec::new();
    for (i, len) in sizes.iter().cycle().take(24).enumerate() {
        last = version(i + 1, *len);
        put(&emu, KEY, &last);
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_for(&mount, KEY, &last);
    stop.store(true, Ordering::Relaxed);
    for reader in readers {
        reader.join().unwrap();
    }
    let reads = reads.load(Ordering::Relaxed);
    assert!(reads > 50, "only {reads} reads");
    assert_eq!(bad.load(Ordering::Relaxed), 0, "cut or mixed values in {reads} reads");
}

#[test]
fn an_open_file_keeps_its_version_through_a_change() {
    let emu = Emulator::start(&[]);
    let mount = warm_mount(&emu);
    let old = mount.read(KEY).unwrap();
    let mut file = File::open(mount.path(KEY)).unwrap();
    let mut chunked = File::open(mount.path(KEY)).unwrap();
    let mut head = [0; 3];
    chunked.read_exact(&mut head).unwrap();
    let new = b"a value much longer than the one the file was opened with".to_vec();
    put(&emu, KEY, &new);
    wait_for(&mount, KEY, &new);
    // The kernel sends no file handle with fstat: the open file's inode has to answer.
    let size = file.metadata().unwrap().len() as usize;
    assert_eq!(size, old.len());
    let mut buf = vec![0; size];
    file.read_exact(&mut buf).unwrap();
    assert_eq!(buf, old);
    // Reads before and after the change, through one handle: one version.
    let mut rest = Vec::new();
    chunked.read_to_end(&mut rest).unwrap();
    assert_eq!([&head[..], &rest].concat(), old);
}

#[test]
fn added_and_removed_keys_appear_and_disappear_in_ls() {
    let emu = Emulator::start(&[]);
    let mount = warm_mount(&emu);
    let ls = |dir: &str| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(mount.path(dir))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    };
    let before = ls("instance/attributes");
    assert!(!before.contains(&"brand-new".to_string()));
    assert_eq!(
        mount.read("instance/attributes/brand-new").unwrap_err().kind(),
        std::io::ErrorKind::NotFound
    );
    put(&emu, "instance/attributes/brand-new", b"hello");
    eventually("the new key in ls", SOON, || {
        ls("instance/attributes").contains(&"brand-new".into()).then_some(())
    });
    assert_eq!(mount.read("instance/attributes/brand-new").unwrap(), b"hello");
    let (status, _) = emu.control("DELETE", "values/instance/attributes/team", "");
    assert_eq!(status, 200);
    eventually("the removed key to leave ls", SOON, || {
        (!ls("instance/attributes").contains(&"team".into())).then_some(())
    });
    assert_eq!(mount.read(KEY).unwrap_err().kind(), std::io::ErrorKind::NotFound);
}

/// Requests the emulator saw, by path, minus the watcher's long-poll on the root.
fn others(emu: &Emulator) -> Vec<(String, u64)> {
    let (_, body) = emu.control("GET", "counters", "");
    let counters: serde_json::Value = serde_json::from_str(&body).unwrap();
    counters
        .as_object()
        .unwrap()
        .iter()
        .filter(|(path, _)| *path != "/computeMetadata/v1/")
        .map(|(path, n)| (path.clone(), n.as_u64().unwrap()))
        .collect()
}

#[test]
fn an_idle_mount_sends_only_the_long_poll() {
    let emu = Emulator::start(&[]);
    // ttl=1: whatever a TTL would refetch, it would within the second we watch.
    let mount = Mount::start(&emu.addr, &["-o", "ttl=1"]);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(emu.total_count(), 0, "nothing read, nothing asked (not even the watcher)");
    for path in [KEY, "project/project-id", "instance/service-accounts/default/token"] {
        mount.read(path).unwrap();
    }
    // The first dump, then the long-poll hangs.
    eventually("the watcher to start", DEADLINE, || (emu.count("") >= 2).then_some(()));
    emu.control("DELETE", "counters", "");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(others(&emu), [], "an idle mount refetched something");
    assert!(emu.count("") <= 1, "{} watcher requests while nothing changed", emu.count(""));
}

#[test]
fn the_watcher_survives_a_restart_and_a_5xx_burst_without_a_storm() {
    let mut emu = Emulator::start_restartable(&[]);
    let mount = warm_mount(&emu);
    eventually("the watcher to start", DEADLINE, || (emu.count("") >= 2).then_some(()));
    emu.stop();
    std::thread::sleep(Duration::from_secs(2));
    let emu = emu.restart(&[]);
    put(&emu, KEY, b"after-restart");
    wait_for(&mount, KEY, b"after-restart");
    assert!(emu.count("") <= 4, "{} watcher requests since the restart", emu.count(""));

    // A burst of 503s on every path: the watcher backs off, then carries on.
    let fault = r#"{"prefix":"/computeMetadata/v1/","status":503,"count":4}"#;
    assert_eq!(emu.control("POST", "faults", fault).0, 200);
    emu.control("DELETE", "counters", "");
    put(&emu, KEY, b"during-the-burst");
    let start = Instant::now();
    eventually("the burst to be used up", DEADLINE, || {
        (emu.control("GET", "faults", "").1 == "[]").then_some(())
    });
    put(&emu, KEY, b"after-the-burst");
    wait_for(&mount, KEY, b"after-the-burst");
    let polls = emu.count("");
    assert!(polls <= 10, "{polls} watcher requests in {:?}", start.elapsed());
}

#[test]
fn mtime_moves_when_the_bytes_change_even_at_the_same_size() {
    let emu = Emulator::start(&[]);
    let mount = warm_mount(&emu);
    let before = std::fs::metadata(mount.path(KEY)).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let mut same_size = mount.read(KEY).unwrap();
    same_size[0] ^= 0x20;
    put(&emu, KEY, &same_size);
    wait_for(&mount, KEY, &same_size);
    let after = std::fs::metadata(mount.path(KEY)).unwrap();
    assert!(after.mtime_nsec() != before.mtime_nsec() || after.mtime() > before.mtime());
    assert!(after.modified().unwrap() > before.modified().unwrap());
    assert_eq!(after.ctime(), after.mtime());
}

fn mapped(path: &std::path::Path) -> Vec<u8> {
    use std::os::fd::AsRawFd;
    let file = File::open(path).unwrap();
    let len = file.metadata().unwrap().len() as usize;
    // SAFETY: a shared read-only mapping of a file we hold open, read before it is unmapped.
    unsafe {
        let addr = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        );
        assert_ne!(
            addr,
            libc::MAP_FAILED,
            "mmap {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
        let bytes = std::slice::from_raw_parts(addr as *const u8, len).to_vec();
        libc::munmap(addr, len);
        bytes
    }
}

#[test]
fn mmap_works_on_values_and_token_files() {
    let emu = Emulator::start(&[]);
    let mount = warm_mount(&emu);
    assert_eq!(mapped(&mount.path(KEY)), mount.read(KEY).unwrap());
    for token in ["token", "access_token"] {
        let path = mount.path(&format!("instance/service-accounts/default/{token}"));
        let bytes = mapped(&path);
        assert!(!bytes.is_empty() && bytes.iter().all(|&b| b != 0), "{token}");
    }
}

/// A real VM's dump (reference/metadata-api.md §3.3, 2023), with the keys later VMs add.
const REAL_VM: &str = r#"{"instance":{"attributes":{"enable-oslogin":"TRUE","sshKeys":"a"},"cpuPlatform":"Intel Broadwell","description":"","disks":[{"deviceName":"vm0","index":0,"interface":"SCSI","mode":"READ_WRITE","type":"PERSISTENT-BALANCED"}],"guestAttributes":{},"hostname":"vm0.c.acme.internal","id":5737554347302044216,"image":"projects/debian-cloud/global/images/debian-11","legacyEndpointAccess":{"0.1":0,"v1beta1":0},"licenses":[{"id":"3853522013536123851"}],"machineType":"projects/523926462582/machineTypes/e2-medium","maintenanceEvent":"NONE","name":"vm0","networkInterfaces":[{"accessConfigs":[{"externalIp":"33.162.212.82","type":"ONE_TO_ONE_NAT"}],"dnsServers":["169.254.169.254"],"forwardedIps":[],"gateway":"10.138.0.1","ip":"10.138.0.7","ipAliases":[],"mac":"42:01:0a:9a:0e:27","mtu":1460,"network":"projects/523926462582/networks/default","subnetmask":"255.255.240.0","targetInstanceIps":[]}],"preempted":"FALSE","remainingCpuTime":-1,"scheduling":{"automaticRestart":"TRUE","onHostMaintenance":"MIGRATE","preemptible":"FALSE"},"serviceAccounts":{"523926462582-compute@developer.gserviceaccount.com":{"aliases":["default"],"email":"523926462582-compute@developer.gserviceaccount.com","scopes":["https://www.googleapis.com/auth/logging.write"]},"default":{"aliases":["default"],"email":"523926462582-compute@developer.gserviceaccount.com","scopes":["https://www.googleapis.com/auth/logging.write"]}},"tags":[],"virtualClock":{"driftToken":"0"},"zone":"projects/523926462582/zones/us-west1-b"},"oslogin":{"authenticate":{"sessions":{}}},"project":{"attributes":{"serial-port-enable":"1","ssh-keys":"x"},"numericProjectId":523926462582,"projectId":"acme-eng"}}"#;

#[test]
fn every_name_the_dump_spells_maps_to_a_path_the_server_serves() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("vm.json");
    std::fs::write(&real, REAL_VM).unwrap();
    for fixture in [None, Some(real.to_str().unwrap())] {
        let emu = match fixture {
            None => Emulator::start(&[]),
            Some(file) => Emulator::start(&["--fixture", file]),
        };
        let (status, body) = emu.get("?recursive=true&alt=json");
        assert_eq!(status, 200);
        let dump: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let paths = metadatafs::upstream::dump::paths(&dump);
        assert!(paths.len() > 40, "{}", paths.len());
        for (path, certain) in paths {
            assert!(certain, "{path}: no certain name");
            let file = emu.get(&path).0;
            let dir = emu.get(&format!("{path}/")).0;
            // 403: the path is there, its endpoint disabled (guest attributes).
            let served = [file, dir].iter().any(|s| *s == 200 || *s == 403);
            assert!(served, "{path}: {file} as a value, {dir} as a directory");
        }
    }
}

#[test]
fn a_cold_read_costs_its_listings_and_one_get() {
    let emu = Emulator::start(&[]);
    let mount = Mount::start(&emu.addr, &["-o", "ttl=3600"]);
    let want = emu.get(KEY).1;
    emu.control("DELETE", "counters", "");
    assert_eq!(mount.read(KEY).unwrap(), want);
    for path in ["instance/", "instance/attributes/", KEY] {
        assert_eq!(emu.count(path), 1, "{path}");
    }
    // The root was listed once; the watcher's dump is the same path.
    eventually("the watcher's dump", DEADLINE, || (emu.count("") >= 2).then_some(()));
}

#[test]
fn ls_l_of_a_cold_directory_fetches_its_values_together() {
    let emu = Emulator::start(&[]);
    let keys: Vec<String> = (0..8).map(|i| format!("instance/attributes/key-{i}")).collect();
    for key in &keys {
        put(&emu, key, b"value");
    }
    let mount = Mount::start(&emu.addr, &["-o", "ttl=3600"]);
    mount.read("instance/attributes/team").unwrap();
    let slow = r#"{"prefix":"/computeMetadata/v1/instance/attributes/key-","latency_ms":400}"#;
    assert_eq!(emu.control("POST", "faults", slow).0, 200);
    let start = Instant::now();
    for entry in std::fs::read_dir(mount.path("instance/attributes")).unwrap() {
        let entry = entry.unwrap();
        let size = entry.metadata().unwrap().len();
        if entry.file_name().to_string_lossy().starts_with("key-") {
            assert_eq!(size, 5);
        }
    }
    let took = start.elapsed();
    // One after the other, 8 values would take 3.2 s; together, about one latency.
    assert!(took < Duration::from_millis(2400), "ls -l took {took:?}");
    for key in &keys {
        assert_eq!(emu.count(key), 1, "{key}");
    }
}

/// A token JSON read whole: it parses, and its token is whole.
fn token_whole(json: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(json).ok()?;
    let token = value["access_token"].as_str()?.to_string();
    let expires_in = value["expires_in"].as_u64()?;
    (bare_whole(token.as_bytes()) && (1..=3600).contains(&expires_in)).then_some(token)
}

/// `ya29.emulated.<who>.<128 characters>`.
fn bare_whole(token: &[u8]) -> bool {
    let token = String::from_utf8_lossy(token);
    let parts: Vec<&str> = token.split('.').collect();
    parts.len() == 4 && parts[0] == "ya29" && parts[3].len() == 128
}

#[test]
fn token_files_stay_whole_while_tokens_rotate() {
    // A new token every second, and the mount refreshes as soon as one is handed out.
    let emu = Emulator::start(&["--token-lifetime", "3600", "--cache-window", "3599"]);
    let mount = Mount::start(&emu.addr, &["-o", "ttl=3600,refresh_margin=3599"]);
    let token = "instance/service-accounts/default/token";
    let bare = "instance/service-accounts/default/access_token";
    let first = token_whole(&mount.read(token).unwrap()).expect("a whole token");
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..3)
        .map(|n| {
            let (mount, stop) = (mount.share(), stop.clone());
            std::thread::spawn(move || {
                let mut seen = std::collections::BTreeSet::new();
                let mut reads = 0;
                while !stop.load(Ordering::Relaxed) {
                    match n {
                        0 => seen.insert(token_whole(&mount.read(token).unwrap()).expect("whole")),
                        1 => {
                            let mut file = File::open(mount.path(token)).unwrap();
                            let size = file.metadata().unwrap().len() as usize;
                            let mut buf = vec![0; size];
                            file.read_exact(&mut buf).unwrap();
                            assert_eq!(file.read(&mut [0; 16]).unwrap(), 0, "more than st_size");
                            seen.insert(token_whole(&buf).expect("whole at st_size"))
                        }
                        _ => {
                            let bytes = mount.read(bare).unwrap();
                            assert!(bare_whole(&bytes), "access_token cut");
                            seen.insert(String::from_utf8(bytes).unwrap())
                        }
                    };
                    reads += 1;
                }
                (seen, reads)
            })
        })
        .collect();
    eventually("a new token", DEADLINE, || {
        let now = token_whole(&mount.read(token).unwrap()).unwrap();
        (now != first).then_some(())
    });
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    for reader in readers {
        let (seen, reads) = reader.join().expect("a reader failed");
        assert!(reads > 10 && !seen.is_empty(), "{reads} reads");
    }
}

/// Found by an adversarial pass: after the watcher had expired listings, the first read once
/// the server went away waited out the whole `timeout` before it was served what was cached.
#[test]
fn a_cached_read_does_not_wait_out_the_timeout_when_the_server_goes_away() {
    let mut emu = Emulator::start_restartable(&[]);
    let mount = Mount::start(&emu.addr, &["-o", "ttl=3600,timeout=10"]);
    let hostname = mount.read("instance/hostname").unwrap();
    // The watcher's first dump expires what was cached before it, and the kernel forgets the
    // names; a change, unread, moves the watcher on once more.
    emu.settle();
    put(&emu, "project/attributes/team", b"infra");
    eventually("the watcher to see the change", DEADLINE, || (emu.count("") >= 3).then_some(()));
    emu.settle();
    emu.stop();
    let start = Instant::now();
    assert_eq!(mount.read("instance/hostname").unwrap(), hostname);
    let took = start.elapsed();
    assert!(took < Duration::from_secs(4), "cached reads took {took:?} with the server gone");
}

/// The same when the directory's listing changed too: a reader queued behind the listing's
/// fetch (a GETATTR's refresh, or another reader's) waited out the whole `timeout`.
#[test]
fn a_read_queued_behind_a_slow_listing_fetch_does_not_wait_out_the_timeout() {
    let mut emu = Emulator::start_restartable(&[]);
    let mount = Mount::start(&emu.addr, &["-o", "ttl=3600,timeout=10"]);
    let (dir, key) = ("instance/attributes", "instance/attributes/team");
    put(&emu, key, b"old");
    wait_for(&mount, key, b"old");
    assert!(std::fs::read_dir(mount.path(dir)).unwrap().count() > 0);
    emu.settle();
    put(&emu, key, b"new");
    put(&emu, "instance/attributes/newkey", b"v");
    eventually("the watcher to see the changes", DEADLINE, || (emu.count("") >= 3).then_some(()));
    emu.settle();
    emu.stop();
    let readers: Vec<_> = (0..10)
        .map(|_| {
            let mount = mount.share();
            std::thread::spawn(move || {
                let start = Instant::now();
                let value = mount.read(key).unwrap();
                (value, start.elapsed())
            })
        })
        .collect();
    for reader in readers {
        let (value, took) = reader.join().unwrap();
        assert!(value == b"old" || value == b"new", "{value:?}");
        assert!(took < Duration::from_secs(4), "a read took {took:?} with the server gone");
    }
}
