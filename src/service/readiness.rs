//! Readiness: the background daemon reports over a pipe to the process that started it (so
//! `metadatafs /meta` returns once the mount is live, or prints why not), and a foreground one
//! under systemd sends `READY=1`/`STOPPING=1` (`Type=notify`). Forking a multi-threaded
//! process is unsafe, so going to the background re-executes ourselves with `-f`.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use log::warn;

/// The pipe a background parent waits on: the child writes `ok` or `error: …` to it.
const READY_FD_ENV: &str = "METADATAFS_READY_FD";

/// Re-run ourselves with `-f`, detached, and wait for its word that the mount is live.
pub(crate) fn spawn_background() -> Result<()> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills the two-element array we pass.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error()).context("creating the readiness pipe");
    }
    // SAFETY: both descriptors were just created and are owned by nobody else.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let write_fd = fds[1];
    let exe = std::env::current_exe().context("finding our own executable")?;
    let mut command = Command::new(exe);
    command.args(std::env::args_os().skip(1)).arg("-f").env(READY_FD_ENV, write_fd.to_string());
    // Logs go to syslog or log_file (see `logging`); holding the caller's stdio open would keep a pipe
    // or a `$(…)` waiting for as long as the mount lives.
    command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        command.pre_exec(move || {
            libc::setsid();
            let flags = libc::fcntl(write_fd, libc::F_GETFD);
            libc::fcntl(write_fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
            Ok(())
        });
    }
    let mut child = command.spawn().context("starting the daemon")?;
    drop(write_end);
    // One line, not to EOF: the daemon keeps running after it has spoken.
    let mut message = String::new();
    BufReader::new(std::fs::File::from(read_end)).read_line(&mut message).ok();
    match message.trim_end() {
        "ok" => Ok(()),
        m if m.starts_with("error: ") => bail!("{}", &m["error: ".len()..]),
        _ => {
            let status = child.wait().context("waiting for the daemon")?;
            bail!("the daemon exited before the mount was ready ({status})")
        }
    }
}

/// Whether this process is the re-executed background daemon.
pub fn is_background_child() -> bool {
    std::env::var_os(READY_FD_ENV).is_some()
}

pub(crate) fn take_ready_pipe() -> Option<OwnedFd> {
    let fd: i32 = std::env::var(READY_FD_ENV).ok()?.parse().ok()?;
    std::env::remove_var(READY_FD_ENV);
    // SAFETY: the parent passed us this descriptor for our exclusive use; fcntl checks it is open.
    (unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}

pub(crate) fn report(pipe: &OwnedFd, message: &str) {
    let mut file = std::fs::File::from(pipe.try_clone().expect("dup of an open pipe"));
    let _ = writeln!(file, "{}", message.replace('\n', " "));
}

/// Tell systemd about our state (Type=notify); a no-op outside systemd.
pub(crate) fn sd_notify(state: &str) {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(socket) = UnixDatagram::unbound() else {
        return;
    };
    let bytes = path.as_encoded_bytes();
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name),
        None => SocketAddr::from_pathname(&path),
    };
    if let Err(e) = addr.and_then(|addr| socket.send_to_addr(state.as_bytes(), &addr)) {
        warn!("sd_notify {state}: {e}");
    }
}
