//! The write-through (SPEC §2.4): each account's `scopes`, and guest attributes.
//!
//! [`Writes`] owns the files open for writing, the namespaces `mkdir` made and the pacer; it
//! is handed the client, the token store, the contents (to drop what a write changed) and the
//! [`Scopes`] it changes. It knows nothing of inodes: the core turns what it returns into
//! entries.
//!
//! Invariants:
//! - Nothing changes unless the MDS agreed. Writing `scopes` fetches a token with those scopes
//!   before `write()` returns when what the file holds so far ends in a newline (`echo`, one
//!   whole list: the shell sees a refusal), else at `close()`, so a list split across writes
//!   never sends half a scope name. A refusal fails the call (EINVAL: a scope the account
//!   lacks; EIO: the MDS unreachable) and the scopes in effect stay as they were. A list over
//!   [`MAX_SCOPES`] is EFBIG at once, never sent. An empty write restores the instance's.
//! - A guest attribute is PUT when its file is closed (`flush`), so its error surfaces at
//!   `close()`; `rm` DELETEs at once; `mkdir` only makes a namespace this mount shows until a
//!   key is written in it (the MDS has no empty namespaces), and one whose last key `rm`
//!   removed stays shown until `rmdir`, so `rm -r` works.
//! - Guest-attribute writes are paced (guest.rs): a `close()` waits its turn rather than
//!   exceed the MDS's limit. Reads are cached and not paced.
//! - Only the mount's owner (or root) writes; the kernel enforces the modes too.
//! - Pending bytes may be secrets: `Debug` shows sizes only.

use std::collections::{BTreeSet, HashMap};
use std::ffi::OsStr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use log::info;

use crate::clock::SharedClock;
use crate::error::{Error, Result};
use crate::fs::contents::Contents;
use crate::fs::guest::{check_guest_name, guest_key, is_guest_dir, Pacer, GUEST_ATTRIBUTES};
use crate::fs::node::{Child, Kind, Node};
use crate::fs::perms::is_account_scopes;
use crate::fs::query;
use crate::fs::scopes::Scopes;
use crate::paths;
use crate::token::Tokens;
use crate::upstream::mds::Mds;

/// Writes are small (scopes, guest attributes); anything bigger is refused with EFBIG.
const MAX_WRITE: u64 = 1 << 20;
/// A scope list longer than this is no list of scopes (about a hundred full scope URLs).
pub(crate) const MAX_SCOPES: u64 = 8 << 10;

/// What a mount lets its owner write.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Allowed {
    pub(crate) owner: u32,
    pub(crate) scoped_tokens: bool,
    pub(crate) guest_attributes: bool,
}

#[derive(Debug)]
pub(crate) struct Writes<M> {
    mds: Arc<M>,
    tokens: Arc<Tokens<M>>,
    contents: Arc<Contents<M>>,
    scopes: Arc<Scopes>,
    clock: SharedClock,
    allowed: Allowed,
    open: Mutex<HashMap<u64, Pending>>,
    namespaces: Mutex<BTreeSet<String>>,
    pacer: Mutex<Pacer>,
}

/// A file open for writing.
struct Pending {
    what: Target,
    bytes: Vec<u8>,
    /// Written or truncated since it was last sent.
    dirty: bool,
    /// Bytes were written through it: `close()` sends them. A handle that was only
    /// truncated (`: > file`) is sent when its last descriptor closes (release): shells
    /// close a duplicate of the descriptor before writing, and that `flush` must send nothing.
    written: bool,
}

#[derive(Debug, Clone)]
enum Target {
    Scopes { account_dir: String },
    Guest { path: String },
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (len, dirty) = (self.bytes.len(), self.dirty);
        write!(f, "{:?} ({len} bytes, dirty: {dirty}, written: {})", self.what, self.written)
    }
}

impl<M: Mds> Writes<M> {
    pub(crate) fn new(
        mds: Arc<M>,
        tokens: Arc<Tokens<M>>,
        contents: Arc<Contents<M>>,
        scopes: Arc<Scopes>,
        clock: SharedClock,
        allowed: Allowed,
    ) -> Self {
        let (open, namespaces, pacer) = Default::default();
        Writes { mds, tokens, contents, scopes, clock, allowed, open, namespaces, pacer }
    }

    /// `dir`'s listing with the namespaces made by `mkdir` that the MDS does not list yet.
    pub(crate) fn with_new_namespaces(
        &self,
        dir: &str,
        listed: Arc<Vec<Child>>,
    ) -> Arc<Vec<Child>> {
        let namespaces = self.namespaces.lock().unwrap();
        if dir != GUEST_ATTRIBUTES || namespaces.is_empty() {
            return listed;
        }
        let mut children = (*listed).clone();
        for name in namespaces.iter() {
            if !children.iter().any(|c| c.name == *name) {
                children.push(Child { name: name.clone(), dir: true });
            }
        }
        children.sort_by(|a, b| a.name.cmp(&b.name));
        Arc::new(children)
    }

    fn check_owner(&self, uid: u32) -> Result<()> {
        match uid == self.allowed.owner || uid == 0 {
            true => Ok(()),
            false => Err(Error::NotPermitted("only the mount's owner writes".into())),
        }
    }

    /// What writing to `node` means, if this mount lets `uid` do it.
    fn target(&self, node: &Node, uid: u32) -> Result<Target> {
        let target = match guest_key(&node.path) {
            Some(_) if self.allowed.guest_attributes => Target::Guest { path: node.path.clone() },
            _ if self.allowed.scoped_tokens && is_account_scopes(&node.path) => {
                let account_dir = node.path.trim_end_matches("/scopes").to_string();
                Target::Scopes { account_dir }
            }
            _ => return Err(Error::ReadOnly),
        };
        self.check_owner(uid)?;
        Ok(target)
    }

    /// `setattr` without a size: on a writable file `touch` changes nothing and is no error;
    /// `chmod`/`chown` (`owner_or_mode`) are EPERM, modes and owners being the mirror's.
    pub(crate) fn check(&self, node: &Node, uid: u32, owner_or_mode: bool) -> Result<()> {
        self.target(node, uid)?;
        match owner_or_mode {
            true => Err(Error::Immutable("modes and owners are the mirror's".into())),
            false => Ok(()),
        }
    }

    /// `fsync` of `node`: renew the token it shows, if any (renew.rs).
    pub(crate) async fn renew(&self, node: &Node) -> Result<()> {
        crate::fs::renew::renew(&self.tokens, &self.scopes, node).await
    }

    /// Open `node` for writing as handle `fh`; `truncate` is `O_TRUNC`.
    pub(crate) async fn open(&self, fh: u64, node: &Node, uid: u32, truncate: bool) -> Result<()> {
        let pending = self.pending(node, uid, truncate).await?;
        self.open.lock().unwrap().insert(fh, pending);
        Ok(())
    }

    async fn pending(&self, node: &Node, uid: u32, truncate: bool) -> Result<Pending> {
        let what = self.target(node, uid)?;
        let current = match (truncate, &what) {
            (true, _) => None,
            (false, Target::Scopes { .. }) => {
                self.scopes.content(&self.contents, &node.path).await.ok()
            }
            (false, Target::Guest { path }) => self.contents.value(path).await.ok(),
        };
        let bytes = current.map(|c| c.version.bytes.to_vec()).unwrap_or_default();
        Ok(Pending { what, bytes, dirty: truncate, written: false })
    }

    /// What a read through write handle `fh` sees: what was written so far.
    pub(crate) fn read(&self, fh: u64, offset: u64, size: u32) -> Option<Bytes> {
        let open = self.open.lock().unwrap();
        let bytes = &open.get(&fh)?.bytes;
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(bytes.len());
        let end = start.saturating_add(size as usize).min(bytes.len());
        Some(Bytes::copy_from_slice(&bytes[start..end]))
    }

    pub(crate) async fn write(&self, fh: u64, offset: u64, data: &[u8]) -> Result<u32> {
        let apply_now = {
            let mut open = self.open.lock().unwrap();
            let pending = open.get_mut(&fh).ok_or(Error::Stale)?;
            let end = offset.saturating_add(data.len() as u64);
            let scopes = matches!(pending.what, Target::Scopes { .. });
            let limit = if scopes { MAX_SCOPES } else { MAX_WRITE };
            if end > limit {
                return Err(Error::TooBig { path: "write".into(), size: end, limit });
            }
            let (start, end) = (offset as usize, end as usize);
            if pending.bytes.len() < end {
                pending.bytes.resize(end, 0);
            }
            pending.bytes[start..end].copy_from_slice(data);
            pending.dirty = true;
            pending.written = true;
            // A whole list goes through at once, so `echo` sees the error (shells ignore the
            // error of `close()`); a part of one waits for the rest, or for `close()`.
            scopes && pending.bytes.ends_with(b"\n")
        };
        if apply_now {
            self.flush(fh).await?;
        }
        Ok(data.len() as u32)
    }

    /// `close()`: send what was written through `fh`, if anything was.
    pub(crate) async fn flush(&self, fh: u64) -> Result<()> {
        self.send(fh, false).await
    }

    /// Whether closing `fh` has anything to send (else `close()` is answered at once).
    pub(crate) fn flush_sends(&self, fh: u64) -> bool {
        matches!(self.open.lock().unwrap().get(&fh), Some(p) if p.dirty && p.written)
    }

    /// Whether `fh` still holds a change nobody sent (see [`Pending::written`]).
    pub(crate) fn has_unsent(&self, fh: u64) -> bool {
        matches!(self.open.lock().unwrap().get(&fh), Some(p) if p.dirty)
    }

    /// The last close of `fh`: send a change still held. Nobody is left to see an error.
    pub(crate) async fn send_unsent(&self, fh: u64) {
        if let Err(e) = self.send(fh, true).await {
            log::log!(e.level(), "sending on the last close: {e}");
        }
    }

    pub(crate) fn release(&self, fh: u64) {
        self.open.lock().unwrap().remove(&fh);
    }

    async fn send(&self, fh: u64, last: bool) -> Result<()> {
        let (what, bytes) = {
            let mut open = self.open.lock().unwrap();
            match open.get_mut(&fh) {
                Some(pending) if pending.dirty && (pending.written || last) => {
                    pending.dirty = false;
                    (pending.what.clone(), pending.bytes.clone())
                }
                _ => return Ok(()),
            }
        };
        self.send_bytes(what, bytes).await
    }

    async fn send_bytes(&self, what: Target, bytes: Vec<u8>) -> Result<()> {
        match what {
            Target::Scopes { account_dir } => self.set_scopes(&account_dir, &bytes).await,
            Target::Guest { path } => self.put_guest(&path, Bytes::from(bytes)).await,
        }
    }

    /// `truncate`/`O_TRUNC` through the kernel: through `fh` if given, else as a whole
    /// open-truncate-close.
    pub(crate) async fn truncate(
        &self,
        node: &Node,
        fh: Option<u64>,
        size: u64,
        uid: u32,
    ) -> Result<()> {
        let too_big = || Error::TooBig { path: "truncate".into(), size, limit: MAX_WRITE };
        let Some(fh) = fh else {
            let mut pending = self.pending(node, uid, false).await?;
            if size > MAX_WRITE {
                return Err(too_big());
            }
            pending.bytes.resize(size as usize, 0);
            return self.send_bytes(pending.what, pending.bytes).await;
        };
        let mut open = self.open.lock().unwrap();
        let pending = open.get_mut(&fh).ok_or(Error::ReadOnly)?;
        if size > MAX_WRITE {
            return Err(too_big());
        }
        pending.bytes.resize(size as usize, 0);
        pending.dirty = true;
        Ok(())
    }

    /// Set the scopes of `account_dir`'s `token` from what was written.
    pub(crate) async fn set_scopes(&self, account_dir: &str, bytes: &[u8]) -> Result<()> {
        let text = std::str::from_utf8(bytes)
            .map_err(|_| Error::InvalidName("scopes are not UTF-8".into()))?;
        let items: Vec<&str> =
            text.split(|c: char| c == ',' || c.is_whitespace()).filter(|s| !s.is_empty()).collect();
        let scopes = if items.is_empty() {
            None
        } else {
            let scopes = query::canonical_scopes(items)?;
            // Through before it counts: the MDS narrows the token or refuses (EINVAL/EIO).
            self.tokens.get(&query::scoped_token_path(account_dir, &scopes)).await?;
            Some(scopes)
        };
        info!(
            "{account_dir}: token scopes now {}",
            scopes.as_ref().map_or("the instance's".into(), |s| s.join(","))
        );
        self.scopes.set(account_dir, scopes);
        self.tokens.in_effect(&self.scopes.token_path(account_dir));
        Ok(())
    }

    /// One guest-attribute request, when its turn comes.
    async fn paced<T>(&self, request: impl std::future::Future<Output = Result<T>>) -> Result<T> {
        let now = self.clock.now();
        let at = self.pacer.lock().unwrap().reserve(now);
        tokio::time::sleep(at.saturating_duration_since(now)).await;
        request.await
    }

    async fn put_guest(&self, path: &str, value: Bytes) -> Result<()> {
        self.paced(self.mds.put(path, value)).await?;
        self.guest_changed(path);
        Ok(())
    }

    /// Drop what the cache knows about the key at `path` and its namespace.
    fn guest_changed(&self, path: &str) {
        if let Some((ns, _)) = guest_key(path) {
            self.namespaces.lock().unwrap().remove(ns);
            self.contents.invalidate(&format!("{GUEST_ATTRIBUTES}/{ns}/"));
        }
        self.contents.invalidate(&format!("{GUEST_ATTRIBUTES}/"));
        self.contents.invalidate(path);
    }

    /// Checks `dir` is the guest-attribute directory (`depth` 0) or a namespace (1) and this
    /// mount writes there (EROFS if not), and that `name` is one the MDS takes.
    fn guest_name<'n>(&self, dir: &Node, depth: usize, name: &'n OsStr) -> Result<&'n str> {
        if !is_guest_dir(&dir.path, depth)
            || !self.allowed.guest_attributes
            || dir.kind != Kind::Dir
        {
            return Err(Error::ReadOnly);
        }
        check_guest_name(name)
    }

    /// `mkdir instance/guest-attributes/NS`: the new directory's node.
    pub(crate) fn mkdir(&self, dir: &Node, name: &OsStr, uid: u32) -> Result<Node> {
        let name = self.guest_name(dir, 0, name)?;
        self.check_owner(uid)?;
        self.namespaces.lock().unwrap().insert(name.to_string());
        self.contents.invalidate(&format!("{GUEST_ATTRIBUTES}/"));
        Ok(Node { path: paths::child_path(&dir.path, name), kind: Kind::Dir })
    }

    /// `create NS/KEY` as handle `fh`: a new guest attribute, PUT when closed.
    pub(crate) fn create(&self, fh: u64, dir: &Node, name: &OsStr, uid: u32) -> Result<Node> {
        let name = self.guest_name(dir, 1, name)?;
        let node = Node { path: paths::child_path(&dir.path, name), kind: Kind::Value };
        let what = self.target(&node, uid)?;
        let pending = Pending { what, bytes: Vec::new(), dirty: true, written: false };
        self.open.lock().unwrap().insert(fh, pending);
        Ok(node)
    }

    /// `rm NS/KEY`: DELETE, in its turn.
    pub(crate) async fn unlink(&self, dir: &Node, name: &OsStr, uid: u32) -> Result<()> {
        let name = self.guest_name(dir, 1, name)?;
        self.check_owner(uid)?;
        let path = paths::child_path(&dir.path, name);
        self.paced(self.mds.delete(&path)).await?;
        self.guest_changed(&path);
        // The MDS drops a namespace with its last key; here it stays until `rmdir` (`rm -r`).
        let ns = dir.path.rsplit('/').next().unwrap_or_default();
        self.namespaces.lock().unwrap().insert(ns.to_string());
        Ok(())
    }

    /// `rmdir NS`: only a namespace without keys, which the MDS no longer has anyway; one the
    /// kernel still knew but the MDS no longer lists (its last key removed) is removed.
    pub(crate) async fn rmdir(&self, dir: &Node, name: &OsStr) -> Result<()> {
        let name = self.guest_name(dir, 0, name)?;
        let path = format!("{GUEST_ATTRIBUTES}/{name}");
        match self.contents.listing(&path).await {
            Ok((children, _)) if !children.is_empty() => return Err(Error::NotEmpty),
            // Gone with its last key (`rm -r`): the MDS no longer lists it, so it is removed.
            Ok(_) | Err(Error::NotFound) => {}
            Err(e) => return Err(e),
        }
        self.namespaces.lock().unwrap().remove(name);
        self.contents.invalidate(&format!("{GUEST_ATTRIBUTES}/"));
        Ok(())
    }
}
