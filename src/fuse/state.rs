//! The adapter's state: the core it calls, the runtime its tasks run on, the read path
//! decided at INIT, and where to tell the kernel what to forget.

use std::sync::{Arc, OnceLock};

use super::notify::KernelCache;
use crate::fs::Core;
use crate::upstream::mds::Mds;

#[derive(Debug)]
pub struct FuseFs<M> {
    pub(super) core: Arc<Core<M>>,
    pub(super) runtime: tokio::runtime::Handle,
    /// Why this mount keeps the open path whatever the kernel offers (None: it need not).
    pub(super) open_path: Option<&'static str>,
    /// Decided at INIT: OPEN, OPENDIR and FLUSH are answered ENOSYS.
    pub(super) no_open: bool,
    /// Where to tell the kernel what to forget, once the session has one (`kernel_slot`).
    pub(super) kernel: Arc<OnceLock<Arc<dyn KernelCache>>>,
}

impl<M: Mds> FuseFs<M> {
    /// `open_path`: why this mount must keep the open path (write-through, `read_path=open`).
    pub fn new(
        core: Arc<Core<M>>,
        runtime: tokio::runtime::Handle,
        open_path: Option<&'static str>,
    ) -> Self {
        FuseFs { core, runtime, open_path, no_open: false, kernel: Arc::default() }
    }

    /// Filled by the daemon with the session's notifier, which exists only once this is mounted.
    pub fn kernel_slot(&self) -> Arc<OnceLock<Arc<dyn KernelCache>>> {
        self.kernel.clone()
    }

    pub(super) fn count(&self, op: &str) {
        self.core.board().fuse.add(op);
    }
}
