//! A faithful local emulator of the GCE metadata server (SPEC.md §7).
//!
//! It serves the MDS HTTP API (shared/reference/metadata-api.md §1–§6) from a fixture: the JSON a
//! real VM returns for `GET /computeMetadata/v1/?recursive=true&alt=json`, or a realistic built-in
//! one. Control endpoints under `/emulator/` change values, expire tokens, inject faults and count
//! requests (docs/emulator.md).
//!
//! Layers: `fixture` (JSON → tree) → `tree` (values, listings, renderings, ETags) → `handler`
//! (`dynamic`, `control`: the whole request → response logic, no socket) → `server` (hyper).
//!
//! ```no_run
//! use metadatafs::emulator::{Emulator, EmulatorConfig};
//! let emu = Emulator::start(EmulatorConfig::default()).unwrap();
//! println!("GCE_METADATA_HOST={}", emu.addr());
//! emu.shutdown();
//! ```

mod control;
mod dynamic;
mod fixture;
mod handler;
mod http;
mod server;
mod state;
mod tls;
mod tokens;
mod tree;

#[cfg(test)]
mod scenarios;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::oneshot;

/// How to run the emulator.
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// Where to listen; port 0 picks a free port (see [`Emulator::addr`]).
    pub listen: SocketAddr,
    /// The fixture JSON file; `None` uses the built-in fixture.
    pub fixture: Option<PathBuf>,
    /// Lifetime of a newly minted access token (real MDS: one hour).
    pub token_lifetime: Duration,
    /// A cached token is handed out again while more than this remains (real MDS: 5 minutes).
    pub cache_window: Duration,
    /// Also serve HTTPS with mutual TLS, writing `root.crt` and `client.key` here (`tls.rs`).
    pub tls: Option<PathBuf>,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        EmulatorConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            fixture: None,
            token_lifetime: Duration::from_secs(3600),
            cache_window: Duration::from_secs(300),
            tls: None,
        }
    }
}

/// Why the emulator could not start. `Display` is one line naming the problem.
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    /// The fixture is unreadable or malformed (the message names the file and the JSON path).
    #[error("{0}")]
    Fixture(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("cannot start the emulator's runtime: {0}")]
    Runtime(std::io::Error),
    /// The certificates could not be made or written (the message names the file).
    #[error("{0}")]
    Tls(String),
}

/// A running emulator. It stops on [`Emulator::shutdown`] or when dropped.
#[derive(Debug)]
pub struct Emulator {
    addr: SocketAddr,
    tls_dir: Option<PathBuf>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Emulator {
    /// Binds, starts serving on a thread with its own tokio runtime, returns once listening.
    /// Works from synchronous code and from inside a tokio runtime alike.
    pub fn start(config: EmulatorConfig) -> Result<Emulator, EmulatorError> {
        let tree = fixture::load(config.fixture.as_deref())
            .map_err(|e| EmulatorError::Fixture(e.to_string()))?;
        let listen_err = |source| EmulatorError::Listen { addr: config.listen, source };
        let listener = std::net::TcpListener::bind(config.listen).map_err(listen_err)?;
        listener.set_nonblocking(true).map_err(listen_err)?;
        let addr = listener.local_addr().map_err(listen_err)?;
        let tls = match &config.tls {
            Some(dir) => Some(Arc::new(tls::Tls::create(dir, addr).map_err(EmulatorError::Tls)?)),
            None => None,
        };
        let tls_dir = tls.as_ref().map(|t| t.dir().to_path_buf());
        let state =
            state::State::new(tree, config.token_lifetime, config.cache_window, server::now_ms());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("metadatafs-emulator")
            .enable_all()
            .build()
            .map_err(EmulatorError::Runtime)?;
        let (stop, stopped) = oneshot::channel();
        let shared = Arc::new(Mutex::new(state));
        let thread = std::thread::Builder::new()
            .name("metadatafs-emulator".into())
            .spawn(move || {
                runtime.block_on(server::run(listener, shared, tls, stopped));
                runtime.shutdown_timeout(Duration::from_secs(1));
            })
            .map_err(EmulatorError::Runtime)?;
        match &tls_dir {
            Some(dir) => log::info!(
                "emulator listening on {addr} (HTTP, and HTTPS with client certificates from {})",
                dir.display()
            ),
            None => log::info!("emulator listening on {addr}"),
        }
        Ok(Emulator { addr, tls_dir, stop: Some(stop), thread: Some(thread) })
    }

    /// The address it listens on (`GCE_METADATA_HOST` for clients).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where `root.crt` and `client.key` are, when it serves HTTPS.
    pub fn tls_dir(&self) -> Option<&std::path::Path> {
        self.tls_dir.as_deref()
    }

    /// Stops serving and waits for the server thread; hanging requests are cut off.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.stop();
    }
}
