//! What the value cache holds for a path ([`Cached`]) and how it is fetched ([`Fetcher`]).
//!
//! A fetcher owns what it needs (the client and the TTLs), so the cache can also run it in
//! the background (stale-while-revalidate). A value's `seen` time (its mtime) is when this
//! mount first saw its current bytes: a refetch that brings the same bytes keeps the old time,
//! so `make` and `find -newer` see real changes only, including same-size ones.
//!
//! The time is kept in [`Seen`], a table beside the cache (path → digest of the bytes, time)
//! that invalidation, expiry, eviction, a failure in between and waiting reads all leave alone:
//! whatever the cache dropped, the same bytes come back with the same mtime. It is an LRU of
//! [`Seen::capacity`] paths (four times the cache's, at least 1024; about 100 bytes each),
//! touched at every fetch: only a path that many other values were fetched after since its
//! own last fetch starts its mtime again.

use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use crate::cache::Weight;
use crate::error::{Error, Result};
use crate::fs::listing;
use crate::fs::node::{Child, Content, Version};
use crate::upstream::mds::Mds;

/// What the value cache holds for a path. `Debug` shows sizes, never bytes: values may be
/// secrets.
#[derive(Clone)]
pub(crate) enum Cached {
    /// A directory's children, and when this mount first saw them so (the directory's mtime).
    Listing(Arc<Vec<Child>>, SystemTime),
    Value(Bytes, SystemTime),
    Missing,
    /// A permanent failure (EFBIG, no `Metadata-Flavor`, 400, 403, …), remembered like a 404 so
    /// that no local user can turn syscalls into requests against the MDS's rate limit.
    Failed(Error),
}

impl Weight for Cached {
    fn weight(&self) -> usize {
        match self {
            Cached::Listing(children, _) => children.iter().map(|c| c.name.len() + 1).sum(),
            Cached::Value(bytes, _) => bytes.len(),
            Cached::Missing | Cached::Failed(_) => 0,
        }
    }
}

impl std::fmt::Debug for Cached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cached::Listing(children, _) => write!(f, "Listing({} entries)", children.len()),
            Cached::Value(bytes, _) => write!(f, "Value({} bytes)", bytes.len()),
            Cached::Missing => write!(f, "Missing"),
            Cached::Failed(err) => write!(f, "Failed({err})"),
        }
    }
}

/// When this mount first saw each path's current bytes, kept apart from the cache.
#[derive(Debug)]
pub(crate) struct Seen {
    table: Mutex<lru::LruCache<String, (u64, SystemTime)>>,
}

impl Seen {
    /// How many paths are remembered for a cache of `max_entries`.
    pub(crate) fn capacity(max_entries: usize) -> usize {
        max_entries.saturating_mul(4).max(1024)
    }

    pub(crate) fn new(capacity: usize) -> Seen {
        let capacity = NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN);
        Seen { table: Mutex::new(lru::LruCache::new(capacity)) }
    }

    /// When `path` was first seen holding `bytes`: the time kept if its bytes were these last
    /// time, else now (and remembered).
    pub(crate) fn stamp(&self, path: &str, bytes: &[u8]) -> SystemTime {
        let digest = BuildHasherDefault::<DefaultHasher>::default().hash_one(bytes);
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        match table.get(path) {
            Some(&(known, seen)) if known == digest => seen,
            _ => {
                let now = SystemTime::now();
                table.put(path.to_string(), (digest, now));
                now
            }
        }
    }
}

/// Fetches a value or listing for the cache.
#[derive(Debug)]
pub(crate) struct Fetcher<M> {
    pub(crate) mds: Arc<M>,
    pub(crate) ttl: Duration,
    pub(crate) negative_ttl: Duration,
    pub(crate) seen: Arc<Seen>,
}

impl<M: Mds> Fetcher<M> {
    /// The same bytes as last time keep their `seen` time, whatever happened in between.
    pub(crate) async fn value(self, path: String) -> Result<(Cached, Duration)> {
        match self.mds.get(&path).await {
            Ok(bytes) => {
                let seen = self.seen.stamp(&path, &bytes);
                Ok((Cached::Value(bytes, seen), self.ttl))
            }
            Err(e) => self.negative(e),
        }
    }

    /// A 404 or another permanent failure, cached for `negative_ttl`; a transient one is
    /// left to the cache's stale-if-error.
    fn negative(&self, err: Error) -> Result<(Cached, Duration)> {
        match err {
            Error::NotFound => Ok((Cached::Missing, self.negative_ttl)),
            e if e.is_transient() => Err(e),
            e => Ok((Cached::Failed(e), self.negative_ttl)),
        }
    }

    /// An unchanged listing keeps its `previous` `Arc` and time, so directory handles opened
    /// across refreshes (or on every fetch with `ttl=0`) still share one copy, and the
    /// directory's mtime moves only when its children do.
    pub(crate) async fn listing(
        self,
        key: String,
        previous: Option<(Arc<Vec<Child>>, SystemTime)>,
    ) -> Result<(Cached, Duration)> {
        let body = match self.mds.get(&key).await {
            Ok(body) => body,
            Err(e) => return self.negative(e),
        };
        let Some(children) = listing::parse(&key, &body) else {
            let reason = "directory listing is not UTF-8".into();
            return self.negative(Error::Misconfigured { path: key, reason });
        };
        let (listing, seen) = match previous {
            Some((previous, seen)) if *previous == children => (previous, seen),
            _ => (Arc::new(children), SystemTime::now()),
        };
        Ok((Cached::Listing(listing, seen), self.ttl))
    }
}

pub(crate) fn listing_of(
    cached: Cached,
    validity: Duration,
) -> Result<(Arc<Vec<Child>>, Duration)> {
    match cached {
        Cached::Listing(children, _) => Ok((children, validity)),
        Cached::Failed(err) => Err(err),
        _ => Err(Error::NotFound),
    }
}

pub(crate) fn value_content(
    cached: Cached,
    validity: Duration,
    mounted_at: SystemTime,
) -> Result<Content> {
    match cached {
        // A listed key the MDS answers only with parameters (`identity` wants an audience): it
        // exists, so `ls -l` shows it; opening it says why it can't.
        Cached::Failed(Error::BadRequest { .. }) => Ok(Content {
            version: Version { bytes: Bytes::new(), seen: mounted_at, tag: 0, readable: false },
            validity: Duration::ZERO,
        }),
        Cached::Value(bytes, seen) => {
            Ok(Content { version: Version { bytes, seen, tag: 0, readable: true }, validity })
        }
        Cached::Failed(err) => Err(err),
        _ => Err(Error::NotFound),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_bytes_keep_their_time_until_the_table_forgets_the_path() {
        let seen = Seen::new(2);
        let first = seen.stamp("a", b"x");
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(seen.stamp("a", b"x"), first);
        let changed = seen.stamp("a", b"y");
        assert!(changed > first);
        assert_eq!(seen.stamp("a", b"y"), changed);
        assert!(seen.stamp("a", b"x") > changed, "back to old bytes is a change too");
        seen.stamp("b", b"1");
        seen.stamp("c", b"1");
        assert_eq!(seen.table.lock().unwrap().len(), 2, "bounded");
    }
}
