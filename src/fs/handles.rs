//! Open files and directories. A file handle holds the bytes of the version it was opened on
//! (for `token`, the rendering made at open), so every read through it slices one copy and no
//! read mixes two versions. A directory handle holds the listing it was opened on, sharing the
//! cache's `Arc`, never a copy: a thousand open handles of a 20,000-key directory cost a
//! thousand pointers, so memory stays bounded by the cache settings whatever local users hold.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::fs::entry::{DirEntry, FileType};
use crate::fs::listing::child_kind;
use crate::fs::node::{Child, Kind};
use crate::fs::tree::{stable_ino, Inodes};
use crate::paths;

/// `Debug` shows sizes, never bytes: values may be secrets.
pub(crate) enum Handle {
    File(Bytes),
    Dir(DirHandle),
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Handle::File(bytes) => write!(f, "File({} bytes)", bytes.len()),
            Handle::Dir(dir) => write!(f, "Dir({} entries)", dir.children.len()),
        }
    }
}

/// An open directory: the listing it was opened on.
/// `Debug` shows the path and how many entries, not the names.
#[derive(Clone)]
pub(crate) struct DirHandle {
    pub(crate) ino: u64,
    pub(crate) parent: u64,
    pub(crate) path: String,
    pub(crate) children: Arc<Vec<Child>>,
}

impl std::fmt::Debug for DirHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DirHandle({:?}, {} entries)", self.path, self.children.len())
    }
}

#[derive(Debug)]
pub(crate) struct Handles {
    open: Mutex<HashMap<u64, Handle>>,
    next: AtomicU64,
}

impl Default for Handles {
    fn default() -> Self {
        Handles { open: Mutex::default(), next: AtomicU64::new(1) }
    }
}

impl Handles {
    /// A handle number nobody holds (also for the write-through's handles).
    pub(crate) fn next_fh(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn add_file(&self, bytes: Bytes) -> u64 {
        let fh = self.next_fh();
        self.open.lock().unwrap().insert(fh, Handle::File(bytes));
        fh
    }

    pub(crate) fn add_dir(&self, dir: DirHandle) -> u64 {
        let fh = self.next_fh();
        self.open.lock().unwrap().insert(fh, Handle::Dir(dir));
        fh
    }

    /// `size` bytes from `offset` of file handle `fh`; `None` if it is not one.
    pub(crate) fn read(&self, fh: u64, offset: u64, size: u32) -> Option<Bytes> {
        match self.open.lock().unwrap().get(&fh) {
            Some(Handle::File(bytes)) => Some(slice(bytes, offset, size)),
            _ => None,
        }
    }

    pub(crate) fn dir(&self, fh: u64) -> Option<DirHandle> {
        match self.open.lock().unwrap().get(&fh) {
            Some(Handle::Dir(dir)) => Some(dir.clone()),
            _ => None,
        }
    }

    pub(crate) fn remove(&self, fh: u64) {
        self.open.lock().unwrap().remove(&fh);
    }
}

/// `size` bytes of `bytes` from `offset` (fewer at the end, none past it).
pub(crate) fn slice(bytes: &Bytes, offset: u64, size: u32) -> Bytes {
    let start = usize::try_from(offset).unwrap_or(usize::MAX).min(bytes.len());
    bytes.slice(start..start.saturating_add(size as usize).min(bytes.len()))
}

/// Hand entries of `dir` from `offset` on to `add`, each with the offset of the one after it,
/// until `add` says the kernel's buffer is full. Entries are made as they are handed out,
/// with the inode number a lookup will give each path, without creating the inode now.
pub(crate) fn readdir(
    dir: &DirHandle,
    inodes: &Inodes,
    offset: u64,
    mut add: impl FnMut(u64, &DirEntry) -> bool,
) {
    let start = usize::try_from(offset).unwrap_or(usize::MAX);
    let dots = [(dir.ino, "."), (dir.parent, "..")];
    for (i, (ino, name)) in dots.into_iter().enumerate().skip(start) {
        let entry = DirEntry { ino, kind: FileType::Directory, name: name.into() };
        if add(i as u64 + 1, &entry) {
            return;
        }
    }
    let children = dir.children.iter().enumerate().skip(start.saturating_sub(dots.len()));
    for (i, child) in children {
        let path = paths::child_path(&dir.path, &child.name);
        let kind = match child_kind(&dir.path, child) {
            Kind::Dir => FileType::Directory,
            Kind::Symlink(_) => FileType::Symlink,
            _ => FileType::RegularFile,
        };
        let ino = inodes.ino_of(&path).unwrap_or_else(|| stable_ino(&path));
        let entry = DirEntry { ino, kind, name: child.name.clone() };
        if add((i + dots.len()) as u64 + 1, &entry) {
            break;
        }
    }
}
