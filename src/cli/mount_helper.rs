//! Running as mount(8)'s helper, so fstab lines and systemd `.mount` units of type
//! `fuse.metadatafs` work without `mount.fuse3`.
//!
//! For that type, util-linux's libmount executes `/sbin/mount.fuse.metadatafs` (falling back to
//! `mount.fuse`) as `HELPER SOURCE TARGET [-s] [-f] [-n] [-v] [-o OPTIONS] [-t TYPE]`, where
//! `-f` means *fake* (do everything but mount), `-s` sloppy, `-n` no mtab, `-v` verbose. Our
//! `-f` means foreground, so the helper's calling convention is translated here into our own
//! `SOURCE TARGET -o OPTIONS` form, and the daemon is re-executed under its own name: it then
//! goes to the background and returns once the mount is live, as mount(8) expects.

use std::ffi::OsString;
use std::path::Path;

/// What a helper invocation asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Helper {
    /// `-f`: pretend; mount nothing and succeed.
    Fake,
    /// Our own arguments (without `argv[0]`).
    Run(Vec<OsString>),
}

/// `None` unless `argv[0]` names a mount helper (`mount.fuse.metadatafs`, `mount.metadatafs`).
/// `background_child` is whether this process is the daemon re-executing itself to go to the
/// background (`service::daemon::is_background_child`).
pub fn translate(argv: Vec<OsString>, background_child: bool) -> Option<Helper> {
    let name = Path::new(argv.first()?).file_name()?.to_str()?;
    // The daemon re-executing itself to go to the background is never the helper, whatever
    // path the binary is reached by (a copy or bind mount at the helper's path).
    if !name.starts_with("mount.") || background_child {
        return None;
    }
    let mut args = argv.into_iter().skip(1);
    let mut out = Vec::new();
    let mut fake = false;
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some("-o") => {
                out.push(arg);
                out.extend(args.next());
            }
            // The type is ours; mount(8)'s bookkeeping flags need nothing from us.
            Some("-t") => {
                args.next();
            }
            Some("-s" | "-n" | "-v") => {}
            Some("-f") => fake = true,
            _ => out.push(arg),
        }
    }
    Some(if fake { Helper::Fake } else { Helper::Run(out) })
}

/// Re-execute ourselves as `metadatafs ARGS`; returns only if that failed.
pub fn exec(args: Vec<OsString>) -> std::io::Error {
    use std::os::unix::process::CommandExt;
    match std::env::current_exe() {
        Ok(exe) => std::process::Command::new(exe).arg0("metadatafs").args(args).exec(),
        Err(e) => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn mount_calling_convention_becomes_ours() {
        let call = ["/sbin/mount.fuse.metadatafs", "metadata", "/meta", "-n", "-s", "-v"];
        let with_options = [&call[..], &["-o", "rw,allow_other", "-t", "fuse.metadatafs"]].concat();
        let expected = argv(&["metadata", "/meta", "-o", "rw,allow_other"]);
        assert_eq!(translate(argv(&with_options), false), Some(Helper::Run(expected)));
        let fake = ["mount.metadatafs", "metadata", "/meta", "-f", "-o", "ro"];
        assert_eq!(translate(argv(&fake), false), Some(Helper::Fake));
    }

    #[test]
    fn the_daemon_under_its_own_name_is_no_helper() {
        assert_eq!(translate(argv(&["/usr/local/bin/metadatafs", "-f", "/meta"]), false), None);
        assert_eq!(translate(argv(&["metadatafs"]), false), None);
        assert_eq!(translate(Vec::new(), false), None);
        let helper = ["/sbin/mount.fuse.metadatafs", "metadata", "/meta"];
        assert_eq!(translate(argv(&helper), true), None, "the re-executed daemon");
    }
}
