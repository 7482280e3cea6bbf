//! The filesystem core: lookup, getattr, readdir, open and read as plain async functions that
//! return our own types or an [`Error`]. `fuse.rs` adapts them to the kernel; unit tests drive
//! them directly against an in-memory MDS.
//!
//! Invariants:
//! - Nothing is fetched before it is looked up or listed, and nothing is served that did not
//!   come whole from the MDS.
//! - One `open()` sees one value: the bytes are copied into the file handle at open time, and
//!   every read through that handle slices the same copy.
//! - The TTL handed to the kernel is what is left of our own cached value's validity, so the
//!   kernel never caches longer than we do. Token files get zero: their size moves with
//!   `expires_in`.
//! - `stat` reports the exact size of what `open` + `read` will return.
//! - `.metadatafs/status` and `metrics` are rendered per open and never fetched: they must stay
//!   direct-I/O, never page-cached across opens (see `status`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use log::warn;

use crate::cache::{Cache, Weight};
use crate::clock::SharedClock;
use crate::error::{Error, Result};
use crate::mds::Mds;
use crate::perms::Permissions;
use crate::stats::Watcher;
use crate::status::{self, StatusFile};
use crate::token::Tokens;
use crate::tree::{self, Inodes, Kind, Node};

/// The root symlink to the most used directory.
const SERVICE_ACCOUNTS_LINK: (&str, &str) = ("service-accounts", "instance/service-accounts");
/// The bare-token file we add to every service-account directory.
const ACCESS_TOKEN: &str = "access_token";

#[derive(Debug, Clone)]
pub struct FsConfig {
    pub ttl: Duration,
    /// How long a 404 is remembered.
    pub negative_ttl: Duration,
    pub refresh_margin: Duration,
    pub max_entries: usize,
    pub permissions: Permissions,
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

#[derive(Debug, Clone, PartialEq, Eq)]
struct Child {
    name: String,
    dir: bool,
}

/// What the value cache holds for a path. `Debug` shows sizes, never bytes: values may be
/// secrets.
#[derive(Clone)]
enum Cached {
    Listing(Arc<Vec<Child>>),
    Value(Bytes),
    Missing,
    /// A permanent failure (EFBIG, no `Metadata-Flavor`, 400, 403, …), remembered like a 404 so
    /// that no local user can turn syscalls into requests against the MDS's rate limit.
    Failed(Error),
}

impl Weight for Cached {
    fn weight(&self) -> usize {
        match self {
            Cached::Listing(children) => children.iter().map(|c| c.name.len() + 1).sum(),
            Cached::Value(bytes) => bytes.len(),
            Cached::Missing | Cached::Failed(_) => 0,
        }
    }
}

enum Handle {
    File(Bytes),
    Dir(DirHandle),
}

/// An open directory: the listing it was opened on, shared with the cache.
#[derive(Clone)]
struct DirHandle {
    ino: u64,
    parent: u64,
    path: String,
    children: Arc<Vec<Child>>,
}

impl std::fmt::Debug for Cached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cached::Listing(children) => write!(f, "Listing({} entries)", children.len()),
            Cached::Value(bytes) => write!(f, "Value({} bytes)", bytes.len()),
            Cached::Missing => write!(f, "Missing"),
            Cached::Failed(err) => write!(f, "Failed({err})"),
        }
    }
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Handle::File(bytes) => write!(f, "File({} bytes)", bytes.len()),
            Handle::Dir(dir) => write!(f, "Dir({} entries)", dir.children.len()),
        }
    }
}

#[derive(Debug)]
pub struct Core<M> {
    mds: Arc<M>,
    config: FsConfig,
    clock: SharedClock,
    cache: Cache<Cached>,
    tokens: Arc<Tokens<M>>,
    inodes: Mutex<Inodes>,
    handles: Mutex<HashMap<u64, Handle>>,
    next_handle: AtomicU64,
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
        }
    }

    pub fn tokens(&self) -> &Arc<Tokens<M>> {
        &self.tokens
    }

    /// The handle a watcher reports its state through, for `.metadatafs/status`.
    pub fn watcher(&self) -> &Watcher {
        &self.board.watcher
    }

    pub async fn lookup(&self, parent: u64, name: &std::ffi::OsStr) -> Result<Entry> {
        let name = tree::check_name(name)?;
        let dir = self.node(parent)?;
        if dir.kind != Kind::Dir {
            return Err(Error::NotFound);
        }
        let (node, listing_validity) = self.resolve(&dir.path, name).await?;
        let mut entry = self.describe(0, &node).await?;
        entry.entry_ttl = listing_validity;
        entry.attr.ino = self.inodes.lock().unwrap().lookup(node);
        Ok(entry)
    }

    /// With `fh`, the size is that open file's: `fstat` then agrees with what its reads
    /// return (Node's `readFileSync` reads exactly `st_size` bytes), even if the value moved.
    pub async fn getattr(&self, ino: u64, fh: Option<u64>) -> Result<Entry> {
        let node = self.node(ino)?;
        let open_size = fh.and_then(|fh| match self.handles.lock().unwrap().get(&fh) {
            Some(Handle::File(bytes)) => Some(bytes.len() as u64),
            _ => None,
        });
        match open_size {
            Some(size) => {
                let attr = self.attr(ino, &node, FileType::RegularFile, size);
                Ok(Entry { attr, ttl: Duration::ZERO, entry_ttl: Duration::ZERO })
            }
            None => self.describe(ino, &node).await,
        }
    }

    /// Whether `path` is a directory the MDS lists (to check options against the real tree).
    pub async fn is_dir(&self, path: &str) -> Result<bool> {
        let mut dir = String::new();
        for name in path.split('/') {
            match self.resolve(&dir, name).await {
                Ok((node, _)) if node.kind == Kind::Dir => dir = node.path,
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
        Ok(self.add_handle(Handle::Dir(DirHandle { ino, parent, path: node.path, children })))
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

    pub async fn open(&self, ino: u64, write: bool) -> Result<u64> {
        let node = self.node(ino)?;
        if write {
            return Err(Error::ReadOnly);
        }
        let bytes = self.content(&node).await?.0;
        Ok(self.add_handle(Handle::File(bytes)))
    }

    pub fn read(&self, fh: u64, offset: u64, size: u32) -> Result<Bytes> {
        let handles = self.handles.lock().unwrap();
        let Some(Handle::File(bytes)) = handles.get(&fh) else {
            return Err(Error::Stale);
        };
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(bytes.len());
        let end = start.saturating_add(size as usize).min(bytes.len());
        Ok(bytes.slice(start..end))
    }

    pub fn release(&self, fh: u64) {
        self.handles.lock().unwrap().remove(&fh);
    }

    fn node(&self, ino: u64) -> Result<Node> {
        self.inodes.lock().unwrap().get(ino)
    }

    fn parent_ino(&self, path: &str) -> u64 {
        let parent = path.rsplit_once('/').map_or("", |(parent, _)| parent);
        let held = self.inodes.lock().unwrap().ino_of(parent);
        held.unwrap_or_else(|| tree::stable_ino(parent))
    }

    fn add_handle(&self, handle: Handle) -> u64 {
        let fh = self.next_handle.fetch_add(1, Ordering::Relaxed);
        self.handles.lock().unwrap().insert(fh, handle);
        fh
    }

    /// What `name` in directory `dir` is, and how long the listing that says so stays valid.
    async fn resolve(&self, dir: &str, name: &str) -> Result<(Node, Duration)> {
        if dir.is_empty() && name == status::DIR {
            // Without the root listing: the status matters most when the MDS cannot give one.
            return Ok((Node { path: name.into(), kind: Kind::Dir }, self.config.ttl));
        }
        let path = tree::child_path(dir, name);
        let (children, validity) = self.listing(dir).await?;
        // Listings are kept sorted: a lookup in a directory of thousands costs a search, not a scan.
        let index = children
            .binary_search_by(|c| c.name.as_str().cmp(name))
            .map_err(|_| Error::NotFound)?;
        Ok((Node { path, kind: child_kind(dir, &children[index]) }, validity))
    }

    async fn describe(&self, ino: u64, node: &Node) -> Result<Entry> {
        let (kind, size, ttl) = match &node.kind {
            // A directory's own attributes never change; whether it still exists is the
            // parent listing's business, which caps the entry TTL in `lookup`.
            Kind::Dir => (FileType::Directory, 0, self.config.ttl),
            Kind::Symlink(target) => (FileType::Symlink, target.len() as u64, self.config.ttl),
            _ => match self.content(node).await {
                Ok((bytes, ttl)) => (FileType::RegularFile, bytes.len() as u64, ttl),
                // A listed key the MDS answers only with parameters (`identity` wants an
                // audience): it exists, so `ls -l` shows it; opening it says why it can't.
                Err(Error::BadRequest { .. }) => (FileType::RegularFile, 0, Duration::ZERO),
                Err(e) => return Err(e),
            },
        };
        Ok(Entry { attr: self.attr(ino, node, kind, size), ttl, entry_ttl: ttl })
    }

    fn attr(&self, ino: u64, node: &Node, kind: FileType, size: u64) -> Attr {
        let (perm, gid) = self.config.permissions.mode(&node.path, &node.kind);
        Attr { ino, kind, size, perm, uid: self.config.permissions.uid, gid }
    }

    /// A file's bytes and how long they stay valid.
    async fn content(&self, node: &Node) -> Result<(Bytes, Duration)> {
        match &node.kind {
            Kind::Value => {
                let fetch = || self.fetcher().value(node.path.clone());
                let entry = self.cache.get(&node.path, fetch).await?;
                let validity = entry.expiry.remaining(&*self.clock);
                match entry.value {
                    Cached::Value(bytes) => Ok((bytes, validity)),
                    Cached::Failed(err) => Err(err),
                    _ => Err(Error::NotFound),
                }
            }
            Kind::Token => {
                let token = self.tokens.get(&node.path).await?;
                Ok((Bytes::from(token.render_json(&self.clock)), Duration::ZERO))
            }
            Kind::AccessToken => {
                let account_dir = node.path.rsplit_once('/').map_or("", |(dir, _)| dir);
                let token = self.tokens.get(&format!("{account_dir}/token")).await?;
                Ok((Bytes::copy_from_slice(token.access_token().as_bytes()), Duration::ZERO))
            }
            Kind::Status(file) => Ok((self.render_status(*file), Duration::ZERO)),
            Kind::Dir | Kind::Symlink(_) => Err(Error::InvalidName("not a file".into())),
        }
    }

    fn render_status(&self, file: StatusFile) -> Bytes {
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

    async fn listing(&self, dir: &str) -> Result<(Arc<Vec<Child>>, Duration)> {
        if dir == status::DIR {
            let files = StatusFile::ALL.map(|f| Child { name: f.name().into(), dir: false });
            return Ok((Arc::new(files.to_vec()), self.config.ttl));
        }
        let key = format!("{dir}/");
        let key = if dir.is_empty() { String::new() } else { key };
        let fetch = || {
            let previous = match self.cache.peek(&key) {
                Some(Cached::Listing(children)) => Some(children),
                _ => None,
            };
            self.fetcher().listing(key.clone(), previous)
        };
        let entry = self.cache.get(&key, fetch).await?;
        match entry.value {
            Cached::Listing(children) => Ok((children, entry.expiry.remaining(&*self.clock))),
            Cached::Failed(err) => Err(err),
            _ => Err(Error::NotFound),
        }
    }

    fn fetcher(&self) -> Fetcher<M> {
        let (ttl, negative_ttl) = (self.config.ttl, self.config.negative_ttl);
        Fetcher { mds: self.mds.clone(), ttl, negative_ttl }
    }
}

/// Fetches a value or listing for the cache, owning what it needs, so the cache can also run
/// it in the background (stale-while-revalidate).
#[derive(Debug)]
struct Fetcher<M> {
    mds: Arc<M>,
    ttl: Duration,
    negative_ttl: Duration,
}

impl<M: Mds> Fetcher<M> {
    async fn value(self, path: String) -> Result<(Cached, Duration)> {
        match self.mds.get(&path).await {
            Ok(bytes) => Ok((Cached::Value(bytes), self.ttl)),
            Err(e) => self.negative(e),
        }
    }

    /// A 404 or another permanent failure, cached for `negative_ttl`; a transient one is
    /// left to the cache's stale-if-error.
    fn negative(&self, err: Error) -> Result<(Cached, Duration)> {
        match err {
            Error::NotFound => Ok((Cached::Missing, self.negative_ttl)),
            e if e.is_transient() => Err(e),
            e => Ok((Cached::Failed(e), self.negative_ttl)),
        }
    }

    /// The listing at `key`. An unchanged listing keeps its `previous` `Arc`, so directory
    /// handles opened across refreshes (or on every fetch with `ttl=0`) still share one copy.
    async fn listing(
        self,
        key: String,
        previous: Option<Arc<Vec<Child>>>,
    ) -> Result<(Cached, Duration)> {
        let body = match self.mds.get(&key).await {
            Ok(body) => body,
            Err(e) => return self.negative(e),
        };
        let Ok(text) = std::str::from_utf8(&body) else {
            let reason = "directory listing is not UTF-8".into();
            return self.negative(Error::Misconfigured { path: key, reason });
        };
        let mut children = Vec::new();
        for line in text.lines() {
            let (name, dir) = match line.strip_suffix('/') {
                Some(name) => (name, true),
                None => (line, false),
            };
            if tree::listable(name) {
                children.push(Child { name: name.into(), dir });
            } else {
                warn!("{key}: skipping {name:?}, a name no request can reach");
            }
        }
        add_extras(key.trim_end_matches('/'), &mut children);
        children.sort_by(|a, b| a.name.cmp(&b.name));
        children.dedup_by(|a, b| a.name == b.name);
        let listing = match previous {
            Some(previous) if *previous == children => previous,
            _ => Arc::new(children),
        };
        Ok((Cached::Listing(listing), self.ttl))
    }
}

/// What `child` of directory `dir` is, and so how its bytes are made.
fn child_kind(dir: &str, child: &Child) -> Kind {
    let account_dir = tree::service_account(dir).is_some();
    match child.name.as_str() {
        name if dir.is_empty() && name == SERVICE_ACCOUNTS_LINK.0 => {
            Kind::Symlink(SERVICE_ACCOUNTS_LINK.1.into())
        }
        name if dir == status::DIR => StatusFile::from_name(name).map_or(Kind::Value, Kind::Status),
        _ if child.dir => Kind::Dir,
        "token" if account_dir => Kind::Token,
        ACCESS_TOKEN if account_dir => Kind::AccessToken,
        _ => Kind::Value,
    }
}

/// The entries this filesystem adds to the MDS's listing of `dir`, once, when it is fetched.
fn add_extras(dir: &str, children: &mut Vec<Child>) {
    if dir.is_empty() {
        // Ours wins over a server key of the same name (see `status`).
        if children.iter().any(|c| c.name == status::DIR) {
            warn!("the metadata server lists {:?}; the status directory hides it", status::DIR);
            children.retain(|c| c.name != status::DIR);
        }
        children.push(Child { name: status::DIR.into(), dir: true });
    }
    let has_token = children.iter().any(|c| c.name == "token");
    let mut add = |name: &str| {
        if !children.iter().any(|c| c.name == name) {
            children.push(Child { name: name.into(), dir: false });
        }
    };
    if dir.is_empty() {
        add(SERVICE_ACCOUNTS_LINK.0);
    }
    if tree::service_account(dir).is_some() && has_token {
        add(ACCESS_TOKEN);
    }
}

#[cfg(test)]
#[path = "fs_tests.rs"]
mod tests;
