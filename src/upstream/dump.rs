//! The diff of two recursive dumps (`?recursive=true&alt=json`) into the paths to drop.
//!
//! The dump spells server-defined keys camelCase and user-defined keys verbatim
//! (reference/metadata-api.md §3.3); paths are dashed. [`name_of`] maps a key to its path name
//! only when that is certain, and says `None` otherwise, which drops the whole parent subtree.
//! Arrays (value lists like `tags`, indexed directories like `disks`) are compared whole: any
//! change drops the array's whole subtree, whichever way the MDS serves it.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use crate::paths::dashed;

/// Directories whose children are user-defined names, kept verbatim in the dump.
const USER_DIRS: [&str; 4] =
    ["attributes", "service-accounts", "guest-attributes", "partner-attributes"];
/// Directories whose grandchildren are user-defined too (namespace, then key).
const NAMESPACED: [&str; 2] = ["guest-attributes", "partner-attributes"];

/// What changed between two dumps, as paths relative to `computeMetadata/v1/`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    /// Drop every value, listing and name at or under each of these paths ("" is the root).
    pub subtrees: BTreeSet<String>,
    /// Directories whose listing changed (names added, removed, or turned file ↔ directory).
    pub listings: BTreeSet<String>,
}

impl Changes {
    /// Everything: the whole tree and every listing may have changed.
    pub fn everything() -> Changes {
        let root = BTreeSet::from([String::new()]);
        Changes { subtrees: root.clone(), listings: root }
    }

    pub fn is_empty(&self) -> bool {
        self.subtrees.is_empty() && self.listings.is_empty()
    }

    fn drop_dir(&mut self, dir: &[String]) {
        self.subtrees.insert(dir.join("/"));
        self.listings.insert(dir.join("/"));
    }
}

/// What to drop when the tree went from `old` to `new`.
pub fn diff(old: &Value, new: &Value) -> Changes {
    let mut changes = Changes::default();
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => objects(a, b, &mut Vec::new(), &mut changes),
        (a, b) if a == b => {}
        _ => changes.drop_dir(&[]),
    }
    changes
}

fn objects(
    old: &Map<String, Value>,
    new: &Map<String, Value>,
    dir: &mut Vec<String>,
    out: &mut Changes,
) {
    let keys: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    for key in keys {
        let (a, b) = (old.get(key), new.get(key));
        if a == b {
            continue;
        }
        let Some(name) = name_of(dir, key) else {
            // A changed key we cannot name for sure: everything here may have changed.
            out.drop_dir(dir);
            return;
        };
        let path = child(dir, &name);
        match (a, b) {
            (Some(Value::Object(x)), Some(Value::Object(y))) => {
                dir.push(name);
                objects(x, y, dir, out);
                dir.pop();
            }
            (Some(x), Some(y)) => {
                out.subtrees.insert(path);
                // A value list and an indexed directory list differently (`x` vs `x/`).
                if x.is_array() || y.is_array() || x.is_object() || y.is_object() {
                    out.listings.insert(dir.join("/"));
                }
            }
            // Added or removed.
            _ => {
                out.subtrees.insert(path);
                out.listings.insert(dir.join("/"));
            }
        }
    }
}

fn child(dir: &[String], name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{}/{name}", dir.join("/"))
    }
}

/// The path name of dump key `key` in directory `dir` (path names), if it is certain.
pub fn name_of(dir: &[String], key: &str) -> Option<String> {
    let n = dir.len();
    let user = (n >= 1 && USER_DIRS.contains(&dir[n - 1].as_str()))
        || (n >= 2 && NAMESPACED.contains(&dir[n - 2].as_str()));
    if user {
        return crate::paths::listable(key).then(|| key.to_string());
    }
    // A server-defined key: lowerCamelCase of ASCII letters and digits (`0.1` and `v1beta1`
    // under `legacy-endpoint-access` too). Anything else (dashes, underscores, runs of capitals
    // like `externalIPv6`) could be spelled more than one way on the path side.
    let bytes = key.as_bytes();
    let plain = !key.is_empty()
        && !bytes[0].is_ascii_uppercase()
        && bytes.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'.')
        && !bytes.windows(2).any(|w| w[0].is_ascii_uppercase() && w[1].is_ascii_uppercase())
        && !bytes.ends_with(b".")
        && key != ".";
    if !plain {
        return None;
    }
    let name = dashed(key);
    crate::paths::listable(&name).then_some(name)
}

/// Every path the dump names (directories and values; an array is one path), with whether
/// it could be named for sure. For tests that hold the mapping against a real server.
pub fn paths(dump: &Value) -> Vec<(String, bool)> {
    fn walk(map: &Map<String, Value>, dir: &mut Vec<String>, out: &mut Vec<(String, bool)>) {
        for (key, value) in map {
            let Some(name) = name_of(dir, key) else {
                out.push((child(dir, key), false));
                continue;
            };
            out.push((child(dir, &name), true));
            if let Value::Object(inner) = value {
                dir.push(name);
                walk(inner, dir, out);
                dir.pop();
            }
        }
    }
    let mut out = Vec::new();
    if let Value::Object(map) = dump {
        walk(map, &mut Vec::new(), &mut out);
    }
    out
}
