//! The write-through (SPEC §2.4): each account's `scopes`, and guest attributes.
//!
//! Invariants:
//! - Nothing changes unless the MDS agreed. Writing `scopes` fetches a token with those scopes
//!   before `write()` returns (each write sends what the file holds so far); a refusal
//!   fails the call (EINVAL: a scope the account lacks; EIO: the MDS unreachable) and the
//!   scopes in effect stay as they were. An empty write restores the instance's scopes.
//! - A guest attribute is PUT when its file is closed (`flush`), so its error surfaces at
//!   `close()`; `rm` DELETEs at once; `mkdir` only makes a namespace this mount shows until a
//!   key is written in it (the MDS has no empty namespaces).
//! - Guest-attribute writes are paced under the MDS's limit (10 a minute, bursts of 3 a second;
//!   above it the MDS may drop attributes being written, reference/metadata-api.md §6): a
//!   `close()` waits its turn rather than exceed it. Reads are cached and not paced.
//! - Only the mount's owner (or root) writes; the kernel enforces the modes too.
//! - Pending bytes may be secrets: `Debug` shows sizes only.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::ffi::OsStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use log::info;

use crate::content::Child;
use crate::content::{value_content, Cached, Content};
use crate::error::{Error, Result};
use crate::fs::{Core, Entry, Handle};
use crate::mds::Mds;
use crate::perms::is_account_scopes;
use crate::query;
use crate::tree::{self, Kind, Node, Version};

const GUEST_ATTRIBUTES: &str = "instance/guest-attributes";
/// Writes are small (scopes, guest attributes); anything bigger is refused with EFBIG.
const MAX_WRITE: u64 = 1 << 20;
/// The MDS's guest-attribute limits, each with a margin so we stay under them.
const BURST: (usize, Duration) = (3, Duration::from_millis(1100));
const SUSTAINED: (usize, Duration) = (10, Duration::from_secs(61));

/// What this mount has written: per-account scopes, namespaces made by `mkdir`, the pacer.
#[derive(Debug, Default)]
pub(crate) struct Writes {
    /// Account dir → scopes written (`None`: the instance's, after an empty write).
    scopes: Mutex<HashMap<String, Option<Vec<String>>>>,
    /// When the scopes were last written: the mtime of `scopes` while they are in effect.
    scopes_set_at: Mutex<Option<SystemTime>>,
    namespaces: Mutex<BTreeSet<String>>,
    pacer: Mutex<Pacer>,
}

impl Writes {
    /// The scopes `account_dir`'s `token` carries: written, else `token_scopes`, else the
    /// instance's (`None`).
    pub(crate) fn scopes_in_effect(
        &self,
        account_dir: &str,
        mount_default: &Option<Vec<String>>,
    ) -> Option<Vec<String>> {
        match self.scopes.lock().unwrap().get(account_dir) {
            Some(written) => written.clone(),
            None => mount_default.clone(),
        }
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
}

/// When guest-attribute requests may go: FIFO, at most `BURST` per its window and
/// `SUSTAINED` per its window.
#[derive(Debug, Default)]
pub(crate) struct Pacer {
    sent: VecDeque<Instant>,
}

impl Pacer {
    /// The time the next request may be sent at (not before `now`), booked for it.
    pub(crate) fn reserve(&mut self, now: Instant) -> Instant {
        let mut at = self.sent.back().map_or(now, |last| (*last).max(now));
        for (n, window) in [BURST, SUSTAINED] {
            if self.sent.len() >= n {
                at = at.max(self.sent[self.sent.len() - n] + window);
            }
        }
        self.sent.push_back(at);
        while self.sent.len() > SUSTAINED.0 {
            self.sent.pop_front();
        }
        at
    }
}

/// A file open for writing.
pub(crate) struct Pending {
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

impl Pending {
    /// What a read through the same handle sees: what was written so far.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// `instance/guest-attributes/NS/KEY` → `(NS, KEY)`.
fn guest_key(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("instance/guest-attributes/")?;
    rest.split_once('/').filter(|(_, key)| !key.contains('/'))
}

/// Letters, digits, `_` and `-` (reference/metadata-api.md §6).
fn check_guest_name(name: &OsStr) -> Result<&str> {
    let name = name.to_str().unwrap_or_default();
    let ok =
        !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || "_-".contains(c));
    ok.then_some(name).ok_or_else(|| {
        Error::InvalidName("guest attribute names use letters, digits, _ and - only".into())
    })
}

impl<M: Mds> Core<M> {
    /// `<account>/scopes` while `scoped_tokens` is on: the scopes in effect, one per line as
    /// the MDS writes them, or the MDS's own when none were set. Never cached by the kernel:
    /// a write changes it.
    pub(crate) async fn scopes_content(&self, path: &str) -> Result<Content> {
        if let Some(now) = self.scopes_content_now(path) {
            return now;
        }
        let content = self.value(path).await?;
        Ok(Content { validity: Duration::ZERO, ..content })
    }

    /// [`Core::scopes_content`] if it can be told without waiting.
    pub(crate) fn scopes_content_now(&self, path: &str) -> Option<Result<Content>> {
        let account_dir = path.trim_end_matches("/scopes");
        match self.writes.scopes_in_effect(account_dir, &self.config.token_scopes) {
            Some(scopes) => {
                let bytes = Bytes::from(scopes.join("\n") + "\n");
                let seen = self.writes.scopes_set_at.lock().unwrap().unwrap_or(self.mounted_at);
                Some(value_content(Cached::Value(bytes, seen), Duration::ZERO, self.mounted_at))
            }
            None => {
                let content = self.value_now(path)?;
                Some(content.map(|c| Content { validity: Duration::ZERO, ..c }))
            }
        }
    }

    /// What writing to `node` means, if this mount allows it.
    fn write_target(&self, node: &Node, uid: u32) -> Result<Target> {
        let target = match guest_key(&node.path) {
            Some(_) if self.config.guest_attributes => Target::Guest { path: node.path.clone() },
            _ if self.config.scoped_tokens && is_account_scopes(&node.path) => {
                let account_dir = node.path.trim_end_matches("/scopes").to_string();
                Target::Scopes { account_dir }
            }
            _ => return Err(Error::ReadOnly),
        };
        let perms = &self.config.permissions;
        if uid != perms.uid && uid != 0 {
            return Err(Error::NotPermitted("only the mount's owner writes".into()));
        }
        Ok(target)
    }

    /// Open `ino` for writing; `truncate` is `O_TRUNC`.
    pub async fn open_write(&self, ino: u64, uid: u32, truncate: bool) -> Result<u64> {
        let node = self.node(ino)?;
        let what = self.write_target(&node, uid)?;
        let bytes = match truncate {
            true => Vec::new(),
            false => {
                self.content(&node).await.map(|c| c.version.bytes.to_vec()).unwrap_or_default()
            }
        };
        let pending = Pending { what, bytes, dirty: truncate, written: false };
        Ok(self.add_handle(Handle::Write(Box::new(pending))))
    }

    pub async fn write(&self, fh: u64, offset: u64, data: &[u8]) -> Result<u32> {
        let apply_now = {
            let mut handles = self.handles.lock().unwrap();
            let Some(Handle::Write(pending)) = handles.get_mut(&fh) else {
                return Err(Error::Stale);
            };
            let end = offset.saturating_add(data.len() as u64);
            if end > MAX_WRITE {
                return Err(Error::TooBig { path: "write".into(), size: end, limit: MAX_WRITE });
            }
            let (start, end) = (offset as usize, end as usize);
            if pending.bytes.len() < end {
                pending.bytes.resize(end, 0);
            }
            pending.bytes[start..end].copy_from_slice(data);
            pending.dirty = true;
            pending.written = true;
            // Scopes go through at once, so `echo`/`printf` see the error: shells ignore the
            // error of `close()`. A scope list is one write for every tool that writes one.
            matches!(pending.what, Target::Scopes { .. })
        };
        if apply_now {
            self.flush(fh).await?;
        }
        Ok(data.len() as u32)
    }

    /// `close()`: send what was written through `fh`, if anything was.
    pub async fn flush(&self, fh: u64) -> Result<()> {
        self.send(fh, false).await
    }

    /// Whether closing `fh` has anything to send (else `close()` is answered at once).
    pub fn flush_sends(&self, fh: u64) -> bool {
        matches!(self.handles.lock().unwrap().get(&fh), Some(Handle::Write(p)) if p.dirty && p.written)
    }

    /// Whether `fh` still holds a change nobody sent (see [`Pending::written`]).
    pub fn has_unsent(&self, fh: u64) -> bool {
        matches!(self.handles.lock().unwrap().get(&fh), Some(Handle::Write(p)) if p.dirty)
    }

    /// The last close of `fh`: send a change still held. Nobody is left to see an error.
    pub async fn send_unsent(&self, fh: u64) {
        if let Err(e) = self.send(fh, true).await {
            log::log!(e.level(), "sending on the last close: {e}");
        }
    }

    async fn send(&self, fh: u64, last: bool) -> Result<()> {
        let (what, bytes) = {
            let mut handles = self.handles.lock().unwrap();
            match handles.get_mut(&fh) {
                Some(Handle::Write(pending)) if pending.dirty && (pending.written || last) => {
                    pending.dirty = false;
                    (pending.what.clone(), pending.bytes.clone())
                }
                _ => return Ok(()),
            }
        };
        match what {
            Target::Scopes { account_dir } => self.set_scopes(&account_dir, &bytes).await,
            Target::Guest { path } => self.put_guest(&path, Bytes::from(bytes)).await,
        }
    }

    /// `truncate`/`O_TRUNC` through the kernel: through `fh` if given, else as a whole
    /// open-truncate-close.
    pub async fn truncate(&self, ino: u64, fh: Option<u64>, size: u64, uid: u32) -> Result<Entry> {
        let (fh, own) = match fh {
            Some(fh) => (fh, false),
            None => (self.open_write(ino, uid, false).await?, true),
        };
        let resized = match self.handles.lock().unwrap().get_mut(&fh) {
            Some(Handle::Write(pending)) if size <= MAX_WRITE => {
                pending.bytes.resize(size as usize, 0);
                pending.dirty = true;
                Ok(())
            }
            Some(Handle::Write(_)) => {
                Err(Error::TooBig { path: "truncate".into(), size, limit: MAX_WRITE })
            }
            _ => Err(Error::ReadOnly),
        };
        let sent = match (resized, own) {
            (Ok(()), true) => self.send(fh, true).await,
            (result, _) => result,
        };
        if own {
            self.release(fh);
        }
        sent?;
        self.getattr(ino)
    }

    /// `setattr` without a size on a writable file (`touch`): times and modes are the
    /// mirror's, so nothing changes, but it is not an error either.
    pub async fn touch(&self, ino: u64, fh: Option<u64>, uid: u32) -> Result<Entry> {
        self.write_target(&self.node(ino)?, uid)?;
        let _ = fh;
        self.getattr(ino)
    }

    async fn set_scopes(&self, account_dir: &str, bytes: &[u8]) -> Result<()> {
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
        self.writes.scopes.lock().unwrap().insert(account_dir.to_string(), scopes);
        *self.writes.scopes_set_at.lock().unwrap() = Some(SystemTime::now());
        Ok(())
    }

    /// One guest-attribute request, when its turn comes.
    async fn paced<T>(&self, request: impl std::future::Future<Output = Result<T>>) -> Result<T> {
        let now = self.clock.now();
        let at = self.writes.pacer.lock().unwrap().reserve(now);
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
            self.writes.namespaces.lock().unwrap().remove(ns);
            self.invalidate(&format!("{GUEST_ATTRIBUTES}/{ns}/"));
        }
        self.invalidate(&format!("{GUEST_ATTRIBUTES}/"));
        self.invalidate(path);
    }

    /// The guest-attribute directory `parent` (`instance/guest-attributes` or a namespace),
    /// if this mount writes there; EROFS if not.
    fn guest_dir(&self, parent: u64, depth: usize) -> Result<Node> {
        let dir = self.node(parent)?;
        let at = match depth {
            0 => dir.path == GUEST_ATTRIBUTES,
            _ => dir
                .path
                .strip_prefix("instance/guest-attributes/")
                .is_some_and(|ns| !ns.contains('/')),
        };
        if !at || !self.config.guest_attributes || dir.kind != Kind::Dir {
            return Err(Error::ReadOnly);
        }
        Ok(dir)
    }

    /// `mkdir instance/guest-attributes/NS`.
    pub async fn mkdir(&self, parent: u64, name: &OsStr, uid: u32) -> Result<Entry> {
        let dir = self.guest_dir(parent, 0)?;
        let name = check_guest_name(name)?;
        if uid != self.config.permissions.uid && uid != 0 {
            return Err(Error::NotPermitted("only the mount's owner writes".into()));
        }
        self.writes.namespaces.lock().unwrap().insert(name.to_string());
        self.invalidate(&format!("{GUEST_ATTRIBUTES}/"));
        let node = Node { path: tree::child_path(&dir.path, name), kind: Kind::Dir };
        let ino = self.inodes.lock().unwrap().lookup(node.clone(), None);
        let (attr, _) = self.attr(ino, &node, None);
        Ok(Entry { attr, ttl: Duration::ZERO, entry_ttl: Duration::ZERO })
    }

    /// `create NS/KEY`: a new guest attribute, PUT when closed.
    pub async fn create(&self, parent: u64, name: &OsStr, uid: u32) -> Result<(Entry, u64)> {
        let dir = self.guest_dir(parent, 1)?;
        let name = check_guest_name(name)?;
        let node = Node { path: tree::child_path(&dir.path, name), kind: Kind::Value };
        let what = self.write_target(&node, uid)?;
        // Empty until it is sent at close; the next lookup after that sees the MDS's value.
        let version = Arc::new(Version {
            bytes: Bytes::new(),
            seen: SystemTime::now(),
            tag: 0,
            readable: true,
            rendered: false,
        });
        let ino = self.inodes.lock().unwrap().lookup(node.clone(), Some(version.clone()));
        let (attr, _) = self.attr(ino, &node, Some(&version));
        let pending = Pending { what, bytes: Vec::new(), dirty: true, written: false };
        let fh = self.add_handle(Handle::Write(Box::new(pending)));
        Ok((Entry { attr, ttl: Duration::ZERO, entry_ttl: Duration::ZERO }, fh))
    }

    /// `rm NS/KEY`: DELETE, in its turn.
    pub async fn unlink(&self, parent: u64, name: &OsStr, uid: u32) -> Result<()> {
        let dir = self.guest_dir(parent, 1)?;
        let name = check_guest_name(name)?;
        if uid != self.config.permissions.uid && uid != 0 {
            return Err(Error::NotPermitted("only the mount's owner writes".into()));
        }
        let path = tree::child_path(&dir.path, name);
        self.paced(self.mds.delete(&path)).await?;
        self.guest_changed(&path);
        Ok(())
    }

    /// `rmdir NS`: only a namespace without keys, which the MDS no longer has anyway.
    pub async fn rmdir(&self, parent: u64, name: &OsStr) -> Result<()> {
        self.guest_dir(parent, 0)?;
        let name = check_guest_name(name)?;
        let path = format!("{GUEST_ATTRIBUTES}/{name}");
        match self.listing(&path).await {
            Ok((children, _)) if !children.is_empty() => return Err(Error::NotEmpty),
            Ok(_) | Err(Error::NotFound) => {}
            Err(e) => return Err(e),
        }
        if !self.writes.namespaces.lock().unwrap().remove(name) {
            return Err(Error::NotFound);
        }
        self.invalidate(&format!("{GUEST_ATTRIBUTES}/"));
        Ok(())
    }
}

#[cfg(test)]
#[path = "write_tests.rs"]
mod tests;
