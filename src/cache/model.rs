//! Model-based tests of [`Cache`]: random sequences of reads (each with the answer the MDS
//! would give if asked), clock moves and evictions, run against the real cache and against a
//! small reference model written for clarity, not speed. After every step both must agree on
//! what the reader got, on whether the MDS was asked, and on the counters.
//!
//! The model states the cache's contract in one place:
//! - a fresh value is served without asking the MDS;
//! - an expired or missing value is fetched; a good answer is stored for its TTL;
//! - a transient failure serves the last good value for [`STALE_GRACE`], else fails;
//! - a permanent failure is never papered over with a stale value;
//! - after a transient failure, until [`STALE_GRACE`] has passed or a fetch succeeded, an
//!   expired key with a last good value is answered with it at once, held for `STALE_HOLD`,
//!   and refreshed in the background; the refreshed value takes over when the hold ends;
//! - at most `CAPACITY` keys, the least recently used dropped first (a read that failed
//!   still counts as a use).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;

use super::{Cache, Weight, STALE_GRACE, STALE_HOLD};
use crate::clock::ManualClock;
use crate::error::Error;

const CAPACITY: usize = 3;
const KEYS: [&str; 5] = ["a", "b", "c", "d", "e"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Value(u32);

impl Weight for Value {
    fn weight(&self) -> usize {
        self.0 as usize % 7 + 1
    }
}

#[derive(Debug, Clone)]
enum Answer {
    Ok { value: u32, ttl: u64 },
    Transient,
    Permanent,
}

#[derive(Debug, Clone)]
enum Op {
    Read {
        key: usize,
        answer: Answer,
    },
    Advance(u64),
    /// Forget the key (what a write through this mount does to what it changed).
    Invalidate(usize),
}

fn answer() -> impl Strategy<Value = Answer> {
    prop_oneof![
        4 => (0u32..1000, 0u64..8).prop_map(|(value, ttl)| Answer::Ok { value, ttl }),
        2 => Just(Answer::Transient),
        1 => Just(Answer::Permanent),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..KEYS.len(), answer()).prop_map(|(key, answer)| Op::Read { key, answer }),
        1 => prop_oneof![Just(1u64), Just(4), Just(5), Just(6), Just(60)].prop_map(Op::Advance),
        1 => (0..KEYS.len()).prop_map(Op::Invalidate),
    ]
}

/// The reference: keys in least- to most-recently used order, each with its last good value
/// and when that value stops being fresh (in milliseconds on the model's clock), and the value
/// a background refresh brought while a stale one was held.
#[derive(Debug, Default)]
struct Model {
    now: u64,
    slots: Vec<Slot>,
    fetches: u64,
    hits: u64,
    /// Until when expired keys are served stale at once (set by a transient failure).
    failing_until: Option<u64>,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    key: usize,
    entry: Option<(u32, u64)>,
    next: Option<(u32, u64)>,
}

/// What one read gave: the value and its remaining validity, or the error's errno.
type Outcome = Result<(u32, u64), i32>;

impl Model {
    fn read(&mut self, key: usize, answer: &Answer) -> Outcome {
        let slot = match self.slots.iter().position(|s| s.key == key) {
            Some(i) => self.slots.remove(i),
            None => Slot { key, entry: None, next: None },
        };
        self.slots.push(slot);
        if self.slots.len() > CAPACITY {
            self.slots.remove(0);
        }
        let now = self.now;
        let failing = self.failing_until.is_some_and(|until| now < until);
        let slot = self.slots.last_mut().unwrap();
        if slot.entry.is_none_or(|(_, expiry)| now >= expiry) && slot.next.is_some() {
            slot.entry = slot.next.take();
        }
        if let Some((value, expiry)) = slot.entry {
            if now < expiry {
                self.hits += 1;
                return Ok((value, (expiry - now) / 1000));
            }
            if failing {
                // Served at once and held; the background refresh lands before the next step.
                let hold = STALE_HOLD.as_millis() as u64;
                slot.entry = Some((value, now + hold));
                let _ = self.fetch(answer);
                return Ok((value, hold / 1000));
            }
        }
        self.fetch(answer)
    }

    /// The MDS is asked and answers `answer` for the most recently used key.
    fn fetch(&mut self, answer: &Answer) -> Outcome {
        self.fetches += 1;
        let now = self.now;
        let grace = STALE_GRACE.as_millis() as u64;
        let slot = self.slots.last_mut().unwrap();
        let held = slot.entry.is_some_and(|(_, expiry)| now < expiry);
        match (answer, slot.entry) {
            (Answer::Ok { value, ttl }, _) => {
                let fetched = Some((*value, now + ttl * 1000));
                if held {
                    slot.next = fetched;
                } else {
                    slot.entry = fetched;
                }
                self.failing_until = None;
                Ok((*value, *ttl))
            }
            (Answer::Transient, Some((value, _))) => {
                slot.entry = Some((value, now + grace));
                self.failing_until = Some(now + grace);
                Ok((value, grace / 1000))
            }
            (Answer::Transient, None) => {
                self.failing_until = Some(now + grace);
                Err(libc::EIO)
            }
            (Answer::Permanent, _) => Err(libc::EACCES),
        }
    }

    fn bytes(&self) -> usize {
        self.slots.iter().filter_map(|s| s.entry.map(|(v, _)| Value(v).weight())).sum()
    }
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let clock = Arc::new(ManualClock::default());
    let cache: Cache<Value> = Cache::new(CAPACITY, clock.clone());
    let mut model = Model::default();
    for (step, op) in ops.into_iter().enumerate() {
        match op {
            Op::Advance(secs) => {
                clock.advance(Duration::from_secs(secs));
                model.now += secs * 1000;
            }
            Op::Invalidate(key) => {
                cache.invalidate(KEYS[key]);
                model.slots.retain(|slot| slot.key != key);
            }
            Op::Read { key, answer } => {
                let fetched = Arc::new(AtomicBool::new(false));
                let (flag, answered) = (fetched.clone(), answer.clone());
                let fetch = || async move {
                    flag.store(true, Ordering::SeqCst);
                    match answered {
                        Answer::Ok { value, ttl } => Ok((Value(value), Duration::from_secs(ttl))),
                        Answer::Transient => {
                            Err(Error::Unavailable { path: "k".into(), reason: "down".into() })
                        }
                        Answer::Permanent => Err(Error::Forbidden { path: "k".into() }),
                    }
                };
                let got: Outcome = runtime
                    .block_on(cache.get(KEYS[key], fetch))
                    .map(|e| (e.value.0, e.expiry.remaining(&*clock).as_secs()))
                    .map_err(|e| e.errno());
                // Let a background refresh the read started finish.
                runtime.block_on(async {
                    for _ in 0..4 {
                        tokio::task::yield_now().await;
                    }
                });
                let fetches_before = model.fetches;
                let want = model.read(key, &answer);
                prop_assert_eq!(got, want, "step {}: read {}", step, KEYS[key]);
                let asked = fetched.load(Ordering::SeqCst);
                prop_assert_eq!(asked, model.fetches > fetches_before, "step {}", step);
            }
        }
        prop_assert_eq!(cache.stats.misses.load(Ordering::Relaxed), model.fetches);
        prop_assert_eq!(cache.stats.hits.load(Ordering::Relaxed), model.hits);
        prop_assert_eq!(cache.stats.bytes.load(Ordering::Relaxed), model.bytes(), "step {}", step);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn the_cache_behaves_like_its_model(ops in proptest::collection::vec(op(), 1..60)) {
        run(ops)?;
    }
}
