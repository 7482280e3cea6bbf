//! Telling the kernel what to forget: names whose next lookup gets a new version, and
//! directories whose cached listing must go. The watcher (service/watch.rs), the token store's
//! installs and listings fetched again (service/daemon.rs), and a renewal by `fsync` (write.rs)
//! all come through here. Always from a blocking thread with no lock of ours held:
//! `inval_entry` waits for the kernel's directory lock, which a lookup waiting on us may hold.

use std::sync::Arc;

use log::debug;

use crate::fs::Forget;

/// Where the kernel's caches are told what changed. `fuser::Notifier` in the daemon.
pub trait KernelCache: Send + Sync + std::fmt::Debug + 'static {
    /// Forget the name `name` in directory `parent`: the next `open()` looks it up again.
    fn inval_entry(&self, parent: u64, name: &str);

    /// Forget what is cached of inode `ino`'s contents: for a directory, its listing.
    fn inval_inode(&self, ino: u64);
}

impl KernelCache for fuser::Notifier {
    fn inval_entry(&self, parent: u64, name: &str) {
        // ENOENT (the kernel no longer holds it) is fine; anything else is worth a note.
        if let Err(e) = fuser::Notifier::inval_entry(self, fuser::INodeNo(parent), name.as_ref()) {
            debug!("invalidating {name:?} in inode {parent}: {e}");
        }
    }

    fn inval_inode(&self, ino: u64) {
        if let Err(e) = fuser::Notifier::inval_inode(self, fuser::INodeNo(ino), 0, 0) {
            debug!("invalidating inode {ino}: {e}");
        }
    }
}

/// Tell the kernel what to forget, from a blocking thread with no lock held.
pub async fn tell(kernel: &Arc<dyn KernelCache>, forget: Forget) {
    let kernel = kernel.clone();
    let _ = tokio::task::spawn_blocking(move || {
        for (parent, name) in forget.names {
            kernel.inval_entry(parent, &name);
        }
        for dir in forget.dirs {
            kernel.inval_inode(dir);
        }
    })
    .await;
}
