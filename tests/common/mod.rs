//! Shared pieces of the mount tests: the real emulator binary on loopback, a real FUSE mount
//! of the real daemon, and a tiny HTTP client. Every mount is unmounted in `Drop`, so a failing
//! test never leaves a dead mount behind; nothing waits with a fixed sleep, only polls with a
//! deadline.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const DEADLINE: Duration = Duration::from_secs(20);

/// Poll `check` until it returns `Some`, or panic naming `what` after `deadline`.
pub fn eventually<T>(what: &str, deadline: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The `metadatafs-emulator` binary on a free loopback port.
pub struct Emulator {
    child: Child,
    pub addr: String,
}

impl Emulator {
    pub fn start(args: &[&str]) -> Emulator {
        Self::start_on("127.0.0.1:0", args)
    }

    pub fn start_on(listen: &str, args: &[&str]) -> Emulator {
        Self::try_start_on(listen, args).expect("start metadatafs-emulator")
    }

    /// `None` if it could not listen there (the port is taken).
    pub fn try_start_on(listen: &str, args: &[&str]) -> Option<Emulator> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_metadatafs-emulator"))
            .args(["--listen", listen])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("run metadatafs-emulator");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let Some(addr) = line.split_whitespace().last().map(String::from) else {
            let _ = child.wait();
            return None;
        };
        Some(Emulator { child, addr })
    }

    /// On a port below the kernel's ephemeral range, so that after `stop` no other test's
    /// `127.0.0.1:0` can take it before this test starts an emulator there again.
    pub fn start_restartable(args: &[&str]) -> Emulator {
        use std::hash::{BuildHasher, RandomState};
        loop {
            let port = 20_000 + RandomState::new().hash_one(Instant::now()) % 12_000;
            if let Some(emulator) = Self::try_start_on(&format!("127.0.0.1:{port}"), args) {
                return emulator;
            }
        }
    }

    /// Start again on the same address, once the old socket is gone.
    pub fn restart(&self, args: &[&str]) -> Emulator {
        eventually("the emulator to restart", DEADLINE, || Self::try_start_on(&self.addr, args))
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// `GET /computeMetadata/v1/{path}` with the flavor header: (status, body).
    pub fn get(&self, path: &str) -> (u16, Vec<u8>) {
        http(&self.addr, "GET", &format!("/computeMetadata/v1/{path}"), b"")
    }

    pub fn control(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        let (status, body) =
            http(&self.addr, method, &format!("/emulator/{path}"), body.as_bytes());
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    /// Requests the emulator has seen for `path` (relative to computeMetadata/v1/).
    pub fn count(&self, path: &str) -> u64 {
        let (_, body) = self.control("GET", "counters", "");
        let counters: serde_json::Value = serde_json::from_str(&body).expect("counters JSON");
        counters[format!("/computeMetadata/v1/{path}")].as_u64().unwrap_or(0)
    }

    /// Wait until the change watcher has sent its first dump and holds its long-poll open, and
    /// no other request is under way: a test can then count requests without the watcher's.
    pub fn settle(&self) {
        eventually("the watcher's long-poll and a quiet server", DEADLINE, || {
            let before = self.total_count();
            std::thread::sleep(Duration::from_millis(200));
            (self.count("") >= 2 && self.total_count() == before).then_some(())
        });
    }

    pub fn total_count(&self) -> u64 {
        let (_, body) = self.control("GET", "counters", "");
        let counters: serde_json::Value = serde_json::from_str(&body).expect("counters JSON");
        counters.as_object().unwrap().values().filter_map(|v| v.as_u64()).sum()
    }

    pub fn tokeninfo(&self, token: &str) -> serde_json::Value {
        let (_, body) = self.control("GET", &format!("tokeninfo?access_token={token}"), "");
        serde_json::from_str(&body).expect("tokeninfo JSON")
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One HTTP/1.1 request with `Connection: close`.
pub fn http(addr: &str, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).expect("connect to emulator");
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: metadata.google.internal\r\nMetadata-Flavor: Google\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").expect("HTTP head");
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut body = response[split + 4..].to_vec();
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    (status, body)
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n").unwrap();
        let size =
            usize::from_str_radix(std::str::from_utf8(&data[..line_end]).unwrap().trim(), 16)
                .unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[line_end + 2..line_end + 2 + size]);
        data = &data[line_end + 4 + size..];
    }
}

/// A live `metadatafs -f` mount in a fresh directory; unmounted and stopped on drop.
pub struct Mount {
    pub dir: tempfile::TempDir,
    pub mountpoint: PathBuf,
    child: Option<Child>,
    pub log: PathBuf,
}

impl Mount {
    /// Mount `endpoint` with extra arguments (e.g. `["-o", "ttl=0"]`).
    pub fn start(endpoint: &str, args: &[&str]) -> Mount {
        Self::start_with(&["--endpoint", endpoint], args, &[])
    }

    pub fn start_with(first: &[&str], args: &[&str], env: &[(&str, &str)]) -> Mount {
        let mut mount = Mount::unstarted();
        mount.spawn(first, args, env);
        mount
    }

    /// The mountpoint and log of a mount not started yet (for options that name the mountpoint).
    pub fn unstarted() -> Mount {
        let dir = tempfile::tempdir().unwrap();
        // Other users (the permission tests) must be able to walk to the mountpoint.
        std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let mountpoint = dir.path().join("meta");
        std::fs::create_dir(&mountpoint).unwrap();
        let log = dir.path().join("metadatafs.log");
        Mount { dir, mountpoint, child: None, log }
    }

    /// Start a daemon on this mountpoint (again, after `signal`) and wait until it is live.
    pub fn spawn(&mut self, first: &[&str], args: &[&str], env: &[(&str, &str)]) {
        assert!(self.child.is_none(), "a daemon is still running");
        // METADATAFS_TEST_READ_PATH=open runs a suite on the open path (scripts/test does).
        let open_path = std::env::var("METADATAFS_TEST_READ_PATH").is_ok_and(|p| p == "open");
        let read_path: &[&str] = if open_path { &["-o", "read_path=open"] } else { &[] };
        let child = Command::new(env!("CARGO_BIN_EXE_metadatafs"))
            .arg("-f")
            .args(first)
            .arg(&self.mountpoint)
            .args(args)
            .args(read_path)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&self.log).unwrap())
            .spawn()
            .expect("start metadatafs");
        self.child = Some(child);
        self.wait_live();
    }

    pub fn wait_live(&mut self) {
        let parent_dev = std::fs::metadata(self.dir.path()).unwrap().dev();
        let mountpoint = self.mountpoint.clone();
        let log = self.log.clone();
        let mut child = self.child.as_mut();
        eventually("the mount to come up", DEADLINE, || {
            if let Some(child) = child.as_mut() {
                if let Some(status) = child.try_wait().unwrap() {
                    panic!("metadatafs exited with {status}: {}", read(&log));
                }
            }
            // A dead mount left by a killed daemon has its own device too, and `stat` may
            // answer from cache; `statfs` always reaches the daemon (and needs no MDS).
            let meta = std::fs::metadata(&mountpoint).ok()?;
            (meta.dev() != parent_dev && is_live_fuse(&mountpoint)).then_some(())
        });
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.mountpoint.join(relative)
    }

    pub fn read(&self, relative: &str) -> std::io::Result<Vec<u8>> {
        std::fs::read(self.path(relative))
    }

    /// What a thread the test spawns gets of this mount: its path, not the mount. The `Mount`
    /// stays with the test's own thread, so a test that fails while its readers are blocked
    /// still unmounts when it unwinds (the readers then get an error), instead of leaving a
    /// daemon behind for as long as some reader holds a reference.
    pub fn share(&self) -> MountPath {
        MountPath(self.mountpoint.clone())
    }
}

/// A mount's path, for threads ([`Mount::share`]).
#[derive(Debug, Clone)]
pub struct MountPath(PathBuf);

impl MountPath {
    pub fn path(&self, relative: &str) -> PathBuf {
        self.0.join(relative)
    }

    pub fn read(&self, relative: &str) -> std::io::Result<Vec<u8>> {
        std::fs::read(self.path(relative))
    }
}

/// Sets its flag when dropped: the `stop` of a test's reader threads, set however the test
/// ends, so that a failing test's readers stop (and a `thread::scope` around them can end).
#[derive(Debug)]
pub struct StopOnDrop<'a>(pub &'a std::sync::atomic::AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Mount {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Send a signal and wait for the daemon to exit.
    pub fn signal(&mut self, signal: i32) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("daemon running");
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, signal) };
        eventually("the daemon to exit", DEADLINE, || child.try_wait().unwrap())
    }

    pub fn is_mounted(&self) -> bool {
        is_mounted(&self.mountpoint)
    }

    pub fn log_text(&self) -> String {
        read(&self.log)
    }
}

/// `statfs` answered by a FUSE daemon.
pub fn is_live_fuse(path: &Path) -> bool {
    const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: statfs writes one struct we own.
    let mut stats: libc::statfs = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::statfs(c_path.as_ptr(), &mut stats) } == 0;
    ok && stats.f_type as i64 == FUSE_SUPER_MAGIC
}

pub fn is_mounted(path: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    let path = path.to_string_lossy();
    mounts.lines().any(|line| line.split_whitespace().nth(1) == Some(&*path))
}

pub fn detach(path: &Path) {
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    unsafe { libc::umount2(c_path.as_ptr(), libc::MNT_DETACH) };
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let start = Instant::now();
            while child.try_wait().ok().flatten().is_none() && start.elapsed() < DEADLINE {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        if is_mounted(&self.mountpoint) {
            detach(&self.mountpoint);
        }
    }
}

/// For `pre_exec`: the child becomes user `nobody` (uid/gid 65534, no supplementary groups).
/// Only async-signal-safe calls, as between fork and exec.
pub fn become_nobody() -> std::io::Result<()> {
    // SAFETY: plain system calls on no memory of ours.
    let failed = unsafe {
        libc::setgroups(0, std::ptr::null()) != 0
            || libc::setgid(65534) != 0
            || libc::setuid(65534) != 0
    };
    if failed {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Run a command as user `nobody` (uid/gid 65534): (exit ok, stderr).
pub fn as_nobody(program: &str, args: &[&Path]) -> (bool, String) {
    use std::os::unix::process::CommandExt;
    let output =
        unsafe { Command::new(program).args(args).pre_exec(become_nobody).output().unwrap() };
    (output.status.success(), String::from_utf8_lossy(&output.stderr).into_owned())
}
