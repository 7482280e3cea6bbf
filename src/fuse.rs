//! The thin fuser adapter: each operation calls the core and turns its answer into a reply.
//!
//! Cache hits are answered inline on the FUSE thread (`lookup_now`, `open_now`; `getattr`,
//! reads, readdir, release, readlink and forget only touch memory): a hop through the async
//! runtime would cost more than the answer. Only when the MDS has to be asked (a miss in
//! lookup, open, opendir) does the operation become a task on the tokio runtime, so the FUSE
//! thread is free for the next request at once and a slow MDS never stalls a cached read.
//!
//! Read-only opens carry `FOPEN_NOFLUSH`: closing such a file has nothing to report, so the
//! kernel skips the FLUSH round trip. Files whose bytes never change keep the page cache
//! (`FOPEN_KEEP_CACHE`); `token` files are direct I/O, mappable through
//! `FUSE_DIRECT_IO_ALLOW_MMAP` (Linux 6.6). An older kernel cannot map a direct-I/O file
//! shared, so there token opens use the page cache, dropped at every open, instead: `mmap`
//! works on every file either way.
//!
//! The write side: `open` for writing, `write`, `flush`, `setattr` (truncate), `create`, `mkdir`,
//! `unlink` and `rmdir` go to the core's write-through (write.rs), which takes only what the
//! mount's options allow (scopes, guest attributes) and refuses the rest with EROFS. They run as
//! tasks: a write waits for the MDS (and a guest attribute for its turn). Write opens are
//! direct I/O without `FOPEN_NOFLUSH`: `close()` is where a guest attribute is sent. Everything
//! else that would change the tree (mknod, symlink, rename, link) is refused with EROFS.

use std::ffi::OsStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileHandle, FopenFlags, Generation, INodeNo, OpenFlags, ReplyAttr, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, Request,
};
use log::log;

use crate::error::{Error, Result};
use crate::fs::{Attr, Caching, Core, Entry, FileType};
use crate::upstream::mds::Mds;

#[derive(Debug)]
pub struct FuseFs<M> {
    core: Arc<Core<M>>,
    runtime: tokio::runtime::Handle,
    served: Served,
    /// The kernel maps direct-I/O files (`FUSE_DIRECT_IO_ALLOW_MMAP`).
    direct_mmap: bool,
}

impl<M: Mds> FuseFs<M> {
    pub fn new(core: Arc<Core<M>>, runtime: tokio::runtime::Handle) -> Self {
        FuseFs { core, runtime, served: Served::default(), direct_mmap: false }
    }
}

/// The read-path requests the kernel sent, by kind: the benchmark reads them from the log
/// line written at unmount (how many round trips a warm `cat` costs).
const COUNTED: [&str; 9] =
    ["lookup", "getattr", "open", "read", "flush", "release", "opendir", "readdir", "forget"];

#[derive(Debug, Default)]
struct Served([std::sync::atomic::AtomicU64; COUNTED.len()]);

impl Served {
    fn add(&self, op: &str) {
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

fn reply_entry<M: Mds>(reply: ReplyEntry, answer: Result<Entry>, core: &Core<M>, epoch: u64) {
    match answer {
        Ok(mut e) => {
            let _settled = core.settle(epoch, &mut e);
            let (attr_ttl, entry_ttl) = (kernel_ttl(e.ttl), kernel_ttl(e.entry_ttl));
            reply.entry_with_ttls(&attr_ttl, &entry_ttl, &file_attr(&e.attr), Generation(0))
        }
        Err(e) => reply.error(errno("lookup", &e)),
    }
}

fn reply_open(reply: ReplyOpen, answer: Result<(u64, Caching)>, direct_mmap: bool) {
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

fn file_kind(kind: FileType) -> fuser::FileType {
    match kind {
        FileType::Directory => fuser::FileType::Directory,
        FileType::RegularFile => fuser::FileType::RegularFile,
        FileType::Symlink => fuser::FileType::Symlink,
    }
}

fn file_attr(attr: &Attr) -> fuser::FileAttr {
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

fn errno(op: &str, err: &Error) -> Errno {
    log!(err.level(), "{op}: {err}");
    Errno::from_i32(err.errno())
}

/// How much sooner than our cache the kernel lets go of an attribute or entry. The kernel
/// counts a TTL from when it reads our reply, a little after we computed it; without this, a
/// size it cached could outlive our value by that much, and an `open` in between would read the
/// next value while `fstat` still says the old size.
const KERNEL_TTL_MARGIN: Duration = Duration::from_millis(100);

/// What is left of our validity, less the margin, in a range the kernel handles.
fn kernel_ttl(ttl: Duration) -> Duration {
    ttl.saturating_sub(KERNEL_TTL_MARGIN).min(Duration::from_secs(24 * 3600))
}

impl<M: Mds> fuser::Filesystem for FuseFs<M> {
    fn init(&mut self, _req: &Request, config: &mut fuser::KernelConfig) -> std::io::Result<()> {
        // Without this the kernel serialises lookups per directory, and one name waiting on
        // the MDS would stall every other lookup in its directory, cached or not.
        if config.add_capabilities(fuser::InitFlags::FUSE_PARALLEL_DIROPS).is_err() {
            log::info!("the kernel does not offer parallel directory operations");
        }
        // `token` files are direct I/O (each open renders its own bytes); without this the
        // kernel refuses to map them (ENODEV).
        self.direct_mmap =
            config.add_capabilities(fuser::InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP).is_ok();
        // `O_TRUNC` arrives with `open`, so `echo x > file` is one open, not open + truncate.
        let _ = config.add_capabilities(fuser::InitFlags::FUSE_ATOMIC_O_TRUNC);
        // Many readers may wait on the MDS at once; let the kernel have them all in flight.
        let _ = config.set_max_background(256);
        let _ = config.set_congestion_threshold(192);
        Ok(())
    }

    fn destroy(&mut self) {
        log::info!("FUSE requests served:{}", self.served);
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        self.served.add("lookup");
        let epoch = self.core.change_epoch();
        if let Some(answer) = self.core.lookup_now(parent.0, name) {
            return reply_entry(reply, answer, &self.core, epoch);
        }
        // A miss while the directory is being listed: `ls -l` is about to look up every name
        // in turn, so fetch them together.
        if let Some(prefetch) = self.core.prefetch(parent.0) {
            self.runtime.spawn(prefetch);
        }
        let (core, name) = (self.core.clone(), name.to_owned());
        self.runtime.spawn(async move {
            let answer = core.lookup(parent.0, &name).await;
            reply_entry(reply, answer, &core, epoch)
        });
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.served.add("forget");
        self.core.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        self.served.add("getattr");
        match self.core.getattr(ino.0) {
            Ok(e) => reply.attr(&kernel_ttl(e.ttl), &file_attr(&e.attr)),
            Err(e) => reply.error(errno("getattr", &e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.core.readlink(ino.0) {
            Ok(target) => reply.data(&target),
            Err(e) => reply.error(errno("readlink", &e)),
        }
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        self.served.add("open");
        let write = flags.0 & libc::O_ACCMODE != libc::O_RDONLY || flags.0 & libc::O_TRUNC != 0;
        if write {
            let truncate = flags.0 & libc::O_TRUNC != 0;
            let (core, uid) = (self.core.clone(), req.uid());
            self.runtime.spawn(async move {
                match core.open_write(ino.0, uid, truncate).await {
                    Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO),
                    Err(e) => reply.error(errno("open", &e)),
                }
            });
            return;
        }
        if let Some(answer) = self.core.open_now(ino.0, write) {
            return reply_open(reply, answer, self.direct_mmap);
        }
        let core = self.core.clone();
        let direct_mmap = self.direct_mmap;
        self.runtime
            .spawn(async move { reply_open(reply, core.open(ino.0, write).await, direct_mmap) });
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyData,
    ) {
        self.served.add("read");
        match self.core.read(fh.0, offset, size) {
            Ok(bytes) => reply.data(&bytes),
            Err(e) => reply.error(errno("read", &e)),
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: fuser::WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: fuser::ReplyWrite,
    ) {
        let (core, data) = (self.core.clone(), data.to_vec());
        self.runtime.spawn(async move {
            match core.writes().write(fh.0, offset, &data).await {
                Ok(written) => reply.written(written),
                Err(e) => reply.error(errno("write", &e)),
            }
        });
    }

    /// `close()`: what was written goes through now, and its error is the close's.
    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _lock_owner: fuser::LockOwner,
        reply: ReplyEmpty,
    ) {
        if !self.core.writes().flush_sends(fh.0) {
            reply.ok();
            return;
        }
        let core = self.core.clone();
        self.runtime.spawn(async move {
            match core.writes().flush(fh.0).await {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno("close", &e)),
            }
        });
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        if self.core.writes().has_unsent(fh.0) {
            let core = self.core.clone();
            self.runtime.spawn(async move {
                core.writes().send_unsent(fh.0).await;
                core.release(fh.0);
            });
        } else {
            self.core.release(fh.0);
        }
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        self.served.add("opendir");
        let core = self.core.clone();
        self.runtime.spawn(async move {
            match core.opendir(ino.0).await {
                Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
                Err(e) => reply.error(errno("opendir", &e)),
            }
        });
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        self.served.add("readdir");
        let added = self.core.readdir(fh.0, offset, |next, entry| {
            reply.add(INodeNo(entry.ino), next, file_kind(entry.kind), &entry.name)
        });
        match added {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno("readdir", &e)),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.core.release(fh.0);
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        reply.statfs(0, 0, 0, 0, 0, 4096, 255, 4096);
    }

    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: fuser::ReplyXattr,
    ) {
        // No extended attributes: ENODATA tells `ls` and SELinux tools there is nothing to show.
        reply.error(Errno::from_i32(libc::ENODATA));
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, size: u32, reply: fuser::ReplyXattr) {
        if size == 0 {
            reply.size(0);
        } else {
            reply.data(&[]);
        }
    }

    // Extended attributes are never stored: EROFS like every other write (ENOSYS would read
    // as "not supported", and tools would try again elsewhere).
    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::from_i32(libc::EROFS));
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::from_i32(libc::EROFS));
    }

    /// A truncate of a writable file; modes, owners and times are the mirror's (unchanged,
    /// and not an error on a writable file, so `touch` works).
    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<fuser::TimeOrNow>,
        _mtime: Option<fuser::TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let (core, uid) = (self.core.clone(), req.uid());
        let fh = fh.map(|fh| fh.0);
        self.runtime.spawn(async move {
            let result = match size {
                Some(size) => core.truncate(ino.0, fh, size, uid).await,
                None => core.touch(ino.0, uid),
            };
            match result {
                Ok(e) => reply.attr(&kernel_ttl(e.ttl), &file_attr(&e.attr)),
                Err(e) => reply.error(errno("truncate", &e)),
            }
        });
    }

    fn mknod(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::from_i32(libc::EROFS));
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let (core, name, uid) = (self.core.clone(), name.to_owned(), req.uid());
        self.runtime.spawn(async move {
            match core.mkdir(parent.0, &name, uid).await {
                Ok(e) => {
                    let attr = file_attr(&e.attr);
                    reply.entry_with_ttls(&e.ttl, &e.entry_ttl, &attr, Generation(0))
                }
                Err(e) => reply.error(errno("mkdir", &e)),
            }
        });
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let (core, name, uid) = (self.core.clone(), name.to_owned(), req.uid());
        self.runtime.spawn(async move {
            match core.unlink(parent.0, &name, uid).await {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno("unlink", &e)),
            }
        });
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let (core, name) = (self.core.clone(), name.to_owned());
        self.runtime.spawn(async move {
            match core.rmdir(parent.0, &name).await {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno("rmdir", &e)),
            }
        });
    }

    fn symlink(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _link_name: &OsStr,
        _target: &std::path::Path,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::from_i32(libc::EROFS));
    }

    fn rename(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _newparent: INodeNo,
        _newname: &OsStr,
        _flags: fuser::RenameFlags,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::from_i32(libc::EROFS));
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::from_i32(libc::EROFS));
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: fuser::ReplyCreate,
    ) {
        let (core, name, uid) = (self.core.clone(), name.to_owned(), req.uid());
        self.runtime.spawn(async move {
            match core.create(parent.0, &name, uid).await {
                Ok((e, fh)) => {
                    let attr = file_attr(&e.attr);
                    let flags = FopenFlags::FOPEN_DIRECT_IO;
                    reply.created(&e.ttl, &attr, Generation(0), FileHandle(fh), flags)
                }
                Err(e) => reply.error(errno("create", &e)),
            }
        });
    }
}
