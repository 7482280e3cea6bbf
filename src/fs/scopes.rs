//! The scopes each account's `token` carries on this mount (SPEC §2.4): what a write to
//! `<account>/scopes` set, else `token_scopes`, else the instance's. The write-through
//! (write.rs) changes them; the token files read them. Both are handed the same [`Scopes`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::SystemTime;

use crate::fs::query::scoped_token_path;

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
