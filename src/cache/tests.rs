//! The cache on a moved clock: TTLs, stale-if-error, single-flight, eviction.

use super::*;
use crate::clock::ManualClock;
use crate::error::Error;

impl Weight for u32 {
    fn weight(&self) -> usize {
        4
    }
}

fn cache(capacity: usize) -> (Arc<ManualClock>, Cache<u32>) {
    let clock = Arc::new(ManualClock::default());
    (clock.clone(), Cache::new(capacity, clock))
}

fn down() -> Error {
    Error::Unavailable { path: "k".into(), reason: "down".into() }
}

#[tokio::test]
async fn fresh_values_are_served_without_fetching_until_the_ttl_passes() {
    let (clock, cache) = cache(10);
    let ttl = Duration::from_secs(60);
    assert_eq!(cache.get("k", || async move { Ok((1, ttl)) }).await.unwrap().value, 1);
    let again = cache.get("k", || async move { panic!("fetched while fresh") }).await.unwrap();
    assert_eq!(again.value, 1);
    assert_eq!(again.expiry.remaining(&*clock), ttl);
    clock.advance(ttl);
    assert_eq!(cache.get("k", || async move { Ok((2, ttl)) }).await.unwrap().value, 2);
    assert_eq!(cache.stats.misses.load(Ordering::Relaxed), 2);
    assert_eq!(cache.stats.bytes.load(Ordering::Relaxed), 4);
}

#[tokio::test]
async fn a_transient_failure_serves_the_stale_value_and_a_permanent_one_does_not() {
    let (clock, cache) = cache(10);
    let ttl = Duration::from_secs(60);
    cache.get("k", || async move { Ok((1, ttl)) }).await.unwrap();
    clock.advance(ttl);
    let stale = cache.get("k", || async move { Err(down()) }).await.unwrap();
    assert_eq!(stale.value, 1);
    assert_eq!(stale.expiry.remaining(&*clock), STALE_GRACE);
    assert_eq!(cache.stats.stale_served.load(Ordering::Relaxed), 1);
    assert_eq!(cache.stats.entries.load(Ordering::Relaxed), 1);
    clock.advance(STALE_GRACE);
    let err = cache.get("k", || async move { Err(Error::NotFound) }).await.unwrap_err();
    assert_eq!(err, Error::NotFound);
    assert!(cache.get("other", || async move { Err(down()) }).await.is_err());
}

/// `n` readers of one cold key, all queued before the first fetch may answer `answer`.
/// Returns what each reader got and how many fetches ran.
async fn together(n: usize, answer: Result<(u32, Duration)>) -> (Vec<Result<u32>>, u64) {
    let cache = Arc::new(cache(10).1);
    let fetches = Arc::new(AtomicU64::new(0));
    let (release, gate) = tokio::sync::watch::channel(false);
    let readers: Vec<_> = (0..n)
        .map(|_| {
            let (cache, fetches, mut gate) = (cache.clone(), fetches.clone(), gate.clone());
            let answer = answer.clone();
            tokio::spawn(async move {
                let fetch = || async move {
                    fetches.fetch_add(1, Ordering::SeqCst);
                    gate.wait_for(|open| *open).await.unwrap();
                    answer
                };
                cache.get("k", fetch).await.map(|entry| entry.value)
            })
        })
        .collect();
    // Let every reader start and queue behind the first one's fetch.
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    release.send(true).unwrap();
    let mut results = Vec::new();
    for reader in readers {
        results.push(reader.await.unwrap());
    }
    (results, fetches.load(Ordering::SeqCst))
}

#[tokio::test]
async fn concurrent_cold_readers_share_one_fetch() {
    let (results, fetches) = together(32, Ok((7, Duration::from_secs(60)))).await;
    assert!(results.iter().all(|r| *r == Ok(7)), "{results:?}");
    assert_eq!(fetches, 1);
}

#[tokio::test]
async fn readers_queued_behind_a_failed_fetch_share_its_failure() {
    let (results, fetches) = together(16, Err(down())).await;
    assert!(results.iter().all(|r| *r == Err(down())), "{results:?}");
    assert_eq!(fetches, 1);
}

#[tokio::test]
async fn with_ttl_zero_queued_readers_still_share_one_fetch() {
    let (results, fetches) = together(16, Ok((9, Duration::ZERO))).await;
    assert!(results.iter().all(|r| *r == Ok(9)), "{results:?}");
    assert_eq!(fetches, 1);
}

#[tokio::test]
async fn a_reader_arriving_after_a_failure_tries_again() {
    let (_, cache) = cache(10);
    assert!(cache.get("k", || async move { Err::<(u32, Duration), _>(down()) }).await.is_err());
    let entry = cache.get("k", || async move { Ok((1, Duration::from_secs(1))) }).await.unwrap();
    assert_eq!(entry.value, 1);
}

#[tokio::test]
async fn expired_keys_are_fetched_again_and_get_now_never_waits() {
    let (_, cache) = cache(10);
    let ttl = Duration::from_secs(60);
    assert!(cache.get_now("a").is_none());
    for (key, value) in [("a/x", 1), ("a/y", 2), ("b", 3)] {
        cache.get(key, move || async move { Ok((value, ttl)) }).await.unwrap();
    }
    assert_eq!(cache.get_now("a/x").unwrap().value, 1);
    assert_eq!(cache.expire(|key| key.starts_with("a/")), 2);
    assert!(cache.get_now("a/x").is_none() && !cache.is_fresh("a/x"));
    assert_eq!(cache.peek("a/x"), Some(1), "the last good value stays");
    assert!(cache.is_fresh("b"));
    assert_eq!(cache.get("a/x", || async move { Ok((4, ttl)) }).await.unwrap().value, 4);
    // A fetch under way while its key was expired stores what it got as already stale.
    let fetched = cache.get("c", || {
        cache.expire(|key| key == "c");
        async move { Ok((5, ttl)) }
    });
    assert_eq!(fetched.await.unwrap().value, 5);
    assert!(cache.get_now("c").is_none());
}

#[tokio::test]
async fn a_fetch_finishing_after_its_key_was_evicted_is_not_counted() {
    let cache = Arc::new(cache(1).1);
    let (release, mut gate) = tokio::sync::watch::channel(false);
    let slow = tokio::spawn({
        let cache = cache.clone();
        async move {
            let fetch = || async move {
                gate.wait_for(|open| *open).await.unwrap();
                Ok((1, Duration::from_secs(60)))
            };
            cache.get("a", fetch).await.map(|e| e.value)
        }
    });
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    cache.get("b", || async { Ok((2, Duration::from_secs(60))) }).await.unwrap();
    release.send(true).unwrap();
    assert_eq!(slow.await.unwrap(), Ok(1), "its readers still get the value");
    assert_eq!(cache.stats.entries.load(Ordering::Relaxed), 1);
    assert_eq!(cache.stats.bytes.load(Ordering::Relaxed), 4);
}

#[tokio::test]
async fn the_least_recently_used_key_is_evicted_at_capacity() {
    let (_, cache) = cache(2);
    let ttl = Duration::from_secs(60);
    for (key, value) in [("a", 1), ("b", 2), ("c", 3)] {
        cache.get(key, || async move { Ok((value, ttl)) }).await.unwrap();
    }
    assert_eq!(cache.len(), 2);
    assert_eq!(cache.stats.bytes.load(Ordering::Relaxed), 8);
    assert_eq!(cache.stats.entries.load(Ordering::Relaxed), 2);
    assert_eq!(cache.stats.evictions.load(Ordering::Relaxed), 1);
    let refetched = cache.get("a", || async move { Ok((10, ttl)) }).await.unwrap();
    assert_eq!(refetched.value, 10);
}

#[tokio::test]
async fn after_a_failed_refresh_expired_keys_are_served_stale_at_once_and_refreshed_behind() {
    let (clock, cache) = cache(10);
    let ttl = Duration::from_secs(60);
    for key in ["a", "b", "c"] {
        cache.get(key, || async move { Ok((1, ttl)) }).await.unwrap();
    }
    clock.advance(ttl);
    assert_eq!(cache.get("a", || async { Err(down()) }).await.unwrap().value, 1);
    // b's refresh would hang; b is answered at once with its last good value, held steady
    // for STALE_HOLD, and refreshed in the background, once.
    let (release, gate) = tokio::sync::watch::channel(false);
    let fetches = Arc::new(AtomicU64::new(0));
    let slow = |fetches: Arc<AtomicU64>, mut gate: tokio::sync::watch::Receiver<bool>| {
        move || async move {
            fetches.fetch_add(1, Ordering::SeqCst);
            gate.wait_for(|open| *open).await.unwrap();
            Ok((2, ttl))
        }
    };
    for _ in 0..2 {
        let stale = cache.get("b", slow(fetches.clone(), gate.clone())).await.unwrap();
        assert_eq!(stale.value, 1);
        assert_eq!(stale.expiry.remaining(&*clock), STALE_HOLD);
    }
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    assert_eq!(fetches.load(Ordering::SeqCst), 1, "one background refresh");
    release.send(true).unwrap();
    for _ in 0..1000 {
        if cache.slot("b").next.lock().unwrap().is_some() {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(cache.slot("b").next.lock().unwrap().is_some(), "the refresh never landed");
    let held = cache.get("b", || async { panic!("fetched while held") }).await.unwrap();
    assert_eq!(held.value, 1, "the held value does not change under the kernel");
    clock.advance(STALE_HOLD);
    let fresh = cache.get("b", || async { panic!("fetched when fresh") }).await.unwrap();
    assert_eq!(fresh.value, 2);
    assert_eq!(fresh.expiry.remaining(&*clock), ttl - STALE_HOLD);
    assert_eq!(cache.stats.bytes.load(Ordering::Relaxed), 12);
    // That success ended the failing spell: c waits for its own refresh again.
    assert_eq!(cache.get("c", || async move { Ok((3, ttl)) }).await.unwrap().value, 3);
}

#[tokio::test]
async fn without_a_failed_refresh_an_expired_key_waits_for_its_refresh() {
    let (clock, cache) = cache(10);
    let ttl = Duration::from_secs(60);
    cache.get("a", || async move { Ok((1, ttl)) }).await.unwrap();
    cache.get("b", || async move { Ok((1, ttl)) }).await.unwrap();
    clock.advance(ttl);
    // A failure long ago no longer counts.
    assert_eq!(cache.get("a", || async { Err(down()) }).await.unwrap().value, 1);
    clock.advance(STALE_GRACE);
    assert_eq!(cache.get("b", || async move { Ok((2, ttl)) }).await.unwrap().value, 2);
}

#[tokio::test(start_paused = true)]
async fn a_slow_refresh_serves_the_last_good_value_after_a_second_and_goes_on_behind_it() {
    let (clock, cache) = cache(10);
    let ttl = Duration::from_secs(60);
    cache.get("k", || async move { Ok((1, ttl)) }).await.unwrap();
    clock.advance(ttl);
    let (release, mut gate) = tokio::sync::watch::channel(false);
    let slow = move || async move {
        let _ = gate.wait_for(|open| *open).await;
        Ok((2, ttl))
    };
    let started = tokio::time::Instant::now();
    assert_eq!(cache.get("k", slow).await.unwrap().value, 1, "the last good value");
    assert!(started.elapsed() >= STALE_AFTER && started.elapsed() < 2 * STALE_AFTER);
    assert!(cache.shared.failing(), "other expired keys are not to wait as long");
    let again = cache.get("k", || async { panic!("a second fetch") }).await.unwrap();
    assert_eq!(again.value, 1, "held while its fetch goes on");
    release.send(true).unwrap();
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert!(!cache.shared.failing(), "its success ended that");
    clock.advance(STALE_HOLD);
    let new = cache.get("k", || async { panic!("fetched again") }).await.unwrap();
    assert_eq!(new.value, 2, "what the fetch behind it brought");
    // A key with nothing to fall back on waits for its fetch, however long.
    let (release, mut gate) = tokio::sync::watch::channel(false);
    let cold = tokio::spawn(async move {
        let fetch = move || async move {
            let _ = gate.wait_for(|open| *open).await;
            Ok((3, ttl))
        };
        cache.get("cold", fetch).await.unwrap().value
    });
    tokio::time::sleep(10 * STALE_AFTER).await;
    assert!(!cold.is_finished());
    release.send(true).unwrap();
    assert_eq!(cold.await.unwrap(), 3);
}

#[tokio::test(start_paused = true)]
async fn readers_queued_behind_a_slow_fetch_get_the_last_good_value_after_a_second_too() {
    let (clock, cache) = cache(10);
    let cache = Arc::new(cache);
    let ttl = Duration::from_secs(60);
    cache.get("k", || async move { Ok((1, ttl)) }).await.unwrap();
    clock.advance(ttl);
    let started = tokio::time::Instant::now();
    let never = || async { std::future::pending::<Result<(u32, Duration)>>().await };
    let first = tokio::spawn({
        let cache = cache.clone();
        async move { cache.get("k", never).await.unwrap().value }
    });
    tokio::task::yield_now().await;
    let queued = cache.get("k", || async { panic!("a second fetch") });
    let queued =
        tokio::time::timeout(10 * STALE_AFTER, queued).await.expect("still queued").unwrap();
    assert_eq!((queued.value, first.await.unwrap()), (1, 1));
    assert!(started.elapsed() < 2 * STALE_AFTER, "waited {:?}", started.elapsed());
}
