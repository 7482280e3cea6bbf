//! Waiting reads (`?wait_for_change=true`): never cached, and shared: however many readers
//! wait on one canonical request, one request waits upstream, and all of them get its answer.
//!
//! [`Waits`] owns the requests in flight and is handed the client; it knows nothing of files.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::OnceCell;

use crate::error::Result;
use crate::upstream::mds::Mds;

/// Without `timeout_sec` the MDS waits as long as it likes; so do we, up to a day.
const UNBOUNDED_WAIT: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug)]
pub(crate) struct Waits<M> {
    mds: Arc<M>,
    inflight: Mutex<HashMap<String, Arc<OnceCell<Result<Bytes>>>>>,
}

impl<M: Mds> Waits<M> {
    pub(crate) fn new(mds: Arc<M>) -> Self {
        Waits { mds, inflight: Mutex::default() }
    }

    /// Wait for the MDS to answer the waiting request `path` (its `timeout_sec` is `limit`),
    /// sharing the upstream request with every other reader of the same one.
    pub(crate) async fn wait(&self, path: &str, limit: Option<Duration>) -> Result<Bytes> {
        let limit = limit.unwrap_or(UNBOUNDED_WAIT);
        let cell = self.inflight.lock().unwrap().entry(path.to_string()).or_default().clone();
        let result = cell.get_or_init(|| self.mds.wait(path, limit)).await.clone();
        // Answered: a reader arriving from now on waits for the next change.
        let mut inflight = self.inflight.lock().unwrap();
        if inflight.get(path).is_some_and(|current| Arc::ptr_eq(current, &cell)) {
            inflight.remove(path);
        }
        result
    }
}
