//! metadatafs: the GCE metadata server as a FUSE filesystem, and a faithful emulator of it.
//!
//! Layers, each behind a small seam: `fuse` (kernel adapter) → `fs` (the core, plain async
//! functions) → `cache`/`token` (freshness, no I/O of their own) → `mds` (the HTTP client).

pub mod cache;
pub mod channel;
pub mod cli;
pub mod clock;
mod content;
pub mod daemon;
pub mod dump;
pub mod emulator;
pub mod error;
pub mod fs;
pub mod fuse;
pub mod logging;
pub mod mds;
pub mod mount_helper;
pub mod mounts;
pub mod mtls;
pub mod perms;
pub mod query;
pub mod stats;
pub mod status;
pub mod token;
pub mod transport;
pub mod tree;
pub mod watch;
pub mod write;

#[cfg(test)]
mod testing;
