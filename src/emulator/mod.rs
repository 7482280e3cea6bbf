//! The metadata server emulator (stub until the emulator branch lands).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    pub listen: SocketAddr,
    pub fixture: Option<PathBuf>,
    pub token_lifetime: Duration,
    pub cache_window: Duration,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        EmulatorConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            fixture: None,
            token_lifetime: Duration::from_secs(3600),
            cache_window: Duration::from_secs(300),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct EmulatorError(String);

#[derive(Debug)]
pub struct Emulator {
    addr: SocketAddr,
}

impl Emulator {
    pub fn start(_config: EmulatorConfig) -> Result<Emulator, EmulatorError> {
        Err(EmulatorError("not built yet".into()))
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn shutdown(self) {}
}
