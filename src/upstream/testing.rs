//! An in-memory MDS for unit tests: scripted answers, request counters, and an outage switch.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::upstream::mds::Mds;

#[derive(Debug, Default)]
pub struct FakeMds {
    answers: Mutex<HashMap<String, Result<Bytes>>>,
    requests: Mutex<HashMap<String, usize>>,
    down: AtomicBool,
    gate: Mutex<Option<tokio::sync::watch::Receiver<bool>>>,
    writes: Mutex<Vec<String>>,
}

impl FakeMds {
    pub fn set(&self, path: &str, body: &str) {
        let body = Bytes::copy_from_slice(body.as_bytes());
        self.answers.lock().unwrap().insert(path.into(), Ok(body));
    }

    pub fn fail(&self, path: &str, error: Error) {
        self.answers.lock().unwrap().insert(path.into(), Err(error));
    }

    /// Every request fails as if the MDS were unreachable.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// Hold every answer until the returned sender sends `true`.
    pub fn hold(&self) -> tokio::sync::watch::Sender<bool> {
        let (release, gate) = tokio::sync::watch::channel(false);
        *self.gate.lock().unwrap() = Some(gate);
        release
    }

    pub fn requests(&self, path: &str) -> usize {
        self.requests.lock().unwrap().get(path).copied().unwrap_or(0)
    }

    pub fn total_requests(&self) -> usize {
        self.requests.lock().unwrap().values().sum()
    }

    /// A tree given as `(path, value)` leaves; directory listings are derived from it.
    pub fn with_tree(leaves: &[(&str, &str)]) -> Self {
        let mds = FakeMds::default();
        let mut dirs: HashMap<String, Vec<String>> = HashMap::new();
        for (path, value) in leaves {
            mds.set(path, value);
            let mut child = path.to_string();
            while let Some((parent, name)) = child.rsplit_once('/') {
                let entry = if child == *path { name.to_string() } else { format!("{name}/") };
                dirs.entry(format!("{parent}/")).or_default().push(entry);
                child = parent.to_string();
            }
            let top = if child == *path { child.clone() } else { format!("{child}/") };
            dirs.entry(String::new()).or_default().push(top);
        }
        for (dir, mut entries) in dirs {
            entries.sort();
            entries.dedup();
            let listing: String = entries.iter().map(|e| format!("{e}\n")).collect();
            mds.set(&dir, &listing);
        }
        mds
    }
}

impl FakeMds {
    /// What PUTs and DELETEs did, in order: `PUT path body` or `DELETE path`.
    pub fn writes(&self) -> Vec<String> {
        self.writes.lock().unwrap().clone()
    }
}

impl Mds for FakeMds {
    async fn put(&self, path: &str, body: Bytes) -> Result<()> {
        let text = String::from_utf8_lossy(&body).into_owned();
        self.writes.lock().unwrap().push(format!("PUT {path} {text}"));
        self.set(path, &text);
        Ok(())
    }

    async fn delete(&self, path: &str) -> Result<()> {
        self.writes.lock().unwrap().push(format!("DELETE {path}"));
        self.answers.lock().unwrap().remove(path).map(|_| ()).ok_or(Error::NotFound)
    }

    async fn get(&self, path: &str) -> Result<Bytes> {
        *self.requests.lock().unwrap().entry(path.into()).or_default() += 1;
        let gate = self.gate.lock().unwrap().clone();
        if let Some(mut gate) = gate {
            let _ = gate.wait_for(|open| *open).await;
        }
        if self.down.load(Ordering::SeqCst) {
            return Err(Error::Unavailable { path: path.into(), reason: "down".into() });
        }
        self.answers.lock().unwrap().get(path).cloned().unwrap_or(Err(Error::NotFound))
    }
}
