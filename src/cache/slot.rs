//! A key's slot and what a fetch leaves in it: its value, the last good one after a transient
//! failure, or nothing; the counters that follow every change of a slot's entry; and what the
//! slots share (the clock, whether the MDS is failing).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use log::warn;

use super::flight::Flight;
use crate::clock::{Expiry, SharedClock};
use crate::error::Result;

/// The longest a stale value is served after a failed refresh before the MDS is asked again,
/// and how long after any failed refresh expired keys are served stale at once.
pub(super) const STALE_GRACE: Duration = Duration::from_secs(5);
/// How long a value served stale at once stays as it is, while its refresh runs behind it: as
/// long as a short `ttl`, so expiry edges (where a kernel-cached size can meet a newer value)
/// come no more often than without the storm.
pub(super) const STALE_HOLD: Duration = Duration::from_secs(1);

/// How many bytes a cached value holds, for the status counters.
pub trait Weight {
    fn weight(&self) -> usize;
}

#[derive(Debug, Clone)]
pub struct Entry<V> {
    pub value: V,
    pub expiry: Expiry,
}

#[derive(Debug)]
pub(super) struct Slot<V> {
    pub(super) fill: Flight,
    pub(super) entry: Mutex<Option<Entry<V>>>,
    /// A background refresh's value, waiting for the held stale `entry` to expire.
    /// Lock order: `entry`, then `next`.
    pub(super) next: Mutex<Option<Entry<V>>>,
    /// Dropped from the LRU: a fetch that finishes later hands its value to its readers but
    /// keeps none here, so `entries` and `bytes` count only what the cache can still serve.
    pub(super) evicted: AtomicBool,
}

/// Counters for the status file, kept where they happen.
#[derive(Debug, Default)]
pub struct CacheStats {
    /// Reads answered from a fresh value.
    pub hits: AtomicU64,
    /// Reads that had to fetch.
    pub misses: AtomicU64,
    /// Keys holding a value (or a remembered 404).
    pub entries: AtomicUsize,
    pub bytes: AtomicUsize,
    /// Keys dropped to stay within `max_entries`.
    pub evictions: AtomicU64,
    /// Reads answered with the last good value after a failed fetch.
    pub stale_served: AtomicU64,
}

/// What a background refresh needs besides its slot.
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) clock: SharedClock,
    /// Until when expired keys are served stale at once: set by a failed refresh, cleared by
    /// a successful one.
    pub(super) failing_until: Mutex<Option<Expiry>>,
    /// Bumped by every `expire`.
    pub(super) generation: AtomicU64,
}

impl Shared {
    pub(super) fn failing(&self) -> bool {
        let until = self.failing_until.lock().unwrap();
        until.is_some_and(|until| !until.is_expired(&*self.clock))
    }
}

/// Store what a fetch brought: the value; after a transient failure the last good value held
/// for [`STALE_GRACE`] (and the cache marked failing); a permanent failure as it is.
pub(super) fn settle<V: Clone + Weight>(
    shared: &Shared,
    stats: &CacheStats,
    slot: &Slot<V>,
    generation: u64,
    fetched: Result<(V, Duration)>,
) -> Result<Entry<V>> {
    let clock = &*shared.clock;
    match fetched {
        Ok((value, ttl)) => {
            *shared.failing_until.lock().unwrap() = None;
            // Expired while it was fetched: what it brought may be what was declared stale.
            let overtaken = shared.generation.load(Ordering::SeqCst) != generation;
            let ttl = if overtaken { Duration::ZERO } else { ttl };
            let entry = Entry { value, expiry: Expiry::from_now(clock, ttl) };
            let mut current = slot.entry.lock().unwrap();
            if slot.evicted.load(Ordering::SeqCst) {
                // Nobody can find this slot any more: its readers get the value, it keeps none.
            } else if current.as_ref().is_some_and(|held| !held.expiry.is_expired(clock)) {
                // A stale value is held: this one takes over when it expires.
                *slot.next.lock().unwrap() = Some(entry.clone());
            } else {
                let old = current.replace(entry.clone());
                account(stats, current.as_ref(), old.as_ref());
            }
            Ok(entry)
        }
        Err(err) if err.is_transient() => {
            *shared.failing_until.lock().unwrap() = Some(Expiry::from_now(clock, STALE_GRACE));
            let stale = slot.entry.lock().unwrap().clone();
            let Some(mut entry) = stale else {
                return Err(err);
            };
            warn!("{err}; serving the last good value");
            stats.stale_served.fetch_add(1, Ordering::Relaxed);
            entry.expiry = Expiry::from_now(clock, STALE_GRACE);
            store(stats, slot, Some(entry.clone()));
            Ok(entry)
        }
        Err(err) => Err(err),
    }
}

/// Replace the slot's entry (`None` on eviction, which also drops a waiting refresh).
pub(super) fn store<V: Weight>(stats: &CacheStats, slot: &Slot<V>, new: Option<Entry<V>>) {
    let mut entry = slot.entry.lock().unwrap();
    if new.is_none() {
        slot.next.lock().unwrap().take();
    }
    let new = new.filter(|_| !slot.evicted.load(Ordering::SeqCst));
    let old = std::mem::replace(&mut *entry, new);
    account(stats, entry.as_ref(), old.as_ref());
}

pub(super) fn account<V: Weight>(
    stats: &CacheStats,
    new: Option<&Entry<V>>,
    old: Option<&Entry<V>>,
) {
    match (new.is_some(), old.is_some()) {
        (true, false) => stats.entries.fetch_add(1, Ordering::Relaxed),
        (false, true) => stats.entries.fetch_sub(1, Ordering::Relaxed),
        _ => 0,
    };
    stats.bytes.fetch_add(new.map_or(0, |e| e.value.weight()), Ordering::Relaxed);
    stats.bytes.fetch_sub(old.map_or(0, |e| e.value.weight()), Ordering::Relaxed);
}
