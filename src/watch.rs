//! The change watcher (SPEC §4): one recursive long-poll for the whole tree, the guest agent's
//! pattern (`?recursive=true&alt=json&wait_for_change=true&last_etag=…&timeout_sec=60`, never
//! one long-poll per file), and the diff of consecutive dumps into what to drop.
//!
//! Invariants:
//! - At most one watcher request is open at a time, and none before something has been read:
//!   a mount nobody reads costs nothing, an idle mount costs only the long-poll.
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

use std::collections::BTreeSet;
use std::sync::{Arc, RwLockReadGuard};
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use serde_json::Value;

use crate::fs::{Core, Entry};
use crate::mds::{jitter, Mds};
use crate::stats::WatcherPhase;
use crate::tree;

pub use crate::dump::{diff, Changes};

/// How long the MDS may hold the long-poll (`timeout_sec`), and how long we wait for it.
const HOLD_SECS: u64 = 60;
const POLL_TIMEOUT: Duration = Duration::from_secs(HOLD_SECS + 10);
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// The shortest time between two watcher requests, even while values change quickly.
const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// An answer sooner than this with nothing changed means the server ignored the wait.
const TOO_SOON: Duration = Duration::from_secs(1);

/// Where the kernel's caches are told what changed. `fuser::Notifier` in the daemon.
pub trait KernelCache: Send + Sync + 'static {
    /// Forget the name `name` in directory `parent`: the next `open()` looks it up again.
    fn inval_entry(&self, parent: u64, name: &str);
}

impl KernelCache for fuser::Notifier {
    fn inval_entry(&self, parent: u64, name: &str) {
        // ENOENT (the kernel no longer holds it) is fine; anything else is worth a note.
        if let Err(e) = fuser::Notifier::inval_entry(self, fuser::INodeNo(parent), name.as_ref()) {
            debug!("invalidating {name:?} in inode {parent}: {e}");
        }
    }
}

/// Run the watcher for as long as the mount lives.
pub async fn run<M: Mds>(core: Arc<Core<M>>, kernel: Arc<dyn KernelCache>) {
    let status = core.watcher().clone();
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
        let answer = core.mds.long_poll(&query, POLL_TIMEOUT).await.and_then(parse);
        let pause = match answer {
            Ok((dump, etag)) => {
                if failing {
                    info!("the change watcher is back");
                    failing = false;
                }
                status.set(WatcherPhase::Watching);
                let changed = match &last {
                    Some((old, _)) => apply(&core, &kernel, &diff(old, &dump)).await,
                    None => false,
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
    let names = core.drop_changed(changes);
    debug!(
        "change watcher: {} subtrees changed, {} names to invalidate",
        changes.subtrees.len(),
        names.len()
    );
    let kernel = kernel.clone();
    let _ = tokio::task::spawn_blocking(move || {
        for (parent, name) in names {
            kernel.inval_entry(parent, &name);
        }
    })
    .await;
    true
}

/// How the core and the watcher keep in step: the watcher starts at the first read, and
/// lookups answered across a drop of changes are told apart.
impl<M: Mds> Core<M> {
    /// The count of changes dropped so far: take it before a lookup, and [`Core::settle`] it
    /// when replying.
    pub fn change_epoch(&self) -> u64 {
        *self.changes.read().unwrap()
    }

    /// Hold the returned guard while replying to a lookup whose answer was made since
    /// `epoch`. If the watcher dropped changes meanwhile, the answer may be one of them: the
    /// kernel gets the name without a TTL, so it asks again. Holding the guard orders the
    /// reply before the watcher's next invalidation, which it would otherwise be able to
    /// overtake (and leave a stale name cached for the whole TTL).
    pub fn settle(&self, epoch: u64, entry: &mut Entry) -> RwLockReadGuard<'_, u64> {
        let guard = self.changes.read().unwrap();
        if *guard != epoch {
            entry.entry_ttl = Duration::ZERO;
        }
        guard
    }

    /// Counted before the kernel is told, never while telling it (watch.rs).
    pub(crate) fn count_change(&self) {
        *self.changes.write().unwrap() += 1;
    }

    /// Returns once something has been fetched for a reader.
    pub async fn wait_for_first_read(&self) {
        let notified = self.first_read.notified();
        if !self.read_anything.load(std::sync::atomic::Ordering::SeqCst) {
            notified.await;
        }
    }

    pub(crate) fn note_read(&self) {
        if !self.read_anything.swap(true, std::sync::atomic::Ordering::SeqCst) {
            self.first_read.notify_waiters();
        }
    }

    /// Expire every cached value and listing `changes` touches, and say which names the kernel
    /// holds that it must forget: (parent inode, name).
    pub fn drop_changed(&self, changes: &Changes) -> Vec<(u64, String)> {
        let mut subtrees = changes.subtrees.clone();
        let mut listings = changes.listings.clone();
        // A changed key whose name our cached listing does not show was mapped wrongly or
        // is one we cannot tell: drop its whole parent instead.
        for path in &changes.subtrees {
            let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
            if changes.listings.contains(dir) {
                continue;
            }
            if let Some(children) = self.last_listing(dir) {
                if children.binary_search_by(|c| c.name.as_str().cmp(name)).is_err() {
                    subtrees.insert(dir.to_string());
                    listings.insert(dir.to_string());
                }
            }
        }
        self.cache.expire(|key| {
            let path = key.strip_suffix('/').unwrap_or(key);
            let listing = key.ends_with('/') || key.is_empty();
            (listing && listings.contains(path)) || subtrees.iter().any(|s| tree::is_under(path, s))
        });
        // From here on, lookups answered from before the expiry above reply without a TTL
        // (fs.rs `settle`); those that replied already hold their inodes, listed below.
        self.count_change();
        let inodes = self.inodes.lock().unwrap();
        let mut held = BTreeSet::new();
        for subtree in &subtrees {
            held.extend(inodes.held_under(subtree));
        }
        let names = held
            .into_iter()
            .filter_map(|path| {
                let (dir, name) = path.rsplit_once('/').unwrap_or(("", &path));
                Some((inodes.ino_of(dir)?, name.to_string()))
            })
            .collect();
        drop(inodes);
        names
    }
}

#[cfg(test)]
#[path = "watch_tests.rs"]
mod tests;
