//! Hardening: what a hostile local user or an operator's bad day did to the daemon (issue 9),
//! each on a real mount of the real binary against the real emulator.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{eventually, Emulator, Mount, DEADLINE};

const TOKEN: &str = "instance/service-accounts/default/token";
const ACCESS_TOKEN: &str = "instance/service-accounts/default/access_token";

/// The daemon's resident memory, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// `bash -c script` as user `nobody` (uid/gid 65534), stdin and stdout piped.
fn bash_as_nobody(script: &str) -> std::process::Child {
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        Command::new("bash")
            .args(["-c", script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .pre_exec(common::become_nobody)
            .spawn()
            .unwrap()
    }
}

/// The built-in fixture with `n` more instance attributes.
fn fixture_with_attributes(dir: &Path, n: usize) -> std::path::PathBuf {
    let text = include_str!("../src/emulator/builtin.json");
    let mut fixture: serde_json::Value = serde_json::from_str(text).unwrap();
    let attributes = fixture["instance"]["attributes"].as_object_mut().unwrap();
    for i in 0..n {
        attributes.insert(format!("key-{i:05}"), serde_json::Value::from(format!("value {i}")));
    }
    let path = dir.join("fixture.json");
    std::fs::write(&path, fixture.to_string()).unwrap();
    path
}

/// Item 1: each `opendir` copied the whole listing into its handle, so 1000 handles of a
/// 20,000-key directory took the daemon from 9 MiB to 1.6 GiB (about 1.3 MiB a handle: the
/// listing as `DirEntry`s). Handles now share the cached listing.
#[test]
fn a_thousand_directory_handles_of_a_huge_listing_cost_a_few_mib() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = fixture_with_attributes(dir.path(), 20_000);
    let emu = Emulator::start(&["--fixture", fixture.to_str().unwrap()]);
    let mount = Mount::start(&emu.addr, &["-o", "allow_other"]);
    let attributes = mount.path("instance/attributes");
    // Warm: the listing is in the cache before the baseline.
    let listed = std::fs::read_dir(&attributes).unwrap().count();
    assert!(listed >= 20_000, "{listed}");
    let before = rss_kib(mount.pid());
    let script = format!(
        "ulimit -n 2048 || exit 1; for i in $(seq 1000); do exec {{fd}}<'{}' || exit 1; done; \
         ls -f /proc/self/fd/{{3..5}} >/dev/null; echo ready; read _",
        attributes.display()
    );
    let mut holder = bash_as_nobody(&script);
    let mut line = String::new();
    BufReader::new(holder.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready", "nobody could not open 1000 handles");
    // Each of these ran through opendir; also read through a handle, as `ls` does.
    let (ok, _) = common::as_nobody("ls", &[&attributes]);
    assert!(ok);
    let during = rss_kib(mount.pid());
    drop(holder.stdin.take());
    holder.wait().unwrap();
    let grown_mib = during.saturating_sub(before) / 1024;
    assert!(grown_mib < 8, "1000 handles grew the daemon by {grown_mib} MiB");
}

/// Item 4: a token request that timed out after connecting started the "unreachable server"
/// hold, and cold reads of healthy paths failed with EIO for 2 s without being sent.
#[test]
fn a_slow_token_path_does_not_fail_cold_reads_of_healthy_paths() {
    let emu = Emulator::start(&[]);
    let mount = Mount::start(&emu.addr, &["-o", "timeout=1"]);
    let fault = r#"{"prefix":"/computeMetadata/v1/instance/service-accounts/default/token","latency_ms":3000}"#;
    assert_eq!(emu.control("POST", "faults", fault).0, 200);
    let err = mount.read(ACCESS_TOKEN).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO));
    for path in ["project/project-id", "instance/zone", "project/attributes/ssh-keys"] {
        let expected = emu.get(path).1;
        assert_eq!(mount.read(path).expect(path), expected, "{path}");
    }
}

/// Item 5: 100 `stat`s by an unprivileged user of an oversized value, or of a path answered
/// without `Metadata-Flavor`, sent 100 requests. Permanent failures are now cached like 404s.
#[test]
fn permanent_failures_cost_one_request_however_often_a_user_stats() {
    let emu = Emulator::start(&[]);
    let big = "x".repeat(2000);
    assert_eq!(emu.control("PUT", "values/instance/attributes/big", &big).0, 200);
    let mount = Mount::start(&emu.addr, &["-o", "allow_other,max_value=1000"]);
    let fault = r#"{"prefix":"/computeMetadata/v1/instance/hostname","no_flavor":true}"#;
    assert_eq!(emu.control("POST", "faults", fault).0, 200);
    for (path, errno) in [("instance/attributes/big", "File too large"), ("instance/hostname", "")]
    {
        let full = mount.path(path);
        let script = format!(
            "for i in $(seq 100); do stat -c %s '{}' 2>&1; done | sort | uniq -c",
            full.display()
        );
        let output = bash_as_nobody(&script).wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(text.contains("100 "), "{path}: every stat failed the same way: {text}");
        assert!(text.contains(errno), "{path}: {text}");
        let sent = emu.count(path);
        assert!((1..=2).contains(&sent), "{path}: 100 stats sent {sent} requests");
    }
}

/// The last (top) line of /proc/self/mountinfo for `mountpoint`.
fn mountinfo_line(mountpoint: &Path) -> Option<String> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let here = mountpoint.to_string_lossy();
    let mut lines = mountinfo.lines().filter(|l| l.split_whitespace().nth(4) == Some(&*here));
    lines.next_back().map(String::from)
}

fn mount_options(mountpoint: &Path) -> Vec<String> {
    let line = mountinfo_line(mountpoint).expect("the mount in mountinfo");
    line.split_whitespace().nth(5).unwrap().split(',').map(String::from).collect()
}

fn shell_ok(command: &str, path: &Path) -> bool {
    Command::new("sh").args(["-c", command, "sh"]).arg(path).status().unwrap().success()
}

fn setxattr(path: &Path) -> std::io::Error {
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: valid NUL-terminated strings and a buffer with its length.
    let rc =
        unsafe { libc::setxattr(c_path.as_ptr(), c"user.x".as_ptr(), b"1".as_ptr().cast(), 1, 0) };
    assert_eq!(rc, -1, "setxattr succeeded");
    std::io::Error::last_os_error()
}

/// Item 7: without a write-through option the mount said `rw`, so `test -w` (even as root)
/// and Java's `Files.isWritable` said yes.
#[test]
fn the_mount_is_read_only_unless_a_write_through_option_is_on() {
    let emu = Emulator::start(&[]);
    let mount = Mount::start(&emu.addr, &[]);
    assert!(mount_options(&mount.mountpoint).contains(&"ro".to_string()));
    assert!(!shell_ok("test -w \"$1\"", &mount.path("project/project-id")));
    assert!(!shell_ok("test -w \"$1\"", &mount.mountpoint));
    assert_eq!(setxattr(&mount.path("project/project-id")).raw_os_error(), Some(libc::EROFS));

    let writable = Mount::start(&emu.addr, &["-o", "guest_attributes"]);
    assert!(mount_options(&writable.mountpoint).contains(&"rw".to_string()));
    let value = writable.path("project/project-id");
    assert_eq!(setxattr(&value).raw_os_error(), Some(libc::EROFS), "EROFS, not ENOSYS");
}

/// Item 8: a token body whose `access_token` held a space was served (an unquoted
/// `Bearer $(cat …)` splits), and a token with `expires_in` under 5 s was served.
#[test]
fn tokens_with_bad_characters_or_seconds_left_are_never_served() {
    let emu = Emulator::start(&[]);
    let mount = Mount::start(&emu.addr, &[]);
    let bad = r#"{"access_token":"ya29.with space","expires_in":3600,"token_type":"Bearer"}"#;
    let fault = serde_json::json!({
        "prefix": format!("/computeMetadata/v1/{TOKEN}"), "body": bad, "count": 1,
    });
    assert_eq!(emu.control("POST", "faults", &fault.to_string()).0, 200);
    let err = mount.read(ACCESS_TOKEN).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO));
    // Once the fault is spent and the brief hold has passed, the real token is served.
    let token = eventually("a good token", DEADLINE, || mount.read(ACCESS_TOKEN).ok());
    assert!(token.starts_with(b"ya29.emulated."), "{}", String::from_utf8_lossy(&token));

    let (_, listing) = emu.get("instance/service-accounts/");
    let listing = String::from_utf8(listing).unwrap();
    let email = listing.lines().find(|l| l.contains('@')).unwrap().trim_end_matches('/');
    let short = r#"{"access_token":"ya29.short","expires_in":3,"token_type":"Bearer"}"#;
    let path = format!("instance/service-accounts/{email}/token");
    let fault =
        serde_json::json!({ "prefix": format!("/computeMetadata/v1/{path}"), "body": short });
    assert_eq!(emu.control("POST", "faults", &fault.to_string()).0, 200);
    let err = mount.read(&path).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "a token with 3 s left was served");

    let log = mount.log_text();
    assert!(log.contains("misconfigured") && log.contains("RFC 6750"), "{log}");
    assert!(!log.contains("with space") && !log.contains("ya29.short"), "token bytes logged");
}

/// Unmounts (lazily) whatever the test mounted at a path, even when the test fails.
struct Detach(std::path::PathBuf);

impl Drop for Detach {
    fn drop(&mut self) {
        common::detach(&self.0);
    }
}

fn top_fstype(mountpoint: &Path) -> Option<String> {
    let line = mountinfo_line(mountpoint)?;
    let (_, after) = line.split_once(" - ").unwrap();
    after.split_whitespace().next().map(String::from)
}

/// Item 6: mounting twice on one directory stacked a second daemon silently.
#[test]
fn a_second_mount_on_a_live_mount_is_refused_and_the_first_keeps_serving() {
    let emu = Emulator::start(&[]);
    let mount = Mount::start(&emu.addr, &[]);
    std::fs::read_dir(&mount.mountpoint).unwrap().for_each(drop);
    // The last round with the first daemon stopped: refused, not a hang waiting on it.
    for (foreground, stopped) in [(false, false), (true, false), (true, true)] {
        if stopped {
            // SAFETY: signalling the test's own child; SIGCONT below.
            unsafe { libc::kill(mount.pid() as i32, libc::SIGSTOP) };
        }
        let mut command = Command::new(env!("CARGO_BIN_EXE_metadatafs"));
        if foreground {
            command.arg("-f");
        }
        let output = command
            .args(["--endpoint", &emu.addr])
            .arg(&mount.mountpoint)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        if stopped {
            // SAFETY: as above.
            unsafe { libc::kill(mount.pid() as i32, libc::SIGCONT) };
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "-f {foreground}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains("already a mount point"), "{stderr}");
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let here = mount.mountpoint.to_string_lossy();
    let stacked = mountinfo.lines().filter(|l| l.split_whitespace().nth(4) == Some(&*here)).count();
    assert_eq!(stacked, 1, "a second mount was stacked");
    assert_eq!(mount.read("project/project-id").unwrap(), emu.get("project/project-id").1);
}

/// Item 6: an exiting daemon unmounted by path whatever was on top, so one `umount` took down
/// two mounts. A daemon only ever unmounts its own mount.
#[test]
fn a_daemon_never_unmounts_a_mount_stacked_over_its_own() {
    let emu = Emulator::start(&[]);
    let mut mount = Mount::start(&emu.addr, &[]);
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "stacked"])
        .arg(&mount.mountpoint)
        .status()
        .unwrap();
    assert!(status.success());
    let tmpfs = Detach(mount.mountpoint.clone());
    std::fs::write(mount.path("marker"), b"still here").unwrap();
    assert!(mount.signal(libc::SIGTERM).success());
    assert_eq!(top_fstype(&mount.mountpoint).as_deref(), Some("tmpfs"), "tmpfs was unmounted");
    assert_eq!(mount.read("marker").unwrap(), b"still here");
    drop(tmpfs);
    // What is left below is our dead mount; `Mount`'s drop detaches it.
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Item 9: `secret_paths=service-accounts/**` matched nothing (paths were matched under
/// `instance/`), silently. Globs now match the path as the user wrote it, and a glob under a
/// directory the server does not have is warned about at mount time.
#[test]
fn secret_paths_match_the_path_the_user_wrote_or_are_warned_about() {
    let emu = Emulator::start(&[]);
    let mut mount = Mount::unstarted();
    let globs = [
        "service-accounts/*/email".to_string(),
        format!("{}/project/attributes/ssh-*", mount.mountpoint.display()),
        "/computeMetadata/v1/instance/zone".to_string(),
        "nosuch/dir/*".to_string(),
    ];
    let option = format!("allow_other,secret_paths={}", globs.join(":"));
    mount.spawn(&["--endpoint", &emu.addr], &["-o", &option], &[]);
    for secret in [
        "service-accounts/default/email",
        "instance/service-accounts/default/email",
        "project/attributes/ssh-keys",
        "instance/zone",
    ] {
        assert_eq!(mode(&mount.path(secret)), 0o400, "{secret}");
        let (readable, _) = common::as_nobody("cat", &[&mount.path(secret)]);
        assert!(!readable, "nobody read {secret}");
    }
    assert_eq!(mode(&mount.path("project/project-id")), 0o444);
    // The dump of a directory a glob reaches into holds the secret too, wildcard folders
    // included; a dump it cannot reach stays readable.
    for dump in ["service-accounts/default", "instance/service-accounts", "instance"] {
        let dump = mount.path(&format!("{dump}?recursive=true"));
        assert_eq!(mode(&dump), 0o400, "{}", dump.display());
        assert!(!common::as_nobody("cat", &[&dump]).0, "nobody read {}", dump.display());
    }
    let disks = mount.path("instance/disks?recursive=true");
    assert_eq!(mode(&disks), 0o444);
    assert!(common::as_nobody("cat", &[&disks]).0, "nobody may read the disks' dump");
    let warned = eventually("the warning", DEADLINE, || {
        let log = mount.log_text();
        log.lines().find(|l| l.contains("'nosuch/dir/*' matches nothing")).map(String::from)
    });
    assert!(warned.contains("WARN") && warned.contains("nosuch/dir/"), "{warned}");
    assert!(!mount.log_text().contains("'service-accounts/*/email' matches nothing"));
}

/// `metadatafs MOUNTPOINT` in the background (no `-f`), as a user runs it: (exit ok, stderr).
fn mount_in_background(
    emu: &Emulator,
    mountpoint: &Path,
    args: &[&str],
    syslog: &Path,
) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_metadatafs"))
        .args(["--endpoint", &emu.addr])
        .arg(mountpoint)
        .args(args)
        .env("METADATAFS_SYSLOG_SOCKET", syslog)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (output.status.success(), String::from_utf8_lossy(&output.stderr).into_owned())
}

fn fault(emu: &Emulator, spec: serde_json::Value) {
    assert_eq!(emu.control("POST", "faults", &spec.to_string()).0, 200);
}

/// Item 2: a daemon started without `-f` wrote its log to stderr, which is /dev/null; the
/// syslog the README promised was never set up.
#[test]
fn a_background_daemon_logs_to_syslog_with_each_records_severity() {
    let emu = Emulator::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("log");
    let syslog = std::os::unix::net::UnixDatagram::bind(&socket).unwrap();
    syslog.set_read_timeout(Some(DEADLINE)).unwrap();
    let mountpoint = dir.path().join("meta");
    std::fs::create_dir(&mountpoint).unwrap();
    let (ok, stderr) = mount_in_background(&emu, &mountpoint, &["-o", "timeout=1"], &socket);
    let _mounted = Detach(mountpoint.clone());
    assert!(ok, "{stderr}");
    assert!(stderr.is_empty(), "nothing to tell the caller: {stderr}");

    fault(
        &emu,
        serde_json::json!({"prefix": "/computeMetadata/v1/project/project-id", "status": 503}),
    );
    fault(
        &emu,
        serde_json::json!({"prefix": "/computeMetadata/v1/instance/zone", "no_flavor": true}),
    );
    for path in ["project/project-id", "instance/zone"] {
        let err = std::fs::read(mountpoint.join(path)).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EIO), "{path}");
    }
    let (mut warning, mut error) = (None, None);
    let mut buf = vec![0u8; 4096];
    while warning.is_none() || error.is_none() {
        let n = syslog.recv(&mut buf).expect("a log line on the syslog socket");
        let line = String::from_utf8_lossy(&buf[..n]).into_owned();
        if line.contains("project/project-id") && line.contains("HTTP 503") {
            warning = Some(line);
        } else if line.contains("instance/zone") && line.contains("Metadata-Flavor") {
            error = Some(line);
        }
    }
    let (warning, error) = (warning.unwrap(), error.unwrap());
    // daemon.warning = 3 * 8 + 4, daemon.err = 3 * 8 + 3; then `Mmm dd hh:mm:ss tag[pid]: `.
    assert!(warning.starts_with("<28>"), "{warning}");
    assert!(error.starts_with("<27>"), "{error}");
    let tag = &warning[4 + 16..];
    assert!(tag.starts_with("metadatafs[") && tag.contains("]: "), "{warning}");
}

/// Item 2: where there is no syslog socket the caller hears so before the daemon detaches, and
/// `-o log_file=PATH` keeps the log.
#[test]
fn without_syslog_the_caller_is_told_and_log_file_keeps_the_log() {
    let emu = Emulator::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-syslog-here");
    let (first, second) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir(&first).unwrap();
    std::fs::create_dir(&second).unwrap();
    let (ok, stderr) = mount_in_background(&emu, &first, &[], &missing);
    let _first = Detach(first.clone());
    assert!(ok, "{stderr}");
    assert!(stderr.contains("no syslog socket") && stderr.contains("log_file"), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");

    let log = dir.path().join("metadatafs.log");
    let option = format!("log_file={},timeout=1", log.display());
    let (ok, stderr) = mount_in_background(&emu, &second, &["-o", &option], &missing);
    let _second = Detach(second.clone());
    assert!(ok && stderr.is_empty(), "{stderr}");
    fault(&emu, serde_json::json!({"prefix": "/computeMetadata/v1/project/", "status": 503}));
    assert!(std::fs::read(second.join("project/project-id")).is_err());
    eventually("the warning in log_file", DEADLINE, || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.lines().any(|l| l.contains("WARN") && l.contains("HTTP 503")).then_some(())
    });
}

/// Item 2: `RUST_LOG=debug` meant 40 lines of fuser capability noise; it now means this
/// crate's debug lines (one per MDS request).
#[test]
fn rust_log_debug_means_this_crates_debug_lines() {
    let emu = Emulator::start(&[]);
    let mount = Mount::start_with(&["--endpoint", &emu.addr], &[], &[("RUST_LOG", "debug")]);
    mount.read("project/project-id").unwrap();
    let log = eventually("a debug line", DEADLINE, || {
        let log = mount.log_text();
        log.contains("GET project/project-id -> 200").then_some(log)
    });
    let noise: Vec<&str> = log.lines().filter(|l| l.contains("fuser")).collect();
    assert!(noise.is_empty(), "fuser lines at RUST_LOG=debug: {noise:#?}");
}

/// Item 3: `timeout` bounded each HTTP request, not a read: with every listing on the path
/// expired and the server answering 503, `cat service-accounts/default/token` waited out one
/// `timeout` per directory (6.2 s with ttl=2,timeout=3). Once a refresh has failed, the other
/// expired listings are served stale at once. (`ttl=0` expires everything at once, so the test
/// need not wait out a TTL.)
#[test]
fn one_read_waits_at_most_one_timeout_however_deep_the_path_in_a_503_storm() {
    let emu = Emulator::start(&[]);
    let mount = Mount::start(&emu.addr, &["-o", "ttl=0,timeout=3"]);
    let paths = ["service-accounts/default/token", "instance/network-interfaces/0/ip"];
    for path in paths {
        mount.read(path).unwrap();
    }
    fault(&emu, serde_json::json!({"prefix": "/computeMetadata/v1/", "status": 503}));
    let limit = Duration::from_millis(4500);
    for round in 0..3 {
        for path in paths {
            let start = std::time::Instant::now();
            let bytes = mount.read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
            let took = start.elapsed();
            assert!(took < limit, "round {round}: {path} took {took:?}");
            assert!(!bytes.is_empty(), "{path}");
        }
    }
    assert_eq!(emu.control("DELETE", "faults", "").0, 200);
    let ip = emu.get("instance/network-interfaces/0/ip").1;
    eventually("fresh reads after the storm", DEADLINE, || {
        (mount.read("instance/network-interfaces/0/ip").ok()? == ip).then_some(())
    });
}

fn run_cli(args: &[&str]) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_metadatafs")).args(args).output().unwrap();
    (output.status.code().unwrap_or(-1), String::from_utf8_lossy(&output.stderr).into_owned())
}

/// Item 10: a typo in `-o` got no suggestion where a long-option typo did, and a missing
/// mountpoint printed the whole usage block where the README promises one line.
#[test]
fn o_typos_get_a_suggestion_and_runtime_errors_are_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    for (args, suggestion) in [
        (&[d, "-o", "tll=3"][..], "did you mean 'ttl'?"),
        (&[d, "-o", "allow_othr"], "did you mean 'allow_other'?"),
        (&[d, "-o", "ro,secret_path=a"], "did you mean 'secret_paths'?"),
        (&["--tll", "3", d], "'--ttl'"),
    ] {
        let (code, stderr) = run_cli(args);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stderr.contains(suggestion), "{args:?}: {stderr}");
    }
    let missing = dir.path().join("missing");
    for args in [
        &[missing.to_str().unwrap()][..],
        &[d, "-o", "secret_group=no-such-group-here"],
        &["/etc/hostname"],
    ] {
        let (code, stderr) = run_cli(args);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
        assert!(!stderr.contains("Usage"), "{args:?}: {stderr}");
    }
}

/// Item 6: a dead mount left by a killed daemon is detached and reused, but if it was stacked
/// over a live mount, what is below is not mounted over either.
#[test]
fn a_dead_mount_over_a_live_one_is_cleared_but_the_live_one_is_not_mounted_over() {
    let emu = Emulator::start(&[]);
    let mut killed = Mount::start(&emu.addr, &[]);
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("meta");
    std::fs::create_dir(&target).unwrap();
    let mount = |args: &[&str]| {
        let status = Command::new("mount").args(args).arg(&target).status().unwrap();
        assert!(status.success(), "mount {args:?}");
    };
    mount(&["-t", "tmpfs", "-o", "size=1m", "below"]);
    let _below = Detach(target.clone());
    mount(&["--bind", killed.mountpoint.to_str().unwrap()]);
    let _dead = Detach(target.clone());
    killed.signal(libc::SIGKILL);
    let err = std::fs::read_dir(&target).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOTCONN));

    let output = Command::new(env!("CARGO_BIN_EXE_metadatafs"))
        .args(["-f", "--endpoint", &emu.addr])
        .arg(&target)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("already a mount point (tmpfs from below)"), "{stderr}");
    assert_eq!(top_fstype(&target).as_deref(), Some("tmpfs"));
}

/// Item 3: the first read of a storm, whose path has an expired listing and then a name never
/// fetched, waited one `timeout` for each. After a request ran out of retries, the next ones
/// try once, so the cold name fails at once.
#[test]
fn the_first_read_of_a_storm_waits_one_timeout_even_with_a_cold_name_after_an_expired_one() {
    let emu = Emulator::start(&[]);
    // timeout=10: a retry loop ends within 3 s (its longest pause) of the deadline, so two
    // in a row take at least 14 s, one at most 10.
    let mount = Mount::start(&emu.addr, &["-o", "ttl=0,timeout=10"]);
    mount.read("project/project-id").unwrap();
    fault(&emu, serde_json::json!({"prefix": "/computeMetadata/v1/", "status": 503}));
    let start = std::time::Instant::now();
    let err = mount.read("instance/attributes/team").unwrap_err();
    let took = start.elapsed();
    assert_eq!(err.raw_os_error(), Some(libc::EIO));
    assert!(took < Duration::from_millis(12_000), "took {took:?}");
    assert_eq!(emu.control("DELETE", "faults", "").0, 200);
    let team = emu.get("instance/attributes/team").1;
    eventually("reads after the storm", DEADLINE, || {
        (mount.read("instance/attributes/team").ok()? == team).then_some(())
    });
}
