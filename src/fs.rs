//! The filesystem core: lookup, getattr, readdir, open and read as plain async functions that
//! return our own types or an [`Error`]. `fuse.rs` adapts them to the kernel; unit tests drive
//! them directly against an in-memory MDS.
//!
//! Invariants:
//! - Nothing is fetched before it is looked up or listed, and nothing is served that did not
//!   come whole from the MDS.
//! - Each version of a file is its own inode (tree.rs): an inode's size and bytes never change,
//!   so `getattr` never fetches, the kernel may keep an inode's pages (`FOPEN_KEEP_CACHE`) and
//!   attributes as long as it likes, and `open` → change → `fstat` → read `st_size` bytes
//!   gives one whole version. A change reaches the next `open()` through the *name*: its entry
//!   TTL is what is left of our cached value's validity, so the kernel never holds a name
//!   longer than we hold its value, and the watcher invalidates names sooner (watch.rs).
//! - One `open()` sees one value: the handle holds the version's bytes (for `token`, the
//!   rendering made at open, of the version's length), and every read slices the same copy.
//!   An open whose token moved on since the lookup fails with ESTALE, which makes the kernel
//!   look the name up again and retry.
//! - Cache hits are answered without waiting (`*_now`), so the FUSE thread replies directly.
//! - `.metadatafs/status` and `metrics` are rendered at every open and never fetched: they are
//!   opened direct-I/O with a zero TTL, never page-cached across opens (see `status`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use crate::cache::Cache;
use crate::clock::SharedClock;
use crate::content::{child_kind, Cached, Child, Content, Listings};
use crate::error::{Error, Result};
use crate::mds::Mds;
use crate::perms::Permissions;
use crate::query::{self, Target, Waits};
use crate::stats::Watcher;
use crate::status::{self, StatusFile};
use crate::token::Tokens;
use crate::tree::{self, Inodes, Kind, Node, Version};
use crate::write::Writes;

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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub ino: u64,
    pub kind: FileType,
    pub name: String,
}

/// How the kernel should treat an open file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caching {
    /// Keep the inode's pages: its bytes never change.
    KeepCache,
    /// Every read comes to us: the handle's bytes differ from open to open (`token`).
    Direct,
}

pub(crate) enum Handle {
    File(Bytes),
    Dir(DirHandle),
    /// A file open for writing: its bytes go through when it is closed (write.rs).
    Write(Box<crate::write::Pending>),
}

/// An open directory: the listing it was opened on, shared with the cache.
#[derive(Clone)]
pub(crate) struct DirHandle {
    ino: u64,
    parent: u64,
    path: String,
    children: Arc<Vec<Child>>,
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Handle::File(bytes) => write!(f, "File({} bytes)", bytes.len()),
            Handle::Dir(dir) => write!(f, "Dir({} entries)", dir.children.len()),
            Handle::Write(pending) => write!(f, "Write({pending:?})"),
        }
    }
}

#[derive(Debug)]
pub struct Core<M> {
    pub(crate) mds: Arc<M>,
    pub(crate) config: FsConfig,
    pub(crate) clock: SharedClock,
    pub(crate) cache: Cache<Cached>,
    pub(crate) tokens: Arc<Tokens<M>>,
    pub(crate) inodes: Mutex<Inodes>,
    pub(crate) handles: Mutex<HashMap<u64, Handle>>,
    next_handle: AtomicU64,
    pub(crate) writes: Writes,
    pub(crate) waits: Waits,
    pub(crate) mounted_at: SystemTime,
    /// Set once anything was fetched: the watcher starts then (watch.rs).
    pub(crate) read_anything: AtomicBool,
    pub(crate) first_read: tokio::sync::Notify,
    /// How many times the watcher dropped changes; held (read) while replying to a lookup.
    pub(crate) changes: RwLock<u64>,
    /// Directories being listed now, for the prefetch of `ls -l` (content.rs).
    pub(crate) listings: Mutex<Listings>,
    /// What the status files know of the mount itself, the watcher's state among it.
    board: status::Board,
}

impl<M: Mds> Core<M> {
    pub fn new(mds: Arc<M>, config: FsConfig, clock: SharedClock) -> Self {
        let tokens = Arc::new(Tokens::new(mds.clone(), clock.clone(), config.refresh_margin));
        Core {
            board: status::Board::new(&*clock),
            cache: Cache::new(config.max_entries, clock.clone()),
            tokens,
            mds,
            config,
            clock,
            inodes: Mutex::new(Inodes::default()),
            handles: Mutex::new(HashMap::new()),
            next_handle: AtomicU64::new(1),
            writes: Writes::default(),
            waits: Waits::default(),
            mounted_at: SystemTime::now(),
            read_anything: AtomicBool::new(false),
            first_read: tokio::sync::Notify::new(),
            listings: Mutex::default(),
            changes: RwLock::new(0),
        }
    }

    /// The handle the change watcher reports its state through, for `.metadatafs/status`.
    pub fn watcher(&self) -> &Watcher {
        &self.board.watcher
    }

    /// `.metadatafs/status` or `metrics` as of now.
    pub(crate) fn render_status(&self, file: StatusFile) -> Bytes {
        let sources = status::Sources {
            board: &self.board,
            clock: &*self.clock,
            max_entries: self.config.max_entries,
            cache: &self.cache.stats,
            tokens: self.tokens.status(),
            token_stats: &self.tokens.stats,
            mds: self.mds.stats(),
            transport: self.mds.transport_kind().map(|k| k.name()),
        };
        Bytes::from(status::render(file, &sources))
    }

    pub fn tokens(&self) -> &Arc<Tokens<M>> {
        &self.tokens
    }

    /// The entry for `name` if everything it needs is cached: `None` means [`Core::lookup`]
    /// has to fetch.
    pub fn lookup_now(&self, parent: u64, name: &std::ffi::OsStr) -> Option<Result<Entry>> {
        // Query names are looked up by the async path (query.rs); a bad one fails here.
        match name.to_str().map(query::parse) {
            Some(Err(e)) => return Some(Err(e)),
            Some(Ok(Some(_))) => return None,
            _ => {}
        }
        let (dir, name) = match self.lookup_target(parent, name) {
            Ok(target) => target,
            Err(e) => return Some(Err(e)),
        };
        if dir.is_empty() && name == status::DIR {
            // Without the root listing: the status matters most when the MDS cannot give one.
            let node = Node { path: name.into(), kind: Kind::Dir };
            return Some(Ok(self.enter(node, None, self.config.ttl)));
        }
        let (children, listing_validity) = match self.listing_now(&dir)? {
            Ok(listing) => listing,
            Err(e) => return Some(Err(e)),
        };
        let node = match find(&dir, &children, name) {
            Ok(node) => node,
            Err(e) => return Some(Err(e)),
        };
        let content = match node.kind {
            Kind::Dir | Kind::Symlink(_) => None,
            _ => match self.content_now(&node)? {
                Ok(content) => Some(content),
                Err(e) => return Some(Err(e)),
            },
        };
        Some(Ok(self.enter(node, content, listing_validity)))
    }

    pub async fn lookup(&self, parent: u64, name: &std::ffi::OsStr) -> Result<Entry> {
        if let Some(answer) = self.lookup_now(parent, name) {
            return answer;
        }
        if let Some(query) = name.to_str().map(query::parse).transpose()?.flatten() {
            return self.lookup_query(parent, name.to_str().unwrap_or_default(), query).await;
        }
        let (dir, name) = self.lookup_target(parent, name)?;
        let (children, listing_validity) = self.listing(&dir).await?;
        let node = find(&dir, &children, name)?;
        let content = match node.kind {
            Kind::Dir | Kind::Symlink(_) => None,
            _ => Some(self.content(&node).await?),
        };
        Ok(self.enter(node, content, listing_validity))
    }

    fn lookup_target<'n>(
        &self,
        parent: u64,
        name: &'n std::ffi::OsStr,
    ) -> Result<(String, &'n str)> {
        let name = tree::check_name(name)?;
        let (dir, _) = self.inodes.lock().unwrap().get(parent)?;
        if dir.kind != Kind::Dir {
            return Err(Error::NotFound);
        }
        Ok((dir.path, name))
    }

    /// Hand the kernel one more reference to `node` at its current version. The name lives as
    /// long as both the listing that shows it and the version it points to stay current.
    pub(crate) fn enter(
        &self,
        node: Node,
        content: Option<Content>,
        listing_validity: Duration,
    ) -> Entry {
        let (version, entry_ttl) = match content {
            Some(c) => (Some(Arc::new(c.version)), listing_validity.min(c.validity)),
            None => (None, listing_validity),
        };
        let ino = self.inodes.lock().unwrap().lookup(node.clone(), version.clone());
        let (attr, ttl) = self.attr(ino, &node, version.as_deref());
        Entry { attr, ttl, entry_ttl }
    }

    /// Never fetches: an inode's attributes are fixed when it is looked up.
    pub fn getattr(&self, ino: u64) -> Result<Entry> {
        let (node, version) = self.inodes.lock().unwrap().get(ino)?;
        let (attr, ttl) = self.attr(ino, &node, version.as_deref());
        Ok(Entry { attr, ttl, entry_ttl: ttl })
    }

    /// Whether `path` is a directory the MDS lists (to check options against the real tree).
    pub async fn is_dir(&self, path: &str) -> Result<bool> {
        let mut dir = String::new();
        for name in path.split('/') {
            let found =
                self.listing(&dir).await.and_then(|(children, _)| find(&dir, &children, name));
            match found {
                Ok(node) if node.kind == Kind::Dir => dir = node.path,
                Ok(_) | Err(Error::NotFound) => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    pub fn readlink(&self, ino: u64) -> Result<Vec<u8>> {
        match self.node(ino)?.kind {
            Kind::Symlink(target) => Ok(target.into_bytes()),
            _ => Err(Error::InvalidName("not a symlink".into())),
        }
    }

    pub fn forget(&self, ino: u64, count: u64) {
        self.inodes.lock().unwrap().forget(ino, count);
    }

    /// Pin the directory's cached listing in a handle, so one `ls` sees one listing. The
    /// handle shares the cache's `Arc`, never a copy: a thousand open handles of a 20,000-key
    /// directory cost a thousand pointers, so memory stays bounded by the cache settings
    /// whatever local users hold open.
    pub async fn opendir(&self, ino: u64) -> Result<u64> {
        let node = self.node(ino)?;
        if node.kind != Kind::Dir {
            return Err(Error::NotFound);
        }
        let (children, _) = self.listing(&node.path).await?;
        let parent = self.parent_ino(&node.path);
        let handle = Handle::Dir(DirHandle { ino, parent, path: node.path, children });
        let fh = self.add_handle(handle);
        self.listings.lock().unwrap().opened(fh, ino);
        Ok(fh)
    }

    /// Hand entries from `offset` on to `add`, each with the offset of the one after it, until
    /// `add` says the kernel's buffer is full. Entries are made as they are handed out.
    pub fn readdir(
        &self,
        fh: u64,
        offset: u64,
        mut add: impl FnMut(u64, &DirEntry) -> bool,
    ) -> Result<()> {
        let dir = match self.handles.lock().unwrap().get(&fh) {
            Some(Handle::Dir(dir)) => dir.clone(),
            _ => return Err(Error::Stale),
        };
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let dots = [(dir.ino, "."), (dir.parent, "..")];
        for (i, (ino, name)) in dots.into_iter().enumerate().skip(start) {
            let entry = DirEntry { ino, kind: FileType::Directory, name: name.into() };
            if add(i as u64 + 1, &entry) {
                return Ok(());
            }
        }
        let inodes = self.inodes.lock().unwrap();
        let children = dir.children.iter().enumerate().skip(start.saturating_sub(dots.len()));
        for (i, child) in children {
            let path = tree::child_path(&dir.path, &child.name);
            let kind = match child_kind(&dir.path, child) {
                Kind::Dir => FileType::Directory,
                Kind::Symlink(_) => FileType::Symlink,
                _ => FileType::RegularFile,
            };
            // The number a lookup will give this path, without creating the inode now.
            let ino = inodes.ino_of(&path).unwrap_or_else(|| tree::stable_ino(&path));
            let entry = DirEntry { ino, kind, name: child.name.clone() };
            if add((i + dots.len()) as u64 + 1, &entry) {
                break;
            }
        }
        Ok(())
    }

    /// Open `ino` if that needs no fetch: `None` means [`Core::open`] has to wait.
    pub fn open_now(&self, ino: u64, write: bool) -> Option<Result<(u64, Caching)>> {
        let (node, version) = match self.open_target(ino, write) {
            Ok(target) => target,
            Err(e) => return Some(Err(e)),
        };
        if node.kind == Kind::Value && version.readable {
            let handle = Handle::File(version.bytes.clone());
            return Some(Ok((self.add_handle(handle), Caching::KeepCache)));
        }
        if let Kind::Status(file) = node.kind {
            // Counters move between lookup and open: whatever length it has now, direct-I/O.
            let handle = Handle::File(self.render_status(file));
            return Some(Ok((self.add_handle(handle), Caching::Direct)));
        }
        if !version.readable {
            return None;
        }
        let content = match self.content_now(&node)? {
            Ok(content) => content,
            Err(e) => return Some(Err(e)),
        };
        Some(self.open_version(&node, &version, content))
    }

    pub async fn open(&self, ino: u64, write: bool) -> Result<(u64, Caching)> {
        if let Some(answer) = self.open_now(ino, write) {
            return answer;
        }
        let (node, version) = self.open_target(ino, write)?;
        if let Kind::Query(target) = &node.kind {
            if let Target::Wait { .. } = **target {
                let bytes = self.wait_content(target).await?;
                return Ok((self.add_handle(Handle::File(bytes)), Caching::Direct));
            }
        }
        let content = self.content(&node).await?;
        if !content.version.readable {
            // Say why the MDS will not answer this key without parameters.
            return Err(Error::BadRequest { path: node.path });
        }
        self.open_version(&node, &version, content)
    }

    fn open_target(&self, ino: u64, write: bool) -> Result<(Node, Arc<Version>)> {
        let (node, version) = self.inodes.lock().unwrap().get(ino)?;
        if write {
            return Err(Error::ReadOnly);
        }
        let version = version.ok_or_else(|| Error::InvalidName("not a file".into()))?;
        Ok((node, version))
    }

    /// Open `version` of `node`, whose current content is `content`. Token files render at
    /// every open; if the token moved on since the lookup, the size the kernel holds is no
    /// longer what a read would give: ESTALE, and the kernel looks the name up again.
    fn open_version(
        &self,
        node: &Node,
        version: &Version,
        content: Content,
    ) -> Result<(u64, Caching)> {
        if !version.same(&content.version) {
            return Err(Error::Stale);
        }
        let (bytes, caching) = match content.version.rendered {
            true => (content.version.bytes, Caching::Direct),
            false => (version.bytes.clone(), Caching::KeepCache),
        };
        let _ = node;
        Ok((self.add_handle(Handle::File(bytes)), caching))
    }

    pub fn read(&self, fh: u64, offset: u64, size: u32) -> Result<Bytes> {
        let handles = self.handles.lock().unwrap();
        let bytes = match handles.get(&fh) {
            Some(Handle::File(bytes)) => bytes.clone(),
            Some(Handle::Write(pending)) => Bytes::copy_from_slice(pending.bytes()),
            _ => return Err(Error::Stale),
        };
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(bytes.len());
        let end = start.saturating_add(size as usize).min(bytes.len());
        Ok(bytes.slice(start..end))
    }

    pub fn release(&self, fh: u64) {
        self.handles.lock().unwrap().remove(&fh);
        self.listings.lock().unwrap().closed(fh);
    }

    pub(crate) fn node(&self, ino: u64) -> Result<Node> {
        Ok(self.inodes.lock().unwrap().get(ino)?.0)
    }

    fn parent_ino(&self, path: &str) -> u64 {
        let parent = path.rsplit_once('/').map_or("", |(parent, _)| parent);
        let held = self.inodes.lock().unwrap().ino_of(parent);
        held.unwrap_or_else(|| tree::stable_ino(parent))
    }

    pub(crate) fn add_handle(&self, handle: Handle) -> u64 {
        let fh = self.next_handle.fetch_add(1, Ordering::Relaxed);
        self.handles.lock().unwrap().insert(fh, handle);
        fh
    }

    /// A file's attributes are its version's; a directory's and a symlink's never change
    /// (whether they still exist is the parent listing's business, which caps the entry TTL).
    pub(crate) fn attr(
        &self,
        ino: u64,
        node: &Node,
        version: Option<&Version>,
    ) -> (Attr, Duration) {
        let (perm, gid) = self.config.permissions.mode(&node.path, &node.kind);
        let (kind, size, mtime, ttl) = match (&node.kind, version) {
            (Kind::Dir, _) => (FileType::Directory, 0, self.mounted_at, self.config.ttl),
            (Kind::Symlink(target), _) => {
                (FileType::Symlink, target.len() as u64, self.mounted_at, self.config.ttl)
            }
            (Kind::Status(_), Some(v)) => (FileType::RegularFile, v.size(), v.seen, Duration::ZERO),
            (_, Some(v)) => (FileType::RegularFile, v.size(), v.seen, IMMUTABLE_TTL),
            (_, None) => (FileType::RegularFile, 0, self.mounted_at, Duration::ZERO),
        };
        let attr = Attr { ino, kind, size, perm, uid: self.config.permissions.uid, gid, mtime };
        (attr, ttl)
    }
}

/// What `name` in directory `dir`, whose listing is `children`, is.
pub(crate) fn find(dir: &str, children: &[Child], name: &str) -> Result<Node> {
    // Listings are kept sorted: a lookup in a directory of thousands costs a search, not a scan.
    let index = children.binary_search_by(|c| c.name.as_str().cmp(name)).map_err(|_| {
        match query::needs_parameters(dir, name) {
            true => Error::InvalidName(format!("{name} needs parameters: {name}?audience=…")),
            false => Error::NotFound,
        }
    })?;
    Ok(Node { path: tree::child_path(dir, name), kind: child_kind(dir, &children[index]) })
}

#[cfg(test)]
#[path = "fs_tests.rs"]
mod tests;
