//! A metadatafs daemon in the foreground, mounted over the emulator: this build's binary or an
//! older one (`METADATAFS_BENCH_BASELINES`). Unmounted (SIGTERM, then waited for) when dropped,
//! so a panicking bench leaves no mount behind.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// FUSE requests by operation.
pub type Counts = BTreeMap<String, i64>;

pub struct Mount {
    child: Option<Child>,
    pub path: PathBuf,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Mount {
    /// Mount `binary` over the emulator at `endpoint` with `-o options`, and wait for it.
    pub fn start(binary: &Path, endpoint: &str, options: &str) -> Mount {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta");
        std::fs::create_dir(&path).unwrap();
        let log = dir.path().join("log");
        let child = Command::new(binary)
            .args(["-f", "--endpoint", endpoint, "-o", options])
            .arg(&path)
            // The daemon's own default and the line at unmount; fuser's warnings would log
            // every ioctl it is sent (one per Python `open()`), and slow the answer.
            .env("RUST_LOG", "warn,fuser=error,metadatafs::fuse=info")
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", binary.display()));
        let mount = Mount { child: Some(child), path, log, _dir: dir };
        let parent_dev = std::fs::metadata(mount._dir.path()).unwrap().dev();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::fs::metadata(&mount.path).map(|m| m.dev()).unwrap_or(parent_dev) == parent_dev {
            assert!(Instant::now() < deadline, "{} did not mount", binary.display());
            std::thread::sleep(Duration::from_millis(10));
        }
        mount
    }

    pub fn join(&self, path: &str) -> PathBuf {
        self.path.join(path)
    }

    pub fn rss_kib(&self) -> u64 {
        let pid = self.child.as_ref().map_or(0, Child::id);
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    fn status(&self) -> serde_json::Value {
        let text = std::fs::read_to_string(self.path.join(".metadatafs/status")).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    /// The read path the status file shows; older builds have none.
    pub fn read_path(&self) -> String {
        let status = self.status();
        match status["read_path"]["path"].as_str() {
            Some(path) => format!("{path} ({})", status["read_path"]["why"].as_str().unwrap_or("")),
            None => "(not shown: an older build)".into(),
        }
    }

    /// The FUSE requests served so far, from the status file (rendered at its lookup).
    pub fn fuse_requests(&self) -> Counts {
        let status = self.status();
        let counts = status["fuse_requests"].as_object().expect("status has fuse_requests");
        counts.iter().map(|(op, n)| (op.clone(), n.as_i64().unwrap())).collect()
    }

    fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: signalling our own child, not yet waited for.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let _ = child.wait();
        }
    }

    /// Unmount, and return the FUSE request counts the daemon logged at unmount.
    pub fn stop(mut self) -> Counts {
        self.terminate();
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let Some(line) = log.lines().find(|l| l.contains("FUSE requests served:")) else {
            return Counts::new();
        };
        let counts = line.split_once("FUSE requests served:").unwrap().1;
        counts
            .split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
            .collect()
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// `after - before`, op by op.
pub fn minus(after: &Counts, before: &Counts) -> Counts {
    after.iter().map(|(op, n)| (op.clone(), n - before.get(op).copied().unwrap_or(0))).collect()
}
