//! The value cache: TTL per entry, LRU-bounded, single-flight, stale-if-error. No FUSE, no HTTP.
//!
//! Invariants:
//! - At most `capacity` keys; each key holds at most one value, so memory is bounded by
//!   `capacity × max_value` (the MDS client refuses larger bodies).
//! - Concurrent readers of a missing or expired key cause one fetch: they queue on the key's
//!   fill lock and the first one's result serves the rest, failures included (so a hundred
//!   readers during an outage wait out one `timeout`, not a hundred in a row), and even when
//!   it is already stale (`ttl=0`).
//! - A transient fetch failure (MDS down, 5xx, 429 after retries) is answered with the last good
//!   value if there is one, which is then held for a short grace period so an outage does not
//!   make every read wait out the timeout. Permanent failures are never papered over.
//! - A read of an expired key that holds a last good value waits for the MDS at most
//!   `STALE_AFTER` (1 s): then it is answered with that value, held for `STALE_HOLD`, while
//!   the fetch goes on behind it with the key's turn (still the one fetch), and the cache
//!   counts as failing until it ends. A key with nothing to fall back on waits for its fetch.
//! - Once any refresh has failed, for `STALE_GRACE` every other expired key that has a last
//!   good value serves it at once and is refreshed in the background (stale-while-revalidate,
//!   RFC 5861), so a path whose directories all expired during a storm waits out one `timeout`,
//!   not one per directory. A success ends that at once; a key whose background refresh
//!   succeeds is fresh again, so a single failing path never keeps the others stale.
//! - A value served stale at once is held for `STALE_HOLD`, and what its background refresh
//!   brings takes over only then: a value never changes while it is valid, so the size a
//!   lookup hands the kernel is the size an `open` right after it reads.
//! - Lock order: the LRU mutex is never held across an await or while taking a slot's locks.
//! - A fetch that was under way when [`Cache::expire`] ran may have fetched what was just
//!   declared stale: its value is stored already expired (and still returned to its readers).

use std::future::Future;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use log::debug;
use lru::LruCache;

use crate::clock::{Expiry, SharedClock};
use crate::error::Result;

mod flight;
mod slot;
pub(crate) use self::flight::{Flight, Turn};
use self::slot::{account, settle, store, Shared, Slot, STALE_GRACE, STALE_HOLD};
pub use self::slot::{CacheStats, Entry, Weight};

/// How long a read of an expired key that still holds its last good value waits for the MDS
/// before it is answered with that value: the fetch goes on behind it, as the one fetch of the
/// key, and the cache counts as failing until it ends. A healthy MDS answers in milliseconds;
/// without this, the first read after the MDS went away waited out the whole `timeout`.
const STALE_AFTER: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct Cache<V> {
    slots: Mutex<LruCache<String, Arc<Slot<V>>>>,
    shared: Arc<Shared>,
    pub stats: Arc<CacheStats>,
}

impl<V: Clone + Weight + Send + Sync + 'static> Cache<V> {
    pub fn new(capacity: usize, clock: SharedClock) -> Self {
        let capacity = NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN);
        let shared = Arc::new(Shared {
            clock,
            failing_until: Mutex::new(None),
            generation: AtomicU64::new(0),
        });
        Cache { slots: Mutex::new(LruCache::new(capacity)), shared, stats: Arc::default() }
    }

    /// The value for `key`, from cache while fresh, else from `fetch`, which returns the value
    /// and how long it stays fresh. The fetch may run in the background (see the module docs),
    /// hence `'static`.
    pub async fn get<F, Fut>(&self, key: &str, fetch: F) -> Result<Entry<V>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(V, Duration)>> + Send + 'static,
    {
        let slot = self.slot(key);
        if let Some(entry) = self.fresh(&slot) {
            return Ok(entry);
        }
        if self.shared.failing() {
            let stale = slot.entry.lock().unwrap().clone();
            if let Some(mut stale) = stale {
                stale.expiry = Expiry::from_now(&*self.shared.clock, STALE_HOLD);
                self.stats.stale_served.fetch_add(1, Ordering::Relaxed);
                store(&self.stats, &slot, Some(stale.clone()));
                self.revalidate(slot, fetch());
                return Ok(stale);
            }
        }
        let turn = match self.turn_or_stale(&slot, key).await {
            Ok(turn) => turn,
            Err(held) => return Ok(held),
        };
        if let Some(entry) = self.fresh(&slot) {
            return Ok(entry);
        }
        // Whoever we queued behind fetched for us, whatever the TTL (even `ttl=0`).
        match turn.shared_outcome() {
            Some(Err(err)) => return Err(err),
            Some(Ok(())) => {
                if let Some(entry) = slot.entry.lock().unwrap().clone() {
                    return Ok(entry);
                }
            }
            None => {}
        }
        self.stats.misses.fetch_add(1, Ordering::Relaxed);
        let generation = self.shared.generation.load(Ordering::SeqCst);
        let stale = slot.entry.lock().unwrap().clone();
        let (Some(stale), Ok(runtime)) = (stale, tokio::runtime::Handle::try_current()) else {
            let result = settle(&self.shared, &self.stats, &slot, generation, fetch().await);
            turn.finish(&result);
            return result;
        };
        let mut fetching = Box::pin(fetch());
        tokio::select! {
            biased;
            fetched = &mut fetching => {
                let result = settle(&self.shared, &self.stats, &slot, generation, fetched);
                turn.finish(&result);
                result
            }
            () = tokio::time::sleep(STALE_AFTER) => {
                let (shared, stats) = (self.shared.clone(), self.stats.clone());
                let held = self.serve_stale(&slot, stale, key);
                runtime.spawn(async move {
                    let result = settle(&shared, &stats, &slot, generation, fetching.await);
                    turn.finish(&result);
                });
                Ok(held)
            }
        }
    }

    /// The turn to fetch `key`; but if a last good value is held, waiting for the turn (behind
    /// a fetch that is slow, or one gone on in the background) lasts at most [`STALE_AFTER`],
    /// and then that value (`Err`), held as by [`Cache::serve_stale`] unless whoever holds the
    /// turn has already done so.
    async fn turn_or_stale(&self, slot: &Slot<V>, key: &str) -> Result<Turn, Entry<V>> {
        if slot.entry.lock().unwrap().is_none() {
            return Ok(slot.fill.turn().await);
        }
        if let Ok(turn) = tokio::time::timeout(STALE_AFTER, slot.fill.turn()).await {
            return Ok(turn);
        }
        if let Some(held) = self.fresh(slot) {
            return Err(held);
        }
        let stale = slot.entry.lock().unwrap().clone();
        match stale {
            Some(stale) => Err(self.serve_stale(slot, stale, key)),
            None => Ok(slot.fill.turn().await),
        }
    }

    /// The MDS did not answer `key` within [`STALE_AFTER`]: its last good value, held for
    /// [`STALE_HOLD`] (what the fetch still under way brings takes over then), and the cache
    /// failing until that fetch ends, so other expired keys do not each wait as long.
    fn serve_stale(&self, slot: &Slot<V>, mut stale: Entry<V>, key: &str) -> Entry<V> {
        let clock = &*self.shared.clock;
        *self.shared.failing_until.lock().unwrap() = Some(Expiry::from_now(clock, STALE_GRACE));
        let key = crate::paths::redacted(key);
        debug!("{key}: no answer in {STALE_AFTER:?}; serving the last good value meanwhile");
        self.stats.stale_served.fetch_add(1, Ordering::Relaxed);
        stale.expiry = Expiry::from_now(clock, STALE_HOLD);
        store(&self.stats, slot, Some(stale.clone()));
        stale
    }

    /// Refresh `slot` in the background unless someone is already fetching it.
    fn revalidate<Fut>(&self, slot: Arc<Slot<V>>, fetch: Fut)
    where
        Fut: Future<Output = Result<(V, Duration)>> + Send + 'static,
    {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (shared, stats) = (self.shared.clone(), self.stats.clone());
        let generation = shared.generation.load(Ordering::SeqCst);
        runtime.spawn(async move {
            let Some(turn) = slot.fill.try_turn() else {
                return;
            };
            stats.misses.fetch_add(1, Ordering::Relaxed);
            let result = settle(&shared, &stats, &slot, generation, fetch.await);
            turn.finish(&result);
        });
    }

    /// The value held for `key`, fresh or not, without counting a hit or touching LRU order.
    pub fn peek(&self, key: &str) -> Option<V> {
        let slot = self.slots.lock().unwrap().peek(key).cloned()?;
        let entry = slot.entry.lock().unwrap();
        entry.as_ref().map(|e| e.value.clone())
    }

    /// The entry for `key` if it is cached and fresh, without waiting for anything: what the
    /// FUSE thread answers from directly.
    pub fn get_now(&self, key: &str) -> Option<Entry<V>> {
        let slot = self.slots.lock().unwrap().get(key).cloned()?;
        self.fresh(&slot)
    }

    /// Whether `key` holds a fresh value, without counting a hit.
    pub fn is_fresh(&self, key: &str) -> bool {
        let slot = self.slots.lock().unwrap().peek(key).cloned();
        slot.is_some_and(|slot| {
            let entry = slot.entry.lock().unwrap();
            entry.as_ref().is_some_and(|e| !e.expiry.is_expired(&*self.shared.clock))
        })
    }

    /// Mark every key `matches` accepts as expired: the next read fetches it again. The
    /// values stay, so a failed refetch can still serve the last good one; a background
    /// refresh waiting to take over is dropped (it was fetched before this).
    pub fn expire(&self, mut matches: impl FnMut(&str) -> bool) -> usize {
        self.shared.generation.fetch_add(1, Ordering::SeqCst);
        let slots: Vec<Arc<Slot<V>>> = {
            let slots = self.slots.lock().unwrap();
            slots.iter().filter(|(key, _)| matches(key)).map(|(_, slot)| slot.clone()).collect()
        };
        let now = Expiry::now(&*self.shared.clock);
        for slot in &slots {
            let mut entry = slot.entry.lock().unwrap();
            if let Some(entry) = entry.as_mut() {
                entry.expiry = entry.expiry.min(now);
            }
            slot.next.lock().unwrap().take();
        }
        slots.len()
    }

    /// Forget `key`: the next read fetches it. A fetch in flight still answers its waiters.
    pub fn invalidate(&self, key: &str) {
        let slot = self.slots.lock().unwrap().pop(key);
        if let Some(slot) = slot {
            store(&self.stats, &slot, None);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.slots.lock().unwrap().len()
    }

    fn slot(&self, key: &str) -> Arc<Slot<V>> {
        let mut slots = self.slots.lock().unwrap();
        if let Some(slot) = slots.get(key) {
            return slot.clone();
        }
        let slot = Arc::new(Slot {
            fill: Flight::default(),
            entry: Mutex::new(None),
            next: Mutex::new(None),
            evicted: AtomicBool::new(false),
        });
        if let Some((_, evicted)) = slots.push(key.to_string(), slot.clone()) {
            drop(slots);
            self.stats.evictions.fetch_add(1, Ordering::Relaxed);
            evicted.evicted.store(true, Ordering::SeqCst);
            store(&self.stats, &evicted, None);
        }
        slot
    }

    /// The fresh entry, if any; a held stale value that expired gives way to its refresh here.
    fn fresh(&self, slot: &Slot<V>) -> Option<Entry<V>> {
        let clock = &*self.shared.clock;
        let mut entry = slot.entry.lock().unwrap();
        if entry.as_ref().is_none_or(|e| e.expiry.is_expired(clock)) {
            if let Some(next) = slot.next.lock().unwrap().take() {
                let old = entry.replace(next);
                account(&self.stats, entry.as_ref(), old.as_ref());
            }
        }
        let fresh = entry.as_ref().filter(|e| !e.expiry.is_expired(clock)).cloned();
        if fresh.is_some() {
            self.stats.hits.fetch_add(1, Ordering::Relaxed);
        }
        fresh
    }
}

#[cfg(test)]
#[path = "model.rs"]
mod model;

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
