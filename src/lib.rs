//! metadatafs: the GCE metadata server as a FUSE filesystem, and a faithful emulator of it.

pub mod emulator;
