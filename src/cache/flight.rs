//! One fetch at a time per key: the turn a reader takes to fetch, and how the fetch it waited
//! on ended.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::error::{Error, Result};

/// One fetch at a time per key, and its failure shared with those who waited for it.
#[derive(Debug, Default)]
pub(crate) struct Flight {
    /// Held while fetching; holds the last fetch's failure.
    lock: Arc<tokio::sync::Mutex<Option<Error>>>,
    /// Fetches finished, so a waiter can tell whether one ended while it waited.
    finished: Arc<AtomicU64>,
}

/// A turn to fetch. [`Turn::shared_outcome`] tells how the fetch that ended while we waited
/// ended, if one did; [`Turn::finish`] records how ours ended. Owned, so that a fetch can go
/// on in the background with its turn.
pub(crate) struct Turn {
    finished: Arc<AtomicU64>,
    guard: tokio::sync::OwnedMutexGuard<Option<Error>>,
    seen: u64,
}

impl Flight {
    pub(crate) async fn turn(&self) -> Turn {
        let seen = self.finished.load(Ordering::SeqCst);
        let guard = self.lock.clone().lock_owned().await;
        Turn { finished: self.finished.clone(), guard, seen }
    }

    /// A turn if nobody is fetching now.
    pub(crate) fn try_turn(&self) -> Option<Turn> {
        let seen = self.finished.load(Ordering::SeqCst);
        let guard = self.lock.clone().try_lock_owned().ok()?;
        Some(Turn { finished: self.finished.clone(), guard, seen })
    }
}

impl Turn {
    pub(crate) fn shared_outcome(&self) -> Option<Result<(), Error>> {
        let waited_on_one = self.finished.load(Ordering::SeqCst) != self.seen;
        waited_on_one.then(|| self.guard.clone().map_or(Ok(()), Err))
    }

    pub(crate) fn finish<T>(mut self, result: &Result<T>) {
        *self.guard = result.as_ref().err().cloned();
        self.finished.fetch_add(1, Ordering::SeqCst);
    }
}
