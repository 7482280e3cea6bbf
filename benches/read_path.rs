//! The read path, measured against its floor. One run mounts, side by side:
//! - tmpfs (the kernel alone),
//! - a minimal fuser filesystem built here, serving one file from memory, in two variants:
//!   `FOPEN_KEEP_CACHE` (the floor for a FUSE file: OPEN and RELEASE per `cat`) and
//!   `FOPEN_DIRECT_IO` (every read comes to the daemon),
//! - metadatafs (`ttl=3600`) over the in-process emulator: a warm plain value and a warm `token`,
//!
//! and times open+read+close of each, interleaved round-robin in small batches so that a noisy
//! neighbour hits every variant alike, reporting medians and each figure as a ratio to the
//! keep-cache floor and to tmpfs. Then: FUSE requests per warm read (the floor counts its own;
//! metadatafs logs its counts at unmount), MDS requests per 1000 warm reads, how soon a change
//! made on the emulator is visible at `ttl=3600`, cold reads, and the daemon's memory.
//!
//! Everything (this process, the daemons, the emulator) runs pinned to one CPU: on a small VM a
//! FUSE round trip costs very different amounts depending on whether the scheduler happened to
//! put client and server on the same core (a cross-core wakeup is an IPI, dear in a VM), and
//! that luck, fixed per process, would otherwise decide the ratios.
//!
//! `cargo bench --bench read_path` (needs root and /dev/fuse). Targets (issue 10): warm plain
//! ≤ 1.1× and warm token ≤ 2× the keep-cache floor, 0 MDS requests per warm read, a change
//! visible within 1 s. It prints a table and asserts nothing: numbers from a shared machine are
//! for comparing, not for failing a build.

use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, FopenFlags, Generation, INodeNo, OpenFlags, ReplyAttr,
    ReplyData, ReplyEntry, ReplyOpen, Request,
};
use metadatafs::emulator::{Emulator, EmulatorConfig};

const ROUNDS: usize = 30;
const BATCH: usize = 100;
const COLD_ITERATIONS: usize = 200;
const VALUE: &str = "project/project-id";
const TOKEN: &str = "instance/service-accounts/default/token";
const CHANGING: &str = "instance/attributes/team";
const TTL: Duration = Duration::from_secs(3600);

/// The floor: one file, `value`, served from memory, counting what the kernel asks.
struct Floor {
    bytes: Vec<u8>,
    flags: FopenFlags,
    requests: Arc<AtomicU64>,
}

const FILE_INO: u64 = 2;

impl Floor {
    fn attr(&self, ino: u64) -> FileAttr {
        let dir = ino == 1;
        FileAttr {
            ino: INodeNo(ino),
            size: if dir { 0 } else { self.bytes.len() as u64 },
            blocks: 1,
            atime: UNIX_EPOCH,
            mtime: UNIX_EPOCH,
            ctime: UNIX_EPOCH,
            crtime: UNIX_EPOCH,
            kind: if dir { FileType::Directory } else { FileType::RegularFile },
            perm: if dir { 0o555 } else { 0o444 },
            nlink: 1,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    fn count(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }
}

impl fuser::Filesystem for Floor {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        self.count();
        if parent.0 == 1 && name == "value" {
            reply.entry(&TTL, &self.attr(FILE_INO), Generation(0));
        } else {
            reply.error(Errno::from_i32(libc::ENOENT));
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        self.count();
        reply.attr(&TTL, &self.attr(ino.0));
    }

    fn open(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        self.count();
        reply.opened(FileHandle(1), self.flags | FopenFlags::FOPEN_NOFLUSH);
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyData,
    ) {
        self.count();
        let start = (offset as usize).min(self.bytes.len());
        let end = (start + size as usize).min(self.bytes.len());
        reply.data(&self.bytes[start..end]);
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        _flush: bool,
        reply: fuser::ReplyEmpty,
    ) {
        self.count();
        reply.ok();
    }
}

struct FloorMount {
    _dir: tempfile::TempDir,
    file: PathBuf,
    requests: Arc<AtomicU64>,
    _session: fuser::BackgroundSession,
}

fn mount_floor(bytes: &[u8], flags: FopenFlags) -> FloorMount {
    let dir = tempfile::tempdir().unwrap();
    let requests = Arc::new(AtomicU64::new(0));
    let fs = Floor { bytes: bytes.to_vec(), flags, requests: requests.clone() };
    let mut config = fuser::Config::default();
    config.mount_options = vec![fuser::MountOption::RO, fuser::MountOption::FSName("floor".into())];
    let session = fuser::Session::new(fs, dir.path(), &config).unwrap().spawn().unwrap();
    let file = dir.path().join("value");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::metadata(&file).is_err() {
        assert!(Instant::now() < deadline, "the floor filesystem did not come up");
        std::thread::sleep(Duration::from_millis(10));
    }
    FloorMount { _dir: dir, file, requests, _session: session }
}

struct Mount {
    _dir: tempfile::TempDir,
    path: PathBuf,
    child: Child,
    log: PathBuf,
}

impl Mount {
    fn start(endpoint: &str, options: &str) -> Mount {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta");
        std::fs::create_dir(&path).unwrap();
        let log = dir.path().join("log");
        let child = Command::new(env!("CARGO_BIN_EXE_metadatafs"))
            .args(["-f", "--endpoint", endpoint, "-o", options])
            .arg(&path)
            .env("RUST_LOG", "warn,metadatafs::fuse=info")
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let parent_dev = std::fs::metadata(dir.path()).unwrap().dev();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::fs::metadata(&path).map(|m| m.dev()).unwrap_or(parent_dev) == parent_dev {
            assert!(Instant::now() < deadline, "mount did not come up");
            std::thread::sleep(Duration::from_millis(10));
        }
        Mount { _dir: dir, path, child, log }
    }

    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// Unmount, and return the FUSE request counts it logged: `[(op, count)]`.
    fn stop(mut self) -> Vec<(String, u64)> {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let Some(line) = log.lines().find(|l| l.contains("FUSE requests served:")) else {
            return Vec::new();
        };
        line.split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
            .collect()
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

fn cat(path: &Path) -> usize {
    let mut buf = [0u8; 4096];
    let mut file = std::fs::File::open(path).unwrap();
    let mut total = 0;
    loop {
        let n = file.read(&mut buf).unwrap();
        if n == 0 {
            return total;
        }
        total += n;
    }
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
    samples[samples.len() / 2]
}

/// Microseconds per call of `op`, `iterations` times.
fn timed(iterations: usize, mut op: impl FnMut()) -> Vec<f64> {
    (0..iterations)
        .map(|_| {
            let start = Instant::now();
            op();
            start.elapsed().as_secs_f64() * 1e6
        })
        .collect()
}

/// Each variant in turn, `BATCH` reads at a time, `ROUNDS` times: medians in µs.
/// A named thing to time.
type Variant<'a> = (&'a str, Box<dyn FnMut()>);

fn round_robin(variants: &mut [Variant]) -> Vec<f64> {
    for (_, op) in variants.iter_mut() {
        timed(BATCH, op);
    }
    let mut samples = vec![Vec::new(); variants.len()];
    for _ in 0..ROUNDS {
        for (i, (_, op)) in variants.iter_mut().enumerate() {
            samples[i].extend(timed(BATCH, op));
        }
    }
    samples.into_iter().map(median).collect()
}

struct Http {
    runtime: tokio::runtime::Runtime,
    client: reqwest::Client,
    addr: String,
}

impl Http {
    fn send(&self, method: reqwest::Method, path: &str, body: &str) -> String {
        self.runtime.block_on(async {
            let request = self.client.request(method, format!("http://{}{path}", self.addr));
            let request = request.header("Metadata-Flavor", "Google").body(body.to_string());
            request.send().await.unwrap().text().await.unwrap()
        })
    }

    fn requests(&self) -> u64 {
        let body = self.send(reqwest::Method::GET, "/emulator/counters", "");
        let counters: serde_json::Value = serde_json::from_str(&body).unwrap();
        counters.as_object().unwrap().values().filter_map(|v| v.as_u64()).sum()
    }
}

/// Milliseconds from a change on the emulator to a new `open()` seeing it, `n` times.
fn change_latency(http: &Http, mount: &Mount, n: usize) -> Vec<f64> {
    let path = mount.path.join(CHANGING);
    cat(&path);
    (0..n)
        .map(|i| {
            let value = format!("changed-{i}");
            let start = Instant::now();
            http.send(reqwest::Method::PUT, &format!("/emulator/values/{CHANGING}"), &value);
            while std::fs::read(&path).unwrap() != value.as_bytes() {
                assert!(start.elapsed() < Duration::from_secs(30), "change never seen");
                std::thread::sleep(Duration::from_micros(200));
            }
            let ms = start.elapsed().as_secs_f64() * 1e3;
            // Past the watcher's shortest pause between requests: measure the change alone.
            std::thread::sleep(Duration::from_millis(150));
            ms
        })
        .collect()
}

fn per_read(counts: &[(String, u64)], reads: u64) -> String {
    let total: u64 = counts.iter().filter(|(op, _)| op != "forget").map(|(_, n)| n).sum();
    let detail: Vec<String> = counts
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(op, n)| format!("{op} {:.2}", *n as f64 / reads as f64))
        .collect();
    format!("{:.2} ({})", total as f64 / reads as f64, detail.join(", "))
}

/// Run this process, and everything it starts from now on, on the CPU it is on now.
fn pin_to_one_cpu() -> Option<usize> {
    // SAFETY: sched_getcpu has no preconditions; the cpu_set_t is ours and zeroed first.
    unsafe {
        let cpu = usize::try_from(libc::sched_getcpu()).ok()?;
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        (libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0)
            .then_some(cpu)
    }
}

fn main() {
    metadatafs::upstream::mtls::crypto_provider();
    let pinned = pin_to_one_cpu();
    let emulator = Emulator::start(EmulatorConfig::default()).expect("emulator");
    let addr = emulator.addr().to_string();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let http = Http { runtime, client: reqwest::Client::new(), addr: addr.clone() };
    let warm = Mount::start(&addr, "ttl=3600");
    let cold = Mount::start(&addr, "ttl=0");

    let value = std::fs::read(warm.path.join(VALUE)).unwrap();
    let shm = tempfile::tempdir_in("/dev/shm").unwrap();
    let tmpfs = shm.path().join("project-id");
    std::fs::write(&tmpfs, &value).unwrap();
    let keep = mount_floor(&value, FopenFlags::FOPEN_KEEP_CACHE);
    let direct = mount_floor(&value, FopenFlags::FOPEN_DIRECT_IO);
    cat(&warm.path.join(TOKEN));

    let len = value.len();
    let (t, k, d) = (tmpfs.clone(), keep.file.clone(), direct.file.clone());
    let (v, tok) = (warm.path.join(VALUE), warm.path.join(TOKEN));
    let mut variants: Vec<Variant> = vec![
        ("tmpfs", Box::new(move || assert_eq!(cat(&t), len))),
        ("floor: FUSE keep-cache", Box::new(move || assert_eq!(cat(&k), len))),
        ("floor: FUSE direct-io", Box::new(move || assert_eq!(cat(&d), len))),
        ("metadatafs warm value", Box::new(move || assert_eq!(cat(&v), len))),
        ("metadatafs warm token", Box::new(move || assert!(cat(&tok) > 0))),
    ];
    let medians = round_robin(&mut variants);
    let names: Vec<&str> = variants.iter().map(|(name, _)| *name).collect();
    drop(variants);

    let cold_value = cold.path.join(VALUE);
    let cold_median = median(timed(COLD_ITERATIONS, || assert_eq!(cat(&cold_value), len)));
    let url = format!("/computeMetadata/v1/{VALUE}");
    let get_median = median(timed(COLD_ITERATIONS, || {
        assert_eq!(http.send(reqwest::Method::GET, &url, "").len(), len)
    }));

    // Requests per warm read: a fresh mount, one cold read, then 1000 warm ones.
    let reads = 1000u64;
    let floor_before = keep.requests.load(Ordering::Relaxed);
    for _ in 0..reads {
        cat(&keep.file);
    }
    let floor_per_read = (keep.requests.load(Ordering::Relaxed) - floor_before) as f64 / 1000.0;
    let mut fuse_counts = Vec::new();
    for path in [VALUE, TOKEN] {
        let counting = Mount::start(&addr, "ttl=3600");
        cat(&counting.path.join(path));
        for _ in 0..reads {
            cat(&counting.path.join(path));
        }
        fuse_counts.push((path, per_read(&counting.stop(), reads)));
    }
    let before = http.requests();
    for _ in 0..reads {
        cat(&warm.path.join(VALUE));
    }
    let mds_per_1000 = http.requests() - before;
    let latencies = change_latency(&http, &warm, 15);

    let cpu = pinned.map_or("not pinned".to_string(), |cpu| format!("all on CPU {cpu}"));
    println!(
        "\nread_path: open+read+close of {VALUE} ({len} bytes), medians of {ROUNDS}×{BATCH} \
         interleaved, {cpu}\n"
    );
    println!("{:<26} {:>10} {:>12} {:>10}", "case", "median µs", "/keep-cache", "/tmpfs");
    let (floor, base) = (medians[1], medians[0]);
    for (name, m) in names.iter().zip(&medians) {
        println!("{name:<26} {m:>10.1} {:>11.2}x {:>9.1}x", m / floor, m / base);
    }
    for (name, m) in [("cold value (ttl=0)", cold_median), ("HTTP GET, kept-alive", get_median)] {
        println!("{name:<26} {m:>10.1} {:>11.2}x {:>9.1}x", m / floor, m / base);
    }
    println!("\nFUSE requests per warm read: floor keep-cache {floor_per_read:.2}");
    for (path, counts) in fuse_counts {
        println!("  metadatafs {path}: {counts}");
    }
    println!("MDS requests per 1000 warm reads: {mds_per_1000}");
    let mut sorted = latencies.clone();
    sorted.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "change visible to a new open() at ttl=3600: median {:.1} ms, max {:.1} ms ({} changes)",
        median(latencies),
        sorted.last().unwrap(),
        sorted.len()
    );
    println!(
        "daemon RSS after the run: {} KiB (warm mount), {} KiB (ttl=0 mount)",
        warm.rss_kib(),
        cold.rss_kib()
    );
    cold_reads_over_https();
}

/// Cold reads (ttl=0: one MDS request each, on a kept-alive connection) over plain HTTP and
/// over HTTPS with mutual TLS, from one `--tls` emulator, interleaved round-robin so both see
/// the same machine load; medians and their ratio.
fn cold_reads_over_https() {
    let creds = tempfile::tempdir().unwrap();
    let config = EmulatorConfig { tls: Some(creds.path().to_path_buf()), ..Default::default() };
    let emulator = Emulator::start(config).expect("TLS emulator");
    let addr = emulator.addr().to_string();
    let http = Mount::start(&addr, "ttl=0,mtls=off");
    let https = Mount::start(&addr, &format!("ttl=0,mtls=on,mtls_dir={}", creds.path().display()));
    let (http_value, https_value) = (http.path.join(VALUE), https.path.join(VALUE));
    let size = cat(&http_value);
    assert_eq!(cat(&https_value), size);
    let (mut http_samples, mut https_samples) = (Vec::new(), Vec::new());
    let time = |path: &Path, samples: &mut Vec<f64>| {
        let start = Instant::now();
        assert_eq!(cat(path), size);
        samples.push(start.elapsed().as_secs_f64() * 1e6);
    };
    for round in 0..COLD_ITERATIONS {
        // Alternate which goes first, so neither always follows the other's cache misses.
        if round % 2 == 0 {
            time(&http_value, &mut http_samples);
            time(&https_value, &mut https_samples);
        } else {
            time(&https_value, &mut https_samples);
            time(&http_value, &mut http_samples);
        }
    }
    let median = |samples: &mut Vec<f64>| {
        samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
        samples[samples.len() / 2]
    };
    let (http_median, https_median) = (median(&mut http_samples), median(&mut https_samples));
    println!("\ncold read of {VALUE} (ttl=0), {COLD_ITERATIONS} rounds interleaved\n");
    println!("{:<24} {:>12} {:>14}", "transport", "median µs", "median/HTTP");
    println!("{:<24} {http_median:>12.1} {:>13.1}x", "plain HTTP", 1.0);
    println!(
        "{:<24} {https_median:>12.1} {:>13.1}x",
        "HTTPS, mutual TLS",
        https_median / http_median
    );
}
