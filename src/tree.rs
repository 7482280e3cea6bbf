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
use std::ffi::OsStr;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;

use crate::error::{Error, Result};

pub const ROOT: u64 = 1;

/// What a path is, and so how its bytes are produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Dir,
    /// A value mirrored from the MDS, cached for `ttl`.
    Value,
    /// `…/service-accounts/ACCOUNT/token`: the token JSON, `expires_in` rendered at open.
    Token,
    /// `…/service-accounts/ACCOUNT/access_token`: the bare token.
    AccessToken,
    /// `…/service-accounts/ACCOUNT/authorization`: `Authorization: Bearer <token>`.
    Authorization,
    /// A query name (`NAME?k=v`): what it asks of the MDS.
    Query(Box<crate::query::Target>),
    /// `.metadatafs/status` or `metrics`: rendered per open, never fetched.
    Status(crate::status::StatusFile),
    Symlink(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub path: String,
    pub kind: Kind,
}

/// What a file inode holds, fixed for its whole life. `Debug` shows sizes, never bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Version {
    /// The file's bytes; for `token`, one rendering (only its length is fixed: `expires_in`
    /// is rendered again at every open, with as many digits).
    pub bytes: Bytes,
    /// When this mount first saw these bytes: the file's mtime and ctime.
    pub seen: SystemTime,
    /// For token files, which token the bytes come from (a hash, never the token); else 0.
    pub tag: u64,
    /// False for a listed key the MDS only answers with parameters (`identity`): size 0, and
    /// opening it asks the MDS again.
    pub readable: bool,
    /// The bytes differ from open to open (with the same length): `token`.
    pub rendered: bool,
}

impl Version {
    pub fn size(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// Whether `other` is the same version: the kernel may keep what it has.
    pub fn same(&self, other: &Version) -> bool {
        self.readable == other.readable
            && self.tag == other.tag
            && self.rendered == other.rendered
            && self.bytes.len() == other.bytes.len()
            && (self.rendered || self.bytes == other.bytes)
    }
}

impl std::fmt::Debug for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Version({} bytes, readable: {})", self.bytes.len(), self.readable)
    }
}

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

/// `path` is `prefix` or below it.
pub fn is_under(path: &str, prefix: &str) -> bool {
    prefix.is_empty()
        || path == prefix
        || path.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('/'))
}

/// The inode number `path` gets, derived from the path so that `readdir` can show the same
/// number `stat` will (`ls -i`, `find -inum`) without creating an inode for every name listed.
/// The high bit keeps it clear of the root and of the low range used after a collision.
pub fn stable_ino(path: &str) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    BuildHasherDefault::<DefaultHasher>::default().hash_one(path) | (1 << 63)
}

/// The path of `name` inside directory `parent`.
pub fn child_path(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_string()
    } else {
        format!("{parent}/{name}")
    }
}

/// `instance/service-accounts/ACCOUNT` → `Some(ACCOUNT)`.
pub fn service_account(dir: &str) -> Option<&str> {
    dir.strip_prefix("instance/service-accounts/").filter(|account| !account.contains('/'))
}

/// Check a name the kernel asks about before anything is sent to the MDS
/// (SPEC §6: `..`, control characters, `%`-escapes in the path → EINVAL).
pub fn check_name(name: &OsStr) -> Result<&str> {
    let invalid = |why: &str| Error::InvalidName(why.to_string());
    let name = name.to_str().ok_or_else(|| invalid("not UTF-8"))?;
    if name.is_empty() || name == "." || name == ".." {
        return Err(invalid("empty, . or .."));
    }
    if name.chars().any(char::is_control) {
        return Err(invalid("control character"));
    }
    if name.contains('%') {
        // The MDS takes no escapes in the path (reference/metadata-api.md §1.1), and `%2F` would
        // smuggle a slash past the kernel's path walk.
        return Err(invalid("%-escape in a path name"));
    }
    if name.contains('?') {
        return Err(invalid("query names are not supported"));
    }
    if !sendable(name) {
        return Err(invalid("a character the metadata server's paths cannot carry"));
    }
    Ok(name)
}

/// Characters a URL path can carry literally. The MDS decodes no escapes in paths
/// (reference/metadata-api.md §1.1), so a name needing one (space, `#`, non-ASCII, …) could
/// only ever reach a different key, or none: such names are refused, never sent.
fn sendable(name: &str) -> bool {
    name.chars().all(|c| c.is_ascii_graphic() && !"%#?\\\"<>`{}|^/".contains(c))
}

/// Names the MDS lists that we must not pass to the kernel as they are.
pub fn listable(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && sendable(name)
}

#[cfg(test)]
mod tests {
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
            rendered: false,
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

    #[test]
    fn names_are_checked_before_anything_is_sent() {
        assert_eq!(check_name(OsStr::new("project-id")), Ok("project-id"));
        let bad_names = ["..", ".", "a\nb", "a%2Fb", "tab\there", "token?scopes=x", "x#y", "a b"];
        assert!(!listable("x#y") && !listable("a\\b") && !listable("é") && listable("sa@x.com"));
        for bad in bad_names {
            assert!(check_name(OsStr::new(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn paths_and_accounts() {
        assert_eq!(child_path("", "instance"), "instance");
        assert_eq!(child_path("instance", "id"), "instance/id");
        assert_eq!(service_account("instance/service-accounts/default"), Some("default"));
        assert_eq!(service_account("instance/service-accounts/default/token"), None);
        assert_eq!(service_account("project"), None);
    }
}
