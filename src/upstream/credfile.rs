//! Reading a credentials file that anyone with write access to `mtls_dir` may have replaced
//! by something hostile, without ever wedging the daemon.
//!
//! Invariants:
//! - Only a regular file of at most [`MAX_FILE`] bytes is read. A FIFO, socket, device or
//!   directory is refused from its `stat`, before it is opened (opening a FIFO for reading
//!   blocks until a writer comes; opening a device may have side effects). The file is then
//!   opened with `O_NONBLOCK | O_NOCTTY` and checked again on the descriptor (same device and
//!   inode, still regular), so a swap between `stat` and `open` is refused too.
//! - A symlink is followed (an admin may link the files elsewhere), but a loop is reported as
//!   a loop, never as a missing file.
//! - Reads run on a thread of their own and are waited for at most a deadline
//!   ([`read_within`], [`read_within_async`]): a file on a hung filesystem never holds a read
//!   past `timeout`, never blocks an async worker, and so never blocks SIGTERM. At most one such
//!   thread runs per transport ([`Reader`]): a stuck one is not joined by more.
//! - Errors are one line naming the file and what is wrong with it, never its bytes.

use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The largest credentials file read (they are a few KiB).
pub const MAX_FILE: u64 = 1 << 20;

/// Why the credentials cannot be used. `Display` is one line naming the file.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("no mutual TLS credentials: {} is missing", .0.display())]
    Missing(PathBuf),
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{}: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
    #[error("reading the credentials in {} took over {} ms (a file on a hung filesystem?)",
        dir.display(), limit.as_millis())]
    Stuck { dir: PathBuf, limit: Duration },
}

fn invalid(path: &Path, reason: impl Into<String>) -> CredentialsError {
    CredentialsError::Invalid { path: path.to_path_buf(), reason: reason.into() }
}

/// What a file that is not a regular one is, in words.
fn what(meta: &std::fs::Metadata) -> &'static str {
    let kind = meta.file_type();
    if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_block_device() || kind.is_char_device() {
        "a device"
    } else {
        "not a regular file"
    }
}

/// What a failed `stat` or `open` of `path` means.
fn stat_error(path: &Path, source: std::io::Error) -> CredentialsError {
    match source.raw_os_error() {
        Some(libc::ENOENT) => CredentialsError::Missing(path.to_path_buf()),
        Some(libc::ELOOP) => invalid(path, "a symlink loop"),
        _ => CredentialsError::Read { path: path.to_path_buf(), source },
    }
}

/// A file's identity and timestamps: a rotation changes at least one of them.
pub type Stamp = (u64, u64, u64, i64, i64, i64);

/// `path`'s stamp (a `stat`, which never blocks on the file's type), or why it has none.
pub fn stamp(path: &Path) -> Result<Stamp, CredentialsError> {
    let m = std::fs::metadata(path).map_err(|e| stat_error(path, e))?;
    Ok((m.dev(), m.ino(), m.len(), m.mtime(), m.mtime_nsec(), m.ctime_nsec() ^ m.ctime()))
}

/// The bytes of one credentials file, if it is a regular file of sane size. Never blocks on
/// the file's type; may block on a hung filesystem (hence [`read_within`]).
pub fn read_file(path: &Path) -> Result<Vec<u8>, CredentialsError> {
    let meta = std::fs::metadata(path).map_err(|e| stat_error(path, e))?;
    check(path, &meta)?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| stat_error(path, e))?;
    let opened = file.metadata().map_err(|e| stat_error(path, e))?;
    check(path, &opened)?;
    if (opened.dev(), opened.ino()) != (meta.dev(), meta.ino()) {
        return Err(invalid(path, "replaced while being opened"));
    }
    let mut bytes = Vec::new();
    let read = (&file).take(MAX_FILE + 1).read_to_end(&mut bytes);
    read.map_err(|source| CredentialsError::Read { path: path.to_path_buf(), source })?;
    if bytes.len() as u64 > MAX_FILE {
        return Err(too_large(path));
    }
    Ok(bytes)
}

fn too_large(path: &Path) -> CredentialsError {
    invalid(path, format!("larger than {} KiB: not a credentials file", MAX_FILE >> 10))
}

fn check(path: &Path, meta: &std::fs::Metadata) -> Result<(), CredentialsError> {
    if !meta.file_type().is_file() {
        return Err(invalid(path, format!("{}, not a credentials file", what(meta))));
    }
    if meta.len() > MAX_FILE {
        return Err(too_large(path));
    }
    Ok(())
}

/// Lets one reading thread run at a time for one transport.
#[derive(Debug, Default, Clone)]
pub struct Reader {
    busy: Arc<AtomicBool>,
}

/// Clears the busy flag when the reading thread ends, however it ends.
struct Busy(Arc<AtomicBool>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl Reader {
    /// Runs `read` on a thread of its own; `None` if the last one is still stuck.
    fn start<T: Send + 'static>(
        &self,
        read: impl FnOnce() -> T + Send + 'static,
        deliver: impl FnOnce(T) + Send + 'static,
    ) -> bool {
        if self.busy.swap(true, Ordering::AcqRel) {
            return false;
        }
        let busy = Busy(self.busy.clone());
        let spawned =
            std::thread::Builder::new().name("metadatafs-creds".into()).spawn(move || {
                let _busy = busy;
                deliver(read());
            });
        spawned.is_ok()
    }
}

/// `read()` on a reading thread, waited for at most `limit` (blocking the caller, which must
/// not be an async worker).
pub fn read_within<T: Send + 'static>(
    reader: &Reader,
    dir: &Path,
    limit: Duration,
    read: impl FnOnce() -> Result<T, CredentialsError> + Send + 'static,
) -> Result<T, CredentialsError> {
    let (tx, rx) = std::sync::mpsc::channel();
    let stuck = || CredentialsError::Stuck { dir: dir.to_path_buf(), limit };
    if !reader.start(read, move |r| drop(tx.send(r))) {
        return Err(stuck());
    }
    rx.recv_timeout(limit).unwrap_or_else(|_| Err(stuck()))
}

/// [`read_within`] for async callers: the worker is free while the thread reads.
pub async fn read_within_async<T: Send + 'static>(
    reader: &Reader,
    dir: &Path,
    limit: Duration,
    read: impl FnOnce() -> Result<T, CredentialsError> + Send + 'static,
) -> Result<T, CredentialsError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let stuck = || CredentialsError::Stuck { dir: dir.to_path_buf(), limit };
    if !reader.start(read, move |r| drop(tx.send(r))) {
        return Err(stuck());
    }
    match tokio::time::timeout(limit, rx).await {
        Ok(Ok(result)) => result,
        _ => Err(stuck()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(path: &Path) -> String {
        read_file(path).unwrap_err().to_string()
    }

    #[test]
    fn only_a_regular_file_of_sane_size_is_read_and_nothing_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let p = |name: &str| dir.path().join(name);
        std::fs::write(p("good"), b"pem").unwrap();
        assert_eq!(read_file(&p("good")).unwrap(), b"pem");
        let fifo = std::ffi::CString::new(p("fifo").to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        assert!(reason(&p("fifo")).ends_with("fifo: a FIFO, not a credentials file"));
        std::fs::create_dir(p("dir")).unwrap();
        assert!(reason(&p("dir")).ends_with("dir: a directory, not a credentials file"));
        assert!(reason(Path::new("/dev/null")).contains("a device"));
        let huge = std::fs::File::create(p("huge")).unwrap();
        huge.set_len(MAX_FILE + 1).unwrap();
        assert!(reason(&p("huge")).ends_with("larger than 1024 KiB: not a credentials file"));
        std::os::unix::fs::symlink(p("a"), p("b")).unwrap();
        std::os::unix::fs::symlink(p("b"), p("a")).unwrap();
        assert!(reason(&p("a")).ends_with("a: a symlink loop"), "{}", reason(&p("a")));
        assert!(matches!(read_file(&p("none")), Err(CredentialsError::Missing(_))));
        std::os::unix::fs::symlink(p("good"), p("link")).unwrap();
        assert_eq!(read_file(&p("link")).unwrap(), b"pem");
    }

    #[test]
    fn a_stuck_read_is_given_up_at_its_deadline_and_not_joined_by_another() {
        let reader = Reader::default();
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let limit = Duration::from_millis(50);
        let start = std::time::Instant::now();
        let stuck = read_within(&reader, Path::new("/d"), limit, move || {
            let _ = wait.recv();
            Ok(1)
        });
        assert!(matches!(stuck, Err(CredentialsError::Stuck { .. })));
        assert!(start.elapsed() < Duration::from_secs(2));
        let second = read_within(&reader, Path::new("/d"), limit, || Ok(2));
        assert!(matches!(second, Err(CredentialsError::Stuck { .. })), "a second thread ran");
        drop(release);
        let start = std::time::Instant::now();
        while reader.busy.load(Ordering::Acquire) && start.elapsed() < Duration::from_secs(5) {
            std::thread::yield_now();
        }
        assert_eq!(read_within(&reader, Path::new("/d"), limit, || Ok(3)).unwrap(), 3);
    }
}
