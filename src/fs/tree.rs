//! The inode table and the rules for names.
//!
//! **Each version of a file is its own inode.** A file inode carries a [`Version`]: the bytes
//! (or, for `token`, the size and the token its renderings come from) it had when it was looked
//! up, and these never change. When a path's content changes, the next lookup of that path gets
//! a new inode; the old one lives on, unchanged, for the kernel references and open files that
//! still hold it. So the kernel may cache an inode's size and pages for as long as it likes
//! (`FOPEN_KEEP_CACHE`, long attribute TTLs): no read through a stale size or stale pages can
//! happen, because nothing about an inode ever goes stale. A change reaches new `open()`s by
//! invalidating the *name* (`inval_entry`), never the inode.
//!
//! Inode lifetime follows the kernel's lookup count: [`Inodes::lookup`] adds one for every entry
//! we hand the kernel, [`Inodes::forget`] takes away what the kernel forgets, and a node whose
//! count reaches zero is dropped (the root never is). So memory grows with what the kernel holds
//! (bytes included), not with everything ever looked up. A superseded version nobody holds is
//! dropped when it is superseded: the kernel will never send a FORGET for it.
//!
//! Paths are relative to `computeMetadata/v1/`, without leading or trailing slash; the root is
//! the empty path. Nothing here knows which MDS paths are directories: that comes from listings.

use std::collections::HashMap;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::fs::node::{Kind, Node, Version};
use crate::paths::is_under;

pub const ROOT: u64 = 1;

#[derive(Debug)]
struct Inode {
    node: Node,
    version: Option<Arc<Version>>,
    lookups: u64,
}

#[derive(Debug)]
pub struct Inodes {
    nodes: HashMap<u64, Inode>,
    /// Each path's current inode.
    by_path: HashMap<String, u64>,
    next: u64,
}

impl Default for Inodes {
    fn default() -> Self {
        let root = Inode {
            node: Node { path: String::new(), kind: Kind::Dir },
            version: None,
            lookups: 1,
        };
        Inodes {
            nodes: HashMap::from([(ROOT, root)]),
            by_path: HashMap::from([(String::new(), ROOT)]),
            next: ROOT + 1,
        }
    }
}

impl Inodes {
    /// The version inode `ino` holds, without copying its node.
    pub fn version(&self, ino: u64) -> Option<Arc<Version>> {
        self.nodes.get(&ino)?.version.clone()
    }

    pub fn get(&self, ino: u64) -> Result<(Node, Option<Arc<Version>>)> {
        let inode = self.nodes.get(&ino).ok_or(Error::Stale)?;
        Ok((inode.node.clone(), inode.version.clone()))
    }

    /// The inode for `node` at `version`, created if needed, with one more kernel reference.
    /// A different version than the path's current inode makes a new inode, which becomes
    /// current; the old one stays for whoever holds it.
    pub fn lookup(&mut self, node: Node, version: Option<Arc<Version>>) -> u64 {
        if let Some(&ino) = self.by_path.get(&node.path) {
            let inode = self.nodes.get_mut(&ino).expect("by_path and nodes agree");
            let same = match (&inode.version, &version) {
                (None, None) => true,
                (Some(a), Some(b)) => a.same(b),
                _ => false,
            };
            if same && inode.node.kind == node.kind {
                inode.lookups += 1;
                return ino;
            }
            self.by_path.remove(&node.path);
            if inode.lookups == 0 {
                self.nodes.remove(&ino);
            }
        }
        let mut ino = stable_ino(&node.path);
        while self.nodes.contains_key(&ino) {
            // Another version of this path, or two paths hashed alike: a number from the low
            // range, never one the kernel still holds.
            ino = self.next;
            self.next += 1;
        }
        self.by_path.insert(node.path.clone(), ino);
        self.nodes.insert(ino, Inode { node, version, lookups: 1 });
        ino
    }

    /// The inode number `path` has now, if the kernel holds it.
    pub fn ino_of(&self, path: &str) -> Option<u64> {
        self.by_path.get(path).copied()
    }

    /// Paths the kernel holds at or under `prefix` (a path; "" is everything), excluding the
    /// root: what has to be invalidated when that subtree changes.
    pub fn held_under(&self, prefix: &str) -> Vec<String> {
        self.by_path
            .keys()
            .filter(|path| !path.is_empty() && is_under(path, prefix))
            .cloned()
            .collect()
    }

    /// The names the kernel holds at or below any of `subtrees`: (parent inode, name).
    pub fn names_under(&self, subtrees: &std::collections::BTreeSet<String>) -> Vec<(u64, String)> {
        let mut held = std::collections::BTreeSet::new();
        for subtree in subtrees {
            held.extend(self.held_under(subtree));
        }
        held.into_iter()
            .filter_map(|path| {
                let (dir, name) = path.rsplit_once('/').unwrap_or(("", &path));
                Some((self.ino_of(dir)?, name.to_string()))
            })
            .collect()
    }

    pub fn forget(&mut self, ino: u64, count: u64) {
        if ino == ROOT {
            return;
        }
        let Some(inode) = self.nodes.get_mut(&ino) else {
            return;
        };
        inode.lookups = inode.lookups.saturating_sub(count);
        if inode.lookups == 0 {
            let path = inode.node.path.clone();
            self.nodes.remove(&ino);
            if self.by_path.get(&path) == Some(&ino) {
                self.by_path.remove(&path);
            }
        }
    }
}

/// The inode number `path` gets, derived from the path so that `readdir` can show the same
/// number `stat` will (`ls -i`, `find -inum`) without creating an inode for every name listed.
/// The high bit keeps it clear of the root and of the low range used after a collision.
pub fn stable_ino(path: &str) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    BuildHasherDefault::<DefaultHasher>::default().hash_one(path) | (1 << 63)
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use bytes::Bytes;

    use super::*;

    fn node(path: &str) -> Node {
        Node { path: path.into(), kind: Kind::Value }
    }

    fn version(bytes: &'static str) -> Option<Arc<Version>> {
        Some(Arc::new(Version {
            bytes: Bytes::from_static(bytes.as_bytes()),
            seen: SystemTime::UNIX_EPOCH,
            tag: 0,
            readable: true,
        }))
    }

    #[test]
    fn inodes_live_while_the_kernel_holds_them() {
        let mut inodes = Inodes::default();
        let a = inodes.lookup(node("project/project-id"), version("p"));
        assert_eq!(inodes.lookup(node("project/project-id"), version("p")), a);
        inodes.forget(a, 1);
        assert_eq!(inodes.get(a).unwrap().0.path, "project/project-id");
        inodes.forget(a, 1);
        assert_eq!(inodes.get(a).unwrap_err(), Error::Stale);
        assert_eq!(inodes.ino_of("project/project-id"), None);
        assert_eq!(inodes.lookup(node("project/project-id"), version("p")), a, "stable numbers");
        assert_eq!(a, stable_ino("project/project-id"));
        inodes.forget(ROOT, 100);
        assert_eq!(inodes.get(ROOT).unwrap().0.kind, Kind::Dir);
    }

    #[test]
    fn a_changed_value_is_a_new_inode_and_the_old_one_lives_while_held() {
        let mut inodes = Inodes::default();
        let path = "instance/attributes/k";
        let old = inodes.lookup(node(path), version("old"));
        let new = inodes.lookup(node(path), version("new!"));
        assert_ne!(old, new);
        assert_eq!(inodes.ino_of(path), Some(new));
        assert_eq!(inodes.get(old).unwrap().1.unwrap().bytes, "old", "unchanged for its holders");
        inodes.forget(old, 1);
        assert_eq!(inodes.get(old).unwrap_err(), Error::Stale);
        assert_eq!(inodes.ino_of(path), Some(new), "forgetting the old one keeps the new");
        // A superseded version nobody holds any more is dropped at once.
        inodes.forget(new, 1);
        let third = inodes.lookup(node(path), version("3"));
        inodes.forget(third, 1);
        assert!(inodes.nodes.len() == 1, "only the root is left");
        assert_eq!(inodes.held_under(""), Vec::<String>::new());
        let a = inodes.lookup(node("a/b"), version("x"));
        inodes.lookup(node("ab"), version("x"));
        assert_eq!(inodes.held_under("a"), ["a/b"]);
        inodes.forget(a, 1);
    }
}
