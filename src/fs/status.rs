//! `/meta/.metadatafs/`: `status` (JSON) and `metrics` (Prometheus text exposition 0.0.4), both
//! rendered from the counters kept in `stats.rs`, `cache.rs` and `token.rs` (SPEC §5).
//!
//! Invariants:
//! - Rendered per open: the core copies one rendering into the file handle, so one `open()`
//!   reads one consistent snapshot and the next `open()` sees the counters as they are then.
//!   These files must stay direct-I/O with attribute TTL 0: their size changes with every
//!   rendering, and a page-cached copy (FOPEN_KEEP_CACHE) would show old counters or be cut at
//!   an old size.
//! - Only paths, counts, times and error messages: never a value, never a token byte. Error
//!   messages name paths and statuses, never bodies (`error.rs`).
//! - Small and fast whatever was looked up, by whomever: tokens are counted by kind
//!   (`token_slots`), with the soonest expiry and refresh; per-token detail only for each
//!   account's plain `token`. No audience or scope set anyone asked for is ever shown.
//! - World-readable (0444) whatever `secret_paths` says: nothing in them is secret.
//! - `.metadatafs` cannot collide with a server key: the MDS lists no dot-names (its keys are
//!   letters, digits, `-` and `_`). Were it ever to list `.metadatafs` at the root, ours wins and
//!   the server's is unreachable through the mount, with a warning in the log.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::cache::CacheStats;
use crate::clock::Clock;
use crate::fs::node::StatusFile;
use crate::stats::LATENCY_BUCKETS;
use crate::stats::{Event, FuseOps, MdsCounters, MdsStats, Watcher, WatcherPhase, WatcherState};
use crate::token::{Summary, TokenStats};

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// What the status files know of the mount itself: when it started, and the watcher handle.
#[derive(Debug)]
pub struct Board {
    started: Instant,
    started_at: SystemTime,
    pub watcher: Watcher,
    /// The read path the kernel and the daemon agreed on at mount, and why (fuse/).
    pub read_path: Mutex<(&'static str, &'static str)>,
    pub fuse: FuseOps,
}

impl Board {
    pub fn new(clock: &dyn Clock) -> Self {
        Board {
            started: clock.now(),
            started_at: SystemTime::now(),
            watcher: Watcher::default(),
            read_path: Mutex::new(("open", "not mounted yet")),
            fuse: FuseOps::default(),
        }
    }
}

/// Where the counters are; the core fills this in (`Core::render_status`).
pub(crate) struct Sources<'a> {
    pub board: &'a Board,
    pub clock: &'a dyn Clock,
    pub max_entries: usize,
    pub cache: &'a CacheStats,
    pub tokens: Summary,
    pub token_stats: &'a TokenStats,
    pub mds: Option<&'a MdsStats>,
    /// `Mds::transport_kind`'s name: `http`, `https-mtls` or `http-fallback`.
    pub transport: Option<&'static str>,
}

/// Every number read once, so the JSON and the metrics of one rendering agree.
#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    pub uptime: Duration,
    pub started_at: SystemTime,
    pub now: (Instant, SystemTime),
    pub endpoint: Option<String>,
    pub transport: Option<&'static str>,
    pub mds: MdsCounters,
    pub cache: [u64; 7],
    pub tokens: Summary,
    pub token_fetches: [u64; 3],
    pub watcher: WatcherState,
    pub read_path: (&'static str, &'static str),
    pub fuse: Vec<(&'static str, u64)>,
}

const CACHE_FIELDS: [&str; 7] =
    ["entries", "max_entries", "bytes", "hits", "misses", "evictions", "stale_served"];
const TOKEN_OUTCOMES: [&str; 3] = ["new", "same", "failed"];
const TOKEN_KINDS: [&str; 3] = ["plain", "scoped", "identity"];

impl Snapshot {
    pub fn take(s: &Sources) -> Snapshot {
        use std::sync::atomic::Ordering::Relaxed;
        let c = s.cache;
        let t = s.token_stats;
        Snapshot {
            uptime: s.clock.now().saturating_duration_since(s.board.started),
            started_at: s.board.started_at,
            now: (Instant::now(), SystemTime::now()),
            endpoint: s.mds.map(|m| m.endpoint().to_string()),
            transport: s.transport,
            mds: s.mds.map(MdsStats::snapshot).unwrap_or_default(),
            cache: [
                c.entries.load(Relaxed) as u64,
                s.max_entries as u64,
                c.bytes.load(Relaxed) as u64,
                c.hits.load(Relaxed),
                c.misses.load(Relaxed),
                c.evictions.load(Relaxed),
                c.stale_served.load(Relaxed),
            ],
            tokens: s.tokens.clone(),
            token_fetches: [t.new.load(Relaxed), t.same.load(Relaxed), t.failed.load(Relaxed)],
            watcher: s.board.watcher.snapshot(),
            read_path: *s.board.read_path.lock().unwrap(),
            fuse: s.board.fuse.snapshot(),
        }
    }

    fn ago(&self, at: Instant) -> u64 {
        self.now.0.saturating_duration_since(at).as_secs()
    }

    fn event(&self, event: &Option<Event>) -> Value {
        match event {
            Some(e) => json!({"message": e.message, "seconds_ago": self.ago(e.at)}),
            None => Value::Null,
        }
    }

    fn wall_in(&self, secs: u64) -> String {
        rfc3339(self.now.1 + Duration::from_secs(secs))
    }
}

pub(crate) fn render(file: StatusFile, sources: &Sources) -> Vec<u8> {
    let snapshot = Snapshot::take(sources);
    match file {
        StatusFile::Status => {
            let mut text = serde_json::to_string_pretty(&status_json(&snapshot)).unwrap();
            text.push('\n');
            text.into_bytes()
        }
        StatusFile::Metrics => metrics_text(&snapshot).into_bytes(),
    }
}

/// How many tokens of each kind are held, and the soonest expiry and refresh among them.
fn token_slots(s: &Snapshot) -> Value {
    let mut slots: serde_json::Map<String, Value> =
        TOKEN_KINDS.iter().zip(s.tokens.held).map(|(k, v)| (k.to_string(), v.into())).collect();
    slots.insert("soonest_expires_in".into(), s.tokens.soonest_expiry.into());
    slots.insert("next_refresh_in".into(), s.tokens.next_refresh.into());
    Value::Object(slots)
}

pub(crate) fn status_json(s: &Snapshot) -> Value {
    let cache: serde_json::Map<String, Value> =
        CACHE_FIELDS.iter().zip(s.cache).map(|(k, v)| (k.to_string(), v.into())).collect();
    let tokens: Vec<Value> = s
        .tokens
        .plain
        .iter()
        .map(|t| {
            json!({
                "path": t.path,
                "expires_in": t.expires_in,
                "expires_at": s.wall_in(t.expires_in),
                "refresh_in": t.refresh_in,
                "next_refresh_at": s.wall_in(t.refresh_in),
            })
        })
        .collect();
    let fetches: serde_json::Map<String, Value> = TOKEN_OUTCOMES
        .iter()
        .zip(s.token_fetches)
        .map(|(k, v)| (k.to_string(), v.into()))
        .collect();
    let w = &s.watcher;
    json!({
        "version": VERSION,
        "pid": std::process::id(),
        "started_at": rfc3339(s.started_at),
        "uptime_seconds": s.uptime.as_secs(),
        "endpoint": s.endpoint,
        "transport": s.transport,
        "mds": {
            "answered_last": s.mds.last_answer.map(|(answered, _)| answered),
            "last_request_seconds_ago": s.mds.last_answer.map(|(_, at)| s.ago(at)),
            "last_error": s.event(&s.mds.last_error),
            "failures": s.mds.failures,
            "requests": s.mds.requests,
        },
        "read_path": {"path": s.read_path.0, "why": s.read_path.1},
        "fuse_requests": s.fuse.iter().map(|(op, n)| (op.to_string(), Value::from(*n))).collect::<serde_json::Map<_, _>>(),
        "cache": cache,
        "tokens": tokens,
        "token_slots": token_slots(s),
        "token_fetches": fetches,
        "watcher": {
            "state": w.phase.name(),
            "since_seconds_ago": w.since.map(|at| s.ago(at)),
            "changes": w.changes,
            "last_change_seconds_ago": w.last_change.map(|at| s.ago(at)),
            "last_error": s.event(&w.last_error),
        },
    })
}

/// Prometheus text exposition: `# HELP` and `# TYPE` before each family, `metadatafs_` names,
/// counters ending in `_total`, label values escaped.
pub(crate) fn metrics_text(s: &Snapshot) -> String {
    let mut out = Metrics::default();
    let since_epoch = s.started_at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    out.family("build_info", "gauge", "The running metadatafs version.");
    out.sample("build_info", &[("version", VERSION)], 1);
    out.family("start_time_seconds", "gauge", "When this mount started, in Unix time.");
    out.sample("start_time_seconds", &[], since_epoch);
    out.family("uptime_seconds", "gauge", "Seconds since this mount started.");
    out.sample("uptime_seconds", &[], s.uptime.as_secs());

    let help = "1 for the channel requests take: http, https-mtls or http-fallback.";
    out.family("mds_transport", "gauge", help);
    if let Some(current) = s.transport {
        for kind in ["http", "https-mtls", "http-fallback"] {
            out.sample("mds_transport", &[("kind", kind)], u64::from(current == kind));
        }
    }
    out.family(
        "read_path",
        "gauge",
        "1 for the read path: no-open (warm reads ask the daemon nothing) or open.",
    );
    for path in ["no-open", "open"] {
        out.sample("read_path", &[("path", path)], u64::from(s.read_path.0 == path));
    }
    out.family("fuse_requests_total", "counter", "FUSE requests the kernel sent, by operation.");
    for (op, n) in &s.fuse {
        out.sample("fuse_requests_total", &[("op", op)], *n);
    }
    out.family("mds_up", "gauge", "1 if the metadata server answered the last request, else 0.");
    if let Some((answered, _)) = s.mds.last_answer {
        out.sample("mds_up", &[], u64::from(answered));
    }
    let help = "HTTP requests to the metadata server, retries included, by status code \
                (code=\"none\": no answer).";
    out.family("mds_requests_total", "counter", help);
    for (code, count) in &s.mds.requests {
        out.sample("mds_requests_total", &[("code", code)], *count);
    }
    let help = "Reads the metadata server failed after retries (404s excluded).";
    out.family("mds_failures_total", "counter", help);
    out.sample("mds_failures_total", &[], s.mds.failures);
    let name = "mds_request_duration_seconds";
    let help = "Latency of each request to the metadata server (long polls excluded).";
    out.family(name, "histogram", help);
    let mut cumulative = 0;
    for (i, count) in s.mds.latency.buckets.iter().enumerate() {
        cumulative += count;
        let le = LATENCY_BUCKETS.get(i).map_or("+Inf".to_string(), |b| b.to_string());
        out.sample(&format!("{name}_bucket"), &[("le", &le)], cumulative);
    }
    out.line(&format!("metadatafs_{name}_sum {}", s.mds.latency.sum));
    out.sample(&format!("{name}_count"), &[], s.mds.latency.count);

    let cache_help = [
        ("entries", "gauge", "Keys the cache holds a value (or a 404) for."),
        ("max_entries", "gauge", "The cache size bound (max_entries)."),
        ("bytes", "gauge", "Bytes of cached values and listings."),
        ("hits_total", "counter", "Reads answered from a fresh cached value."),
        ("misses_total", "counter", "Reads that fetched from the metadata server."),
        ("evictions_total", "counter", "Keys dropped to stay within max_entries."),
        ("stale_served_total", "counter", "Reads answered with the last good value."),
    ];
    for ((suffix, kind, help), value) in cache_help.into_iter().zip(s.cache) {
        let name = format!("cache_{suffix}");
        out.family(&name, kind, help);
        out.sample(&name, &[], value);
    }

    let token_help = [
        ("token_expires_in_seconds", "Seconds until the cached token expires."),
        ("token_refresh_in_seconds", "Seconds until the cached token is refreshed."),
    ];
    for (i, (name, help)) in token_help.into_iter().enumerate() {
        out.family(name, "gauge", help);
        for t in &s.tokens.plain {
            out.sample(name, &[("path", &t.path)], [t.expires_in, t.refresh_in][i]);
        }
    }
    out.family("token_slots", "gauge", "Tokens held, by kind (plain, scoped, identity).");
    for (kind, count) in TOKEN_KINDS.iter().zip(s.tokens.held) {
        out.sample("token_slots", &[("kind", kind)], count);
    }
    let help = "Seconds until the soonest expiry of any held token.";
    out.family("token_soonest_expires_in_seconds", "gauge", help);
    if let Some(soonest) = s.tokens.soonest_expiry {
        out.sample("token_soonest_expires_in_seconds", &[], soonest);
    }
    let help = "Token fetches by outcome: a new token, the same token again, or none.";
    out.family("token_fetches_total", "counter", help);
    for (outcome, count) in TOKEN_OUTCOMES.iter().zip(s.token_fetches) {
        out.sample("token_fetches_total", &[("outcome", outcome)], count);
    }

    out.family("watcher_state", "gauge", "1 for the state the change watcher is in.");
    for phase in WatcherPhase::ALL {
        let value = u64::from(phase == s.watcher.phase);
        out.sample("watcher_state", &[("state", phase.name())], value);
    }
    out.family("watcher_changes_total", "counter", "Changes of the tree the watcher has seen.");
    out.sample("watcher_changes_total", &[], s.watcher.changes);
    out.0
}

#[derive(Default)]
struct Metrics(String);

impl Metrics {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        self.line(&format!("# HELP metadatafs_{name} {}", help.replace('\\', "\\\\")));
        self.line(&format!("# TYPE metadatafs_{name} {kind}"));
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        let labels: Vec<String> =
            labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape_label(v))).collect();
        let labels =
            if labels.is_empty() { String::new() } else { format!("{{{}}}", labels.join(",")) };
        self.line(&format!("metadatafs_{name}{labels} {value}"));
    }

    fn line(&mut self, line: &str) {
        self.0.push_str(line);
        self.0.push('\n');
    }
}

fn escape_label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// `2026-11-27T16:36:20Z`: whole seconds, UTC.
pub fn rfc3339(time: SystemTime) -> String {
    let secs = time.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, m, s) = (rem / 3600, rem / 60 % 60, rem % 60);
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}Z")
}

#[cfg(test)]
#[path = "status_tests.rs"]
mod tests;
