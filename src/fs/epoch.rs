//! How the core and the change watcher keep in step: a count of the changes dropped so far.
//! A lookup takes it before it starts and settles it when replying: if the watcher dropped
//! changes meanwhile, the answer may be one of them, so the kernel gets the name without a TTL
//! and asks again. Holding the read guard while replying orders the reply before the
//! watcher's next invalidation, which could otherwise overtake it (and leave a stale name
//! cached for the whole TTL). The watcher advances the count before it tells the kernel,
//! never while telling it.

use std::sync::{RwLock, RwLockReadGuard};
use std::time::Duration;

use crate::fs::entry::Entry;

#[derive(Debug, Default)]
pub struct Epoch(RwLock<u64>);

impl Epoch {
    /// The count of changes dropped so far: take it before a lookup.
    pub fn current(&self) -> u64 {
        *self.0.read().unwrap()
    }

    /// Hold the returned guard while replying to a lookup whose answer was made since `epoch`.
    pub fn settle(&self, epoch: u64, entry: &mut Entry) -> RwLockReadGuard<'_, u64> {
        let guard = self.0.read().unwrap();
        if *guard != epoch {
            entry.entry_ttl = Duration::ZERO;
        }
        guard
    }

    pub(crate) fn advance(&self) {
        *self.0.write().unwrap() += 1;
    }
}
