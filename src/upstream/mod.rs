//! Everything that talks to the metadata server: the client behind the [`mds::Mds`] trait
//! (retries, deadlines, counters), the transport that picks plain HTTP or mutual TLS, the
//! channel and credentials under it, and the diff of recursive dumps the watcher reads.
//!
//! Nothing here knows about inodes, files or the kernel.

pub mod channel;
pub mod credfile;
pub mod dump;
pub mod mds;
pub mod mtls;
pub mod transport;

#[cfg(test)]
pub(crate) mod testing;
