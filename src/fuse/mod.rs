//! The thin fuser adapter: each operation calls the core and turns its answer into a reply.
//!
//! **Two read paths**, decided at INIT and shown in `.metadatafs/status`:
//! - **no-open** (a read-only mount on a kernel with `FUSE_NO_OPEN_SUPPORT` and
//!   `FUSE_NO_OPENDIR_SUPPORT`, Linux 5.1): the first OPEN, OPENDIR and FLUSH are answered
//!   ENOSYS, after which the kernel sends none of them (nor RELEASE) for the connection, keeps
//!   file pages across opens and caches `readdir`. A warm `cat` or `ls -l` then asks the daemon
//!   nothing. What a file holds is fixed at lookup (fs/), reads come by inode, and a
//!   directory's cached listing is dropped when its mtime moves (`FUSE_AUTO_INVAL_DATA`) or
//!   the watcher says it changed.
//! - **open** (a mount with a write-through option, whose writes need handles and whose
//!   `close()` reports errors; a kernel without no-open support; or `-o read_path=open`):
//!   OPEN answers a handle on the same immutable bytes with `FOPEN_KEEP_CACHE |
//!   FOPEN_NOFLUSH`, so reads still come from the page cache; OPENDIR pins a listing.
//!
//! Cache hits are answered on the FUSE thread; only when the MDS has to be asked does an
//! operation become a task, so a slow MDS never stalls a cached read. Such a task is dropped
//! with EINTR when its caller is signalled (interrupt.rs).
//!
//! The write side is in write.rs; mknod, symlink, rename and link are refused with EROFS.

use std::ffi::OsStr;
use std::time::SystemTime;

use fuser::{
    Errno, FileHandle, FopenFlags, INodeNo, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, Request,
};

mod init;
mod interrupt;
pub mod notify;
mod reply;
mod state;
mod write;

use self::interrupt::interruptible;
use self::reply::{add, caller, errno, reply_entry};
pub use self::state::FuseFs;
use crate::upstream::mds::Mds;

impl<M: Mds> fuser::Filesystem for FuseFs<M> {
    fn init(&mut self, _req: &Request, config: &mut fuser::KernelConfig) -> std::io::Result<()> {
        let (path, why) = init::negotiate(config, self.open_path);
        self.no_open = path == "no-open";
        *self.core.board().read_path.lock().unwrap() = (path, why);
        Ok(())
    }

    fn destroy(&mut self) {
        let served: String =
            self.core.board().fuse.snapshot().iter().map(|(op, n)| format!(" {op}={n}")).collect();
        log::info!("FUSE requests served:{served}");
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        self.count("lookup");
        let epoch = self.core.changes().current();
        if let Some(answer) = self.core.lookup_now(parent.0, name) {
            return reply_entry(reply, answer, &self.core, epoch);
        }
        // A miss while the directory is being listed (`ls -l`): fetch the rest together.
        if name.to_str().is_some_and(|n| !n.contains('?')) {
            if let Some(prefetch) = self.core.prefetch(parent.0, caller(req)) {
                self.runtime.spawn(prefetch);
            }
        }
        let (core, name, caller) = (self.core.clone(), name.to_owned(), caller(req));
        self.runtime.spawn(async move {
            let answer = interruptible(caller.pid, core.lookup(parent.0, &name, caller)).await;
            reply_entry(reply, answer, &core, epoch)
        });
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.count("forget");
        self.core.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        self.count("getattr");
        if let Some(refresh) = self.core.refresh(ino.0) {
            self.runtime.spawn(refresh);
        }
        reply::reply_attr(reply, self.core.getattr(ino.0));
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.core.readlink(ino.0) {
            Ok(target) => reply.data(&target),
            Err(e) => reply.error(errno("readlink", &e)),
        }
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        self.count("open");
        let write = flags.0 & libc::O_ACCMODE != libc::O_RDONLY || flags.0 & libc::O_TRUNC != 0;
        if self.no_open {
            // The kernel stops sending OPEN (and RELEASE) and keeps pages across opens.
            return reply.error(Errno::ENOSYS);
        }
        if write {
            let truncate = flags.0 & libc::O_TRUNC != 0;
            return write::open(&self.core, &self.runtime, ino.0, req.uid(), truncate, reply);
        }
        match self.core.open(ino.0, write) {
            Ok(fh) => reply
                .opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_NOFLUSH),
            Err(e) => reply.error(errno("open", &e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyData,
    ) {
        self.count("read");
        match self.core.read(ino.0, fh.0, offset, size) {
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

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _lock_owner: fuser::LockOwner,
        reply: ReplyEmpty,
    ) {
        self.count("flush");
        if self.no_open {
            return reply.error(Errno::ENOSYS);
        }
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
        self.count("release");
        write::release(&self.core, &self.runtime, fh.0, reply);
    }

    /// On a token file, renew the token (fs/renew.rs): `sync FILE` after a 401.
    fn fsync(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _data: bool, reply: ReplyEmpty) {
        write::fsync(&self.core, &self.runtime, &self.kernel, ino.0, reply);
    }

    fn opendir(&self, req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        self.count("opendir");
        if self.no_open {
            // The kernel stops sending OPENDIR and RELEASEDIR and caches what READDIR gives.
            return reply.error(Errno::ENOSYS);
        }
        let (core, pid) = (self.core.clone(), req.pid());
        self.runtime.spawn(async move {
            match interruptible(pid, core.opendir(ino.0)).await {
                Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
                Err(e) => reply.error(errno("opendir", &e)),
            }
        });
    }

    fn readdir(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        self.count("readdir");
        match self.core.readdir(ino.0, fh.0, offset, add(&mut reply)) {
            Some(answer) => reply::reply_listed(reply, answer),
            None => {
                let (core, pid) = (self.core.clone(), req.pid());
                self.runtime.spawn(async move {
                    let listed =
                        interruptible(pid, core.readdir_fresh(ino.0, offset, add(&mut reply)));
                    let listed = listed.await;
                    reply::reply_listed(reply, listed)
                });
            }
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
        // No extended attributes: after one ENOSYS the kernel answers EOPNOTSUPP itself, so
        // `ls -l` (which asks for an SELinux context and an ACL per entry) asks us nothing.
        self.count("getxattr");
        reply.error(Errno::ENOSYS);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, _size: u32, reply: fuser::ReplyXattr) {
        self.count("getxattr");
        reply.error(Errno::ENOSYS);
    }

    /// Every `open()` in Python (and C stdio's line buffering) asks TCGETS: not a terminal.
    /// The kernel sends each ioctl (it remembers no ENOSYS for them), so it is answered here
    /// directly, without fuser's "not implemented" warning on the way.
    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: fuser::IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: fuser::ReplyIoctl,
    ) {
        reply.error(Errno::ENOTTY);
    }

    // Never stored: EROFS like every write (ENOSYS would read as "not supported").
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
