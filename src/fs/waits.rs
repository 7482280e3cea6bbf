//! Waiting reads (`?wait_for_change=true`): never cached, and shared: however many readers
//! wait on one canonical request, one request waits upstream, and all of them get its answer.
//!
//! [`Waits`] owns the requests in flight and is handed the client; it knows nothing of files.
//! What a file holds is fixed at lookup, so a waiting read waits in its lookup. Bounds, so that
//! no local user can turn waiting reads into descriptors or a request pump (SPEC §6):
//! - at most [`PER_UID`] distinct requests started by one user wait upstream at once, and
//!   [`GLOBAL`] in all; past that a new one is EAGAIN (readers of one already waiting join it);
//! - each user starts at most [`RATE`] upstream requests a second (bursts of [`BURST`]): a loop
//!   of reads the server answers at once (`last_etag=0`) is paced, not pumped;
//! - `timeout_sec` is at most an hour (query.rs), and so is a wait without it;
//! - a reader that goes away (interrupted, killed: the adapter drops its lookup) drops its
//!   share; the last one gone drops the upstream request, and its connection with it.
//!
//! The kernel may look a name up twice for one `open()`: once to revalidate the dentry it has
//! and, since a new answer is a new inode, again to instantiate it. The second lookup, from the
//! same thread within [`HANDOFF`], gets the answer the first one got instead of waiting for
//! the next change. And while one thread looks a name up, the kernel holds back others opening
//! it, then has each revalidate the new dentry: those arrive within [`LATE`] of the answer and
//! get it too, as readers that were waiting all along. Only those: a thread that started after
//! the answer (a new `cat` in a shell loop: `/proc/TID/stat` says when) or that had the answer
//! already (a loop in one thread) is reading again, and waits for the next answer. So a loop
//! neither spins on the last answer nor misses a change made meanwhile; it may see an answer
//! twice (its next open's first lookup takes the hand-off).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::OnceCell;

use crate::clock::boottime;
use crate::error::{Error, Result};
use crate::upstream::mds::Mds;

/// Without `timeout_sec` the MDS waits as long as it likes; we wait at most this.
pub(crate) const MAX_WAIT: Duration = Duration::from_secs(3600);
/// Distinct waiting requests one user may have upstream at once, and all users together.
pub(crate) const PER_UID: usize = 32;
pub(crate) const GLOBAL: usize = 512;
/// Upstream waiting requests one user may start per second, and in a burst.
const RATE: f64 = 5.0;
const BURST: f64 = 10.0;
/// How long an answer is kept for the same thread's second lookup of the same name.
const HANDOFF: Duration = Duration::from_secs(2);
/// How long after an answer a reader of the same name still gets it: threads the kernel held
/// back while another looked the name up revalidate it right after the answer (see above).
const LATE: Duration = Duration::from_millis(250);

/// Who waits: the uid bounds what they may start, the pid (thread) gets the hand-off.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Waiter {
    pub(crate) uid: u32,
    pub(crate) pid: u32,
}

#[derive(Debug)]
pub(crate) struct Waits<M> {
    mds: Arc<M>,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    inflight: HashMap<String, Arc<Inflight>>,
    /// The last answer to each waiting request, when it came, and the threads it went to.
    answered: HashMap<String, Answered>,
    per_uid: HashMap<u32, usize>,
    handed: HashMap<(String, u32), (Bytes, Instant)>,
    buckets: HashMap<u32, (f64, Instant)>,
}

#[derive(Debug)]
struct Answered {
    bytes: Bytes,
    at: Instant,
    /// `at` on the boot clock, which thread start times are on.
    since_boot: Duration,
    got: HashSet<u32>,
}

#[derive(Debug)]
struct Inflight {
    answer: OnceCell<Result<Bytes>>,
    uid: u32,
}

impl<M: Mds> Waits<M> {
    pub(crate) fn new(mds: Arc<M>) -> Self {
        Waits { mds, state: Mutex::default() }
    }

    /// The answer handed to `waiter` for `path` a moment ago, if the kernel is asking again,
    /// or the answer that came just now.
    pub(crate) fn handed(&self, path: &str, waiter: Waiter) -> Option<Bytes> {
        let mut state = self.state.lock().unwrap();
        if let Some((bytes, at)) = state.handed.remove(&(path.to_string(), waiter.pid)) {
            if at.elapsed() < HANDOFF {
                return Some(bytes);
            }
        }
        // Only a thread the kernel held back gets it late: one that started before the answer
        // came (a new `cat` did not) and has not had it (a loop has).
        let answered = state.answered.get_mut(path)?;
        if answered.at.elapsed() >= LATE
            || answered.got.contains(&waiter.pid)
            || !started_before(waiter.pid, answered.since_boot)
        {
            return None;
        }
        answered.got.insert(waiter.pid);
        let bytes = answered.bytes.clone();
        // Its open may look the name up twice, as the first reader's did.
        state.handed.insert((path.to_string(), waiter.pid), (bytes.clone(), Instant::now()));
        Some(bytes)
    }

    /// Wait for the MDS to answer the waiting request `path` (its `timeout_sec` is `limit`).
    pub(crate) async fn wait(
        &self,
        path: &str,
        limit: Option<Duration>,
        waiter: Waiter,
    ) -> Result<Bytes> {
        if let Some(bytes) = self.handed(path, waiter) {
            return Ok(bytes);
        }
        let (inflight, delay) = self.join(path, waiter.uid)?;
        // The only reference besides the table's: when it is the last, nobody waits.
        let share = Share { waits: self, path, inflight };
        let limit = limit.unwrap_or(MAX_WAIT).min(MAX_WAIT);
        let started = async {
            tokio::time::sleep(delay).await;
            self.mds.wait(path, limit).await
        };
        let result = share.inflight.answer.get_or_init(|| started).await.clone();
        drop(share);
        let bytes = result?;
        let mut state = self.state.lock().unwrap();
        state.handed.retain(|_, (_, at)| at.elapsed() < HANDOFF);
        state.answered.retain(|_, answered| answered.at.elapsed() < LATE);
        state.handed.insert((path.to_string(), waiter.pid), (bytes.clone(), Instant::now()));
        // The readers of one request reach here one by one; a newer request's answer replaces it.
        match state.answered.get_mut(path) {
            Some(answered) if answered.bytes == bytes => {
                answered.got.insert(waiter.pid);
            }
            _ => {
                let answered = Answered {
                    bytes: bytes.clone(),
                    at: Instant::now(),
                    since_boot: boottime(),
                    got: HashSet::from([waiter.pid]),
                };
                state.answered.insert(path.to_string(), answered);
            }
        }
        Ok(bytes)
    }

    /// Join the request waiting on `path`, or start one if `uid` may: how long the new one
    /// must wait for its turn under the user's pace.
    fn join(&self, path: &str, uid: u32) -> Result<(Arc<Inflight>, Duration)> {
        let mut state = self.state.lock().unwrap();
        if let Some(inflight) = state.inflight.get(path) {
            return Ok((inflight.clone(), Duration::ZERO));
        }
        let mine = state.per_uid.get(&uid).copied().unwrap_or(0);
        if mine >= PER_UID || state.inflight.len() >= GLOBAL {
            return Err(Error::Busy(format!("uid {uid} has {mine} waiting reads in flight")));
        }
        let delay = pace(state.buckets.entry(uid).or_insert((BURST, Instant::now())));
        if state.buckets.len() > 4 * GLOBAL {
            state
                .buckets
                .retain(|_, (tokens, at)| *tokens + at.elapsed().as_secs_f64() * RATE < BURST);
        }
        let inflight = Arc::new(Inflight { answer: OnceCell::new(), uid });
        state.inflight.insert(path.to_string(), inflight.clone());
        *state.per_uid.entry(uid).or_default() += 1;
        Ok((inflight, delay))
    }
}

/// Whether thread `tid` surely started before `instant` (on the boot clock): its start time in
/// `/proc` counts clock ticks, so one that started in the tick before is not sure.
fn started_before(tid: u32, instant: Duration) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{tid}/stat")) else {
        return false;
    };
    // After the command name in parentheses: the state is field 3, the start time field 22.
    let ticks = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(19));
    let Some(ticks) = ticks.and_then(|t| t.parse::<u64>().ok()) else {
        return false;
    };
    // SAFETY: sysconf reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_nanos((ticks + 1).saturating_mul(1_000_000_000 / hz)) <= instant
}

/// Take one token from a user's bucket `(tokens, refilled at)`: how long to wait for it.
fn pace(bucket: &mut (f64, Instant)) -> Duration {
    let now = Instant::now();
    let (tokens, at) = bucket;
    *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * RATE).min(BURST) - 1.0;
    *at = now;
    match *tokens < 0.0 {
        true => Duration::from_secs_f64(-*tokens / RATE),
        false => Duration::ZERO,
    }
}

/// One reader's share of a waiting request. When the last share is dropped (answered, or
/// every reader gone), the request leaves the table and its user's count.
struct Share<'a, M> {
    waits: &'a Waits<M>,
    path: &'a str,
    inflight: Arc<Inflight>,
}

impl<M> Drop for Share<'_, M> {
    fn drop(&mut self) {
        let mut state = self.waits.state.lock().unwrap();
        let current = state.inflight.get(self.path).is_some_and(|i| Arc::ptr_eq(i, &self.inflight));
        // The table's reference and ours: nobody else waits on it.
        let last = Arc::strong_count(&self.inflight) <= 2;
        if current && (last || self.inflight.answer.initialized()) {
            state.inflight.remove(self.path);
            let uid = self.inflight.uid;
            if let Some(n) = state.per_uid.get_mut(&uid) {
                *n -= 1;
                if *n == 0 {
                    state.per_uid.remove(&uid);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_started_before_now_and_not_after() {
        // SAFETY: gettid has no arguments.
        let me = unsafe { libc::gettid() } as u32;
        std::thread::sleep(Duration::from_millis(30));
        assert!(started_before(me, boottime()));
        assert!(!started_before(me, Duration::ZERO));
        assert!(!started_before(u32::MAX, boottime()), "a gone thread");
    }

    #[test]
    fn a_user_starts_at_most_a_burst_then_five_a_second() {
        let mut bucket = (BURST, Instant::now());
        let delays: Vec<Duration> = (0..20).map(|_| pace(&mut bucket)).collect();
        assert!(delays[..10].iter().all(|d| d.is_zero()), "{delays:?}");
        assert!(delays[10] > Duration::from_millis(150), "{delays:?}");
        assert!(delays[19] >= Duration::from_millis(1900), "ten more take two seconds: {delays:?}");
    }
}
