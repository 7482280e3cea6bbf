//! What is timed (`cat`, `ls -l`, an HTTP GET) and how: interleaved round-robin, medians and
//! means.

use std::ffi::CString;
use std::io::Read;
use std::os::unix::ffi::OsStringExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// open + read to the end + close, as `cat` does; returns the bytes read.
pub fn cat(path: &Path) -> usize {
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

/// What `ls -l` asks the kernel: the directory's entries, then `lstat` of each. Returns the
/// number of entries.
pub fn ls_l(dir: &Path) -> usize {
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        std::fs::symlink_metadata(entry.unwrap().path()).unwrap();
        n += 1;
    }
    n
}

/// `ls -l` as GNU `ls` does it: as [`ls_l`], and each entry's SELinux label and POSIX ACL
/// too (`lgetxattr`, `getxattr`), which a FUSE filesystem is asked unless it once said ENOSYS.
pub fn ls_l_gnu(dir: &Path) -> usize {
    let mut n = 0;
    let mut label = [0u8; 256];
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        std::fs::symlink_metadata(&path).unwrap();
        let path = CString::new(path.into_os_string().into_vec()).unwrap();
        // SAFETY: NUL-terminated strings and a buffer of the length given; errors (ENODATA,
        // EOPNOTSUPP) are what `ls` gets from a file with no label or ACL, and ignores.
        unsafe {
            let buf = label.as_mut_ptr().cast();
            libc::lgetxattr(path.as_ptr(), c"security.selinux".as_ptr(), buf, label.len());
            let acl = c"system.posix_acl_access".as_ptr();
            libc::getxattr(path.as_ptr(), acl, std::ptr::null_mut(), 0);
        }
        n += 1;
    }
    n
}

/// Median and means of a set of samples, in µs.
#[derive(Debug, Clone, Copy)]
pub struct Stats {
    pub median: f64,
    /// The mean of the samples under [`SLOW`].
    pub mean: f64,
    /// How many samples were over [`SLOW`], left out of the mean.
    pub slow: usize,
}

/// Longer than any warm read, cold read or `ls -l` takes here: a sample this slow is the
/// machine (a neighbour's time slice), not the read, and would make every mean alike.
pub const SLOW: Duration = Duration::from_millis(2);

impl Stats {
    pub fn of(mut samples: Vec<f64>) -> Stats {
        samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let median = samples[samples.len() / 2];
        let fast = samples.partition_point(|&s| s <= micros(SLOW));
        let mean = samples[..fast].iter().sum::<f64>() / fast.max(1) as f64;
        Stats { median, mean, slow: samples.len() - fast }
    }
}

fn micros(elapsed: Duration) -> f64 {
    elapsed.as_secs_f64() * 1e6
}

/// A named thing to time.
pub struct Case {
    pub name: String,
    pub op: Box<dyn FnMut()>,
}

impl Case {
    pub fn new(name: impl Into<String>, op: impl FnMut() + 'static) -> Case {
        Case { name: name.into(), op: Box::new(op) }
    }
}

/// What [`round_robin`] measured.
#[derive(Debug)]
pub struct Run {
    pub stats: Vec<Stats>,
    pub rounds: usize,
    pub span: Duration,
}

/// Each case in turn, `batch` calls at a time, round after round until there have been
/// `min_rounds` and `min_span` has passed, so a noisy neighbour hits every case alike and each
/// case's samples are spread across the whole span. Each round starts one case later than the
/// last, so no case always follows the same other.
pub fn round_robin(cases: &mut [Case], batch: usize, min_rounds: usize, min_span: Duration) -> Run {
    for case in cases.iter_mut() {
        (0..batch).for_each(|_| (case.op)());
    }
    let mut samples = vec![Vec::new(); cases.len()];
    let start = Instant::now();
    let mut rounds = 0;
    while rounds < min_rounds || start.elapsed() < min_span {
        for k in 0..cases.len() {
            let i = (rounds + k) % cases.len();
            let op = &mut cases[i].op;
            for _ in 0..batch {
                let t = Instant::now();
                op();
                samples[i].push(micros(t.elapsed()));
            }
        }
        rounds += 1;
    }
    let span = start.elapsed();
    Run { stats: samples.into_iter().map(Stats::of).collect(), rounds, span }
}

/// A kept-alive HTTP client of the emulator, on a current-thread runtime of its own.
pub struct Http {
    runtime: tokio::runtime::Runtime,
    client: reqwest::Client,
    addr: String,
}

impl Http {
    pub fn new(addr: &str) -> Http {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        Http { runtime, client: reqwest::Client::new(), addr: addr.to_string() }
    }

    pub fn send(&self, method: reqwest::Method, path: &str, body: &str) -> String {
        self.runtime.block_on(async {
            let request = self.client.request(method, format!("http://{}{path}", self.addr));
            let request = request.header("Metadata-Flavor", "Google").body(body.to_string());
            let response = request.send().await.unwrap();
            assert!(response.status().is_success(), "{path}: {}", response.status());
            response.text().await.unwrap()
        })
    }

    /// The emulator's `HOST:PORT`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub fn put(&self, path: &str, value: &str) {
        self.send(reqwest::Method::PUT, &format!("/emulator/values/{path}"), value);
    }

    pub fn delete(&self, path: &str) {
        self.send(reqwest::Method::DELETE, &format!("/emulator/values/{path}"), "");
    }

    /// `GET /computeMetadata/v1/<path>`: the value's length.
    pub fn get(&self, path: &str) -> usize {
        self.send(reqwest::Method::GET, &format!("/computeMetadata/v1/{path}"), "").len()
    }

    /// Requests the emulator has served, of every kind.
    pub fn requests(&self) -> u64 {
        let body = self.send(reqwest::Method::GET, "/emulator/counters", "");
        let counters: serde_json::Value = serde_json::from_str(&body).unwrap();
        counters.as_object().unwrap().values().filter_map(|v| v.as_u64()).sum()
    }
}
