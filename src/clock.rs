//! Time as a parameter: every expiry decision takes a [`Clock`], so tests move a
//! [`ManualClock`] instead of sleeping out a TTL.

use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub trait Clock: Send + Sync + Debug {
    fn now(&self) -> Instant;
}

pub type SharedClock = Arc<dyn Clock>;

/// The real clock, counting time the machine spent suspended: `Instant` alone does not
/// (CLOCK_MONOTONIC stops during suspend), and a VM resumed after a day must not believe its
/// token still has the hour it had. So `now` is an `Instant` advanced by CLOCK_BOOTTIME.
#[derive(Debug)]
pub struct SystemClock {
    base: Instant,
    base_boottime: Duration,
}

impl Default for SystemClock {
    fn default() -> Self {
        SystemClock { base: Instant::now(), base_boottime: boottime() }
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        self.base + boottime().saturating_sub(self.base_boottime)
    }
}

/// `work` on a thread of its own, waited for at most `limit`: `None` if it has not finished
/// by then (a call blocked on a stuck filesystem). The thread, if stuck, is left to end or
/// to go with the process.
pub fn within<T: Send + 'static>(
    limit: Duration,
    work: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let (answer, answered) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = answer.send(work());
    });
    answered.recv_timeout(limit).ok()
}

pub(crate) fn boottime() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec we own; CLOCK_BOOTTIME exists since Linux 2.6.39.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// A clock that only moves when told to.
#[derive(Debug)]
pub struct ManualClock {
    start: Instant,
    offset: Mutex<Duration>,
}

impl Default for ManualClock {
    fn default() -> Self {
        ManualClock { start: Instant::now(), offset: Mutex::new(Duration::ZERO) }
    }
}

impl ManualClock {
    pub fn advance(&self, by: Duration) {
        *self.offset.lock().unwrap() += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.start + *self.offset.lock().unwrap()
    }
}

/// The moment something stops being valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Expiry(Instant);

impl Expiry {
    pub fn at(instant: Instant) -> Self {
        Expiry(instant)
    }

    /// `validity` from now; absurdly long validities saturate at a century instead of
    /// overflowing.
    pub fn from_now(clock: &dyn Clock, validity: Duration) -> Self {
        Expiry::after(clock.now(), validity)
    }

    pub fn after(start: Instant, validity: Duration) -> Self {
        const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
        Expiry(start.checked_add(validity.min(CENTURY)).unwrap_or(start))
    }

    /// Already expired: the moment is now.
    pub fn now(clock: &dyn Clock) -> Self {
        Expiry(clock.now())
    }

    pub fn instant(&self) -> Instant {
        self.0
    }

    pub fn remaining(&self, clock: &dyn Clock) -> Duration {
        self.0.saturating_duration_since(clock.now())
    }

    pub fn is_expired(&self, clock: &dyn Clock) -> bool {
        clock.now() >= self.0
    }
}

/// Between half and one and a half times `base`, so that many clients retrying after the same
/// MDS hiccup do not come back in lockstep.
pub fn jitter(base: Duration) -> Duration {
    use std::hash::{BuildHasher, RandomState};
    let random = RandomState::new().hash_one(Instant::now()) % 1000;
    base / 2 + base * random as u32 / 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_system_clock_moves_forward_with_real_time() {
        let clock = SystemClock::default();
        let (a, start) = (clock.now(), Instant::now());
        while start.elapsed() < Duration::from_millis(5) {}
        let b = clock.now();
        assert!(b > a && b - a >= Duration::from_millis(4), "{:?}", b - a);
    }

    #[test]
    fn expiry_follows_the_manual_clock() {
        let clock = ManualClock::default();
        let expiry = Expiry::from_now(&clock, Duration::from_secs(60));
        assert_eq!(expiry.remaining(&clock), Duration::from_secs(60));
        clock.advance(Duration::from_secs(59));
        assert!(!expiry.is_expired(&clock));
        clock.advance(Duration::from_secs(1));
        assert!(expiry.is_expired(&clock));
        assert_eq!(expiry.remaining(&clock), Duration::ZERO);
    }

    #[test]
    fn jitter_stays_within_half_and_one_and_a_half() {
        for _ in 0..100 {
            let j = jitter(Duration::from_millis(100));
            assert!(j >= Duration::from_millis(50) && j <= Duration::from_millis(150), "{j:?}");
        }
    }
}
