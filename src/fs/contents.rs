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
use std::time::{Duration, Instant, SystemTime};

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
    /// Directories listed to the kernel without a handle (no-open path): it may cache them.
    served: Mutex<HashSet<String>>,
    /// Told each directory whose listing changed when fetched again (`watch_listings`).
    changed: Mutex<Option<tokio::sync::mpsc::UnboundedSender<String>>>,
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
            served: Mutex::default(),
            changed: Mutex::default(),
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
        let before = self.last_listing(dir);
        let fetch = || {
            let previous = match self.cache.peek(&key) {
                Some(Cached::Listing(children, seen)) => Some((children, seen)),
                _ => None,
            };
            self.fetcher().listing(key.clone(), previous)
        };
        let entry = self.cache.get(&key, fetch).await?;
        let listing = listing_of(entry.value, entry.expiry.remaining(&*self.clock))?;
        if before.is_some_and(|before| !Arc::ptr_eq(&before, &listing.0)) {
            if let Some(changed) = self.changed.lock().unwrap().as_ref() {
                let _ = changed.send(dir.to_string());
            }
        }
        Ok(listing)
    }

    /// Directory `dir` was listed to the kernel without a handle: it may keep that listing.
    pub(crate) fn readdir_served(&self, dir: &str) {
        let mut served = self.served.lock().unwrap();
        if !served.contains(dir) && served.len() < self.freshness.max_entries {
            served.insert(dir.to_string());
        }
    }

    /// Whether the kernel may hold `dir`'s listing and ours has run out since.
    pub(crate) fn listing_ran_out(&self, dir: &str) -> bool {
        self.served.lock().unwrap().contains(dir)
            && !self.cache.is_fresh(&listing_key(dir))
            && self.last_listing(dir).is_some()
    }

    /// Each directory whose listing changed when fetched again, from now on, by path.
    pub(crate) fn watch_listings(&self) -> tokio::sync::mpsc::UnboundedReceiver<String> {
        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
        *self.changed.lock().unwrap() = Some(sender);
        receiver
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

    /// When `dir`'s cached listing was first seen as it is (its mtime) and how long it stays
    /// valid (its attributes' TTL), if it is cached.
    pub(crate) fn listing_times(&self, dir: &str) -> Option<(SystemTime, Duration)> {
        if dir == STATUS_DIR {
            return Some((self.mounted_at, self.freshness.ttl));
        }
        if let Some(entry) = self.cache.get_now(&listing_key(dir)) {
            return match entry.value {
                Cached::Listing(_, seen) => Some((seen, entry.expiry.remaining(&*self.clock))),
                _ => None,
            };
        }
        // Run out: the kernel keeps it no longer, and asks again.
        match self.cache.peek(&listing_key(dir))? {
            Cached::Listing(_, seen) => Some((seen, Duration::ZERO)),
            _ => None,
        }
    }

    /// `dir`'s last fetched listing, fresh or not, without counting a cache hit.
    pub(crate) fn last_listing(&self, dir: &str) -> Option<Arc<Vec<Child>>> {
        match self.cache.peek(&listing_key(dir))? {
            Cached::Listing(children, _) => Some(children),
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
    /// names the kernel must forget, and the directories whose listings it must: a changed key
    /// whose name our cached listing does not show was mapped wrongly or is one we cannot
    /// tell, so its whole parent goes instead.
    pub(crate) fn drop_changed(&self, changes: &Changes) -> (BTreeSet<String>, BTreeSet<String>) {
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
        (subtrees, listings)
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

    /// Directory `dir` is being listed from its start: `ls -l` stats each name right after.
    pub(crate) fn dir_listed(&self, dir: u64) {
        self.listings.lock().unwrap().listed(dir, self.clock.now());
    }

    /// Whether a lookup that has to fetch in directory `dir` should fetch the rest of the
    /// directory too: it is being listed, and that was not done yet for this listing.
    pub(crate) fn should_prefetch(&self, dir: u64) -> bool {
        self.listings.lock().unwrap().claim(dir, self.clock.now())
    }

    /// Fetch the plain values of directory `dir` that are not cached and that the reader
    /// `may_read`, several at a time.
    /// `ls -l` of a cold directory looks its names up one after the other, a round trip each;
    /// with this they are cache hits by then (or wait on a fetch already under way).
    pub(crate) async fn prefetch(
        self: Arc<Self>,
        dir: String,
        may_read: impl Fn(&str) -> bool + Send + 'static,
    ) {
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
            if !plain || self.cache.is_fresh(&path) || !may_read(&path) {
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

/// Directories listed from their start in the last [`LISTING_WINDOW`], and those whose values
/// were prefetched for that listing. Plain `ls` or `find` list without looking anything up,
/// and cost no prefetch. Both read paths read a directory from offset 0 at every listing the
/// kernel does not answer from its cache, so that is the mark, not an open handle (the no-open
/// path has none).
#[derive(Debug, Default)]
struct Listings {
    listed: HashMap<u64, Instant>,
    claimed: HashSet<u64>,
}

/// How long after a directory was read from its start a lookup in it counts as `ls -l`'s.
const LISTING_WINDOW: Duration = Duration::from_secs(2);

impl Listings {
    fn listed(&mut self, dir: u64, now: Instant) {
        self.listed.retain(|_, at| now.saturating_duration_since(*at) < LISTING_WINDOW);
        self.claimed.retain(|d| self.listed.contains_key(d));
        self.listed.insert(dir, now);
        self.claimed.remove(&dir);
    }

    /// True once per listing of `dir`: the caller prefetches.
    fn claim(&mut self, dir: u64, now: Instant) -> bool {
        let recent = self
            .listed
            .get(&dir)
            .is_some_and(|at| now.saturating_duration_since(*at) < LISTING_WINDOW);
        recent && self.claimed.insert(dir)
    }
}
