//! metadatafs: the GCE metadata server as a FUSE filesystem, and a faithful emulator of it.
//!
//! The layers, top to bottom (docs/architecture.md draws them; imports only run downward):
//! - [`cli`]: the command line and the mount(8) helper, folded into a plain config;
//! - [`service`]: the daemon's lifecycle, logging, the mount table, the change watcher task;
//! - [`fuse`]: the kernel adapter, one call into the core per operation;
//! - [`fs`]: the core, which composes the parts that say what each file holds;
//! - [`token`] and [`cache`]: freshness, with no I/O of their own;
//! - [`upstream`]: the metadata server client behind a trait, its transport and credentials;
//! - [`stats`], [`error`], [`clock`], [`paths`]: foundations any layer may use.
//!
//! [`emulator`] stands beside them: a faithful local metadata server, used by the tests and by
//! `--emulate`.

pub mod cache;
pub mod cli;
pub mod clock;
pub mod emulator;
pub mod error;
pub mod fs;
pub mod fuse;
pub mod paths;
pub mod service;
pub mod stats;
pub mod token;
pub mod upstream;
