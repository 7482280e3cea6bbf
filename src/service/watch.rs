//! The change watcher (SPEC §4): one recursive long-poll for the whole tree, the guest agent's
//! pattern (`?recursive=true&alt=json&wait_for_change=true&last_etag=…&timeout_sec=60`, never
//! one long-poll per file), and the diff of consecutive dumps into what to drop.
//!
//! Invariants:
//! - At most one watcher request is open at a time, and none before something has been read:
//!   a mount nobody reads costs nothing, an idle mount costs only the long-poll.
//! - What was read before the first dump could have changed before it was taken, unseen by any
//!   diff: the first dump drops everything once (the few values read at start are fetched
//!   again), so a change right after the first read is not left to `ttl`.
//! - The dump only says *what* changed. Values are still served from a direct GET of the key,
//!   byte for byte: nothing is ever served from the dump.
//! - Dropping is conservative. The dump spells server-defined keys camelCase where paths are
//!   dashed (`numericProjectId` → `numeric-project-id`) and user-defined keys (attributes,
//!   account emails, guest attributes) verbatim (reference/metadata-api.md §3.3). A key whose
//!   path name cannot be told for sure (`dump::name_of`) drops its whole parent subtree; a
//!   changed array drops its whole subtree (value list or indexed directory alike).
//! - Kernel invalidations are sent after every lock is released, from a blocking thread:
//!   `inval_entry` waits for the kernel's directory lock, which a lookup waiting on us may
//!   hold.
//! - Errors and a server that answers at once without a change (ignoring `wait_for_change`)
//!   back off with jitter up to [`MAX_BACKOFF`]: never a busy loop, never a request storm
//!   when the MDS comes back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use serde_json::Value;

use crate::clock::jitter;
use crate::fs::Core;
pub use crate::fuse::notify::{tell, KernelCache};
use crate::stats::WatcherPhase;
use crate::upstream::mds::Mds;

pub use crate::upstream::dump::{diff, Changes};

/// How long the MDS may hold the long-poll (`timeout_sec`), and how long we wait for it.
const HOLD_SECS: u64 = 60;
const POLL_TIMEOUT: Duration = Duration::from_secs(HOLD_SECS + 10);
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// The shortest time between two watcher requests, even while values change quickly.
const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// An answer sooner than this with nothing changed means the server ignored the wait.
const TOO_SOON: Duration = Duration::from_secs(1);

/// Run the watcher for as long as the mount lives.
pub async fn run<M: Mds>(core: Arc<Core<M>>, mds: Arc<M>, kernel: Arc<dyn KernelCache>) {
    let status = core.board().watcher.clone();
    core.wait_for_first_read().await;
    status.set(WatcherPhase::Watching);
    let mut last: Option<(Value, String)> = None;
    let mut backoff = FIRST_BACKOFF;
    let mut failing = false;
    loop {
        let query = match &last {
            None => "?recursive=true&alt=json".to_string(),
            Some((_, etag)) => format!(
                "?recursive=true&alt=json&wait_for_change=true&last_etag={etag}&timeout_sec={HOLD_SECS}"
            ),
        };
        let started = Instant::now();
        let answer = mds.long_poll(&query, POLL_TIMEOUT).await.and_then(parse);
        let pause = match answer {
            Ok((dump, etag)) => {
                if failing {
                    info!("the change watcher is back");
                    failing = false;
                    // The outage's backoff is over: a server that now answers at once (a
                    // restarted one, whose ETags are new) is paced from the start again.
                    backoff = FIRST_BACKOFF;
                }
                status.set(WatcherPhase::Watching);
                let changed = match &last {
                    Some((old, _)) => apply(&core, &kernel, &diff(old, &dump)).await,
                    // What was read before this first dump may have changed since, unseen:
                    // it goes, once (a read or two at start; then only real changes do).
                    None => {
                        let _ = apply(&core, &kernel, &Changes::everything()).await;
                        false
                    }
                };
                if changed {
                    status.changed();
                }
                let waited = last.is_some();
                last = Some((dump, etag));
                if waited && !changed && started.elapsed() < TOO_SOON {
                    // Answered at once with nothing new: the server is not holding the request.
                    let pause = jitter(backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    pause
                } else {
                    backoff = FIRST_BACKOFF;
                    MIN_INTERVAL.saturating_sub(started.elapsed())
                }
            }
            Err(e) => {
                if failing {
                    debug!("change watcher: {e}");
                } else {
                    warn!("change watcher: {e}; retrying with backoff");
                    failing = true;
                }
                status.failed(&e);
                let pause = jitter(backoff);
                backoff = (backoff * 2).min(MAX_BACKOFF);
                pause
            }
        };
        tokio::time::sleep(pause).await;
    }
}

fn parse((body, etag): (bytes::Bytes, Option<String>)) -> crate::error::Result<(Value, String)> {
    let misconfigured = |reason: &str| crate::error::Error::Misconfigured {
        path: "?recursive=true".into(),
        reason: reason.into(),
    };
    let dump = serde_json::from_slice(&body).map_err(|_| misconfigured("undecodable dump"))?;
    let etag = etag.filter(|e| !e.is_empty() && e.chars().all(|c| c.is_ascii_alphanumeric()));
    Ok((dump, etag.ok_or_else(|| misconfigured("dump without a usable ETag"))?))
}

/// Drop what changed from our cache and tell the kernel. Returns whether anything changed.
async fn apply<M: Mds>(core: &Core<M>, kernel: &Arc<dyn KernelCache>, changes: &Changes) -> bool {
    if changes.is_empty() {
        return false;
    }
    let forget = core.drop_changed(changes);
    debug!(
        "change watcher: {} subtrees changed, {} names and {} listings to invalidate",
        changes.subtrees.len(),
        forget.names.len(),
        forget.dirs.len()
    );
    tell(kernel, forget).await;
    true
}

#[cfg(test)]
#[path = "watch_tests.rs"]
mod tests;
