//! The read path, measured: per open+read+close latency of a file on tmpfs (the baseline), a
//! warm plain value, a warm `token`, a cold value, and an HTTP GET of the same value straight
//! from the emulator over a kept-alive connection, each as a ratio to tmpfs measured in the
//! same run; plus MDS requests per 1000 warm reads and the daemon's resident memory.
//!
//! `cargo bench --bench read_path`. It prints a table and asserts nothing: numbers from a
//! shared 2-core machine are for comparing, not for failing a build.

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use metadatafs::emulator::{Emulator, EmulatorConfig};

const WARM_ITERATIONS: usize = 3000;
const COLD_ITERATIONS: usize = 300;
const VALUE: &str = "project/project-id";
const TOKEN: &str = "instance/service-accounts/default/token";

struct Mount {
    _dir: tempfile::TempDir,
    path: PathBuf,
    child: Child,
}

impl Mount {
    fn start(endpoint: &str, options: &str) -> Mount {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta");
        std::fs::create_dir(&path).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_metadatafs"))
            .args(["-f", "--endpoint", endpoint, "-o", options])
            .arg(&path)
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let parent_dev = std::fs::metadata(dir.path()).unwrap().dev();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::fs::metadata(&path).map(|m| m.dev()).unwrap_or(parent_dev) == parent_dev {
            assert!(Instant::now() < deadline, "mount did not come up");
            std::thread::sleep(Duration::from_millis(10));
        }
        Mount { _dir: dir, path, child }
    }

    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// Median and mean of `iterations` runs of `op`, in microseconds.
fn measure(iterations: usize, mut op: impl FnMut()) -> (f64, f64) {
    for _ in 0..iterations / 10 {
        op();
    }
    let mut samples: Vec<f64> = (0..iterations)
        .map(|_| {
            let start = Instant::now();
            op();
            start.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let mean = samples.iter().sum::<f64>() / samples.len() as f64;
    (samples[samples.len() / 2], mean)
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

fn counters(runtime: &tokio::runtime::Runtime, client: &reqwest::Client, addr: &str) -> u64 {
    runtime.block_on(async {
        let body = client
            .get(format!("http://{addr}/emulator/counters"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let counters: serde_json::Value = serde_json::from_str(&body).unwrap();
        counters.as_object().unwrap().values().filter_map(|v| v.as_u64()).sum()
    })
}

fn main() {
    metadatafs::mtls::crypto_provider();
    let emulator = Emulator::start(EmulatorConfig::default()).expect("emulator");
    let addr = emulator.addr().to_string();
    let warm = Mount::start(&addr, "ttl=3600");
    let cold = Mount::start(&addr, "ttl=0");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let client = reqwest::Client::new();

    let value = std::fs::read(warm.path.join(VALUE)).unwrap();
    let shm = tempfile::tempdir_in("/dev/shm").unwrap();
    let baseline = shm.path().join("project-id");
    std::fs::write(&baseline, &value).unwrap();
    cat(&warm.path.join(TOKEN));

    let mut rows: Vec<(&str, (f64, f64))> = Vec::new();
    rows.push((
        "tmpfs (baseline)",
        measure(WARM_ITERATIONS, || assert_eq!(cat(&baseline), value.len())),
    ));
    let warm_value = warm.path.join(VALUE);
    rows.push((
        "warm plain value",
        measure(WARM_ITERATIONS, || assert_eq!(cat(&warm_value), value.len())),
    ));
    let warm_token = warm.path.join(TOKEN);
    rows.push(("warm token", measure(WARM_ITERATIONS, || assert!(cat(&warm_token) > 0))));
    let cold_value = cold.path.join(VALUE);
    rows.push((
        "cold value (ttl=0)",
        measure(COLD_ITERATIONS, || assert_eq!(cat(&cold_value), value.len())),
    ));
    let url = format!("http://{addr}/computeMetadata/v1/{VALUE}");
    rows.push((
        "HTTP GET, kept-alive",
        measure(COLD_ITERATIONS, || {
            let body = runtime.block_on(async {
                let request = client.get(&url).header("Metadata-Flavor", "Google");
                request.send().await.unwrap().bytes().await.unwrap()
            });
            assert_eq!(body.len(), value.len());
        }),
    ));

    let before = counters(&runtime, &client, &addr);
    for _ in 0..1000 {
        cat(&warm_value);
    }
    let requests_per_1000 = counters(&runtime, &client, &addr) - before;

    let base = rows[0].1 .0;
    println!("\nread_path: open+read+close of {VALUE} ({} bytes)\n", value.len());
    println!("{:<24} {:>12} {:>12} {:>14}", "case", "median µs", "mean µs", "median/tmpfs");
    for (name, (median, mean)) in &rows {
        println!("{name:<24} {median:>12.1} {mean:>12.1} {:>13.1}x", median / base);
    }
    println!("\nMDS requests per 1000 warm reads: {requests_per_1000}");
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
