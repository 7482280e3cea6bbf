//! The filesystem core: lookup, getattr, readdir, open and read as plain functions returning
//! our own types or an [`Error`]; the adapter (fuse/) replies with them. [`Core`] owns the names (inodes, tree.rs) and the open handles (handles.rs), and composes
//! the parts that say what a file holds: `Files` (files.rs) dispatches to the mirror's
//! contents, the token store, the write-through, waiting reads and the status files. None of
//! them sees the core: each is handed the client, cache, clock or token store it needs.
//!
//! Invariants:
//! - Nothing is fetched before it is looked up or listed, and nothing is served that did not
//!   come whole from the MDS.
//! - Each version of a file is its own inode (tree.rs): an inode's size and bytes never change,
//!   so `getattr` never fetches, the kernel may keep an inode's pages (`FOPEN_KEEP_CACHE`) and
//!   attributes as long as it likes, and `open` → change → `fstat` → read `st_size` bytes
//!   gives one whole version. A change reaches the next `open()` through the *name*: its entry
//!   TTL is what is left of our cached value's validity, so the kernel never holds a name
//!   longer than we hold its value, and the watcher invalidates names sooner.
//! - One `open()` sees one value: the handle holds the version's bytes (for `token`, the
//!   rendering made at open, of the version's length). An open whose token moved on since the
//!   lookup fails with ESTALE, which makes the kernel look the name up again and retry.
//! - Cache hits are answered without waiting (`*_now`), so the FUSE thread replies directly.
//! - Lock order: `changes` (read, held while a lookup's reply goes out) before `inodes`; no
//!   other lock of the core is held while taking another, nor across an `.await`.

mod contents;
mod entry;
mod epoch;
mod fetch;
mod files;
mod guest;
mod handles;
pub(crate) mod listing;
pub mod node;
pub mod perms;
pub mod query;
mod renew;
mod scopes;
pub mod status;
mod token_files;
pub mod tree;
mod waits;
mod write;

use std::ffi::OsStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;

use self::entry::attr;
pub use self::entry::{Attr, Caching, DirEntry, Entry, FileType, FsConfig};
pub use self::epoch::Epoch;
use self::files::Files;
use self::handles::{DirHandle, Handles};
use self::listing::find;
use self::node::{Kind, Node, Version, STATUS_DIR};
use self::tree::Inodes;
use self::write::Writes;
use crate::clock::SharedClock;
use crate::error::{Error, Result};
use crate::paths;
use crate::stats::Watcher;
use crate::token::Tokens;
use crate::upstream::dump::Changes;
use crate::upstream::mds::Mds;

#[derive(Debug)]
pub struct Core<M> {
    config: FsConfig,
    files: Files<M>,
    inodes: Mutex<Inodes>,
    handles: Handles,
    changes: Epoch,
}

impl<M: Mds> Core<M> {
    pub fn new(mds: Arc<M>, config: FsConfig, clock: SharedClock) -> Self {
        let files = Files::new(mds, &config, clock);
        let (inodes, handles, changes) = Default::default();
        Core { config, files, inodes, handles, changes }
    }

    /// The handle the change watcher reports its state through, for `.metadatafs/status`.
    pub fn watcher(&self) -> &Watcher {
        &self.files.board.watcher
    }

    pub fn tokens(&self) -> &Arc<Tokens<M>> {
        &self.files.tokens
    }

    /// The entry for `name` if everything it needs is cached: `None` means [`Core::lookup`]
    /// has to fetch.
    pub fn lookup_now(&self, parent: u64, name: &OsStr) -> Option<Result<Entry>> {
        // Query names are looked up by the async path; a bad one fails here.
        match name.to_str().map(query::parse) {
            Some(Err(e)) => return Some(Err(e)),
            Some(Ok(Some(_))) => return None,
            _ => {}
        }
        self.lookup_cached(parent, name).transpose()
    }

    fn lookup_cached(&self, parent: u64, name: &OsStr) -> Result<Option<Entry>> {
        let (dir, name) = self.lookup_target(parent, name)?;
        if dir.is_empty() && name == STATUS_DIR {
            // Without the root listing: the status matters most when the MDS cannot give one.
            let node = Node { path: name.into(), kind: Kind::Dir };
            return Ok(Some(self.enter(node, None, self.config.ttl)));
        }
        let Some(listing) = self.listing_now(&dir) else { return Ok(None) };
        let (children, validity) = listing?;
        let node = find(&dir, &children, name)?;
        let content = match node.kind {
            Kind::Dir | Kind::Symlink(_) => None,
            _ => match self.files.content_now(&node) {
                Some(content) => Some(content?),
                None => return Ok(None),
            },
        };
        Ok(Some(self.enter(node, content, validity)))
    }

    pub async fn lookup(&self, parent: u64, name: &OsStr) -> Result<Entry> {
        if let Some(answer) = self.lookup_now(parent, name) {
            return answer;
        }
        if let Some(query) = name.to_str().map(query::parse).transpose()?.flatten() {
            let dir = self.node(parent)?;
            if dir.kind != Kind::Dir {
                return Err(Error::NotFound);
            }
            let (target, validity) = self.files.query_target(&dir.path, &query).await?;
            let content = self.files.query_content(&target).await?;
            let path = paths::child_path(&dir.path, name.to_str().unwrap_or_default());
            let node = Node { path, kind: Kind::Query(Box::new(target)) };
            return Ok(self.enter(node, Some(content), validity));
        }
        let (dir, name) = self.lookup_target(parent, name)?;
        let (children, listing_validity) = self.listing(&dir).await?;
        let node = find(&dir, &children, name)?;
        let content = match node.kind {
            Kind::Dir | Kind::Symlink(_) => None,
            _ => Some(self.files.content(&node).await?),
        };
        Ok(self.enter(node, content, listing_validity))
    }

    fn lookup_target<'n>(&self, parent: u64, name: &'n OsStr) -> Result<(String, &'n str)> {
        let name = paths::check_name(name)?;
        let dir = self.node(parent)?;
        match dir.kind {
            Kind::Dir => Ok((dir.path, name)),
            _ => Err(Error::NotFound),
        }
    }

    /// Hand the kernel one more reference to `node` at its current version. The name lives as
    /// long as both the listing that shows it and the version it points to stay current.
    fn enter(&self, node: Node, content: Option<node::Content>, listing: Duration) -> Entry {
        let (version, entry_ttl) = match content {
            Some(c) => (Some(Arc::new(c.version)), listing.min(c.validity)),
            None => (None, listing),
        };
        let ino = self.inodes.lock().unwrap().lookup(node.clone(), version.clone());
        let (attr, ttl) =
            attr(&self.config, self.files.contents.mounted_at, ino, &node, version.as_deref());
        Entry { attr, ttl, entry_ttl }
    }

    /// `dir`'s listing as this mount shows it (with namespaces `mkdir` made), if cached.
    fn listing_now(&self, dir: &str) -> Option<Result<(Arc<Vec<node::Child>>, Duration)>> {
        let listing = self.files.contents.listing_now(dir)?;
        Some(listing.map(|(children, v)| (self.files.writes.with_new_namespaces(dir, children), v)))
    }

    async fn listing(&self, dir: &str) -> Result<(Arc<Vec<node::Child>>, Duration)> {
        let (children, validity) = self.files.contents.listing(dir).await?;
        Ok((self.files.writes.with_new_namespaces(dir, children), validity))
    }

    /// Never fetches: an inode's attributes are fixed when it is looked up.
    pub fn getattr(&self, ino: u64) -> Result<Entry> {
        let (node, version) = self.inodes.lock().unwrap().get(ino)?;
        let (attr, ttl) =
            attr(&self.config, self.files.contents.mounted_at, ino, &node, version.as_deref());
        Ok(Entry { attr, ttl, entry_ttl: ttl })
    }

    /// Whether `path` is a directory the MDS lists (to check options against the real tree).
    pub async fn is_dir(&self, path: &str) -> Result<bool> {
        self.files.contents.is_dir(path).await
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

    /// Pin the directory's cached listing in a handle, so one `ls` sees one listing.
    pub async fn opendir(&self, ino: u64) -> Result<u64> {
        let node = self.node(ino)?;
        if node.kind != Kind::Dir {
            return Err(Error::NotFound);
        }
        let (children, _) = self.listing(&node.path).await?;
        let parent = node.path.rsplit_once('/').map_or("", |(parent, _)| parent);
        let held = self.inodes.lock().unwrap().ino_of(parent);
        let parent = held.unwrap_or_else(|| tree::stable_ino(parent));
        let fh = self.handles.add_dir(DirHandle { ino, parent, path: node.path, children });
        self.files.contents.dir_opened(fh, ino);
        Ok(fh)
    }

    /// Hand entries from `offset` on to `add` (handles.rs), until it says the buffer is full.
    pub fn readdir(
        &self,
        fh: u64,
        offset: u64,
        add: impl FnMut(u64, &DirEntry) -> bool,
    ) -> Result<()> {
        let dir = self.handles.dir(fh).ok_or(Error::Stale)?;
        handles::readdir(&dir, &self.inodes.lock().unwrap(), offset, add);
        Ok(())
    }

    /// Open `ino` if that needs no fetch: `None` means [`Core::open`] has to wait.
    pub fn open_now(&self, ino: u64, write: bool) -> Option<Result<(u64, Caching)>> {
        let (node, version) = match self.open_target(ino, write) {
            Ok(target) => target,
            Err(e) => return Some(Err(e)),
        };
        if node.kind == Kind::Value && version.readable {
            return Some(Ok((self.handles.add_file(version.bytes.clone()), Caching::KeepCache)));
        }
        if let Kind::Status(file) = node.kind {
            // Counters move between lookup and open: whatever length it has now, direct-I/O.
            return Some(Ok((
                self.handles.add_file(self.files.render_status(file)),
                Caching::Direct,
            )));
        }
        if !version.readable {
            return None;
        }
        Some(
            self.files.content_now(&node)?.and_then(|content| self.open_version(&version, content)),
        )
    }

    pub async fn open(&self, ino: u64, write: bool) -> Result<(u64, Caching)> {
        if let Some(answer) = self.open_now(ino, write) {
            return answer;
        }
        let (node, version) = self.open_target(ino, write)?;
        if let Kind::Query(target) = &node.kind {
            if let node::Target::Wait { .. } = **target {
                let bytes = self.files.wait_content(target).await?;
                return Ok((self.handles.add_file(bytes), Caching::Direct));
            }
        }
        let content = self.files.content(&node).await?;
        if !content.version.readable {
            // Say why the MDS will not answer this key without parameters.
            return Err(Error::BadRequest { path: node.path });
        }
        self.open_version(&version, content)
    }

    fn open_target(&self, ino: u64, write: bool) -> Result<(Node, Arc<Version>)> {
        let (node, version) = self.inodes.lock().unwrap().get(ino)?;
        if write {
            return Err(Error::ReadOnly);
        }
        let version = version.ok_or_else(|| Error::InvalidName("not a file".into()))?;
        Ok((node, version))
    }

    /// Open `version`, whose file's current content is `content`. Token files render at every
    /// open; if the token moved on since the lookup, the size the kernel holds is no longer
    /// what a read would give: ESTALE, and the kernel looks the name up again.
    fn open_version(&self, version: &Version, content: node::Content) -> Result<(u64, Caching)> {
        if !version.same(&content.version) {
            return Err(Error::Stale);
        }
        let (bytes, caching) = match content.version.rendered {
            true => (content.version.bytes, Caching::Direct),
            false => (version.bytes.clone(), Caching::KeepCache),
        };
        Ok((self.handles.add_file(bytes), caching))
    }

    pub fn read(&self, fh: u64, offset: u64, size: u32) -> Result<Bytes> {
        if let Some(bytes) = self.handles.read(fh, offset, size) {
            return Ok(bytes);
        }
        self.files.writes.read(fh, offset, size).ok_or(Error::Stale)
    }

    pub fn release(&self, fh: u64) {
        self.handles.remove(fh);
        self.files.writes.release(fh);
        self.files.contents.dir_closed(fh);
    }

    pub(crate) fn node(&self, ino: u64) -> Result<Node> {
        Ok(self.inodes.lock().unwrap().get(ino)?.0)
    }

    /// The write-through (write.rs), for the operations that need no inode: write, flush, the
    /// last close.
    pub(crate) fn writes(&self) -> &Writes<M> {
        &self.files.writes
    }

    /// Open `ino` for writing; `truncate` is `O_TRUNC`.
    pub async fn open_write(&self, ino: u64, uid: u32, truncate: bool) -> Result<u64> {
        let (node, fh) = (self.node(ino)?, self.handles.next_fh());
        self.files.writes.open(fh, &node, uid, truncate).await?;
        Ok(fh)
    }

    /// `truncate` through `fh` if given, else as a whole open-truncate-close.
    pub async fn truncate(&self, ino: u64, fh: Option<u64>, size: u64, uid: u32) -> Result<Entry> {
        self.files.writes.truncate(&self.node(ino)?, fh, size, uid).await?;
        self.getattr(ino)
    }

    /// `setattr` without a size on a writable file: `touch` is a no-op, chmod/chown EPERM.
    pub fn touch(&self, ino: u64, uid: u32, owner_or_mode: bool) -> Result<Entry> {
        self.files.writes.check(&self.node(ino)?, uid, owner_or_mode)?;
        self.getattr(ino)
    }

    /// `mkdir instance/guest-attributes/NS`.
    pub async fn mkdir(&self, parent: u64, name: &OsStr, uid: u32) -> Result<Entry> {
        let node = self.files.writes.mkdir(&self.node(parent)?, name, uid)?;
        let entry = self.enter(node, None, Duration::ZERO);
        Ok(Entry { ttl: Duration::ZERO, ..entry })
    }

    /// `create NS/KEY`: a new guest attribute, empty until it is sent at close; the next lookup
    /// after that sees the MDS's value.
    pub async fn create(&self, parent: u64, name: &OsStr, uid: u32) -> Result<(Entry, u64)> {
        let fh = self.handles.next_fh();
        let node = self.files.writes.create(fh, &self.node(parent)?, name, uid)?;
        let empty = node::Content::written(Bytes::new());
        let entry = self.enter(node, Some(empty), Duration::ZERO);
        Ok((Entry { ttl: Duration::ZERO, ..entry }, fh))
    }

    pub async fn unlink(&self, parent: u64, name: &OsStr, uid: u32) -> Result<()> {
        self.files.writes.unlink(&self.node(parent)?, name, uid).await
    }

    pub async fn rmdir(&self, parent: u64, name: &OsStr) -> Result<()> {
        self.files.writes.rmdir(&self.node(parent)?, name).await
    }

    /// Whether a lookup that has to fetch in `dir` should fetch the rest of the directory
    /// too, and the task that does (contents.rs).
    pub fn prefetch(
        &self,
        dir: u64,
    ) -> Option<impl std::future::Future<Output = ()> + Send + 'static> {
        if !self.files.contents.should_prefetch(dir) {
            return None;
        }
        let path = self.node(dir).ok()?.path;
        Some(self.files.contents.clone().prefetch(path))
    }

    /// Returns once something has been fetched for a reader: the watcher starts then.
    pub async fn wait_for_first_read(&self) {
        self.files.contents.wait_for_first_read().await;
    }

    /// The count of changes the watcher dropped (epoch.rs): taken before a lookup, settled
    /// when replying.
    pub fn changes(&self) -> &Epoch {
        &self.changes
    }

    /// Expire every cached value and listing `changes` touches, and say which names the kernel
    /// holds that it must forget: (parent inode, name). Counted before the kernel is told.
    pub fn drop_changed(&self, changes: &Changes) -> Vec<(u64, String)> {
        let subtrees = self.files.contents.drop_changed(changes);
        // From here on, lookups answered from before the expiry reply without a TTL
        // (`settle`); those that replied already hold their inodes, listed below.
        self.changes.advance();
        self.inodes.lock().unwrap().names_under(&subtrees)
    }
}

#[cfg(test)]
mod tests;
