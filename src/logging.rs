//! Where log lines go: stderr in the foreground (systemd's journal captures it), syslog for a
//! daemon that went to the background, since nothing would read its stderr there, and holding
//! the caller's stderr open would hang `out=$(metadatafs /meta 2>&1)` forever.
//!
//! Quiet by default (warnings and errors); `RUST_LOG` changes that. One line per event.

use std::io::{self, Write};
use std::os::unix::net::UnixDatagram;

/// Start logging; `background` sends it to syslog.
pub fn init(background: bool) {
    let mut builder = env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or("warn,fuser=error"),
    );
    if background {
        match Syslog::connect() {
            Some(syslog) => {
                builder
                    .format(|out, record| writeln!(out, "{}: {}", record.level(), record.args()));
                builder.target(env_logger::Target::Pipe(Box::new(syslog)));
            }
            None => {
                builder.target(env_logger::Target::Pipe(Box::new(io::sink())));
            }
        }
    }
    builder.init();
}

/// One datagram per log line to the local syslog socket, as `daemon.info`.
#[derive(Debug)]
struct Syslog {
    socket: UnixDatagram,
    prefix: String,
}

impl Syslog {
    fn connect() -> Option<Syslog> {
        let socket = UnixDatagram::unbound().ok()?;
        socket.connect("/dev/log").ok()?;
        // LOG_DAEMON (3 << 3) | LOG_INFO (6)
        Some(Syslog { socket, prefix: format!("<30>metadatafs[{}]: ", std::process::id()) })
    }
}

impl Write for Syslog {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let line = buf.strip_suffix(b"\n").unwrap_or(buf);
        let mut message = self.prefix.clone().into_bytes();
        message.extend_from_slice(line);
        // A full or missing log socket must never stall or fail the filesystem.
        let _ = self.socket.send(&message);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
