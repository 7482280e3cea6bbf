//! The filesystem core: lookup, getattr, readdir, open and read as plain functions returning
//! our own types or an [`Error`]; the adapter (fuse/) replies with them. [`Core`] owns the
//! names (inodes, tree.rs) and the open handles (handles.rs), and composes the parts that say
//! what a file holds: `Files` (files.rs) dispatches to the mirror's contents, the token store,
//! the write-through, waiting reads and the status files. None of them sees the core: each is
//! handed the client, cache, clock or token store it needs.
//!
//! Invariants:
//! - Nothing is fetched before it is looked up or listed, nothing is served that did not come
//!   whole from the MDS, and nothing is fetched for a caller who may not read the file.
//! - **What a file holds is fixed when its name is looked up.** Each version of a file is its
//!   own inode (tree.rs), whose size and bytes never change, so `getattr` never fetches a file,
//!   the kernel may keep an inode's pages and attributes as long as it likes, and reads need no
//!   open: on a read-only mount the kernel sends no OPEN, FLUSH or RELEASE at all (fuse/), and
//!   reads come by inode. A change reaches the next `open()` through the *name*: its entry TTL
//!   is what is left of the version's validity (for `token`, the rest of the second its
//!   `expires_in` was rounded from), and the watcher and the token store invalidate names sooner.
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
mod names;
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
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

pub use self::entry::{Attr, DirEntry, Entry, FileType, Forget, FsConfig};
pub use self::epoch::Epoch;
use self::files::Files;
use self::handles::{DirHandle, Handles};
use self::listing::find;
use self::names::Names;
pub use self::node::Caller;
use self::node::{Content, Kind, Node, STATUS_DIR};
use self::waits::Waiter;
use self::write::Writes;
use crate::clock::SharedClock;
use crate::error::{Error, Result};
use crate::paths;
use crate::token::Tokens;
use crate::upstream::dump::Changes;
use crate::upstream::mds::Mds;

#[derive(Debug)]
pub struct Core<M> {
    files: Files<M>,
    names: Names<M>,
    handles: Handles,
    changes: Epoch,
}

impl<M: Mds> Core<M> {
    pub fn new(mds: Arc<M>, config: FsConfig, clock: SharedClock) -> Self {
        let files = Files::new(mds, &config, clock);
        let names = Names::new(config, files.contents.clone());
        let (handles, changes) = Default::default();
        Core { files, names, handles, changes }
    }

    /// What the status files show of the mount itself: the watcher's state, the read path,
    /// the FUSE requests served.
    pub fn board(&self) -> &status::Board {
        &self.files.board
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
            return Ok(Some(self.names.enter(node, None, self.names.config.ttl)));
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
        Ok(Some(self.names.enter(node, content, validity)))
    }

    /// Look `name` up in `parent` for `caller`, fetching what is not cached (a waiting read
    /// waits here for the server's answer).
    pub async fn lookup(&self, parent: u64, name: &OsStr, caller: Caller) -> Result<Entry> {
        if let Some(answer) = self.lookup_now(parent, name) {
            return answer;
        }
        let waiter = Waiter { uid: caller.uid, pid: caller.pid };
        let perms = &self.names.config.permissions;
        if let Some(query) = name.to_str().map(query::parse).transpose()?.flatten() {
            let dir = self.node(parent)?;
            if dir.kind != Kind::Dir {
                return Err(Error::NotFound);
            }
            let (target, validity) = self.files.query_target(&dir.path, &query).await?;
            let path = paths::child_path(&dir.path, name.to_str().unwrap_or_default());
            let kind = Kind::Query(Box::new(target.clone()));
            // Nothing is fetched, cached or held for a caller the file's mode refuses.
            if !perms.may_read(&path, &kind, &caller) {
                return Err(Error::NotPermitted(format!("uid {} may not read it", caller.uid)));
            }
            let content = self.files.query_content(&target, waiter).await?;
            return Ok(self.names.enter(Node { path, kind }, Some(content), validity));
        }
        let (dir, name) = self.lookup_target(parent, name)?;
        let (children, listing_validity) = self.listing(&dir).await?;
        let node = find(&dir, &children, name)?;
        let content = match node.kind {
            Kind::Dir | Kind::Symlink(_) => None,
            // A secret not cached yet, for a caller who may not read it: there, unfetched.
            _ if !perms.may_read(&node.path, &node.kind, &caller) => {
                Some(Content::unfetched(self.files.contents.mounted_at))
            }
            _ => Some(self.files.content(&node, waiter).await?),
        };
        Ok(self.names.enter(node, content, listing_validity))
    }

    fn lookup_target<'n>(&self, parent: u64, name: &'n OsStr) -> Result<(String, &'n str)> {
        let name = paths::check_name(name)?;
        let dir = self.node(parent)?;
        match dir.kind {
            Kind::Dir => Ok((dir.path, name)),
            _ => Err(Error::NotFound),
        }
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

    /// A file's attributes are fixed when it is looked up; a directory's follow its listing.
    pub fn getattr(&self, ino: u64) -> Result<Entry> {
        self.names.getattr(ino)
    }

    /// For a directory whose listing the kernel may hold (read on the no-open path) and which
    /// has run out: the task that fetches it again. A changed listing moves the directory's
    /// mtime, and reaches the kernel through `Contents::watch_listings`.
    pub fn refresh(&self, ino: u64) -> Option<impl std::future::Future<Output = ()> + 'static> {
        // Every GETATTR asks: a file is answered before anything is cloned or locked twice.
        let node = self.node(ino).ok().filter(|node| node.kind == Kind::Dir)?;
        let (path, contents) = (node.path, self.files.contents.clone());
        let ran_out = contents.listing_ran_out(&path);
        ran_out.then_some(async move { drop(contents.listing(&path).await) })
    }

    /// The directories whose listings changed when fetched again, from now on (by path).
    pub fn watch_listings(&self) -> tokio::sync::mpsc::UnboundedReceiver<String> {
        self.files.contents.watch_listings()
    }

    /// What the kernel must forget when directory `path`'s listing changed: its `readdir`.
    pub fn listing_changed(&self, path: &str) -> Forget {
        self.names.held(&Default::default(), &std::collections::BTreeSet::from([path.to_string()]))
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
        self.names.forget(ino, count);
    }

    /// Pin the directory's cached listing in a handle, so one `ls` sees one listing.
    pub async fn opendir(&self, ino: u64) -> Result<u64> {
        Ok(self.handles.add_dir(self.dir(ino).await?))
    }

    async fn dir(&self, ino: u64) -> Result<DirHandle> {
        let node = self.node(ino)?;
        let listing = self.listing(&node.path).await;
        self.names.dir_handle(ino, node, listing)
    }

    /// Hand entries of directory `ino` from `offset` on to `add` (handles.rs), until it says
    /// the buffer is full: through handle `fh`, or on the no-open path (`fh` 0) from the
    /// current listing. `None`: that listing has to be fetched ([`Core::readdir_fresh`]).
    pub fn readdir(
        &self,
        ino: u64,
        fh: u64,
        offset: u64,
        add: impl FnMut(u64, &DirEntry) -> bool,
    ) -> Option<Result<()>> {
        let dir = match fh {
            0 => {
                let node = self.node(ino);
                if let Ok(node) = &node {
                    self.files.contents.readdir_served(&node.path);
                }
                let listing = self.listing_now(&node.as_ref().ok()?.path)?;
                node.and_then(|node| self.names.dir_handle(ino, node, listing))
            }
            fh => self.handles.dir(fh).ok_or(Error::Stale),
        };
        Some(dir.map(|dir| self.list(&dir, offset, add)))
    }

    /// [`Core::readdir`] without a handle, fetching the listing first.
    pub async fn readdir_fresh(
        &self,
        ino: u64,
        offset: u64,
        add: impl FnMut(u64, &DirEntry) -> bool,
    ) -> Result<()> {
        let dir = self.dir(ino).await?;
        self.list(&dir, offset, add);
        Ok(())
    }

    fn list(&self, dir: &DirHandle, offset: u64, add: impl FnMut(u64, &DirEntry) -> bool) {
        if offset == 0 {
            self.files.contents.dir_listed(dir.ino);
        }
        self.names.readdir(dir, offset, add);
    }

    /// Open `ino` (the open path, on mounts with a write-through option or kernels without
    /// no-open support): a handle on the version's bytes, which the kernel may keep cached.
    pub fn open(&self, ino: u64, write: bool) -> Result<u64> {
        let (node, version) = self.names.get(ino)?;
        if write {
            return Err(Error::ReadOnly);
        }
        let version = version.ok_or_else(|| Error::InvalidName("not a file".into()))?;
        if !version.readable {
            // Say why the MDS will not answer this key without parameters.
            return Err(Error::BadRequest { path: node.path });
        }
        Ok(self.handles.add_file(version.bytes.clone()))
    }

    /// `size` bytes from `offset` of inode `ino`: through handle `fh`, or on the no-open path
    /// (`fh` 0) straight from the inode's version.
    pub fn read(&self, ino: u64, fh: u64, offset: u64, size: u32) -> Result<Bytes> {
        if fh == 0 {
            let version = self.names.get(ino)?.1.ok_or(Error::Stale)?;
            return Ok(handles::slice(&version.bytes, offset, size));
        }
        if let Some(bytes) = self.handles.read(fh, offset, size) {
            return Ok(bytes);
        }
        self.files.writes.read(fh, offset, size).ok_or(Error::Stale)
    }

    pub fn release(&self, fh: u64) {
        self.handles.remove(fh);
        self.files.writes.release(fh);
    }

    pub(crate) fn node(&self, ino: u64) -> Result<Node> {
        self.names.node(ino)
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
        let entry = self.names.enter(node, None, Duration::ZERO);
        Ok(Entry { ttl: Duration::ZERO, ..entry })
    }

    /// `create NS/KEY`: a new guest attribute, empty until it is sent at close; the next lookup
    /// after that sees the MDS's value.
    pub async fn create(&self, parent: u64, name: &OsStr, uid: u32) -> Result<(Entry, u64)> {
        let fh = self.handles.next_fh();
        let node = self.files.writes.create(fh, &self.node(parent)?, name, uid)?;
        let empty = node::Content::written(Bytes::new());
        let entry = self.names.enter(node, Some(empty), Duration::ZERO);
        Ok((Entry { ttl: Duration::ZERO, ..entry }, fh))
    }

    /// Whether a lookup that has to fetch in `dir` should fetch the rest of the directory
    /// too, and the task that does (contents.rs).
    /// Only what `caller` (whose lookup started it) may read: nothing for one who may not.
    pub fn prefetch(
        &self,
        dir: u64,
        caller: Caller,
    ) -> Option<impl std::future::Future<Output = ()> + Send + 'static> {
        if !self.files.contents.should_prefetch(dir) {
            return None;
        }
        let (path, perms) = (self.node(dir).ok()?.path, self.names.config.permissions.clone());
        let may_read = move |path: &str| perms.may_read(path, &Kind::Value, &caller);
        Some(self.files.contents.clone().prefetch(path, may_read))
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

    /// The names to forget once the token from MDS path `path` was replaced: every file of
    /// its account directory the kernel holds (the token files and their query names).
    pub fn token_replaced(&self, path: &str) -> Forget {
        self.names.token_replaced(path)
    }

    /// Expire every cached value and listing `changes` touches, and say what the kernel holds
    /// that it must forget. Counted before the kernel is told.
    pub fn drop_changed(&self, changes: &Changes) -> Forget {
        let (subtrees, listings) = self.files.contents.drop_changed(changes);
        // From here on, lookups answered from before the expiry reply without a TTL
        // (`settle`); those that replied already hold their inodes, listed below.
        self.changes.advance();
        self.names.held(&subtrees, &listings)
    }
}

#[cfg(test)]
mod tests;
