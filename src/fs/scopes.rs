//! The scopes each account's `token` carries on this mount (SPEC §2.4): what a write to
//! `<account>/scopes` set, else `token_scopes`, else the instance's. The write-through
//! (write.rs) changes them; the token files read them. Both are handed the same [`Scopes`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use crate::error::Result;
use crate::fs::contents::Contents;
use crate::fs::fetch::{value_content, Cached};
use crate::fs::node::Content;
use crate::fs::query::scoped_token_path;
use crate::upstream::mds::Mds;

#[derive(Debug, Default)]
pub(crate) struct Scopes {
    /// `token_scopes`, canonical: every account's scopes until one is written.
    mount_default: Option<Vec<String>>,
    /// Account dir → scopes written (`None`: the instance's, after an empty write).
    written: Mutex<HashMap<String, Option<Vec<String>>>>,
    /// When the scopes were last written: the mtime of `scopes` while they are in effect.
    set_at: Mutex<Option<SystemTime>>,
}

impl Scopes {
    pub(crate) fn new(mount_default: Option<Vec<String>>) -> Self {
        Scopes { mount_default, ..Scopes::default() }
    }

    /// The scopes `account_dir`'s `token` carries: written, else `token_scopes`, else the
    /// instance's (`None`).
    pub(crate) fn in_effect(&self, account_dir: &str) -> Option<Vec<String>> {
        match self.written.lock().unwrap().get(account_dir) {
            Some(written) => written.clone(),
            None => self.mount_default.clone(),
        }
    }

    /// `<account>/scopes` while `scoped_tokens` is on, if it can be told without waiting: the
    /// scopes in effect, one per line as the MDS writes them, or the MDS's own when none were
    /// set. Never cached by the kernel: a write changes it.
    pub(crate) fn content_now<M: Mds>(
        &self,
        contents: &Contents<M>,
        path: &str,
    ) -> Option<Result<Content>> {
        let account_dir = path.trim_end_matches("/scopes");
        match self.in_effect(account_dir) {
            Some(scopes) => {
                let bytes = Bytes::from(scopes.join("\n") + "\n");
                let mounted_at = contents.mounted_at;
                let seen = self.set_at().unwrap_or(mounted_at);
                Some(value_content(Cached::Value(bytes, seen), Duration::ZERO, mounted_at))
            }
            None => {
                let content = contents.value_now(path)?;
                Some(content.map(|c| Content { validity: Duration::ZERO, ..c }))
            }
        }
    }

    pub(crate) async fn content<M: Mds>(
        &self,
        contents: &Contents<M>,
        path: &str,
    ) -> Result<Content> {
        if let Some(now) = self.content_now(contents, path) {
            return now;
        }
        let content = contents.value(path).await?;
        Ok(Content { validity: Duration::ZERO, ..content })
    }

    /// When they were last written, if ever.
    pub(crate) fn set_at(&self) -> Option<SystemTime> {
        *self.set_at.lock().unwrap()
    }

    pub(crate) fn set(&self, account_dir: &str, scopes: Option<Vec<String>>) {
        self.written.lock().unwrap().insert(account_dir.to_string(), scopes);
        *self.set_at.lock().unwrap() = Some(SystemTime::now());
    }

    /// The MDS path of `account_dir`'s `token`: narrowed to the scopes in effect, if any.
    pub(crate) fn token_path(&self, account_dir: &str) -> String {
        match self.in_effect(account_dir) {
            Some(scopes) => scoped_token_path(account_dir, &scopes),
            None => format!("{account_dir}/token"),
        }
    }
}
