//! What the daemon asks of the kernel at INIT, and which read path that gives (see mod.rs).

use fuser::{InitFlags, KernelConfig};

/// What the kernel must offer for the no-open path (Linux 5.1).
const NO_OPEN: InitFlags =
    InitFlags::FUSE_NO_OPEN_SUPPORT.union(InitFlags::FUSE_NO_OPENDIR_SUPPORT);

/// Ask for what the daemon uses; `open_path` says why this mount must keep the open path, if
/// it must. Returns the read path, `no-open` or `open`, and why.
pub(crate) fn negotiate(
    config: &mut KernelConfig,
    open_path: Option<&'static str>,
) -> (&'static str, &'static str) {
    // Without this the kernel serialises lookups per directory, and one name waiting on the
    // MDS would stall every other lookup in its directory, cached or not.
    if config.add_capabilities(InitFlags::FUSE_PARALLEL_DIROPS).is_err() {
        log::info!("the kernel does not offer parallel directory operations");
    }
    // `O_TRUNC` arrives with `open`, so `echo x > file` is one open, not open + truncate.
    let _ = config.add_capabilities(InitFlags::FUSE_ATOMIC_O_TRUNC);
    // Many readers may wait on the MDS at once; let the kernel have them all in flight.
    let _ = config.set_max_background(256);
    let _ = config.set_congestion_threshold(192);
    let answer = match open_path {
        Some(why) => ("open", why),
        None if !config.capabilities().contains(NO_OPEN) => {
            ("open", "the kernel has no no-open support")
        }
        // A directory's attributes are refreshed before its cached listing is used, and a
        // new mtime drops it: how a listing that ran out of `ttl` is fetched again.
        None => match config.add_capabilities(NO_OPEN | InitFlags::FUSE_AUTO_INVAL_DATA) {
            Ok(()) => ("no-open", "a read-only mount"),
            Err(_) => ("open", "the kernel has no no-open support"),
        },
    };
    log::info!("read path: {} ({})", answer.0, answer.1);
    answer
}
