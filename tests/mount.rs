//! Real FUSE mounts of the real daemon against the real emulator over loopback HTTP.

mod common;

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{as_nobody, eventually, Emulator, Mount, DEADLINE};

const TOKEN: &str = "instance/service-accounts/default/token";
const ACCESS_TOKEN: &str = "instance/service-accounts/default/access_token";

/// Files whose bytes this filesystem makes rather than mirrors.
fn dynamic(name: &str) -> bool {
    matches!(name, "token" | "access_token" | "authorization" | "identity")
}

fn walk(mount: &Mount, emu: &Emulator, dir: &str, files: &mut usize) {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(mount.path(dir)).unwrap() {
        let entry = entry.unwrap();
        let listed_ino = std::os::unix::fs::DirEntryExt::ino(&entry);
        let stat_ino =
            std::os::unix::fs::MetadataExt::ino(&entry.path().symlink_metadata().unwrap());
        assert_eq!(listed_ino, stat_ino, "ls -i and stat agree on {:?}", entry.path());
        names.push(entry.file_name().into_string().unwrap());
    }
    names.sort();
    let (status, listing) = emu.get(format!("{dir}/").trim_start_matches('/'));
    assert_eq!(status, 200, "listing {dir}/");
    let mut expected: Vec<String> = String::from_utf8(listing)
        .unwrap()
        .lines()
        .map(|l| l.trim_end_matches('/').to_string())
        .collect();
    if dir.is_empty() {
        expected.push("service-accounts".into());
        expected.push(".metadatafs".into());
    }
    for extra in ["access_token", "authorization"] {
        if names.contains(&extra.to_string()) {
            expected.push(extra.into());
        }
    }
    expected.sort();
    assert_eq!(names, expected, "listing of /{dir}");
    for name in names {
        let path = if dir.is_empty() { name.clone() } else { format!("{dir}/{name}") };
        let meta = std::fs::symlink_metadata(mount.path(&path)).unwrap();
        if meta.is_symlink() || path == ".metadatafs" {
            continue;
        }
        if meta.is_dir() {
            walk(mount, emu, &path, files);
        } else if !dynamic(&name) {
            let (status, body) = emu.get(&path);
            let read = mount.read(&path);
            if status == 200 {
                assert_eq!(read.unwrap(), body, "{path}");
                assert_eq!(meta.len(), body.len() as u64, "stat size of {path}");
                *files += 1;
            } else {
                assert!(read.is_err(), "{path}: the MDS says {status}, the mount served bytes");
            }
        }
    }
}

#[test]
fn every_leaf_and_listing_of_the_builtin_fixture_matches_the_emulator() {
    let emu = Emulator::start(&[]);
    let mount = Mount::start(&emu.addr, &[]);
    let mut files = 0;
    walk(&mount, &emu, "", &mut files);
    assert!(files > 30, "only {files} files compared");
    let link = std::fs::read_link(mount.path("service-accounts")).unwrap();
    assert_eq!(link, Path::new("instance/service-accounts"));
    let email = mount.read("service-accounts/default/email").unwrap();
    assert_eq!(email, emu.get("instance/service-accounts/default/email").1);
}

#[test]
fn sizes_match_bytes_read_with_tiny_and_huge_buffers() {
    let emu = Emulator::start(&[]);
    let mount = Mount::start(&emu.addr, &[]);
    for path in ["project/project-id", "instance/attributes/startup-script", "instance/id", TOKEN] {
        let size = std::fs::metadata(mount.path(path)).unwrap().len() as usize;
        let mut tiny = Vec::new();
        let mut file = File::open(mount.path(path)).unwrap();
        let mut byte = [0u8; 1];
        while file.read(&mut byte).unwrap() == 1 {
            tiny.push(byte[0]);
        }
        let mut huge = vec![0u8; 1 << 20];
        let n = File::open(mount.path(path)).unwrap().read(&mut huge).unwrap();
        assert_eq!(tiny.len(), size, "{path}: 1-byte reads vs stat");
        assert_eq!(n, size, "{path}: one 1 MiB read vs stat");
        if path != TOKEN {
            assert_eq!(tiny, &huge[..n], "{path}");
        }
    }
}

#[test]
fn token_expires_in_counts_down_between_opens_and_access_token_is_bare() {
    let emu = Emulator::start(&[]);
    let mount = Mount::start(&emu.addr, &[]);
    let read_token = || -> serde_json::Value {
        serde_json::from_slice(&mount.read(TOKEN).unwrap()).expect("token JSON")
    };
    let first = read_token();
    assert_eq!(first["token_type"], "Bearer");
    let first_left = first["expires_in"].as_u64().unwrap();
    assert!(first_left > 3000, "{first}");
    let later = eventually("expires_in to count down", DEADLINE, || {
        let t = read_token();
        (t["expires_in"].as_u64().unwrap() < first_left).then_some(t)
    });
    assert_eq!(later["access_token"], first["access_token"]);
    let bare = String::from_utf8(mount.read(ACCESS_TOKEN).unwrap()).unwrap();
    assert_eq!(bare, first["access_token"].as_str().unwrap());
    assert_eq!(emu.tokeninfo(&bare)["expired"], false);
    assert_eq!(emu.count(TOKEN), 1, "one fetch served every read");
}

#[test]
fn a_token_close_to_expiry_is_replaced_before_it_expires() {
    // The emulator hands out a new token once 6 s are left of 8; we refresh at 5 s left.
    let emu = Emulator::start(&["--token-lifetime", "8", "--cache-window", "6"]);
    let mount = Mount::start(&emu.addr, &["-o", "refresh_margin=5"]);
    let first = String::from_utf8(mount.read(ACCESS_TOKEN).unwrap()).unwrap();
    let second = eventually("a refreshed token", DEADLINE, || {
        let now = String::from_utf8(mount.read(ACCESS_TOKEN).unwrap()).unwrap();
        let info = emu.tokeninfo(&now);
        assert_eq!(info["expired"], false, "the mount served an expired token");
        (now != first).then_some(now)
    });
    assert_eq!(emu.tokeninfo(&first)["expired"], false, "replaced only after it expired");
    assert_eq!(emu.tokeninfo(&second)["expired"], false);
}

#[test]
fn concurrent_cold_readers_cause_one_token_request() {
    let emu = Emulator::start(&[]);
    let mount = Mount::start(&emu.addr, &[]);
    // Warm the directories so only the token itself is cold.
    std::fs::read_dir(mount.path("instance/service-accounts/default")).unwrap().for_each(drop);
    emu.control("POST", "faults", r#"{"prefix":"/computeMetadata/v1/instance/service-accounts/default/token","latency_ms":300,"count":1}"#);
    // Half read `token`, half `access_token`: two names the kernel looks up in parallel, one
    // token behind both, so only our own single-flight keeps this to one request.
    let readers: Vec<_> = (0..32)
        .map(|i| {
            let path = mount.path(if i % 2 == 0 { TOKEN } else { ACCESS_TOKEN });
            std::thread::spawn(move || std::fs::read(path).unwrap())
        })
        .collect();
    let reads: Vec<Vec<u8>> = readers.into_iter().map(|r| r.join().unwrap()).collect();
    let bare = reads[1].clone();
    for (i, read) in reads.iter().enumerate() {
        if i % 2 == 0 {
            assert!(read.windows(bare.len()).any(|w| w == bare), "one token for both files");
        } else {
            assert_eq!(read, &bare);
        }
    }
    assert_eq!(emu.count(TOKEN), 1);
}

#[test]
fn warm_reads_send_no_requests() {
    let emu = Emulator::start(&[]);
    let mount = Mount::start(&emu.addr, &[]);
    mount.read("project/project-id").unwrap();
    mount.read(TOKEN).unwrap();
    emu.settle();
    // What was read before the watcher's first dump is read again once (service/watch.rs).
    mount.read("project/project-id").unwrap();
    let before = emu.total_count();
    for _ in 0..200 {
        mount.read("project/project-id").unwrap();
        mount.read(TOKEN).unwrap();
    }
    assert_eq!(emu.total_count(), before);
}

#[test]
fn an_mds_outage_fails_cold_reads_within_timeout_serves_cached_values_and_recovers() {
    let mut emu = Emulator::start_restartable(&[]);
    let addr = emu.addr.clone();
    // ttl=0: every read asks the MDS, so the cached value is served only because of the outage.
    let mount = Mount::start(&addr, &["-o", "ttl=0,timeout=2"]);
    let project = mount.read("project/project-id").unwrap();
    std::fs::read_dir(mount.path("instance")).unwrap().for_each(drop);
    emu.stop();
    assert_eq!(mount.read("project/project-id").unwrap(), project, "last good value");
    let start = Instant::now();
    // Five cold components, one timeout: not one per component.
    let err = mount.read("instance/network-interfaces/0/access-configs/0/external-ip").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert!(start.elapsed() < Duration::from_secs(4), "took {:?}", start.elapsed());
    let err = mount.read("instance/hostname").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    let _back = emu.restart(&[]);
    let hostname =
        eventually("reads to work again", DEADLINE, || mount.read("instance/hostname").ok());
    assert!(!hostname.is_empty());
}

#[test]
fn bursts_of_5xx_and_429_are_ridden_out() {
    let emu = Emulator::start(&[]);
    let mount = Mount::start(&emu.addr, &[]);
    // The listing, cached by a lookup (a listing would prefetch the values this test faults).
    std::fs::metadata(mount.path("instance/id")).unwrap();
    for status in [503, 500, 429] {
        let path =
            format!("/computeMetadata/v1/instance/{}", if status == 429 { "zone" } else { "name" });
        let fault = format!(r#"{{"prefix":"{path}","status":{status},"count":2}}"#);
        emu.control("POST", "faults", &fault);
        let file = path.trim_start_matches("/computeMetadata/v1/");
        if file == "instance/name" && status == 500 {
            continue; // already cached by the 503 round
        }
        let value = mount.read(file).unwrap();
        assert_eq!(value, emu.get(file).1, "{file} after {status}s");
    }
}

#[test]
fn a_response_without_metadata_flavor_is_refused() {
    let emu = Emulator::start(&[]);
    let mount = Mount::start(&emu.addr, &[]);
    std::fs::read_dir(mount.path("project")).unwrap().for_each(drop);
    emu.control(
        "POST",
        "faults",
        r#"{"prefix":"/computeMetadata/v1/project/project-id","no_flavor":true}"#,
    );
    let err = mount.read("project/project-id").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO));
    assert!(mount.log_text().contains("Metadata-Flavor"), "logged as a misconfigured endpoint");
}

#[test]
fn secrets_are_closed_to_other_users_who_can_still_read_the_rest() {
    let emu = Emulator::start(&[]);
    let mount = Mount::start(&emu.addr, &["-o", "allow_other"]);
    let token = mount.path(TOKEN);
    assert_eq!(std::fs::metadata(&token).unwrap().permissions().mode() & 0o777, 0o400);
    let (ok, stderr) = as_nobody("/bin/cat", &[&token]);
    assert!(!ok && stderr.contains("Permission denied"), "{stderr}");
    let (ok, stderr) = as_nobody("/bin/cat", &[&mount.path("project/project-id")]);
    assert!(ok, "{stderr}");
    let (ok, _) = as_nobody("/bin/cat", &[&mount.path("instance/attributes/startup-script")]);
    assert!(!ok);
}

#[test]
fn a_secret_group_may_read_secrets() {
    let emu = Emulator::start(&[]);
    let mount = Mount::start(&emu.addr, &["-o", "allow_other,secret_group=65534"]);
    let token = mount.path(TOKEN);
    let meta = std::fs::metadata(&token).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o440);
    assert_eq!(std::os::unix::fs::MetadataExt::gid(&meta), 65534);
    let (ok, stderr) = as_nobody("/bin/cat", &[&token]);
    assert!(ok, "{stderr}");
}

#[test]
fn sigterm_and_sighup_unmount_and_exit_zero() {
    let emu = Emulator::start(&[]);
    let mut mount = Mount::start(&emu.addr, &[]);
    for signal in [libc::SIGTERM, libc::SIGHUP] {
        mount.read("project/project-id").unwrap();
        let status = mount.signal(signal);
        assert!(status.success(), "signal {signal}: {status}");
        assert!(!mount.is_mounted(), "signal {signal}");
        if signal == libc::SIGTERM {
            mount.spawn(&["--endpoint", &emu.addr], &[], &[]);
        }
    }
}

#[test]
fn a_busy_mount_is_detached_on_sigterm() {
    let emu = Emulator::start(&[]);
    let mut mount = Mount::start(&emu.addr, &[]);
    let busy = File::open(mount.path("project/project-id")).unwrap();
    let status = mount.signal(libc::SIGINT);
    assert!(status.success(), "{status}");
    assert!(!mount.is_mounted());
    drop(busy);
}

#[test]
fn a_mountpoint_left_by_kill_9_is_reused() {
    let emu = Emulator::start(&[]);
    let mut first = Mount::start(&emu.addr, &[]);
    // Directories listed more than once: on the no-open path the kernel then opens them
    // without asking the daemon, so only a request that always reaches it finds it gone.
    for dir in ["", "instance", "project", "", "instance", "project"] {
        assert!(std::fs::read_dir(first.path(dir)).unwrap().count() > 0);
    }
    first.signal(libc::SIGKILL);
    assert!(!common::is_live_fuse(&first.mountpoint), "a dead mount");
    first.spawn(&["--endpoint", &emu.addr], &[], &[]);
    assert_eq!(first.read("project/project-id").unwrap(), emu.get("project/project-id").1);
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    let here = first.mountpoint.to_string_lossy().into_owned();
    let stacked = mounts.lines().filter(|l| l.split_whitespace().nth(1) == Some(&here)).count();
    assert_eq!(stacked, 1, "the dead mount was detached, not mounted over");
    assert!(first.signal(libc::SIGTERM).success());
}

#[test]
fn background_mode_returns_once_the_mount_is_live() {
    let emu = Emulator::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let guard = Unmount(dir.path().to_path_buf());
    // `output()` reads stdout and stderr to their end: it returns only if the daemon left
    // behind holds neither (as `out=$(metadatafs /meta 2>&1)` needs).
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_metadatafs"));
    command.args(["--endpoint", &emu.addr]).arg(dir.path());
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || done.send(command.output().unwrap()));
    let output = finished.recv_timeout(DEADLINE).expect("metadatafs returned and let go of stdio");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    // No polling: the mount must already answer.
    let project = std::fs::read(dir.path().join("project/project-id")).unwrap();
    assert_eq!(project, emu.get("project/project-id").1);
    drop(guard);
}

#[test]
fn background_mode_reports_a_failed_mount() {
    let dir = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_metadatafs"))
        .args(["--emulate=/nonexistent/fixture.json"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("fixture"), "{stderr}");
    assert!(!common::is_mounted(dir.path()));
}

#[test]
fn the_mds_down_at_mount_time_still_mounts() {
    let mut down = Emulator::start_restartable(&[]);
    down.stop();
    let mount = Mount::start(&down.addr, &["-o", "timeout=1"]);
    let err = mount.read("project/project-id").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO));
    let emu = down.restart(&[]);
    let project = eventually("reads to work", DEADLINE, || mount.read("project/project-id").ok());
    assert_eq!(project, emu.get("project/project-id").1);
}

#[test]
fn a_trace_log_of_a_run_never_contains_token_bytes() {
    let mut mount = Mount::start_with(&["--emulate"], &[], &[("RUST_LOG", "trace")]);
    let token = mount.read(ACCESS_TOKEN).unwrap();
    let json = mount.read(TOKEN).unwrap();
    assert!(json.windows(token.len()).any(|w| w == token));
    mount.read("project/project-id").unwrap();
    mount.signal(libc::SIGTERM);
    let log = mount.log_text();
    assert!(log.contains("project-id"), "trace logging was on: {log}");
    let token = String::from_utf8(token).unwrap();
    assert!(!log.contains(&token), "the token leaked into the log");
    // Nor any prefix long enough to be useful.
    assert!(!log.contains(&token[..token.len().min(24)]), "a token prefix leaked into the log");
}

struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        if common::is_mounted(&self.0) {
            common::detach(&self.0);
        }
    }
}

#[test]
fn a_slow_mds_request_does_not_stall_reads_answered_from_cache() {
    let emu = Emulator::start(&[]);
    let mount = Mount::start(&emu.addr, &[]);
    let warm = mount.read("instance/id").unwrap();
    std::fs::read_dir(mount.path("project")).unwrap().for_each(drop);
    emu.control(
        "POST",
        "faults",
        r#"{"prefix":"/computeMetadata/v1/project/project-id","latency_ms":3000}"#,
    );
    let slow_path = mount.path("project/project-id");
    let slow = std::thread::spawn(move || std::fs::read(slow_path).unwrap());
    eventually("the slow request to reach the MDS", DEADLINE, || {
        (emu.count("project/project-id") > 0).then_some(())
    });
    let start = Instant::now();
    for _ in 0..20 {
        assert_eq!(mount.read("instance/id").unwrap(), warm);
        // The slow name's own directory: answered from its cached listing.
        assert!(std::fs::metadata(mount.path("project/no-such-key")).is_err());
    }
    let waited = start.elapsed();
    assert!(waited < Duration::from_secs(1), "cached lookups waited {waited:?}");
    assert!(!slow.is_finished(), "the slow read should still be waiting");
    assert_eq!(slow.join().unwrap(), emu.get("project/project-id").1);
}

#[test]
fn the_mount8_form_takes_the_endpoint_as_source_and_options_after_the_mountpoint() {
    let emu = Emulator::start(&[]);
    let mount = Mount::start_with(&[&emu.addr], &["-o", "rw,nosuid,nodev,_netdev,ttl=30"], &[]);
    assert_eq!(mount.read("project/project-id").unwrap(), emu.get("project/project-id").1);
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    let here = mount.mountpoint.to_string_lossy().into_owned();
    let line = mounts.lines().find(|l| l.split_whitespace().nth(1) == Some(&here)).unwrap();
    assert!(line.starts_with(&format!("{} ", emu.addr)), "source shown in mounts: {line}");
    assert!(line.contains("fuse.metadatafs"), "{line}");
}

#[test]
fn systemd_hears_ready_once_live_and_stopping_on_stop() {
    let emu = Emulator::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(DEADLINE)).unwrap();
    let notify = socket_path.to_str().unwrap();
    let mut mount =
        Mount::start_with(&["--endpoint", &emu.addr], &[], &[("NOTIFY_SOCKET", notify)]);
    let mut buf = [0u8; 64];
    let n = socket.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"READY=1");
    assert!(common::is_live_fuse(&mount.mountpoint), "READY=1 came after the mount was live");
    assert!(mount.signal(libc::SIGTERM).success());
    let n = socket.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"STOPPING=1");
}

#[test]
fn a_hundred_cold_readers_at_once_are_served_together_not_in_turn() {
    let emu = Emulator::start(&[]);
    let mount = Mount::start(&emu.addr, &[]);
    let leaves = [
        "instance/id",
        "instance/name",
        "instance/zone",
        "instance/hostname",
        "instance/machine-type",
        "instance/cpu-platform",
        "instance/image",
        "instance/tags",
        "project/project-id",
        "project/numeric-project-id",
    ];
    let expected: Vec<Vec<u8>> = leaves.iter().map(|leaf| emu.get(leaf).1).collect();
    emu.control("DELETE", "counters", "");
    // Every MDS answer takes 300 ms: a hundred reads one after another would take 30 s.
    emu.control("POST", "faults", r#"{"prefix":"/computeMetadata/v1/","latency_ms":300}"#);
    let start = Instant::now();
    let readers: Vec<_> = (0..100)
        .map(|i| {
            let path = mount.path(leaves[i % leaves.len()]);
            std::thread::spawn(move || std::fs::read(path))
        })
        .collect();
    let results: Vec<_> = readers.into_iter().map(|r| r.join().unwrap().unwrap()).collect();
    let took = start.elapsed();
    for (i, bytes) in results.iter().enumerate() {
        assert_eq!(bytes, &expected[i % leaves.len()], "{}", leaves[i % leaves.len()]);
    }
    assert!(took < Duration::from_secs(10), "a hundred readers took {took:?}");
    // One request per leaf and per directory, however many readers.
    assert!(emu.total_count() <= (leaves.len() + 3 + 100) as u64);
    for leaf in leaves {
        assert_eq!(emu.count(leaf), 1, "{leaf} was fetched once");
    }
}
