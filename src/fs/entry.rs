//! What the core answers the adapter with: attributes, entries and how long the kernel may
//! keep them, directory entries, and how an open file is to be cached. Plain data, so the
//! core runs in a unit test without a kernel.

use std::time::{Duration, SystemTime};

use crate::fs::node::{Kind, Node, Version};
use crate::fs::perms::Permissions;

/// How long the kernel may keep a file inode's attributes: they never change (tree.rs).
const IMMUTABLE_TTL: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Clone)]
pub struct FsConfig {
    pub ttl: Duration,
    /// How long a 404 is remembered.
    pub negative_ttl: Duration,
    pub refresh_margin: Duration,
    pub max_entries: usize,
    pub permissions: Permissions,
    /// `scoped_tokens`: query names with `scopes=` and writes to `<account>/scopes`.
    pub scoped_tokens: bool,
    /// `token_scopes`, canonical: the scopes of every account's `token` until one is written.
    pub token_scopes: Option<Vec<String>>,
    /// `guest_attributes`: writes under `instance/guest-attributes/`.
    pub guest_attributes: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileType {
    Directory,
    RegularFile,
    Symlink,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub kind: FileType,
    pub size: u64,
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    /// mtime and ctime: when this mount first saw the bytes (the mount time for directories).
    pub mtime: SystemTime,
}

/// An attribute and how long the kernel may keep it (`ttl`), and from a lookup, how long it
/// may keep the name → inode mapping (`entry_ttl`, what is left of the parent's listing). They
/// differ for token files: the name is as stable as its directory, the size is not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub attr: Attr,
    pub ttl: Duration,
    pub entry_ttl: Duration,
}

/// What the kernel holds that a change makes stale: names (parent inode, name), whose next
/// lookup gets the new version, and directories whose cached listing (`readdir`) must go.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Forget {
    pub names: Vec<(u64, String)>,
    pub dirs: Vec<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub ino: u64,
    pub kind: FileType,
    pub name: String,
}

/// A file's attributes are its version's; a directory's and a symlink's never change
/// (whether they still exist is the parent listing's business, which caps the entry TTL).
/// `times` is, for a directory, when its listing was first seen as it is and how long that
/// listing stays valid (the mount time and no time at all if it is not cached): the kernel
/// keeps a directory's attributes no longer than its listing, and a changed listing is a new
/// mtime, which is what makes it drop a cached `readdir`. For the rest, the mount time and `ttl`.
pub(crate) fn attr(
    config: &FsConfig,
    times: (SystemTime, Duration),
    ino: u64,
    node: &Node,
    version: Option<&Version>,
) -> (Attr, Duration) {
    let (perm, gid) = config.permissions.mode(&node.path, &node.kind);
    let (kind, size, mtime, ttl) = match (&node.kind, version) {
        (Kind::Dir, _) => (FileType::Directory, 0, times.0, times.1),
        (Kind::Symlink(target), _) => (FileType::Symlink, target.len() as u64, times.0, times.1),
        (_, Some(v)) => (FileType::RegularFile, v.size(), v.seen, IMMUTABLE_TTL),
        (_, None) => (FileType::RegularFile, 0, times.0, Duration::ZERO),
    };
    let attr = Attr { ino, kind, size, perm, uid: config.permissions.uid, gid, mtime };
    (attr, ttl)
}
