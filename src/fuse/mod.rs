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
//! The write side is in write.rs. Everything else that would change the tree (mknod, symlink,
//! rename, link) is refused with EROFS.

use std::ffi::OsStr;
use std::sync::Arc;
use std::time::SystemTime;

use fuser::{
    Errno, FileHandle, FopenFlags, INodeNo, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, Request,
};

mod reply;
mod write;

use self::reply::{errno, file_attr, file_kind, kernel_ttl, reply_entry, reply_open, Served};
use crate::fs::Core;
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
        let epoch = self.core.changes().current();
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
            return write::open(&self.core, &self.runtime, ino.0, req.uid(), truncate, reply);
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
        write::write(&self.core, &self.runtime, fh.0, offset, data, reply);
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
        write::flush(&self.core, &self.runtime, fh.0, reply);
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
        write::release(&self.core, &self.runtime, fh.0, reply);
    }

    /// On a token file, renew the token (fs/renew.rs): `sync FILE` after a 401.
    fn fsync(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _data: bool, reply: ReplyEmpty) {
        write::fsync(&self.core, &self.runtime, ino.0, reply);
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

    /// A truncate of a writable file; times, modes and owners are the mirror's (`touch` is a
    /// no-op, `chmod`/`chown` EPERM).
    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
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
        let (chmod, caller, fh) = (mode.or(uid).or(gid).is_some(), req.uid(), fh.map(|fh| fh.0));
        write::setattr(&self.core, &self.runtime, ino.0, caller, size, fh, chmod, reply);
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
        write::mkdir(&self.core, &self.runtime, parent.0, name.to_owned(), req.uid(), reply);
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let (name, uid) = (name.to_owned(), Some(req.uid()));
        write::remove(&self.core, &self.runtime, parent.0, name, uid, reply);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        write::remove(&self.core, &self.runtime, parent.0, name.to_owned(), None, reply);
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
        write::create(&self.core, &self.runtime, parent.0, name.to_owned(), req.uid(), reply);
    }
}
