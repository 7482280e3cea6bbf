//! The name table: which inode each name the kernel holds points to, at which version, and
//! the attributes the kernel gets for it. [`Names`] owns the inode table (tree.rs) and is
//! handed the mount's settings and the contents (a directory's attributes follow its listing);
//! it fetches nothing.
//!
//! A name lives as long as both the listing that shows it and the version it points to stay
//! current: that is its entry TTL. A version's attributes never change, so their TTL is long;
//! a directory's last as long as its listing, and a changed listing is a new mtime.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::error::{Error, Result};
use crate::fs::contents::Contents;
use crate::fs::entry::{attr, DirEntry, Entry, Forget, FsConfig};
use crate::fs::handles::{self, DirHandle};
use crate::fs::node::{Child, Content, Kind, Node, Version};
use crate::fs::tree::{self, Inodes};
use crate::upstream::mds::Mds;

#[derive(Debug)]
pub(crate) struct Names<M> {
    inodes: Mutex<Inodes>,
    pub(crate) config: FsConfig,
    contents: Arc<Contents<M>>,
}

impl<M: Mds> Names<M> {
    pub(crate) fn new(config: FsConfig, contents: Arc<Contents<M>>) -> Self {
        Names { inodes: Mutex::default(), config, contents }
    }

    pub(crate) fn get(&self, ino: u64) -> Result<(Node, Option<Arc<Version>>)> {
        self.inodes.lock().unwrap().get(ino)
    }

    pub(crate) fn node(&self, ino: u64) -> Result<Node> {
        Ok(self.get(ino)?.0)
    }

    pub(crate) fn forget(&self, ino: u64, count: u64) {
        self.inodes.lock().unwrap().forget(ino, count);
    }

    /// Hand the kernel one more reference to `node` at its current version. The name lives as
    /// long as both the listing that shows it and the version it points to stay current.
    pub(crate) fn enter(&self, node: Node, content: Option<Content>, listing: Duration) -> Entry {
        let (version, entry_ttl) = match content {
            Some(c) => (Some(Arc::new(c.version)), listing.min(c.validity)),
            None => (None, listing),
        };
        let (ino, held) = {
            let mut inodes = self.inodes.lock().unwrap();
            let ino = inodes.lookup(node.clone(), version);
            // The version the inode holds, which may be an earlier one with the same bytes:
            // an inode's attributes never change (a new mtime would drop its cached pages).
            (ino, inodes.version(ino))
        };
        let (attr, ttl) = attr(&self.config, self.times(&node), ino, &node, held.as_deref());
        Entry { attr, ttl, entry_ttl }
    }

    /// A directory's mtime and attribute TTL come from its listing (entry.rs `attr`).
    fn times(&self, node: &Node) -> (SystemTime, Duration) {
        let mounted_at = self.contents.mounted_at;
        match node.kind {
            Kind::Dir => {
                // Never listed: nothing of it can be stale in the kernel yet.
                self.contents.listing_times(&node.path).unwrap_or((mounted_at, self.config.ttl))
            }
            _ => (mounted_at, self.config.ttl),
        }
    }

    /// A file's attributes are fixed when it is looked up; a directory's follow its listing.
    pub(crate) fn getattr(&self, ino: u64) -> Result<Entry> {
        let (node, version) = self.inodes.lock().unwrap().get(ino)?;
        let (attr, ttl) = attr(&self.config, self.times(&node), ino, &node, version.as_deref());
        Ok(Entry { attr, ttl, entry_ttl: ttl })
    }

    /// The inode `path` has now, or the one a lookup will give it.
    pub(crate) fn ino_of(&self, path: &str) -> u64 {
        let held = self.inodes.lock().unwrap().ino_of(path);
        held.unwrap_or_else(|| tree::stable_ino(path))
    }

    /// A handle on directory `node` (inode `ino`) listing `listing`.
    pub(crate) fn dir_handle(
        &self,
        ino: u64,
        node: Node,
        listing: Result<(Arc<Vec<Child>>, Duration)>,
    ) -> Result<DirHandle> {
        if node.kind != Kind::Dir {
            return Err(Error::NotFound);
        }
        let parent = self.ino_of(node.path.rsplit_once('/').map_or("", |(parent, _)| parent));
        Ok(DirHandle { ino, parent, path: node.path, children: listing?.0 })
    }

    /// Hand entries of `dir` from `offset` on to `add` (handles.rs).
    pub(crate) fn readdir(
        &self,
        dir: &DirHandle,
        offset: u64,
        add: impl FnMut(u64, &DirEntry) -> bool,
    ) {
        handles::readdir(dir, &self.inodes.lock().unwrap(), offset, add);
    }

    /// What the kernel holds at or below `subtrees`, and the listings of `dirs`.
    pub(crate) fn held(&self, subtrees: &BTreeSet<String>, dirs: &BTreeSet<String>) -> Forget {
        let inodes = self.inodes.lock().unwrap();
        let dirs = dirs.iter().filter_map(|dir| inodes.ino_of(dir)).collect();
        Forget { names: inodes.names_under(subtrees), dirs }
    }

    /// The names to forget once the token from MDS path `path` was replaced: every file of
    /// its account directory the kernel holds (the token files and their query names).
    pub(crate) fn token_replaced(&self, path: &str) -> Forget {
        let account_dir = path.split('?').next().unwrap_or(path);
        let account_dir = account_dir.rsplit_once('/').map_or("", |(dir, _)| dir);
        let inodes = self.inodes.lock().unwrap();
        let Some(dir) = inodes.ino_of(account_dir) else {
            return Forget::default();
        };
        let names = inodes
            .held_under(account_dir)
            .into_iter()
            .filter_map(|held| {
                Some((dir, held.strip_prefix(account_dir)?.strip_prefix('/')?.to_string()))
            })
            .filter(|(_, name)| !name.contains('/'))
            .collect();
        Forget { names, dirs: Vec::new() }
    }
}
