//! The mountpoint: what `/proc/self/mountinfo` says about it, so the daemon never mounts over a
//! live mount and only ever unmounts its own; clearing a dead mount; waiting for ours to be live.
//!
//! Unmounting goes by path, and a path names whatever is mounted on top: a daemon that unmounted
//! "its" path without looking would take down a mount stacked over it (a production `/meta`
//! under a test `--emulate /meta`, say). So the daemon records its mount's id once the mount is
//! live, and unmounts only while that mount is the top one at the path
//! (proc(5): mountinfo fields are `ID PARENT MAJOR:MINOR ROOT MOUNTPOINT OPTIONS [OPTIONAL…] -
//! FSTYPE SOURCE SUPEROPTIONS`; a mount over another has the one below as its parent).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use log::{info, warn};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub id: u64,
    pub parent: u64,
    pub mount_point: PathBuf,
    pub fstype: String,
    pub source: String,
}

impl MountEntry {
    /// How a user would name it in a message: `fuse.metadatafs from metadata`.
    pub fn describe(&self) -> String {
        format!("{} from {}", self.fstype, self.source)
    }
}

/// The mount on top at `path` (canonicalized), if anything is mounted there.
pub fn top(path: &Path) -> Option<MountEntry> {
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    top_of(&parse(&text), &path)
}

fn top_of(entries: &[MountEntry], path: &Path) -> Option<MountEntry> {
    let here: Vec<&MountEntry> = entries.iter().filter(|e| e.mount_point == path).collect();
    // The one nothing else at this path is mounted on.
    here.iter().find(|e| !here.iter().any(|other| other.parent == e.id)).map(|e| (*e).clone())
}

fn parse(text: &str) -> Vec<MountEntry> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<MountEntry> {
    let (before, after) = line.split_once(" - ")?;
    let mut fields = before.split(' ');
    let id = fields.next()?.parse().ok()?;
    let parent = fields.next()?.parse().ok()?;
    let mount_point = unescape(fields.nth(2)?);
    let mut fields = after.split(' ');
    let fstype = unescape(fields.next()?);
    let source = unescape(fields.next()?);
    Some(MountEntry { id, parent, mount_point: PathBuf::from(mount_point), fstype, source })
}

/// The kernel writes space, tab, newline and backslash in paths as `\040`-style octal escapes.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match (bytes[i], octal) {
            (b'\\', Some(digits)) => {
                let value = digits.iter().fold(0u32, |n, d| n * 8 + u32::from(d - b'0'));
                out.push(value as u8);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// How long the daemon of a mount already at the mountpoint has to answer `statfs`: one that
/// is stopped or stuck is taken as alive (we refuse to mount over it), not waited for.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Detach a mount left dead by a killed daemon, so it can be mounted again. `stat` can be
/// answered from the kernel's attribute cache even on a dead mount, and so can opening a
/// directory (once a no-open daemon has answered OPENDIR with ENOSYS, the kernel opens its
/// directories alone); `statfs` asks the daemon every time, so that is the probe.
pub(crate) fn prepare_mountpoint(path: &Path) -> Result<()> {
    // On a thread: even a `stat` of the mountpoint waits for a daemon mounted there.
    let owned = path.to_path_buf();
    let probe = crate::clock::within(PROBE_TIMEOUT, move || match top(&owned) {
        Some(_) => statfs(&owned),
        None => std::fs::read_dir(&owned).map(drop),
    });
    let Some(probe) = probe else {
        bail!(
            "{} is already a mount point, whose daemon does not answer; unmount it first",
            path.display()
        );
    };
    match probe {
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
            warn!("{}: dead mount left by an earlier daemon; detaching it", path.display());
            detach(path);
            let meta = std::fs::metadata(path)
                .with_context(|| format!("{} after detaching", path.display()))?;
            if !meta.is_dir() {
                bail!("{}: not a directory", path.display());
            }
        }
        Err(e) => return Err(e).with_context(|| format!("mountpoint {}", path.display())),
        Ok(_) => {}
    }
    // Also after detaching a dead mount: it may have been stacked over a live one.
    match top(path) {
        Some(live) if live.fstype != "autofs" => bail!(
            "{} is already a mount point ({}); unmount it first",
            path.display(),
            live.describe()
        ),
        _ => Ok(()),
    }
}

/// `statfs(2)` of `path`: on a FUSE mount, a request to its daemon (ENOTCONN if it is gone).
fn statfs(path: &Path) -> std::io::Result<()> {
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: a valid NUL-terminated path; statfs writes one struct we own.
    let mut stats: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c_path.as_ptr(), &mut stats) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Unmount (lazily if busy) what is at `path`; callers check first that it is our mount.
pub(crate) fn unmount(path: &Path) {
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return;
    };
    // SAFETY: a valid NUL-terminated path.
    if unsafe { libc::umount2(c_path.as_ptr(), 0) } != 0 {
        let e = std::io::Error::last_os_error();
        info!("unmount: {e}; detaching lazily");
        detach(path);
    }
}

pub(crate) fn detach(path: &Path) {
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return;
    };
    // SAFETY: a valid NUL-terminated path.
    if unsafe { libc::umount2(c_path.as_ptr(), libc::MNT_DETACH) } == 0 {
        return;
    }
    // Not root: the setuid helper can still detach our own mount.
    for helper in ["fusermount3", "fusermount"] {
        let status = Command::new(helper).arg("-uz").arg(path).stderr(Stdio::null()).status();
        if status.is_ok_and(|s| s.success()) {
            return;
        }
    }
    warn!("could not detach {}", path.display());
}

/// The mount is live when the mountpoint is on a different device than its parent.
pub(crate) fn wait_until_live(path: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let parent = path.parent().unwrap_or(Path::new("/"));
    let parent_dev = std::fs::metadata(parent).map(|m| m.dev()).unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match std::fs::metadata(path) {
            Ok(meta) if meta.dev() != parent_dev => return Ok(()),
            _ if Instant::now() > deadline => {
                bail!("{}: the mount did not come up", path.display())
            }
            _ => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 0:21 / /proc rw,nosuid - proc proc rw
30 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
41 30 0:40 / /meta rw,nosuid,nodev - fuse.metadatafs metadata rw,user_id=0
47 41 0:45 / /meta rw,nosuid,nodev,relatime - tmpfs none rw
50 30 0:46 / /mnt/with\\040space ro - fuse.metadatafs 10.0.0.1:80 ro
";

    #[test]
    fn the_top_mount_is_the_one_nothing_is_stacked_on() {
        let entries = parse(MOUNTINFO);
        assert_eq!(entries.len(), 5);
        let top = top_of(&entries, Path::new("/meta")).unwrap();
        assert_eq!((top.id, top.fstype.as_str()), (47, "tmpfs"));
        let below = MountEntry { id: 41, ..top.clone() };
        assert_eq!(top_of(&entries[..3], Path::new("/meta")).unwrap().id, below.id);
        assert!(top_of(&entries, Path::new("/nowhere")).is_none());
    }

    #[test]
    fn escaped_paths_are_read_back() {
        let entries = parse(MOUNTINFO);
        let spaced = top_of(&entries, Path::new("/mnt/with space")).unwrap();
        assert_eq!(spaced.describe(), "fuse.metadatafs from 10.0.0.1:80");
        assert_eq!(unescape("a\\134b\\011"), "a\\b\t");
        assert_eq!(unescape("trailing\\04"), "trailing\\04");
    }
}
