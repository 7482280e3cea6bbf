//! FUSE messages the kernel sends the daemon per warm read, by operation.
//!
//! This build counts them in `.metadatafs/status` (`fuse_requests`), rendered when the status
//! file is looked up; reading the status costs messages of its own, measured just before and
//! taken off. Older builds only log their counts at unmount, so for them it is fresh mounts:
//! one that reads once, one that reads once and then `n` times more.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use crate::measure::cat;
use crate::mount::{minus, Counts, Mount};

/// Messages per read, by operation.
#[derive(Debug, Default)]
pub struct PerRead(BTreeMap<String, f64>);

impl PerRead {
    fn of(counts: &Counts, n: usize) -> PerRead {
        PerRead(counts.iter().map(|(op, c)| (op.clone(), *c as f64 / n as f64)).collect())
    }

    pub fn single(op: &str, per_read: f64) -> PerRead {
        PerRead(BTreeMap::from([(op.to_string(), per_read)]))
    }

    /// Every message but FORGET (sent when the kernel drops an inode, not by the read) and
    /// the `interrupted` counter (not a message).
    pub fn total(&self) -> f64 {
        self.0
            .iter()
            .filter(|(op, _)| *op != "forget" && *op != "interrupted")
            .map(|(_, n)| n)
            .sum()
    }
}

impl fmt::Display for PerRead {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let detail: Vec<String> = self
            .0
            .iter()
            .filter(|(_, n)| n.abs() >= 0.0005)
            .map(|(op, n)| format!("{op} {n:.3}"))
            .collect();
        let detail = if detail.is_empty() { "none".to_string() } else { detail.join(", ") };
        write!(f, "{:.3} ({detail})", self.total())
    }
}

/// Messages per call of `op`, `n` calls, from `mount`'s status counters.
pub fn by_status(mount: &Mount, n: usize, mut op: impl FnMut()) -> PerRead {
    let s0 = mount.fuse_requests();
    let s1 = mount.fuse_requests();
    (0..n).for_each(|_| op());
    let s2 = mount.fuse_requests();
    let status_read = minus(&s1, &s0);
    let mut counts = minus(&s2, &s1);
    for (op, c) in counts.iter_mut() {
        *c -= status_read.get(op).copied().unwrap_or(0);
    }
    PerRead::of(&counts, n)
}

/// Messages per warm `cat` of `path`, `n` of them, from fresh mounts' unmount logs.
pub fn by_unmount(binary: &Path, endpoint: &str, options: &str, path: &str, n: usize) -> PerRead {
    let reads = |warm: usize| {
        let mount = Mount::start(binary, endpoint, options);
        (0..=warm).for_each(|_| {
            cat(&mount.join(path));
        });
        mount.stop()
    };
    let (once, many) = (reads(0), reads(n));
    if many.is_empty() {
        return PerRead::default();
    }
    PerRead::of(&minus(&many, &once), n)
}
