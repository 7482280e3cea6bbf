//! Where log lines go: stderr in the foreground (systemd's journal captures it), syslog for a
//! daemon that went to the background, since nothing reads its stderr there (it is
//! `/dev/null`: holding the caller's stderr open would hang `out=$(metadatafs /meta 2>&1)`),
//! or the file `-o log_file=PATH` names, in either mode.
//!
//! Syslog is RFC 3164 over the local unix datagram socket, one datagram per record, as glibc's
//! `syslog(3)` writes it: `<PRI>Mmm dd hh:mm:ss metadatafs[PID]: message`, facility daemon,
//! severity from the record's level. Sending never blocks: a backed-up syslog loses lines rather
//! than stall the filesystem; a restarted one is reconnected to. The socket is `/dev/log`, or
//! `$METADATAFS_SYSLOG_SOCKET` (a container whose syslog listens elsewhere, and tests).
//!
//! The filter: quiet by default (warnings and errors; fuser's own only at error). A bare level
//! in `RUST_LOG` (`RUST_LOG=debug`) raises this crate alone to it, so debug means our lines (one
//! per MDS request), not fuser's capability noise; anything else in `RUST_LOG`
//! (`RUST_LOG=fuser=debug`, `RUST_LOG=trace,hyper=info`) is taken as env_logger directives.

use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::paths;

/// Where the log goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Stderr,
    Syslog,
    File(PathBuf),
}

const DEFAULT_FILTER: &str = "warn,fuser=error";
/// LOG_DAEMON (RFC 3164 facility 3).
const FACILITY_DAEMON: u8 = 3;

/// The filter directives for a `RUST_LOG` value (see the module docs).
pub fn filter_spec(rust_log: Option<&str>) -> String {
    let Some(spec) = rust_log.map(str::trim).filter(|s| !s.is_empty()) else {
        return DEFAULT_FILTER.into();
    };
    match spec.to_ascii_lowercase().as_str() {
        level @ ("info" | "debug" | "trace") => format!("{DEFAULT_FILTER},metadatafs={level}"),
        "warn" => DEFAULT_FILTER.into(),
        level @ ("error" | "off") => level.into(),
        _ => spec.into(),
    }
}

/// Start logging to `target`. Fails only if the log file cannot be opened.
pub fn init(target: &Target) -> io::Result<()> {
    let mut builder = env_logger::Builder::new();
    builder.parse_filters(&filter_spec(std::env::var("RUST_LOG").ok().as_deref()));
    // env_logger's own layout, every line redacted (paths::redacted: no identity audience).
    builder.format(|buf, record| {
        use std::io::Write;
        let message = record.args().to_string();
        let (level, target) = (record.level(), record.target());
        writeln!(buf, "[{} {level:<5} {target}] {}", buf.timestamp(), paths::redacted(&message))
    });
    match target {
        Target::Stderr => builder.init(),
        Target::File(path) => {
            let file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
            builder.target(env_logger::Target::Pipe(Box::new(file))).init();
        }
        Target::Syslog => {
            let filter = builder.build();
            log::set_max_level(filter.filter());
            let logger = SyslogLogger { filter, syslog: Syslog::new(syslog_socket()) };
            let _ = log::set_boxed_logger(Box::new(logger));
        }
    }
    Ok(())
}

/// The local syslog socket.
pub fn syslog_socket() -> PathBuf {
    std::env::var_os("METADATAFS_SYSLOG_SOCKET").map_or_else(|| "/dev/log".into(), PathBuf::from)
}

/// Whether something listens on the syslog socket now.
pub fn syslog_available() -> bool {
    connect(&syslog_socket()).is_some()
}

fn connect(path: &Path) -> Option<UnixDatagram> {
    let socket = UnixDatagram::unbound().ok()?;
    socket.connect(path).ok()?;
    socket.set_nonblocking(true).ok()?;
    Some(socket)
}

/// RFC 3164 severity of a log level.
fn severity(level: log::Level) -> u8 {
    match level {
        log::Level::Error => 3,
        log::Level::Warn => 4,
        log::Level::Info => 6,
        log::Level::Debug | log::Level::Trace => 7,
    }
}

/// `Mmm dd hh:mm:ss` in local time, as RFC 3164 and syslog(3) write it.
fn timestamp() -> String {
    const MONTHS: [&str; 12] =
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    // SAFETY: time and localtime_r only write the structs we own.
    let tm = unsafe {
        let now = libc::time(std::ptr::null_mut());
        let mut tm: libc::tm = std::mem::zeroed();
        libc::localtime_r(&now, &mut tm);
        tm
    };
    let month = MONTHS[tm.tm_mon.clamp(0, 11) as usize];
    format!("{month} {:>2} {:02}:{:02}:{:02}", tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec)
}

/// One RFC 3164 datagram for a record.
fn format_record(level: log::Level, pid: u32, message: &str) -> String {
    let priority = FACILITY_DAEMON * 8 + severity(level);
    let message = paths::redacted(message).replace(['\n', '\r'], " ");
    format!("<{priority}>{} metadatafs[{pid}]: {message}", timestamp())
}

/// The local syslog socket, connected when first needed and again after syslog restarts.
#[derive(Debug)]
struct Syslog {
    path: PathBuf,
    socket: Mutex<Option<UnixDatagram>>,
}

impl Syslog {
    fn new(path: PathBuf) -> Syslog {
        let socket = Mutex::new(connect(&path));
        Syslog { path, socket }
    }

    fn send(&self, datagram: &[u8]) {
        let mut socket = self.socket.lock().unwrap_or_else(|e| e.into_inner());
        for _ in 0..2 {
            if socket.is_none() {
                *socket = connect(&self.path);
            }
            let Some(connected) = socket.as_ref() else {
                return;
            };
            match connected.send(datagram) {
                // A full socket: drop the line, never wait.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                // Syslog went away (restarted): connect again and retry once.
                Err(_) => *socket = None,
                Ok(_) => return,
            }
        }
    }
}

struct SyslogLogger {
    filter: env_logger::Logger,
    syslog: Syslog,
}

impl log::Log for SyslogLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        self.filter.enabled(metadata)
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.filter.matches(record) {
            let line =
                format_record(record.level(), std::process::id(), &record.args().to_string());
            self.syslog.send(line.as_bytes());
        }
    }

    fn flush(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_record_is_one_rfc3164_datagram_and_a_full_socket_never_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let server = UnixDatagram::bind(&path).unwrap();
        let syslog = Syslog::new(path.clone());
        let line = format_record(log::Level::Warn, 7, "endpoint unreachable\nsecond line");
        syslog.send(line.as_bytes());
        let mut buf = [0u8; 256];
        let n = server.recv(&mut buf).unwrap();
        let got = std::str::from_utf8(&buf[..n]).unwrap();
        assert!(got.starts_with("<28>"), "{got}");
        assert!(got.ends_with(" metadatafs[7]: endpoint unreachable second line"), "{got}");
        // `<28>Nov 27 16:47:12 `: month, day padded to two, time.
        let stamp = &got[4..got.find(" metadatafs").unwrap()];
        assert_eq!(stamp.len(), 15, "{stamp:?}");
        assert_eq!(&stamp[9..10], ":");
        // Nobody reads: the socket fills up, and sends still return at once.
        let start = std::time::Instant::now();
        for _ in 0..10_000 {
            syslog.send(b"<31>metadatafs[1]: filler");
        }
        assert!(start.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn a_restarted_syslog_is_reconnected_and_a_missing_one_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let syslog = Syslog::new(path.clone());
        syslog.send(b"<27>nobody listens yet");
        let server = UnixDatagram::bind(&path).unwrap();
        syslog.send(b"<27>first");
        drop(server);
        std::fs::remove_file(&path).unwrap();
        let server = UnixDatagram::bind(&path).unwrap();
        syslog.send(b"<27>after restart");
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"<27>after restart");
    }

    #[test]
    fn a_bare_level_means_this_crate_only() {
        assert_eq!(filter_spec(None), "warn,fuser=error");
        assert_eq!(filter_spec(Some("debug")), "warn,fuser=error,metadatafs=debug");
        assert_eq!(filter_spec(Some("TRACE")), "warn,fuser=error,metadatafs=trace");
        assert_eq!(filter_spec(Some("off")), "off");
        assert_eq!(filter_spec(Some("fuser=debug")), "fuser=debug");
        let mut builder = env_logger::Builder::new();
        let logger = builder.parse_filters(&filter_spec(Some("debug"))).build();
        let record =
            |target| log::Record::builder().level(log::Level::Debug).target(target).build();
        assert!(logger.matches(&record("metadatafs::upstream::mds")));
        assert!(!logger.matches(&record("fuser::request")));
        assert!(!logger.matches(&record("hyper_util::client")));
    }
}
