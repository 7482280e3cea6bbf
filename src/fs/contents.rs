//! The mirror's contents: plain values and listings fetched into the cache, the prefetch of a
//! directory being listed, and the first-read signal that starts the watcher.
//!
//! [`Contents`] owns the value cache and is handed the client and the clock; it knows nothing
//! of inodes, handles or tokens. Every function comes in two flavours: `*_now` answers from
//! what is cached without waiting (so the FUSE thread can reply at once, no hop through the
//! async runtime) and says `None` when a fetch is needed; the async one fetches.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::cache::{Cache, CacheStats};
use crate::clock::{Expiry, SharedClock};
use crate::error::{Error, Result};
use crate::fs::fetch::{listing_of, value_content, Cached, Fetcher, Seen};
use crate::fs::listing::{self, child_kind, find, listing_key};
use crate::fs::node::{Child, Content, Kind, STATUS_DIR};
use crate::fs::perms::is_account_scopes;
use crate::paths;
use crate::upstream::dump::Changes;
use crate::upstream::mds::Mds;

/// Values of an opened directory fetched at once, and the largest directory that is done for.
const PREFETCH_CONCURRENCY: usize = 8;
const PREFETCH_MAX: usize = 256;

/// How [`Contents`] fetches and for how long it keeps what it fetched.
#[derive(Debug, Clone)]
pub(crate) struct Freshness {
    pub(crate) ttl: Duration,
    /// How long a 404 or another permanent failure is remembered.
    pub(crate) negative_ttl: Duration,
    pub(crate) max_entries: usize,
    /// Guest attributes are written through this mount: their values are never kept by the
    /// kernel, so a write shows at the next `open()`.
    pub(crate) guest_attributes: bool,
}

#[derive(Debug)]
pub(crate) struct Contents<M> {
    mds: Arc<M>,
    clock: SharedClock,
    cache: Cache<Cached>,
    /// When each value's bytes were first seen (mtimes), kept whatever the cache drops.
    seen: Arc<Seen>,
    freshness: Freshness,
    /// When the mount started: the mtime of what has none of its own.
    pub(crate) mounted_at: SystemTime,
    /// Directories being listed now, for the prefetch of `ls -l`.
    listings: Mutex<Listings>,
    /// Set once anything was fetched: the watcher starts then.
    read_anything: AtomicBool,
    first_read: tokio::sync::Notify,
}

impl<M: Mds> Contents<M> {
    pub(crate) fn new(mds: Arc<M>, clock: SharedClock, freshness: Freshness) -> Self {
        Contents {
            cache: Cache::new(freshness.max_entries, clock.clone()),
            seen: Arc::new(Seen::new(Seen::capacity(freshness.max_entries))),
            mds,
            clock,
            freshness,
            mounted_at: SystemTime::now(),
            listings: Mutex::default(),
            read_anything: AtomicBool::new(false),
            first_read: tokio::sync::Notify::new(),
        }
    }

    /// How long a plain value or listing is kept (`ttl`).
    pub(crate) fn freshness_ttl(&self) -> Duration {
        self.freshness.ttl
    }

    pub(crate) fn cache_stats(&self) -> &CacheStats {
        &self.cache.stats
    }

    /// `dir`'s listing and how long it stays valid, if cached.
    pub(crate) fn listing_now(&self, dir: &str) -> Option<Result<(Arc<Vec<Child>>, Duration)>> {
        if dir == STATUS_DIR {
            return Some(Ok((Arc::new(listing::status_listing()), self.freshness.ttl)));
        }
        let entry = self.cache.get_now(&listing_key(dir))?;
        Some(listing_of(entry.value, entry.expiry.remaining(&*self.clock)))
    }

    pub(crate) async fn listing(&self, dir: &str) -> Result<(Arc<Vec<Child>>, Duration)> {
        if dir == STATUS_DIR {
            return Ok((Arc::new(listing::status_listing()), self.freshness.ttl));
        }
        self.note_read();
        let key = listing_key(dir);
        let fetch = || self.fetcher().listing(key.clone(), self.last_listing(dir));
        let entry = self.cache.get(&key, fetch).await?;
        listing_of(entry.value, entry.expiry.remaining(&*self.clock))
    }

    /// Whether `path` is a directory the MDS lists (to check options against the real tree).
    pub(crate) async fn is_dir(&self, path: &str) -> Result<bool> {
        let mut dir = String::new();
        for name in path.split('/') {
            let found =
                self.listing(&dir).await.and_then(|(children, _)| find(&dir, &children, name));
            match found {
                Ok(node) if node.kind == Kind::Dir => dir = node.path,
                Ok(_) | Err(Error::NotFound) => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// `dir`'s last fetched listing, fresh or not, without counting a cache hit.
    pub(crate) fn last_listing(&self, dir: &str) -> Option<Arc<Vec<Child>>> {
        match self.cache.peek(&listing_key(dir))? {
            Cached::Listing(children) => Some(children),
            _ => None,
        }
    }

    /// The current version of the MDS value at `path` (which may carry a query), if cached.
    pub(crate) fn value_now(&self, path: &str) -> Option<Result<Content>> {
        let entry = self.cache.get_now(path)?;
        let validity = self.validity(path, &entry.expiry);
        Some(value_content(entry.value, validity, self.mounted_at))
    }

    /// The current version of the MDS value at `path` (which may carry a query).
    pub(crate) async fn value(&self, path: &str) -> Result<Content> {
        self.note_read();
        let fetch = || self.fetcher().value(path.to_string());
        match self.cache.get(path, fetch).await {
            Ok(entry) => {
                let validity = self.validity(path, &entry.expiry);
                value_content(entry.value, validity, self.mounted_at)
            }
            Err(e) => value_content(Cached::Failed(e), Duration::ZERO, self.mounted_at),
        }
    }

    /// Forget what is cached for `key` (a value path, or a directory's with a trailing `/`).
    pub(crate) fn invalidate(&self, key: &str) {
        self.cache.invalidate(key);
    }

    /// A waiting read on `key` answered `bytes`: the same bytes as cached keep their entry
    /// (no refetch); else it is dropped, and the refetch keeps the mtime if its bytes are the
    /// same as last time (the wait's bytes may be another form: `alt=json`, `recursive`).
    pub(crate) fn saw(&self, key: &str, bytes: &[u8]) {
        if !matches!(self.cache.peek(key), Some(Cached::Value(held, _)) if held == bytes) {
            self.cache.invalidate(key);
        }
    }

    /// Expire every cached value and listing `changes` touches. Returns the subtrees whose
    /// names the kernel must forget: a changed key whose name our cached listing does not
    /// show was mapped wrongly or is one we cannot tell, so its whole parent goes instead.
    pub(crate) fn drop_changed(&self, changes: &Changes) -> BTreeSet<String> {
        let mut subtrees = changes.subtrees.clone();
        let mut listings = changes.listings.clone();
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
            (listing && listings.contains(path))
                || subtrees.iter().any(|s| paths::is_under(path, s))
        });
        subtrees
    }

    /// How long `path`'s cached value stays its current version. Files this mount writes
    /// (guest attributes) are looked up again at every open, so a write shows at once.
    fn validity(&self, path: &str, expiry: &Expiry) -> Duration {
        if self.freshness.guest_attributes && path.starts_with("instance/guest-attributes/") {
            return Duration::ZERO;
        }
        expiry.remaining(&*self.clock)
    }

    fn fetcher(&self) -> Fetcher<M> {
        let Freshness { ttl, negative_ttl, .. } = self.freshness;
        Fetcher { mds: self.mds.clone(), ttl, negative_ttl, seen: self.seen.clone() }
    }

    /// Returns once something has been fetched for a reader.
    pub(crate) async fn wait_for_first_read(&self) {
        let notified = self.first_read.notified();
        if !self.read_anything.load(Ordering::SeqCst) {
            notified.await;
        }
    }

    fn note_read(&self) {
        if !self.read_anything.swap(true, Ordering::SeqCst) {
            self.first_read.notify_waiters();
        }
    }

    /// Directory handle `fh` of inode `dir` was opened (or closed): `ls -l` stats each name
    /// while it still holds the directory open.
    pub(crate) fn dir_opened(&self, fh: u64, dir: u64) {
        self.listings.lock().unwrap().opened(fh, dir);
    }

    pub(crate) fn dir_closed(&self, fh: u64) {
        self.listings.lock().unwrap().closed(fh);
    }

    /// Whether a lookup that has to fetch in directory `dir` should fetch the rest of the
    /// directory too: it is being listed, and that was not done yet for this listing.
    pub(crate) fn should_prefetch(&self, dir: u64) -> bool {
        self.listings.lock().unwrap().claim(dir)
    }

    /// Fetch the plain values of directory `dir` that are not cached, several at a time.
    /// `ls -l` of a cold directory looks its names up one after the other, a round trip each;
    /// with this they are cache hits by then (or wait on a fetch already under way).
    pub(crate) async fn prefetch(self: Arc<Self>, dir: String) {
        let Some(children) = self.last_listing(&dir) else {
            return;
        };
        if children.len() > PREFETCH_MAX {
            return;
        }
        let permits = Arc::new(tokio::sync::Semaphore::new(PREFETCH_CONCURRENCY));
        let mut tasks = tokio::task::JoinSet::new();
        for child in children.iter() {
            let path = paths::child_path(&dir, &child.name);
            let plain = child_kind(&dir, child) == Kind::Value
                && !listing::path_needs_parameters(&path)
                && !is_account_scopes(&path);
            if !plain || self.cache.is_fresh(&path) {
                continue;
            }
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return;
            };
            let contents = self.clone();
            tasks.spawn(async move {
                let _ = contents.value(&path).await;
                drop(permit);
            });
        }
        while tasks.join_next().await.is_some() {}
    }
}

/// Directories with an open handle (being listed), and those whose values were prefetched
/// during the current listing. Plain `ls` or `find` list without looking anything up, and
/// cost no prefetch.
#[derive(Debug, Default)]
struct Listings {
    open: HashMap<u64, u64>,
    claimed: HashSet<u64>,
}

impl Listings {
    fn opened(&mut self, fh: u64, dir: u64) {
        self.open.insert(fh, dir);
    }

    fn closed(&mut self, fh: u64) {
        if let Some(dir) = self.open.remove(&fh) {
            if !self.open.values().any(|d| *d == dir) {
                self.claimed.remove(&dir);
            }
        }
    }

    /// True once per listing of `dir`: the caller prefetches.
    fn claim(&mut self, dir: u64) -> bool {
        self.open.values().any(|d| *d == dir) && self.claimed.insert(dir)
    }
}
