//! Readers that can be interrupted. fuser answers the kernel's FUSE_INTERRUPT with ENOSYS,
//! after which the kernel waits for our answer uninterruptibly: a reader blocked on us would
//! ignore Ctrl-C, `timeout` and even SIGKILL. So every operation that waits on the MDS also
//! watches its caller: the request header names the calling thread, and `/proc/TID/status`
//! says whether a signal it does not block or ignore is pending (or SIGKILL, which cannot be
//! blocked), or whether the thread is gone. Then the operation is dropped, which drops the
//! caller's share of any upstream request, and answered EINTR; the kernel hands the error to
//! the caller, which then takes its signal.
//!
//! The first look comes after [`FIRST_LOOK`], so the usual cold read (a millisecond) costs
//! nothing; then every [`EVERY`]: a reader is let go within about that.

use std::future::Future;
use std::time::Duration;

use crate::error::{Error, Result};

const FIRST_LOOK: Duration = Duration::from_millis(20);
const EVERY: Duration = Duration::from_millis(50);
const SIGKILL_BIT: u64 = 1 << (libc::SIGKILL - 1);

/// `work`, unless thread `pid` is signalled or gone first: then EINTR.
pub(crate) async fn interruptible<T>(pid: u32, work: impl Future<Output = Result<T>>) -> Result<T> {
    tokio::select! {
        biased;
        result = work => result,
        () = signalled(pid) => Err(Error::Interrupted),
    }
}

async fn signalled(pid: u32) {
    if pid == 0 {
        // The kernel itself (readahead, writeback): nobody to watch.
        return std::future::pending().await;
    }
    tokio::time::sleep(FIRST_LOOK).await;
    loop {
        if has_signal(pid) {
            return;
        }
        tokio::time::sleep(EVERY).await;
    }
}

/// Whether thread `pid` has a signal pending that it will take, or is gone.
pub(crate) fn has_signal(pid: u32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return true;
    };
    let mask = |name: &str| {
        let line = status.lines().find_map(|l| l.strip_prefix(name)).unwrap_or_default();
        u64::from_str_radix(line.trim(), 16).unwrap_or(0)
    };
    let pending = mask("SigPnd:") | mask("ShdPnd:");
    pending & SIGKILL_BIT != 0 || pending & !mask("SigBlk:") & !mask("SigIgn:") != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_without_pending_signals_is_not_signalled_and_a_gone_one_is() {
        assert!(!has_signal(std::process::id()));
        assert!(has_signal(u32::MAX));
    }
}
