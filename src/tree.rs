//! The inode table and the rules for names.
//!
//! Inode lifetime follows the kernel's lookup count: [`Inodes::lookup`] adds one for every entry
//! we hand the kernel, [`Inodes::forget`] takes away what the kernel forgets, and a node whose
//! count reaches zero is dropped (the root never is). So memory grows with what the kernel holds,
//! not with everything ever looked up. A path keeps its inode number while the kernel holds it.
//!
//! Paths are relative to `computeMetadata/v1/`, without leading or trailing slash; the root is
//! the empty path. Nothing here knows which MDS paths are directories: that comes from listings.

use std::collections::HashMap;
use std::ffi::OsStr;

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
    /// `.metadatafs/status` or `metrics`: rendered per open, never fetched.
    Status(crate::status::StatusFile),
    Symlink(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub path: String,
    pub kind: Kind,
}

#[derive(Debug)]
pub struct Inodes {
    nodes: HashMap<u64, (Node, u64)>,
    by_path: HashMap<String, u64>,
    next: u64,
}

impl Default for Inodes {
    fn default() -> Self {
        let root = Node { path: String::new(), kind: Kind::Dir };
        Inodes {
            nodes: HashMap::from([(ROOT, (root, 1))]),
            by_path: HashMap::from([(String::new(), ROOT)]),
            next: ROOT + 1,
        }
    }
}

impl Inodes {
    pub fn get(&self, ino: u64) -> Result<Node> {
        self.nodes.get(&ino).map(|(node, _)| node.clone()).ok_or(Error::Stale)
    }

    /// The inode for `node`, created if needed, with one more kernel reference.
    pub fn lookup(&mut self, node: Node) -> u64 {
        if let Some(&ino) = self.by_path.get(&node.path) {
            let (existing, count) = self.nodes.get_mut(&ino).expect("by_path and nodes agree");
            *existing = node;
            *count += 1;
            return ino;
        }
        let mut ino = stable_ino(&node.path);
        if self.nodes.contains_key(&ino) {
            // Two paths hashed alike: the later one gets a number from the low range.
            ino = self.next;
            self.next += 1;
        }
        self.by_path.insert(node.path.clone(), ino);
        self.nodes.insert(ino, (node, 1));
        ino
    }

    /// The inode number `path` has now, if the kernel holds it.
    pub fn ino_of(&self, path: &str) -> Option<u64> {
        self.by_path.get(path).copied()
    }

    pub fn forget(&mut self, ino: u64, count: u64) {
        if ino == ROOT {
            return;
        }
        let Some((node, held)) = self.nodes.get_mut(&ino) else {
            return;
        };
        *held = held.saturating_sub(count);
        if *held == 0 {
            let path = node.path.clone();
            self.nodes.remove(&ino);
            self.by_path.remove(&path);
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

    #[test]
    fn inodes_live_while_the_kernel_holds_them() {
        let mut inodes = Inodes::default();
        let a = inodes.lookup(node("project/project-id"));
        assert_eq!(inodes.lookup(node("project/project-id")), a);
        inodes.forget(a, 1);
        assert_eq!(inodes.get(a).unwrap().path, "project/project-id");
        inodes.forget(a, 1);
        assert_eq!(inodes.get(a), Err(Error::Stale));
        assert_eq!(inodes.ino_of("project/project-id"), None);
        assert_eq!(inodes.lookup(node("project/project-id")), a, "numbers are stable");
        assert_eq!(a, stable_ino("project/project-id"));
        inodes.forget(ROOT, 100);
        assert_eq!(inodes.get(ROOT).unwrap().kind, Kind::Dir);
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
