//! The metadata tree and its renderings.
//!
//! Invariants:
//! - Object children are keyed by their *path name* (the dashed name the MDS serves, e.g.
//!   `numeric-project-id`) and remember their *JSON key* (camelCase for server-defined keys, verbatim
//!   for custom keys), so a fixture taken from a real VM renders back exactly (metadata-api.md §3.3).
//! - Arrays of objects are directories `0/`, `1/`, … (§3.1); value lists (`tags`, `scopes`, …) are
//!   leaves rendered one item per line as text and as a JSON array as JSON (§3.1, §3.4).
//! - Numbers keep their exact digits (`Leaf::Raw`), so a 64-bit `instance/id` survives (§3.3).
//! - ETags are derived from the content only, so restoring a value restores its ETag (§4). A leaf has
//!   one ETag for all its renderings; a directory's listing and recursive renderings differ (§3.4).

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};

/// A value at a leaf.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Leaf {
    /// A string value (text: the bytes as they are; JSON: a string).
    Str(String),
    /// A JSON number or boolean literal, kept verbatim (text: the literal; JSON: the literal).
    Raw(String),
    /// A value list (text: one item per line; JSON: an array of strings).
    List(Vec<String>),
}

/// A named child of an object directory.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Child {
    pub(crate) json_key: String,
    pub(crate) node: Node,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Node {
    Leaf(Leaf),
    Object(BTreeMap<String, Child>),
    Array(Vec<Node>),
}

/// Why a control-endpoint write could not be applied.
#[derive(Debug, PartialEq, thiserror::Error)]
pub(crate) enum SetError {
    #[error("{0} is a value, not a directory")]
    LeafInPath(String),
    #[error("{0} is a directory, not a value")]
    DirAtLeaf(String),
    #[error("{0}: index out of range")]
    BadIndex(String),
    #[error("empty path")]
    Empty,
}

/// `numericProjectId` → `numeric-project-id`: the same rule the watcher maps dumps with.
pub(crate) use crate::paths::dashed;

/// `numeric-project-id` → `numericProjectId`.
pub(crate) fn camel(dashed: &str) -> String {
    let mut out = String::with_capacity(dashed.len());
    let mut upper = false;
    for c in dashed.chars() {
        if c == '-' {
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// Whether the children of the directory at `parent` (path names) are user-defined and keep their
/// spelling: attribute keys, service-account emails, guest-attribute namespaces and keys (§3.3).
pub(crate) fn verbatim_children<S: AsRef<str>>(parent: &[S]) -> bool {
    const USER_DIRS: [&str; 4] =
        ["attributes", "service-accounts", "guest-attributes", "partner-attributes"];
    let n = parent.len();
    let is_user = |i: usize| USER_DIRS.contains(&parent[i].as_ref());
    (n >= 1 && is_user(n - 1))
        || (n >= 2 && matches!(parent[n - 2].as_ref(), "guest-attributes" | "partner-attributes"))
}

impl Node {
    pub(crate) fn empty_dir() -> Node {
        Node::Object(BTreeMap::new())
    }

    pub(crate) fn is_dir(&self) -> bool {
        !matches!(self, Node::Leaf(_))
    }

    pub(crate) fn child(&self, name: &str) -> Option<&Node> {
        match self {
            Node::Leaf(_) => None,
            Node::Object(map) => map.get(name).map(|c| &c.node),
            Node::Array(items) => index(name).and_then(|i| items.get(i)),
        }
    }

    fn child_mut(&mut self, name: &str) -> Option<&mut Node> {
        match self {
            Node::Leaf(_) => None,
            Node::Object(map) => map.get_mut(name).map(|c| &mut c.node),
            Node::Array(items) => index(name).and_then(|i| items.get_mut(i)),
        }
    }

    pub(crate) fn get<S: AsRef<str>>(&self, segs: &[S]) -> Option<&Node> {
        segs.iter().try_fold(self, |node, s| node.child(s.as_ref()))
    }

    /// The string value of a leaf (the text rendering), if `segs` names a leaf.
    pub(crate) fn text_at<S: AsRef<str>>(&self, segs: &[S]) -> Option<String> {
        match self.get(segs)? {
            Node::Leaf(leaf) => Some(leaf.text()),
            _ => None,
        }
    }

    /// Sets the leaf at `segs`, creating parent directories. A value replacing a number stays a
    /// number if it still parses as one; a value replacing a list is split into lines.
    pub(crate) fn set<S: AsRef<str>>(&mut self, segs: &[S], value: &str) -> Result<(), SetError> {
        let (last, parents) = segs.split_last().ok_or(SetError::Empty)?;
        let mut node = self;
        for (i, seg) in parents.iter().enumerate() {
            let here = || join(&segs[..=i]);
            node = match node {
                Node::Leaf(_) => return Err(SetError::LeafInPath(join(&segs[..i]))),
                Node::Object(map) => {
                    let key = json_key(&segs[..i], seg.as_ref());
                    &mut map
                        .entry(seg.as_ref().to_string())
                        .or_insert_with(|| Child { json_key: key, node: Node::empty_dir() })
                        .node
                }
                Node::Array(items) => array_slot(items, seg.as_ref(), here)?,
            };
        }
        let fresh = |old: Option<&Node>| -> Result<Node, SetError> {
            Ok(Node::Leaf(match old {
                Some(Node::Leaf(Leaf::Raw(_))) if is_json_literal(value) => {
                    Leaf::Raw(value.to_string())
                }
                Some(Node::Leaf(Leaf::List(_))) => {
                    Leaf::List(value.lines().map(str::to_string).collect())
                }
                Some(n) if n.is_dir() => return Err(SetError::DirAtLeaf(join(segs))),
                _ => Leaf::Str(value.to_string()),
            }))
        };
        match node {
            Node::Leaf(_) => Err(SetError::LeafInPath(join(parents))),
            Node::Object(map) => {
                let key = json_key(parents, last.as_ref());
                let new = fresh(map.get(last.as_ref()).map(|c| &c.node))?;
                map.entry(last.as_ref().to_string())
                    .or_insert_with(|| Child { json_key: key, node: Node::empty_dir() })
                    .node = new;
                Ok(())
            }
            Node::Array(items) => {
                let slot = array_slot(items, last.as_ref(), || join(segs))?;
                let new = fresh(Some(&*slot).filter(|n| !is_empty_dir(n)))?;
                *slot = new;
                Ok(())
            }
        }
    }

    /// Removes the leaf or subtree at `segs`; false if there was none. Later array items shift down.
    pub(crate) fn remove<S: AsRef<str>>(&mut self, segs: &[S]) -> bool {
        let Some((last, parents)) = segs.split_last() else {
            return false;
        };
        let parent = parents.iter().try_fold(self, |n, s| n.child_mut(s.as_ref()));
        match parent {
            Some(Node::Object(map)) => map.remove(last.as_ref()).is_some(),
            Some(Node::Array(items)) => match index(last.as_ref()) {
                Some(i) if i < items.len() => {
                    items.remove(i);
                    true
                }
                _ => false,
            },
            _ => false,
        }
    }

    /// The directory listing: one entry per line, `/` after directories, alphabetical (§3.1).
    pub(crate) fn listing(&self, extra: &[&str]) -> String {
        let mut names: Vec<String> = match self {
            Node::Leaf(_) => Vec::new(),
            Node::Object(map) => map.iter().map(|(k, c)| entry_name(k, &c.node)).collect(),
            Node::Array(items) => {
                items.iter().enumerate().map(|(i, n)| entry_name(&i.to_string(), n)).collect()
            }
        };
        names.extend(extra.iter().map(|s| s.to_string()));
        if matches!(self, Node::Object(_)) {
            names.sort();
        }
        names.iter().map(|n| format!("{n}\n")).collect()
    }

    /// Compact JSON, as `?recursive=true` renders it. `hide` (compared by address) renders as `{}`.
    pub(crate) fn json(&self, hide: Option<&Node>, out: &mut String) {
        if hide.is_some_and(|h| std::ptr::eq(h, self)) {
            out.push_str("{}");
            return;
        }
        match self {
            Node::Leaf(leaf) => out.push_str(&leaf.json()),
            Node::Object(map) => {
                let mut children: Vec<&Child> = map.values().collect();
                children.sort_by(|a, b| a.json_key.cmp(&b.json_key));
                out.push('{');
                for (i, c) in children.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&json_string(&c.json_key));
                    out.push(':');
                    c.node.json(hide, out);
                }
                out.push('}');
            }
            Node::Array(items) => {
                out.push('[');
                for (i, n) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    n.json(hide, out);
                }
                out.push(']');
            }
        }
    }

    /// `alt=text` for a recursive request: `path value` per leaf, a value list once per item,
    /// multi-line values raw, paths dashed and relative (§3.4).
    pub(crate) fn text_lines(&self, prefix: &str, hide: Option<&Node>, out: &mut String) {
        if hide.is_some_and(|h| std::ptr::eq(h, self)) {
            return;
        }
        let sub = |name: &str| {
            if prefix.is_empty() {
                name.to_string()
            } else {
                format!("{prefix}/{name}")
            }
        };
        match self {
            Node::Leaf(Leaf::List(items)) => {
                for item in items {
                    out.push_str(&format!("{prefix} {item}\n"));
                }
            }
            Node::Leaf(leaf) => out.push_str(&format!("{prefix} {}\n", leaf.text())),
            Node::Object(map) => {
                for (name, c) in map {
                    c.node.text_lines(&sub(name), hide, out);
                }
            }
            Node::Array(items) => {
                for (i, n) in items.iter().enumerate() {
                    n.text_lines(&sub(&i.to_string()), hide, out);
                }
            }
        }
    }
}

impl Leaf {
    pub(crate) fn text(&self) -> String {
        match self {
            Leaf::Str(s) | Leaf::Raw(s) => s.clone(),
            Leaf::List(items) => items.iter().map(|i| format!("{i}\n")).collect(),
        }
    }

    pub(crate) fn json(&self) -> String {
        match self {
            Leaf::Str(s) => json_string(s),
            Leaf::Raw(s) => s.clone(),
            Leaf::List(items) => {
                let parts: Vec<String> = items.iter().map(|i| json_string(i)).collect();
                format!("[{}]", parts.join(","))
            }
        }
    }
}

/// 16 lowercase hex chars from content; `kind` separates listing and recursive ETags of a dir.
pub(crate) fn etag(kind: &str, content: &str) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    kind.hash(&mut h);
    content.hash(&mut h);
    format!("{:016x}", h.finish())
}

pub(crate) fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| String::from("\"\""))
}

fn is_json_literal(s: &str) -> bool {
    matches!(
        serde_json::from_str::<serde_json::Value>(s),
        Ok(serde_json::Value::Number(_) | serde_json::Value::Bool(_))
    )
}

/// Array indices are canonical decimal (`disks/01` and `disks/x` are 404, §3.5).
fn index(name: &str) -> Option<usize> {
    let i: usize = name.parse().ok()?;
    (i.to_string() == name).then_some(i)
}

fn entry_name(name: &str, node: &Node) -> String {
    if node.is_dir() {
        format!("{name}/")
    } else {
        name.to_string()
    }
}

fn is_empty_dir(node: &Node) -> bool {
    matches!(node, Node::Object(m) if m.is_empty())
}

fn json_key<S: AsRef<str>>(parent: &[S], name: &str) -> String {
    if verbatim_children(parent) {
        name.to_string()
    } else {
        camel(name)
    }
}

/// The item `seg` of an array, appending an empty directory when `seg` is one past the end.
fn array_slot<'a>(
    items: &'a mut Vec<Node>,
    seg: &str,
    here: impl Fn() -> String,
) -> Result<&'a mut Node, SetError> {
    match index(seg) {
        Some(i) if i < items.len() => Ok(&mut items[i]),
        Some(i) if i == items.len() => {
            items.push(Node::empty_dir());
            Ok(&mut items[i])
        }
        _ => Err(SetError::BadIndex(here())),
    }
}

fn join<S: AsRef<str>>(segs: &[S]) -> String {
    segs.iter().map(|s| s.as_ref()).collect::<Vec<_>>().join("/")
}
