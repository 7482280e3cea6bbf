//! The daemon around the filesystem: starting and stopping it (foreground or background,
//! readiness to systemd), where its logs go, the mount table, and the change watcher task
//! that keeps the core and the kernel's caches in step with the server.

pub mod daemon;
pub mod logging;
pub mod mounts;
mod readiness;
pub mod watch;
