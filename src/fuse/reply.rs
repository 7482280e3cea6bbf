//! Turning the core's answers into the kernel's replies: attributes, entries with their TTLs,
//! open flags, errnos (logged at the error's own level), and the count of requests served
//! that the benchmark reads at unmount.

use std::time::{Duration, UNIX_EPOCH};

use fuser::{Errno, FileHandle, FopenFlags, Generation, INodeNo, ReplyEntry, ReplyOpen};
use log::log;

use crate::error::{Error, Result};
use crate::fs::{Attr, Caching, Core, Entry, FileType};
use crate::upstream::mds::Mds;

/// The read-path requests the kernel sent, by kind: the benchmark reads them from the log
/// line written at unmount (how many round trips a warm `cat` costs).
const COUNTED: [&str; 9] =
    ["lookup", "getattr", "open", "read", "flush", "release", "opendir", "readdir", "forget"];

#[derive(Debug, Default)]
pub(crate) struct Served([std::sync::atomic::AtomicU64; COUNTED.len()]);

impl Served {
    pub(crate) fn add(&self, op: &str) {
        if let Some(i) = COUNTED.iter().position(|c| *c == op) {
            self.0[i].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

impl std::fmt::Display for Served {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (name, count) in COUNTED.iter().zip(&self.0) {
            write!(f, " {name}={}", count.load(std::sync::atomic::Ordering::Relaxed))?;
        }
        Ok(())
    }
}

pub(crate) fn reply_entry<M: Mds>(
    reply: ReplyEntry,
    answer: Result<Entry>,
    core: &Core<M>,
    epoch: u64,
) {
    match answer {
        Ok(mut e) => {
            let _settled = core.changes().settle(epoch, &mut e);
            let (attr_ttl, entry_ttl) = (kernel_ttl(e.ttl), kernel_ttl(e.entry_ttl));
            reply.entry_with_ttls(&attr_ttl, &entry_ttl, &file_attr(&e.attr), Generation(0))
        }
        Err(e) => reply.error(errno("lookup", &e)),
    }
}

pub(crate) fn reply_open(reply: ReplyOpen, answer: Result<(u64, Caching)>, direct_mmap: bool) {
    match answer {
        Ok((fh, Caching::KeepCache)) => {
            reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_NOFLUSH)
        }
        // The kernel passes every read to us: each open renders its own bytes.
        Ok((fh, Caching::Direct)) if direct_mmap => {
            reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO | FopenFlags::FOPEN_NOFLUSH)
        }
        // Without KEEP_CACHE the kernel drops the inode's pages at this open; the version's
        // size is fixed (tree.rs), so reads through the page cache stop where this handle's
        // bytes do.
        Ok((fh, Caching::Direct)) => reply.opened(FileHandle(fh), FopenFlags::FOPEN_NOFLUSH),
        Err(e) => reply.error(errno("open", &e)),
    }
}

pub(crate) fn file_kind(kind: FileType) -> fuser::FileType {
    match kind {
        FileType::Directory => fuser::FileType::Directory,
        FileType::RegularFile => fuser::FileType::RegularFile,
        FileType::Symlink => fuser::FileType::Symlink,
    }
}

pub(crate) fn file_attr(attr: &Attr) -> fuser::FileAttr {
    let kind = file_kind(attr.kind);
    fuser::FileAttr {
        ino: INodeNo(attr.ino),
        size: attr.size,
        blocks: attr.size.div_ceil(512),
        atime: attr.mtime,
        mtime: attr.mtime,
        ctime: attr.mtime,
        crtime: UNIX_EPOCH,
        kind,
        perm: attr.perm,
        nlink: if kind == fuser::FileType::Directory { 2 } else { 1 },
        uid: attr.uid,
        gid: attr.gid,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

/// How long the same error is logged at debug only after it was logged at its own level: a
/// cached failure is answered at every lookup, and an outage must not flood syslog with a line
/// per syscall. Logged again at its level once this long has passed.
const REPEAT_QUIET: Duration = Duration::from_secs(300);
/// Distinct errors remembered for that (a bound whatever a user looks up).
const REPEATS_KEPT: usize = 256;

pub(crate) fn errno(op: &str, err: &Error) -> Errno {
    let message = format!("{op}: {err}");
    let level = match err.level() {
        level if level <= log::Level::Info && repeated(&message) => log::Level::Debug,
        level => level,
    };
    log!(level, "{message}");
    Errno::from_i32(err.errno())
}

/// Whether `message` was logged at its own level within [`REPEAT_QUIET`]; notes it if not.
fn repeated(message: &str) -> bool {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    use std::time::Instant;
    static LOGGED: OnceLock<Mutex<HashMap<String, Instant>>> = OnceLock::new();
    let mut logged = LOGGED.get_or_init(Mutex::default).lock().unwrap_or_else(|p| p.into_inner());
    let now = Instant::now();
    if logged.get(message).is_some_and(|at| now.duration_since(*at) < REPEAT_QUIET) {
        return true;
    }
    if logged.len() >= REPEATS_KEPT {
        logged.retain(|_, at| now.duration_since(*at) < REPEAT_QUIET);
        if logged.len() >= REPEATS_KEPT {
            logged.clear();
        }
    }
    logged.insert(message.to_string(), now);
    false
}

/// How much sooner than our cache the kernel lets go of an attribute or entry. The kernel
/// counts a TTL from when it reads our reply, a little after we computed it; without this, a
/// size it cached could outlive our value by that much, and an `open` in between would read the
/// next value while `fstat` still says the old size.
const KERNEL_TTL_MARGIN: Duration = Duration::from_millis(100);

/// What is left of our validity, less the margin, in a range the kernel handles.
pub(crate) fn kernel_ttl(ttl: Duration) -> Duration {
    ttl.saturating_sub(KERNEL_TTL_MARGIN).min(Duration::from_secs(24 * 3600))
}
