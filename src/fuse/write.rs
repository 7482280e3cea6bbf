//! The write side of the adapter: `open` for writing, `write`, `flush`, `release`, `setattr`
//! (truncate), `create`, `mkdir`, `unlink` and `rmdir` go to the core's write-through
//! (fs/write.rs), which takes only what the mount's options allow and refuses the rest with
//! EROFS. Each runs as a task: a write waits for the MDS (and a guest attribute for its turn).
//! Write opens are direct I/O without `FOPEN_NOFLUSH`: `close()` is where a guest attribute
//! is sent, and its error is the close's.

use std::ffi::{OsStr, OsString};
use std::sync::{Arc, OnceLock};

use fuser::{FileHandle, FopenFlags, Generation, ReplyAttr, ReplyEmpty, ReplyEntry, ReplyOpen};
use tokio::runtime::Handle;

use super::notify::{tell, KernelCache};
use super::reply::{errno, file_attr, kernel_ttl};
use crate::error::Result;
use crate::fs::Core;
use crate::upstream::mds::Mds;

pub(crate) fn open<M: Mds>(
    core: &Arc<Core<M>>,
    rt: &Handle,
    ino: u64,
    uid: u32,
    truncate: bool,
    reply: ReplyOpen,
) {
    let core = core.clone();
    rt.spawn(async move {
        match core.open_write(ino, uid, truncate).await {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO),
            Err(e) => reply.error(errno("open", &e)),
        }
    });
}

pub(crate) fn write<M: Mds>(
    core: &Arc<Core<M>>,
    rt: &Handle,
    fh: u64,
    offset: u64,
    data: &[u8],
    reply: fuser::ReplyWrite,
) {
    let (core, data) = (core.clone(), data.to_vec());
    rt.spawn(async move {
        match core.writes().write(fh, offset, &data).await {
            Ok(written) => reply.written(written),
            Err(e) => reply.error(errno("write", &e)),
        }
    });
}

/// `close()`: what was written goes through now, and its error is the close's.
pub(crate) fn flush<M: Mds>(core: &Arc<Core<M>>, rt: &Handle, fh: u64, reply: ReplyEmpty) {
    if !core.writes().flush_sends(fh) {
        return reply.ok();
    }
    let core = core.clone();
    rt.spawn(async move {
        match core.writes().flush(fh).await {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno("close", &e)),
        }
    });
}

/// The last close: a change still held (a truncate-only handle) is sent now.
pub(crate) fn release<M: Mds>(core: &Arc<Core<M>>, rt: &Handle, fh: u64, reply: ReplyEmpty) {
    if core.writes().has_unsent(fh) {
        let core = core.clone();
        rt.spawn(async move {
            core.writes().send_unsent(fh).await;
            core.release(fh);
        });
    } else {
        core.release(fh);
    }
    reply.ok();
}

/// A truncate of a writable file; modes, owners and times are the mirror's: `touch` is not an
/// error on a writable file, `chmod`/`chown` (`owner_or_mode`) are EPERM there and EROFS on
/// the others, as on a read-only mount.
#[allow(clippy::too_many_arguments)]
pub(crate) fn setattr<M: Mds>(
    core: &Arc<Core<M>>,
    rt: &Handle,
    ino: u64,
    uid: u32,
    size: Option<u64>,
    fh: Option<u64>,
    owner_or_mode: bool,
    reply: ReplyAttr,
) {
    let core = core.clone();
    rt.spawn(async move {
        let result = match size {
            Some(size) => core.truncate(ino, fh, size, uid).await,
            None => core.touch(ino, uid, owner_or_mode),
        };
        match result {
            Ok(e) => reply.attr(&kernel_ttl(e.ttl), &file_attr(&e.attr)),
            Err(e) => reply.error(errno("truncate", &e)),
        }
    });
}

pub(crate) fn mkdir<M: Mds>(
    core: &Arc<Core<M>>,
    rt: &Handle,
    parent: u64,
    name: OsString,
    uid: u32,
    reply: ReplyEntry,
) {
    let core = core.clone();
    rt.spawn(async move {
        match core.mkdir(parent, &name, uid).await {
            Ok(e) => {
                let attr = file_attr(&e.attr);
                reply.entry_with_ttls(&e.ttl, &e.entry_ttl, &attr, Generation(0))
            }
            Err(e) => reply.error(errno("mkdir", &e)),
        }
    });
}

pub(crate) fn create<M: Mds>(
    core: &Arc<Core<M>>,
    rt: &Handle,
    parent: u64,
    name: OsString,
    uid: u32,
    reply: fuser::ReplyCreate,
) {
    let core = core.clone();
    rt.spawn(async move {
        match core.create(parent, &name, uid).await {
            Ok((e, fh)) => {
                let attr = file_attr(&e.attr);
                let flags = FopenFlags::FOPEN_DIRECT_IO;
                reply.created(&e.ttl, &attr, Generation(0), FileHandle(fh), flags)
            }
            Err(e) => reply.error(errno("create", &e)),
        }
    });
}

/// `rm NS/KEY` with `uid: Some(_)`, `rmdir NS` with `None`.
pub(crate) fn remove<M: Mds>(
    core: &Arc<Core<M>>,
    rt: &Handle,
    parent: u64,
    name: OsString,
    uid: Option<u32>,
    reply: ReplyEmpty,
) {
    let core = core.clone();
    rt.spawn(async move {
        let (op, result) = match uid {
            Some(uid) => ("unlink", remove_key(&core, parent, &name, uid).await),
            None => ("rmdir", remove_dir(&core, parent, &name).await),
        };
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(op, &e)),
        }
    });
}

/// `fsync`: on a token file, ask the MDS for the token again (fs/renew.rs); else nothing.
pub(crate) fn fsync<M: Mds>(
    core: &Arc<Core<M>>,
    rt: &Handle,
    kernel: &Arc<OnceLock<Arc<dyn KernelCache>>>,
    ino: u64,
    reply: ReplyEmpty,
) {
    let (core, kernel) = (core.clone(), kernel.clone());
    rt.spawn(async move {
        let node = match core.node(ino) {
            Ok(node) => node,
            Err(e) => return reply.error(errno("fsync", &e)),
        };
        match core.writes().renew(&node).await {
            Ok(()) => {
                // Before `fsync` returns, the kernel forgets the names showing the old token:
                // the caller's next `open()` gets the renewed one.
                if let Some(kernel) = kernel.get() {
                    tell(kernel, core.token_replaced(&node.path)).await;
                }
                reply.ok()
            }
            Err(e) => reply.error(errno("fsync", &e)),
        }
    });
}

async fn remove_key<M: Mds>(core: &Core<M>, parent: u64, name: &OsStr, uid: u32) -> Result<()> {
    core.writes().unlink(&core.node(parent)?, name, uid).await
}

async fn remove_dir<M: Mds>(core: &Core<M>, parent: u64, name: &OsStr) -> Result<()> {
    core.writes().rmdir(&core.node(parent)?, name).await
}
