//! Turning the core's answers into the kernel's replies: attributes, entries with their TTLs,
//! errnos (logged at the error's own level).

use std::time::{Duration, UNIX_EPOCH};

use fuser::{Errno, Generation, INodeNo, ReplyAttr, ReplyDirectory, ReplyEntry, Request};
use log::log;

use crate::error::{Error, Result};
use crate::fs::{Attr, Caller, Core, DirEntry, Entry, FileType};
use crate::upstream::mds::Mds;

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

pub(crate) fn reply_attr(reply: ReplyAttr, answer: Result<Entry>) {
    match answer {
        Ok(e) => reply.attr(&kernel_ttl(e.ttl), &file_attr(&e.attr)),
        Err(e) => reply.error(errno("getattr", &e)),
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

/// Who asks, from the request header.
pub(crate) fn caller(req: &Request) -> Caller {
    Caller { uid: req.uid(), gid: req.gid(), pid: req.pid() }
}

/// Hands directory entries to the kernel's buffer; true once it is full.
pub(crate) fn add(reply: &mut ReplyDirectory) -> impl FnMut(u64, &DirEntry) -> bool + '_ {
    |next, entry| reply.add(INodeNo(entry.ino), next, file_kind(entry.kind), &entry.name)
}

pub(crate) fn reply_listed(reply: ReplyDirectory, answer: Result<()>) {
    match answer {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(errno("readdir", &e)),
    }
}
