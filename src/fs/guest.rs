//! Guest attributes' rules (reference/metadata-api.md §6): which paths are keys, which names
//! the MDS takes, and the pacer that keeps this mount's writes under the MDS's limit (10 a
//! minute, bursts of 3 a second; above it the MDS may drop attributes being written).

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

pub(crate) const GUEST_ATTRIBUTES: &str = "instance/guest-attributes";
/// The MDS's guest-attribute limits, each with a margin so we stay under them.
const BURST: (usize, Duration) = (3, Duration::from_millis(1100));
const SUSTAINED: (usize, Duration) = (10, Duration::from_secs(61));

/// `instance/guest-attributes/NS/KEY` → `(NS, KEY)`.
pub(crate) fn guest_key(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("instance/guest-attributes/")?;
    rest.split_once('/').filter(|(_, key)| !key.contains('/'))
}

/// Letters, digits, `_` and `-`.
pub(crate) fn check_guest_name(name: &OsStr) -> Result<&str> {
    let name = name.to_str().unwrap_or_default();
    let ok =
        !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || "_-".contains(c));
    ok.then_some(name).ok_or_else(|| {
        Error::InvalidName("guest attribute names use letters, digits, _ and - only".into())
    })
}

/// Whether `path` is `instance/guest-attributes` (`depth` 0) or one of its namespaces (1).
pub(crate) fn is_guest_dir(path: &str, depth: usize) -> bool {
    match depth {
        0 => path == GUEST_ATTRIBUTES,
        _ => path.strip_prefix("instance/guest-attributes/").is_some_and(|ns| !ns.contains('/')),
    }
}

/// When guest-attribute requests may go: FIFO, at most `BURST` per its window and
/// `SUSTAINED` per its window.
#[derive(Debug, Default)]
pub(crate) struct Pacer {
    sent: VecDeque<Instant>,
}

impl Pacer {
    /// The time the next request may be sent at (not before `now`), booked for it.
    pub(crate) fn reserve(&mut self, now: Instant) -> Instant {
        let mut at = self.sent.back().map_or(now, |last| (*last).max(now));
        for (n, window) in [BURST, SUSTAINED] {
            if self.sent.len() >= n {
                at = at.max(self.sent[self.sent.len() - n] + window);
            }
        }
        self.sent.push_back(at);
        while self.sent.len() > SUSTAINED.0 {
            self.sent.pop_front();
        }
        at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_attribute_requests_stay_under_three_a_second_and_ten_a_minute() {
        let mut pacer = Pacer::default();
        let start = Instant::now();
        let times: Vec<Duration> = (0..12).map(|_| pacer.reserve(start) - start).collect();
        assert_eq!(&times[..3], [Duration::ZERO; 3], "a burst of three goes at once");
        for (i, t) in times.iter().enumerate() {
            let in_a_second =
                times.iter().filter(|u| **u <= *t && *t - **u < Duration::from_secs(1));
            assert!(in_a_second.count() <= 3, "request {i} at {t:?}");
            let in_a_minute =
                times.iter().filter(|u| **u <= *t && *t - **u < Duration::from_secs(60));
            assert!(in_a_minute.count() <= 10, "request {i} at {t:?}");
        }
        assert!(times[10] >= Duration::from_secs(60), "the eleventh waits for the minute");
        let later = start + Duration::from_secs(600);
        assert_eq!(pacer.reserve(later), later, "an idle pacer lets the next one go at once");
    }
}
