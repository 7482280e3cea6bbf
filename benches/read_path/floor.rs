//! The floor: a minimal fuser filesystem serving from memory what metadatafs serves, so the
//! tables can say how much of a read is FUSE itself and how much is the daemon. It holds one
//! file, `value`, and a directory, `dir`, of ten files `k0`..`k9` holding the same bytes, and
//! counts every request the kernel sends it.
//!
//! Three ways to answer OPEN, one per mount:
//! - [`Open::None`]: OPEN, OPENDIR and FLUSH answered ENOSYS, after which the kernel sends none
//!   of them (nor RELEASE) and keeps pages and listings across opens (`FUSE_NO_OPEN_SUPPORT`,
//!   Linux 4.14; `FUSE_NO_OPENDIR_SUPPORT`, 5.1): the floor for metadatafs's no-open path;
//! - [`Open::KeepCache`]: OPEN and RELEASE per `cat`, pages kept: the floor for the open path;
//! - [`Open::DirectIo`]: every read comes to the daemon.
//!
//! Extended attributes and ioctls are answered ENOSYS, as fuser does by default, but counted:
//! after one ENOSYS the kernel answers `getxattr` itself (`EOPNOTSUPP`), while an ioctl (a
//! `TCGETS` from `isatty`, as Python's `open()` does) comes to the daemon every time.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, FopenFlags, Generation, INodeNo, IoctlFlags, OpenFlags,
    ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyOpen,
    ReplyXattr, Request,
};

/// What the floor answers to OPEN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Open {
    None,
    KeepCache,
    DirectIo,
}

/// Entry and attribute TTL: the floor never changes.
const TTL: Duration = Duration::from_secs(3600);
const ROOT: u64 = 1;
const VALUE: u64 = 2;
const DIR: u64 = 3;
/// `dir/k<i>` is inode `FIRST_KEY + i`.
const FIRST_KEY: u64 = 10;
pub const KEYS: u64 = 10;

#[derive(Debug)]
struct Floor {
    bytes: Vec<u8>,
    open: Open,
    requests: Arc<AtomicU64>,
}

impl Floor {
    fn attr(&self, ino: u64) -> FileAttr {
        let dir = ino == ROOT || ino == DIR;
        FileAttr {
            ino: INodeNo(ino),
            size: if dir { 0 } else { self.bytes.len() as u64 },
            blocks: 1,
            atime: UNIX_EPOCH,
            mtime: UNIX_EPOCH,
            ctime: UNIX_EPOCH,
            crtime: UNIX_EPOCH,
            kind: if dir { FileType::Directory } else { FileType::RegularFile },
            perm: if dir { 0o555 } else { 0o444 },
            nlink: 1,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    fn count(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    fn child(parent: u64, name: &str) -> Option<u64> {
        match (parent, name) {
            (ROOT, "value") => Some(VALUE),
            (ROOT, "dir") => Some(DIR),
            (DIR, key) => {
                let i: u64 = key.strip_prefix('k')?.parse().ok()?;
                (i < KEYS).then_some(FIRST_KEY + i)
            }
            _ => None,
        }
    }

    fn children(dir: u64) -> Vec<(u64, FileType, String)> {
        let mut entries =
            vec![(dir, FileType::Directory, ".".into()), (ROOT, FileType::Directory, "..".into())];
        match dir {
            ROOT => {
                entries.push((VALUE, FileType::RegularFile, "value".into()));
                entries.push((DIR, FileType::Directory, "dir".into()));
            }
            _ => entries
                .extend((0..KEYS).map(|i| (FIRST_KEY + i, FileType::RegularFile, format!("k{i}")))),
        }
        entries
    }
}

impl fuser::Filesystem for Floor {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        self.count();
        match name.to_str().and_then(|name| Floor::child(parent.0, name)) {
            Some(ino) => reply.entry(&TTL, &self.attr(ino), Generation(0)),
            None => reply.error(Errno::from_i32(libc::ENOENT)),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        self.count();
        reply.attr(&TTL, &self.attr(ino.0));
    }

    fn open(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        self.count();
        let flags = match self.open {
            Open::None => return reply.error(Errno::ENOSYS),
            Open::KeepCache => FopenFlags::FOPEN_KEEP_CACHE,
            Open::DirectIo => FopenFlags::FOPEN_DIRECT_IO,
        };
        reply.opened(FileHandle(1), flags | FopenFlags::FOPEN_NOFLUSH);
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyData,
    ) {
        self.count();
        let start = (offset as usize).min(self.bytes.len());
        let end = (start + size as usize).min(self.bytes.len());
        reply.data(&self.bytes[start..end]);
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: fuser::LockOwner,
        reply: ReplyEmpty,
    ) {
        self.count();
        reply.error(Errno::ENOSYS);
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.count();
        reply.ok();
    }

    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        self.count();
        match self.open {
            Open::None => reply.error(Errno::ENOSYS),
            _ => reply.opened(FileHandle(0), FopenFlags::empty()),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        self.count();
        for (i, (child, kind, name)) in Floor::children(ino.0).into_iter().enumerate() {
            if (i as u64) < offset {
                continue;
            }
            if reply.add(INodeNo(child), i as u64 + 1, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.count();
        reply.ok();
    }

    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: ReplyXattr,
    ) {
        self.count();
        reply.error(Errno::ENOSYS);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, _size: u32, reply: ReplyXattr) {
        self.count();
        reply.error(Errno::ENOSYS);
    }

    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: ReplyIoctl,
    ) {
        self.count();
        reply.error(Errno::ENOSYS);
    }
}

/// A mounted floor; unmounted when dropped (the session first, then its directory).
pub struct FloorMount {
    _session: fuser::BackgroundSession,
    pub file: PathBuf,
    pub dir: PathBuf,
    requests: Arc<AtomicU64>,
    _dir: tempfile::TempDir,
}

impl FloorMount {
    pub fn mount(bytes: &[u8], open: Open) -> FloorMount {
        let dir = tempfile::tempdir().unwrap();
        let requests = Arc::new(AtomicU64::new(0));
        let fs = Floor { bytes: bytes.to_vec(), open, requests: requests.clone() };
        let mut config = fuser::Config::default();
        config.mount_options =
            vec![fuser::MountOption::RO, fuser::MountOption::FSName("floor".into())];
        let session = fuser::Session::new(fs, dir.path(), &config).unwrap().spawn().unwrap();
        let file = dir.path().join("value");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::metadata(&file).is_err() {
            assert!(Instant::now() < deadline, "the floor filesystem did not come up");
            std::thread::sleep(Duration::from_millis(10));
        }
        let listing = dir.path().join("dir");
        FloorMount { _session: session, file, dir: listing, requests, _dir: dir }
    }

    /// Requests the kernel sent so far, of every kind.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}
