//! Where log lines go: stderr in the foreground (systemd's journal captures it), syslog for a
//! daemon that went to the background, since nothing would read its stderr there, and holding
//! the caller's stderr open would hang `out=$(metadatafs /meta 2>&1)` forever.
//!
//! Quiet by default (warnings and errors); `RUST_LOG` changes that. One line per event.

use std::io::{self, Write};
use std::os::unix::net::UnixDatagram;

/// Start logging; `background` sends it to syslog.
pub fn init(background: bool) {
    let filter = env_logger::Env::default().default_filter_or("warn,fuser=error");
    let mut builder = env_logger::Builder::from_env(filter);
    if background {
        let pid = std::process::id();
        builder.format(move |out, record| {
            // LOG_DAEMON (3 << 3) plus the record's severity, so the journal keeps it.
            let severity = match record.level() {
                log::Level::Error => 3,
                log::Level::Warn => 4,
                log::Level::Info => 6,
                log::Level::Debug | log::Level::Trace => 7,
            };
            writeln!(out, "<{}>metadatafs[{pid}]: {}", 24 + severity, record.args())
        });
        let target: Box<dyn Write + Send> = match Syslog::connect() {
            Some(syslog) => Box::new(syslog),
            None => Box::new(io::sink()),
        };
        builder.target(env_logger::Target::Pipe(target));
    }
    builder.init();
}

/// One datagram per log line to the local syslog socket.
#[derive(Debug)]
struct Syslog {
    socket: UnixDatagram,
}

impl Syslog {
    fn connect() -> Option<Syslog> {
        Syslog::connect_to(std::path::Path::new("/dev/log"))
    }

    fn connect_to(path: &std::path::Path) -> Option<Syslog> {
        let socket = UnixDatagram::unbound().ok()?;
        socket.connect(path).ok()?;
        // A backed-up syslog drops our lines rather than stalling the filesystem.
        socket.set_nonblocking(true).ok()?;
        Some(Syslog { socket })
    }
}

impl Write for Syslog {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let _ = self.socket.send(buf.strip_suffix(b"\n").unwrap_or(buf));
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_line_is_one_datagram_and_a_full_socket_never_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let server = UnixDatagram::bind(&path).unwrap();
        let mut syslog = Syslog::connect_to(&path).unwrap();
        syslog.write_all(b"<28>metadatafs[1]: endpoint unreachable\n").unwrap();
        let mut buf = [0u8; 256];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"<28>metadatafs[1]: endpoint unreachable");
        // Nobody reads: the socket fills up, and writes still return at once.
        for _ in 0..10_000 {
            syslog.write_all(b"<31>metadatafs[1]: filler\n").unwrap();
        }
        assert!(Syslog::connect_to(&dir.path().join("missing")).is_none());
    }
}
