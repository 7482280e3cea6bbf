//! What a directory shows: the MDS's listing parsed into [`Child`]ren, the entries this
//! filesystem adds to it (the status directory, the `service-accounts` link, `access_token`
//! and `authorization` beside each account's `token`), and what each child is ([`Kind`]).
//!
//! Listings are kept sorted and deduplicated, so a lookup in a directory of thousands costs a
//! binary search, not a scan. Nothing about the tree's shape is hard-coded beyond the files we
//! add: a trailing `/` in the MDS's listing is what makes a directory.

use log::warn;

use crate::error::{Error, Result};
use crate::fs::node::{Child, Kind, Node, StatusFile, STATUS_DIR};
use crate::paths;

/// The root symlink to the most used directory.
pub(crate) const SERVICE_ACCOUNTS_LINK: (&str, &str) =
    ("service-accounts", "instance/service-accounts");
/// The bare-token file we add to every service-account directory.
const ACCESS_TOKEN: &str = "access_token";
/// The header-line file we add beside it, for `curl -H @file`.
const AUTHORIZATION: &str = "authorization";

/// The cache key of a directory's listing.
pub(crate) fn listing_key(dir: &str) -> String {
    if dir.is_empty() {
        String::new()
    } else {
        format!("{dir}/")
    }
}

/// The listing the MDS sent for `dir` (`key` is its cache key), with our additions, sorted.
/// Names no request could reach are skipped with a warning; `None` if it is not UTF-8.
pub(crate) fn parse(key: &str, body: &[u8]) -> Option<Vec<Child>> {
    let text = std::str::from_utf8(body).ok()?;
    let mut children = Vec::new();
    for line in text.lines() {
        let (name, dir) = match line.strip_suffix('/') {
            Some(name) => (name, true),
            None => (line, false),
        };
        if paths::listable(name) {
            children.push(Child { name: name.into(), dir });
        } else {
            warn!("{key}: skipping {name:?}, a name no request can reach");
        }
    }
    add_extras(key.trim_end_matches('/'), &mut children);
    children.sort_by(|a, b| a.name.cmp(&b.name));
    children.dedup_by(|a, b| a.name == b.name);
    Some(children)
}

/// `.metadatafs/`: ours, never fetched.
pub(crate) fn status_listing() -> Vec<Child> {
    StatusFile::ALL.map(|f| Child { name: f.name().into(), dir: false }).to_vec()
}

/// What `name` in directory `dir`, whose listing is `children`, is.
pub(crate) fn find(dir: &str, children: &[Child], name: &str) -> Result<Node> {
    let index =
        children.binary_search_by(|c| c.name.as_str().cmp(name)).map_err(
            |_| match needs_parameters(dir, name) {
                true => Error::InvalidName(format!("{name} needs parameters: {name}?audience=…")),
                false => Error::NotFound,
            },
        )?;
    Ok(Node { path: paths::child_path(dir, name), kind: child_kind(dir, &children[index]) })
}

/// A plain name that only makes sense with parameters: `identity` needs an audience.
pub fn needs_parameters(dir: &str, name: &str) -> bool {
    name == "identity" && paths::service_account(dir).is_some()
}

/// [`needs_parameters`] of a whole path.
pub(crate) fn path_needs_parameters(path: &str) -> bool {
    let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
    needs_parameters(dir, name)
}

/// What `child` of directory `dir` is, and so how its bytes are made.
pub(crate) fn child_kind(dir: &str, child: &Child) -> Kind {
    let account_dir = paths::service_account(dir).is_some();
    match child.name.as_str() {
        name if dir.is_empty() && name == SERVICE_ACCOUNTS_LINK.0 => {
            Kind::Symlink(SERVICE_ACCOUNTS_LINK.1.into())
        }
        name if dir == STATUS_DIR => StatusFile::from_name(name).map_or(Kind::Value, Kind::Status),
        _ if child.dir => Kind::Dir,
        "token" if account_dir => Kind::Token,
        ACCESS_TOKEN if account_dir => Kind::AccessToken,
        AUTHORIZATION if account_dir => Kind::Authorization,
        _ => Kind::Value,
    }
}

/// The entries this filesystem adds to the MDS's listing of `dir`, once, when it is fetched.
fn add_extras(dir: &str, children: &mut Vec<Child>) {
    if dir.is_empty() {
        // Ours wins over a server key of the same name (see `status`).
        if children.iter().any(|c| c.name == STATUS_DIR) {
            warn!("the metadata server lists {STATUS_DIR:?}; the status directory hides it");
            children.retain(|c| c.name != STATUS_DIR);
        }
        children.push(Child { name: STATUS_DIR.into(), dir: true });
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
    if paths::service_account(dir).is_some() && has_token {
        add(ACCESS_TOKEN);
        add(AUTHORIZATION);
    }
}
