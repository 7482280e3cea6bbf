//! Time as a parameter: every expiry decision takes a [`Clock`], so tests move a
//! [`ManualClock`] instead of sleeping out a TTL.

use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub trait Clock: Send + Sync + Debug {
    fn now(&self) -> Instant;
}

pub type SharedClock = Arc<dyn Clock>;

#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that only moves when told to.
#[derive(Debug)]
pub struct ManualClock {
    start: Instant,
    offset: Mutex<Duration>,
}

impl Default for ManualClock {
    fn default() -> Self {
        ManualClock {
            start: Instant::now(),
            offset: Mutex::new(Duration::ZERO),
        }
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

    pub fn from_now(clock: &dyn Clock, validity: Duration) -> Self {
        Expiry(clock.now() + validity)
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
