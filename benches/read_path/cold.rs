//! Cold reads: what a read costs when the daemon has to ask the server, beside one kept-alive
//! HTTP GET of the same value from the same server (the least any read of it can cost).

use std::path::Path;
use std::time::Duration;

use metadatafs::emulator::{Emulator, EmulatorConfig};
use metadatafs::upstream::mds::{HttpConfig, HttpMds, Mds};
use metadatafs::upstream::mtls::Settings;

use crate::measure::{cat, Http, Stats};
use crate::mount::Mount;

/// The directory of the cold keys, `c0`..: listed once, each value then read once.
pub const COLD_DIR: &str = "project/attributes";
pub const COLD_KEYS: usize = 200;

pub fn cold_key(i: usize) -> String {
    format!("{COLD_DIR}/c{i}")
}

/// How long after a directory is read from its start the daemon takes a lookup in it for
/// `ls -l`'s and prefetches the rest (fs/contents.rs `LISTING_WINDOW`, 2 s): the cold reads
/// start after it, so each fetches its own value alone.
const PAST_LISTING_WINDOW: Duration = Duration::from_millis(2500);

/// The name of the case that GETs the value with the daemon's own client, the way a cold
/// lookup does: handed from another thread to a 4-worker runtime, through `HttpMds` (retries
/// within a deadline, the size limit, the status counters). Against the plain GET it shows
/// what the client costs; against a cold read, what the two FUSE round trips (LOOKUP, READ)
/// and the core do.
pub const DAEMON_GET: &str = "the daemon's client, GET handed to its runtime";

/// `HttpMds` on a runtime built as the daemon builds its own.
struct DaemonClient {
    runtime: tokio::runtime::Runtime,
    mds: std::sync::Arc<HttpMds>,
}

impl DaemonClient {
    fn new(addr: &str) -> DaemonClient {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_all()
            .build()
            .unwrap();
        let config = HttpConfig {
            endpoint: addr.to_string(),
            timeout: Duration::from_secs(10),
            max_value: 1 << 20,
            mtls: Settings::off(),
        };
        let mds = runtime.block_on(async { HttpMds::new(config) }).unwrap();
        DaemonClient { runtime, mds: std::sync::Arc::new(mds) }
    }

    /// GET `path` from a task, waiting here for its answer: its length.
    fn get(&self, path: &str) -> usize {
        let (mds, path) = (self.mds.clone(), path.to_string());
        let (answer, answered) = std::sync::mpsc::channel();
        self.runtime.spawn(async move {
            let _ = answer.send(mds.get(&path).await.map(|body| body.len()));
        });
        answered.recv().unwrap().unwrap()
    }
}

/// A never-read value in a directory already listed, on each of `listed` (mounts with a long
/// `ttl` that have never read a cold key), and a value at `ttl=0` on `ttl0`, each beside a
/// kept-alive GET and the daemon's client's GET ([`DAEMON_GET`]): `COLD_KEYS` rounds, one of
/// each per round, in an order that rotates.
pub fn listed_and_ttl0(
    http: &Http,
    listed: &[(&str, &Mount)],
    ttl0: &Mount,
    value: &str,
) -> Vec<(String, Stats)> {
    for (_, mount) in listed {
        // Plain `ls`: the listing only, no lookup, so no value is fetched.
        assert!(std::fs::read_dir(mount.join(COLD_DIR)).unwrap().count() >= COLD_KEYS);
    }
    std::thread::sleep(PAST_LISTING_WINDOW);
    let len = http.get(value);
    let daemon = DaemonClient::new(http.addr());
    let mut names: Vec<String> = listed.iter().map(|(name, _)| name.to_string()).collect();
    names.push("cold value, ttl=0 (no-open)".into());
    names.push("HTTP GET, kept-alive".into());
    names.push(DAEMON_GET.into());
    let mut samples = vec![Vec::new(); names.len()];
    for i in 0..COLD_KEYS {
        let key = cold_key(i);
        let expected = http.get(&key);
        for k in 0..names.len() {
            let which = (i + k) % names.len();
            let start = std::time::Instant::now();
            if which < listed.len() {
                assert_eq!(cat(&listed[which].1.join(&key)), expected);
            } else if which == listed.len() {
                assert_eq!(cat(&ttl0.join(value)), len);
            } else if which == listed.len() + 1 {
                assert_eq!(http.get(&key), expected);
            } else {
                assert_eq!(daemon.get(&key), expected);
            }
            samples[which].push(start.elapsed().as_secs_f64() * 1e6);
        }
    }
    names.into_iter().zip(samples.into_iter().map(Stats::of)).collect()
}

/// Cold reads (ttl=0: one MDS request each, on a kept-alive connection) over plain HTTP and
/// over HTTPS with mutual TLS, from one `--tls` emulator, interleaved round-robin so both see
/// the same machine load: medians and their ratio.
pub fn over_https(binary: &Path, value: &str) -> (Stats, Stats) {
    let creds = tempfile::tempdir().unwrap();
    let config = EmulatorConfig { tls: Some(creds.path().to_path_buf()), ..Default::default() };
    let emulator = Emulator::start(config).expect("TLS emulator");
    let addr = emulator.addr().to_string();
    let http = Mount::start(binary, &addr, "ttl=0,mtls=off");
    let mtls = format!("ttl=0,mtls=on,mtls_dir={}", creds.path().display());
    let https = Mount::start(binary, &addr, &mtls);
    let (http_value, https_value) = (http.join(value), https.join(value));
    let size = cat(&http_value);
    assert_eq!(cat(&https_value), size);
    let (mut http_samples, mut https_samples) = (Vec::new(), Vec::new());
    let time = |path: &Path, samples: &mut Vec<f64>| {
        let start = std::time::Instant::now();
        assert_eq!(cat(path), size);
        samples.push(start.elapsed().as_secs_f64() * 1e6);
    };
    for round in 0..COLD_KEYS {
        // Alternate which goes first, so neither always follows the other's cache misses.
        if round % 2 == 0 {
            time(&http_value, &mut http_samples);
            time(&https_value, &mut https_samples);
        } else {
            time(&https_value, &mut https_samples);
            time(&http_value, &mut http_samples);
        }
    }
    (Stats::of(http_samples), Stats::of(https_samples))
}
