//! A hostile local user (uid 65534 on an `allow_other` mount) and impatient readers (issue 15):
//! no request, byte or descriptor on behalf of a caller who may not read the file; waiting
//! reads bounded per user and paced; every blocked reader killable, its upstream share dropped.

mod common;

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{as_nobody, become_nobody, eventually, Emulator, Mount, DEADLINE};

const ACCOUNT: &str = "instance/service-accounts/default";

fn daemon_fds(mount: &Mount) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", mount.pid())).unwrap().count()
}

/// `cat PATH` in the background, as nobody or as ourselves.
fn cat(path: &Path, nobody: bool) -> Child {
    let mut command = Command::new("cat");
    command.arg(path).stdout(Stdio::null()).stderr(Stdio::piped());
    if nobody {
        // SAFETY: become_nobody makes plain system calls only.
        unsafe { command.pre_exec(become_nobody) };
    }
    command.spawn().unwrap()
}

fn stat_as_nobody(path: &Path) -> String {
    let (ok, stderr) = as_nobody("/usr/bin/stat", &[path]);
    assert!(!ok, "nobody could stat {}", path.display());
    stderr
}

#[test]
fn nobody_gets_eacces_for_audiences_and_scope_sets_and_the_server_hears_nothing() {
    let emu = Emulator::start(&[]);
    let options = ["-o", "allow_other,scoped_tokens"];
    let mount = Mount::start_with(&["--endpoint", &emu.addr], &options, &[("RUST_LOG", "debug")]);
    mount.read("project/project-id").unwrap();
    std::fs::read_dir(mount.path(ACCOUNT)).unwrap().for_each(drop);
    emu.settle();
    let before = emu.total_count();
    for i in 0..40 {
        let audience = format!("{ACCOUNT}/identity?audience=https:%2F%2Fa{i}.example&format=full");
        assert!(stat_as_nobody(&mount.path(&audience)).contains("Permission denied"));
        let scopes = format!("{ACCOUNT}/token?scopes=devstorage.read_only,s{i}");
        assert!(stat_as_nobody(&mount.path(&scopes)).contains("Permission denied"));
    }
    assert_eq!(emu.total_count(), before, "a request on behalf of nobody");
    // The owner may: one request, and the status never names the audience to others.
    let audience = format!("{ACCOUNT}/identity?audience=https:%2F%2Fsecret.example");
    assert!(!mount.read(&audience).unwrap().is_empty());
    assert_eq!(emu.total_count(), before + 1);
    // An audience may be a secret URL: not in the log at debug, nor in the status files.
    let status = String::from_utf8(mount.read(".metadatafs/status").unwrap()).unwrap();
    for text in [mount.log_text(), status] {
        assert!(!text.contains("secret.example") && !text.contains("a7.example"), "{text}");
    }
    assert!(mount.log_text().contains("identity?…"), "{}", mount.log_text());
}

#[test]
fn a_plain_secret_nobody_may_read_is_not_fetched_for_nobody() {
    let emu = Emulator::start(&[]);
    let mount = Mount::start(&emu.addr, &["-o", "allow_other"]);
    std::fs::read_dir(mount.path(ACCOUNT)).unwrap().for_each(drop);
    emu.settle();
    let before = emu.count(&format!("{ACCOUNT}/token"));
    let (ok, _) = as_nobody("/usr/bin/stat", &[&mount.path(&format!("{ACCOUNT}/access_token"))]);
    assert!(ok, "stat of a listed name works");
    let (ok, stderr) = as_nobody("/bin/cat", &[&mount.path(&format!("{ACCOUNT}/access_token"))]);
    assert!(!ok && stderr.contains("Permission denied"), "{stderr}");
    assert_eq!(emu.count(&format!("{ACCOUNT}/token")), before, "fetched a token for nobody");
    assert!(mount.read(&format!("{ACCOUNT}/access_token")).unwrap().starts_with(b"ya29."));
}

#[test]
fn ls_l_by_nobody_fetches_no_secret_and_shows_no_size() {
    let emu = Emulator::start(&[]);
    let mount = Mount::start(&emu.addr, &["-o", "allow_other"]);
    let (secret, plain) = ("project/attributes/startup-script", "project/attributes/team");
    emu.control("PUT", &format!("values/{secret}"), "TOPSECRET");
    emu.control("PUT", &format!("values/{plain}"), "infra");
    mount.read("project/project-id").unwrap();
    emu.settle();
    // `ls -l`: a listing, then a lookup of each name, which prefetches the directory's values.
    let dir = mount.path("project/attributes");
    let (ok, stderr) = as_nobody("/bin/ls", &[Path::new("-l"), &dir]);
    assert!(ok, "{stderr}");
    assert_eq!(emu.count(secret), 0, "a secret fetched for nobody");
    assert_eq!(emu.count(plain), 1, "the prefetch still fetches what nobody may read");
    let mut stat = Command::new("stat");
    stat.args(["-c", "%s"]).arg(mount.path(secret));
    // SAFETY: become_nobody makes plain system calls only.
    let size = unsafe { stat.pre_exec(become_nobody) }.output().unwrap().stdout;
    assert_eq!(String::from_utf8_lossy(&size).trim(), "0", "a secret's size shown to nobody");
    assert_eq!(mount.read(secret).unwrap(), b"TOPSECRET", "the owner reads it");
}

#[test]
fn an_interrupted_or_killed_waiting_reader_ends_at_once_and_drops_its_request() {
    let emu = Emulator::start(&[]);
    let mount = Mount::start(&emu.addr, &[]);
    mount.read("project/project-id").unwrap();
    emu.settle();
    let baseline = daemon_fds(&mount);
    let name = mount.path("instance/attributes/hostname-x?wait_for_change=true&timeout_sec=300");
    let name = name.to_str().unwrap().to_string();
    emu.control("PUT", "values/instance/attributes/hostname-x", "v");
    // Ctrl-C (SIGINT) from `timeout`: the reader is gone within about a second.
    let start = Instant::now();
    let status = Command::new("timeout").args(["-s", "INT", "1", "cat", &name]).status().unwrap();
    assert_eq!(status.code(), Some(124), "timeout ended it");
    assert!(start.elapsed() < Duration::from_secs(3), "SIGINT took {:?}", start.elapsed());
    // SIGKILL of readers blocked in the mount.
    let mut readers: Vec<Child> = (0..5).map(|_| cat(Path::new(&name), false)).collect();
    eventually("the upstream wait", DEADLINE, || {
        (emu.count("instance/attributes/hostname-x") >= 2).then_some(())
    });
    let start = Instant::now();
    for reader in &mut readers {
        reader.kill().unwrap();
    }
    for reader in &mut readers {
        reader.wait().unwrap();
    }
    assert!(start.elapsed() < Duration::from_secs(2), "SIGKILL took {:?}", start.elapsed());
    eventually("the daemon's descriptors back to baseline", DEADLINE, || {
        (daemon_fds(&mount) <= baseline).then_some(())
    });
}

#[test]
fn waiting_reads_are_bounded_per_user_and_killed_ones_free_their_place() {
    let emu = Emulator::start(&[]);
    let mount = Mount::start(&emu.addr, &["-o", "allow_other"]);
    mount.read("project/project-id").unwrap();
    emu.settle();
    let baseline = daemon_fds(&mount);
    // 40 distinct waiting requests as nobody: past 32, EAGAIN at once.
    let mut waiting: Vec<Child> = (1..=40)
        .map(|n| {
            let name = format!("instance/zone?wait_for_change=true&timeout_sec={n}0");
            cat(&mount.path(&name), true)
        })
        .collect();
    let refused = eventually("the readers past the bound to fail", DEADLINE, || {
        let mut refused = 0;
        for child in &mut waiting {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(!status.success());
                refused += 1;
            }
        }
        (refused >= 8).then_some(refused)
    });
    assert_eq!(refused, 8, "32 waits per user, no more");
    // Root is not held up by nobody's waits.
    let root = mount.read("instance/zone?wait_for_change=true&last_etag=0").unwrap();
    assert!(!root.is_empty());
    for child in &mut waiting {
        let _ = child.kill();
        let _ = child.wait();
    }
    eventually("the daemon's descriptors back to baseline", DEADLINE, || {
        (daemon_fds(&mount) <= baseline + 1).then_some(())
    });
    // The killed readers' places are free again.
    let name = mount.path("instance/zone?wait_for_change=true&last_etag=0");
    let (ok, stderr) = as_nobody("/bin/cat", &[&name]);
    assert!(ok, "{stderr}");
}

#[test]
fn a_loop_of_waits_answered_at_once_is_paced_not_a_request_pump() {
    let emu = Emulator::start(&[]);
    let mount = Mount::start(&emu.addr, &["-o", "allow_other"]);
    mount.read("project/project-id").unwrap();
    // A loop of waits the server answers at once (a stale last_etag, distinct each time) is
    // paced: a burst of 10, then 5 a second, not a request pump.
    emu.settle();
    let before = emu.count("instance/zone");
    let start = Instant::now();
    let mut i = 0;
    while start.elapsed() < Duration::from_secs(2) {
        let name = mount.path(&format!("instance/zone?wait_for_change=true&last_etag=a{i}"));
        let (ok, stderr) = as_nobody("/bin/cat", &[&name]);
        assert!(ok, "{stderr}");
        i += 1;
    }
    let sent = emu.count("instance/zone") - before;
    let allowed = 10 + (5.0 * start.elapsed().as_secs_f64()).ceil() as u64 + 1;
    assert!(sent <= allowed, "{sent} requests for {i} reads in {:?}", start.elapsed());
}

#[test]
fn timeout_sec_is_bounded() {
    let emu = Emulator::start(&[]);
    let mount = Mount::start(&emu.addr, &[]);
    let err = mount.read("instance/zone?wait_for_change=true&timeout_sec=3601").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EINVAL));
}
