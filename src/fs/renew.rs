//! `fsync` of an open token file: ask the MDS for that token again now (SPEC §4, a token the
//! server replaced can be renewed by a reader without a restart).
//!
//! Why `fsync`: it fits files (bring this file in step with where it is stored), any reader can
//! do it on a read-only mount (`sync FILE`, `os.fsync(fd)`; a write would get EROFS from the
//! kernel), and it needs an open descriptor, so only a caller the file's mode let open it (the
//! kernel checked at `open`) can ask. The token store paces it (token/mod.rs: at most one
//! request per token per `REPOLL`, concurrent callers sharing it), so no loop of `fsync`s is a
//! request pump. The next `open()` of the file serves what came back: a token that replaced
//! another makes the kernel forget the names showing the old one (`Tokens::watch_installs`,
//! service/daemon.rs), so the next lookup gets the new one.
//!
//! On any other file `fsync` succeeds and sends nothing; on an identity token too (the MDS
//! mints a new one at every request, and the store never serves one near its end).

use crate::error::Result;
use crate::fs::node::{Kind, Node, Target};
use crate::fs::query::scoped_token_path;
use crate::fs::scopes::Scopes;
use crate::token::Tokens;
use crate::upstream::mds::Mds;

/// The MDS token path `node` shows, if it is an access token file.
fn token_path(node: &Node, scopes: &Scopes) -> Option<String> {
    match &node.kind {
        Kind::Token | Kind::AccessToken | Kind::Authorization => {
            let account_dir = node.path.rsplit_once('/').map_or("", |(dir, _)| dir);
            Some(scopes.token_path(account_dir))
        }
        Kind::Query(target) => match &**target {
            Target::Scoped { account_dir, scopes, .. } => {
                Some(scoped_token_path(account_dir, scopes))
            }
            _ => None,
        },
        _ => None,
    }
}

/// Renew `node`'s token if it shows one; else nothing.
pub(crate) async fn renew<M: Mds>(tokens: &Tokens<M>, scopes: &Scopes, node: &Node) -> Result<()> {
    match token_path(node, scopes) {
        Some(path) => tokens.renew(&path).await,
        None => Ok(()),
    }
}
