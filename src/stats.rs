//! Counters gathered where things happen, for `.metadatafs/status` and `metrics` (`status.rs`
//! renders them). Each type is owned by the layer it counts: [`MdsStats`] by the HTTP client,
//! `cache::CacheStats` by the cache, `token::TokenStats` by the tokens, [`Watcher`] by whoever
//! drives the watcher.
//!
//! Invariants:
//! - Nothing here holds a value, a token or a response body: only paths, status codes, counts,
//!   durations and error messages (which never carry bodies, see `error.rs`).
//! - Recording is cheap (one short mutex or an atomic) and never awaits.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::Error;

/// Upper bounds of the request-latency histogram buckets, in seconds (`+Inf` is implied).
/// From a loopback MDS answering in a millisecond to the default 10 s `timeout`.
pub const LATENCY_BUCKETS: [f64; 13] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// The `code` label of a request that got no HTTP answer (refused, reset, timed out).
pub const NO_ANSWER: &str = "none";

/// A Prometheus-style histogram: per-bucket counts (not cumulative), sum and count.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    /// `buckets[i]` counts observations `<= LATENCY_BUCKETS[i]` and above the bucket before;
    /// the last element counts those above every bound.
    pub buckets: [u64; LATENCY_BUCKETS.len() + 1],
    pub sum: f64,
    pub count: u64,
}

impl Histogram {
    pub fn observe(&mut self, took: Duration) {
        let seconds = took.as_secs_f64();
        let index = LATENCY_BUCKETS.iter().position(|&le| seconds <= le);
        self.buckets[index.unwrap_or(LATENCY_BUCKETS.len())] += 1;
        self.sum += seconds;
        self.count += 1;
    }
}

/// A message and when it happened.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub message: String,
    pub at: Instant,
}

impl Event {
    fn now(message: String) -> Self {
        Event { message: crate::paths::redacted(&message).into_owned(), at: Instant::now() }
    }
}

/// What the MDS client saw: requests by status code, their latency, whether the metadata
/// server answered the last one, and the last error a request ended with.
#[derive(Debug)]
pub struct MdsStats {
    endpoint: String,
    inner: Mutex<MdsCounters>,
}

#[derive(Debug, Clone, Default)]
pub struct MdsCounters {
    /// HTTP requests (every attempt, retries included) by status code, or [`NO_ANSWER`].
    pub requests: BTreeMap<String, u64>,
    /// Latency of every attempt except long polls (`wait_for_change`), which wait on purpose.
    pub latency: Histogram,
    /// Whether the last attempt got an answer from a metadata server (an HTTP response
    /// carrying `Metadata-Flavor: Google`), and when.
    pub last_answer: Option<(bool, Instant)>,
    /// Requests that failed after retries, and the last error one ended with; 404s are
    /// answers, not failures.
    pub failures: u64,
    pub last_error: Option<Event>,
}

impl MdsStats {
    pub fn new(endpoint: &str) -> Self {
        MdsStats { endpoint: endpoint.to_string(), inner: Mutex::default() }
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// One HTTP attempt for `path`: its status code (`None`: no HTTP answer), whether the
    /// answer came from a metadata server, and how long it took.
    pub fn attempt(&self, path: &str, code: Option<u16>, from_mds: bool, took: Duration) {
        let code = code.map_or_else(|| NO_ANSWER.to_string(), |c| c.to_string());
        let mut inner = self.inner.lock().unwrap();
        *inner.requests.entry(code).or_default() += 1;
        if !is_long_poll(path) {
            inner.latency.observe(took);
        }
        inner.last_answer = Some((from_mds, Instant::now()));
    }

    /// How a whole request (retries included) ended, when it failed.
    pub fn failed(&self, error: &Error) {
        if *error != Error::NotFound {
            let mut inner = self.inner.lock().unwrap();
            inner.failures += 1;
            inner.last_error = Some(Event::now(error.to_string()));
        }
    }

    pub fn snapshot(&self) -> MdsCounters {
        self.inner.lock().unwrap().clone()
    }
}

fn is_long_poll(path: &str) -> bool {
    path.split_once('?').is_some_and(|(_, query)| query.contains("wait_for_change=true"))
}

/// What the watcher (the one recursive long poll, SPEC §4) is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WatcherPhase {
    /// Nothing has started a watcher on this mount.
    #[default]
    NotStarted,
    /// A long poll is open, or about to be reopened.
    Watching,
    /// The last long poll failed; waiting before the next one.
    Retrying,
    Stopped,
}

impl WatcherPhase {
    pub fn name(self) -> &'static str {
        match self {
            WatcherPhase::NotStarted => "not started",
            WatcherPhase::Watching => "watching",
            WatcherPhase::Retrying => "retrying",
            WatcherPhase::Stopped => "stopped",
        }
    }

    pub const ALL: [WatcherPhase; 4] = [
        WatcherPhase::NotStarted,
        WatcherPhase::Watching,
        WatcherPhase::Retrying,
        WatcherPhase::Stopped,
    ];
}

/// A shared handle on the watcher's state: the watcher clones it (`Core::watcher()`) and
/// reports, the status file reads. Cloning shares the state.
#[derive(Debug, Clone, Default)]
pub struct Watcher(Arc<Mutex<WatcherState>>);

#[derive(Debug, Clone, Default)]
pub struct WatcherState {
    pub phase: WatcherPhase,
    /// When `phase` was entered.
    pub since: Option<Instant>,
    /// Changes the watcher has seen (each one a new ETag of the tree).
    pub changes: u64,
    pub last_change: Option<Instant>,
    pub last_error: Option<Event>,
}

impl Watcher {
    pub fn set(&self, phase: WatcherPhase) {
        let mut state = self.0.lock().unwrap();
        if state.phase != phase {
            state.phase = phase;
            state.since = Some(Instant::now());
        }
    }

    /// The watcher saw the tree change.
    pub fn changed(&self) {
        let mut state = self.0.lock().unwrap();
        state.changes += 1;
        state.last_change = Some(Instant::now());
    }

    /// A long poll failed: the watcher retries.
    pub fn failed(&self, error: &dyn std::fmt::Display) {
        self.set(WatcherPhase::Retrying);
        self.0.lock().unwrap().last_error = Some(Event::now(error.to_string()));
    }

    pub fn snapshot(&self) -> WatcherState {
        self.0.lock().unwrap().clone()
    }
}

/// FUSE requests the kernel sent, by operation: on the no-open path a warm read sends none.
pub const FUSE_OPS: [&str; 10] = [
    "lookup",
    "getattr",
    "open",
    "read",
    "flush",
    "release",
    "opendir",
    "readdir",
    "forget",
    "interrupted",
];

#[derive(Debug, Default)]
pub struct FuseOps([AtomicU64; FUSE_OPS.len()]);

impl FuseOps {
    pub fn add(&self, op: &str) {
        if let Some(i) = FUSE_OPS.iter().position(|o| *o == op) {
            self.0[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        FUSE_OPS.iter().zip(&self.0).map(|(op, n)| (*op, n.load(Ordering::Relaxed))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_upper_bounds_and_the_last_one_catches_the_rest() {
        let mut h = Histogram::default();
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_millis(1));
        h.observe(Duration::from_millis(30));
        h.observe(Duration::from_secs(60));
        assert_eq!(h.buckets[0], 2, "0.0005 and 0.001 are <= 0.001");
        assert_eq!(h.buckets[5], 1, "0.03 is in (0.025, 0.05]");
        assert_eq!(h.buckets[LATENCY_BUCKETS.len()], 1);
        assert_eq!(h.count, 4);
        assert!((h.sum - 60.0315).abs() < 1e-9);
    }

    #[test]
    fn requests_by_code_skip_long_polls_in_latency_and_404_is_no_error() {
        let stats = MdsStats::new("169.254.169.254");
        stats.attempt("project/project-id", Some(200), true, Duration::from_millis(2));
        stats.attempt(
            "instance/?recursive=true&wait_for_change=true",
            Some(200),
            true,
            Duration::from_secs(60),
        );
        stats.attempt("x", None, false, Duration::from_secs(1));
        stats.failed(&Error::NotFound);
        let counters = stats.snapshot();
        assert_eq!(counters.requests["200"], 2);
        assert_eq!(counters.requests[NO_ANSWER], 1);
        assert_eq!(counters.latency.count, 2);
        assert_eq!(counters.last_answer.map(|(answered, _)| answered), Some(false));
        assert_eq!(counters.last_error, None);
        stats.failed(&Error::Unavailable { path: "x".into(), reason: "refused".into() });
        assert!(stats.snapshot().last_error.unwrap().message.contains("refused"));
    }

    #[test]
    fn the_watcher_handle_is_shared_and_starts_not_started() {
        let watcher = Watcher::default();
        assert_eq!(watcher.snapshot().phase, WatcherPhase::NotStarted);
        let driver = watcher.clone();
        driver.set(WatcherPhase::Watching);
        driver.changed();
        assert_eq!(watcher.snapshot().phase, WatcherPhase::Watching);
        assert_eq!(watcher.snapshot().changes, 1);
        driver.failed(&"connection reset");
        let state = watcher.snapshot();
        assert_eq!(
            (state.phase, state.last_error.unwrap().message.as_str()),
            (WatcherPhase::Retrying, "connection reset")
        );
    }
}
