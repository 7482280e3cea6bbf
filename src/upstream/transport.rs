//! Which channel MDS requests take (plain HTTP, or HTTPS with mutual TLS), and swapping it
//! when the credentials rotate or the handshake fails.
//!
//! Invariants:
//! - One `reqwest::Client` per channel, shared by every request (its pool is kept); a swap
//!   replaces the whole [`Channel`] at once, so a request sees one client, one URL base and one
//!   kind, never a mix. Requests in flight keep the `Arc` they took and finish on the old client;
//!   it is dropped with its connections when the last of them is done.
//! - Credentials are re-read when either file's identity or timestamps change (polled every
//!   [`POLL`], and at once after any failed HTTPS request), and a new client is built only when the
//!   bytes differ and form a valid configuration. Until then the old client keeps working: the
//!   guest agent keeps old credentials valid for an overlap, so a rotation costs no failed read.
//! - The files are read on a thread of their own under the `timeout` deadline (`credfile`):
//!   never on an async worker and never with a lock held, so a FIFO, a device or a hung
//!   filesystem in `mtls_dir` costs one refused refresh, not a wedged daemon.
//! - What is wrong with the files is logged once per change of state, not at every poll.
//! - `auto` falls back to plain HTTP after a failed handshake or a refused connection (warned
//!   once) and tries HTTPS again when the credentials change and every [`REPROBE`], so a blip
//!   never downgrades a mount for good; `on` never speaks plain HTTP.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use log::{debug, info, warn};

pub use crate::upstream::channel::Kind;
use crate::upstream::channel::{self, Channel};
use crate::upstream::credfile::{self, Reader};
use crate::upstream::mtls::{Credentials, CredentialsError, Mode, Settings, TlsFailure};

/// How often the credential files are checked for a rotation.
pub const POLL: Duration = Duration::from_secs(1);
/// How long an `auto` mount that fell back to plain HTTP waits before trying HTTPS again.
pub const REPROBE: Duration = Duration::from_secs(60);

/// Why the transport cannot be set up at mount time. One line.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("mtls=on: {0}")]
    Credentials(#[from] CredentialsError),
    #[error("building the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// Why [`Transport::send`] got no response.
#[derive(Debug)]
pub(crate) enum SendError {
    /// A TLS handshake refused by either side (the server's certificate, or ours): a verdict
    /// that retrying will not change.
    Refused(String),
    /// Anything else, as reqwest reports it.
    Request(reqwest::Error),
}

/// Identity and timestamps of both files; a rotation changes at least one of them.
type Stamp = [Option<credfile::Stamp>; 2];

#[derive(Debug, Default)]
struct Files {
    /// What the files looked like when last considered.
    seen: Stamp,
    /// The bytes the current (or last) mutual TLS client was built from.
    loaded: Option<Credentials>,
    /// The last complaint logged about the files; not logged again until another one, or
    /// until the files work again.
    said: Option<String>,
}

impl Files {
    fn say(&mut self, message: String) {
        if self.said.as_ref() != Some(&message) {
            warn!("{message}");
            self.said = Some(message);
        }
    }
}

#[derive(Debug)]
pub struct Transport {
    endpoint: String,
    timeout: Duration,
    settings: Settings,
    current: RwLock<Arc<Channel>>,
    files: Mutex<Files>,
    reader: Reader,
    warned_fallback: AtomicBool,
}

impl Transport {
    /// The channel `settings` call for now. Under `on`, missing or unusable credentials are
    /// an error naming the file; under `auto` they mean plain HTTP.
    pub fn new(
        endpoint: &str,
        timeout: Duration,
        settings: Settings,
    ) -> Result<Transport, TransportError> {
        let http = channel::http(endpoint, timeout, Kind::Http)?;
        let transport = Transport {
            endpoint: endpoint.to_string(),
            timeout,
            settings,
            current: RwLock::new(Arc::new(http)),
            files: Mutex::new(Files::default()),
            reader: Reader::default(),
            warned_fallback: AtomicBool::new(false),
        };
        let settings = &transport.settings;
        match settings.mode {
            Mode::Off => {}
            Mode::On => {
                let seen = stamp(settings);
                let credentials = transport.read_files()?;
                let channel = transport.build_mtls(&credentials)?;
                *transport.files.lock().unwrap() =
                    Files { seen, loaded: Some(credentials), said: None };
                transport.set(channel);
            }
            Mode::Auto => {
                transport.refresh();
            }
        }
        Ok(transport)
    }

    /// The channel to send the next request over.
    pub fn current(&self) -> Arc<Channel> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// What requests travel over now.
    pub fn kind(&self) -> Kind {
        self.current().kind
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    fn set(&self, channel: Channel) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(channel);
    }

    fn build_mtls(&self, credentials: &Credentials) -> Result<Channel, TransportError> {
        let tls = credentials.client_config(&self.settings)?;
        Ok(channel::mtls(&self.endpoint, self.timeout, tls)?)
    }

    /// Re-reads the credentials if the files changed, and switches to a client built from
    /// them if they differ and are valid. Returns whether the channel changed. Blocks for at
    /// most `timeout`: call it off the async workers.
    pub fn refresh(&self) -> bool {
        if !self.changed() {
            return false;
        }
        self.apply(self.read_files())
    }

    /// Both files, read on the reading thread within `timeout` (blocks the caller).
    fn read_files(&self) -> Result<Credentials, CredentialsError> {
        let settings = self.settings.clone();
        let read = move || Credentials::read(&settings);
        credfile::read_within(&self.reader, &self.settings.dir, self.timeout, read)
    }

    /// [`Transport::refresh`] for async callers, waiting at most `limit` for the files.
    async fn refresh_async(&self, limit: Duration) -> bool {
        if !self.changed() {
            return false;
        }
        let settings = self.settings.clone();
        let read = move || Credentials::read(&settings);
        let dir = &self.settings.dir;
        self.apply(credfile::read_within_async(&self.reader, dir, limit, read).await)
    }

    /// Whether the files look different from when last considered (a `stat` of each, which
    /// never blocks on a file's type), and so should be read.
    fn changed(&self) -> bool {
        if self.settings.mode == Mode::Off {
            return false;
        }
        let now = stamp(&self.settings);
        let mut files = self.files.lock().unwrap_or_else(|p| p.into_inner());
        if now == files.seen && files.seen != Stamp::default() {
            return false;
        }
        files.seen = now;
        if now.iter().all(Option::is_some) {
            return true;
        }
        let paths = [self.settings.root_path(), self.settings.client_path()];
        let errors = paths.iter().filter_map(|path| credfile::stamp(path).err());
        let dir = self.settings.dir.display();
        for error in errors {
            match error {
                CredentialsError::Missing(_) if self.kind() == Kind::Mtls => {
                    files.say(format!(
                        "mutual TLS credentials in {dir} are gone; keeping the ones loaded"
                    ));
                }
                CredentialsError::Missing(_) => {}
                e => files.say(format!("mutual TLS credentials: {e}; keeping {}", self.kind())),
            }
        }
        false
    }

    /// Switches to a client built from `read` if it worked and differs from what is loaded.
    fn apply(&self, read: Result<Credentials, CredentialsError>) -> bool {
        let mut files = self.files.lock().unwrap_or_else(|p| p.into_inner());
        let dir = self.settings.dir.display();
        let credentials = match read {
            Ok(c) => c,
            Err(e) => {
                files.say(format!("mutual TLS credentials: {e}; keeping {}", self.kind()));
                return false;
            }
        };
        if files.loaded.as_ref() == Some(&credentials) && self.kind() == Kind::Mtls {
            files.said = None;
            return false;
        }
        match self.build_mtls(&credentials) {
            Ok(channel) => {
                let before = self.kind();
                self.set(channel);
                files.loaded = Some(credentials);
                files.said = None;
                self.warned_fallback.store(false, Ordering::Relaxed);
                if before == Kind::Mtls {
                    info!("mutual TLS credentials in {dir} rotated: new connections use them");
                } else {
                    info!("mutual TLS credentials found in {dir}: now using {}", Kind::Mtls);
                }
                true
            }
            Err(e) => {
                let kind = self.kind();
                files.say(format!(
                    "mutual TLS credentials in {dir} not usable ({e}); keeping {kind}"
                ));
                false
            }
        }
    }

    /// Sends `request(client, base URL)` over the current channel. When that fails in a way a
    /// channel switch may cure (rotated credentials, auto's fallback to HTTP), it is sent again
    /// at once over the new channel, within the same `budget`, at most twice.
    pub(crate) async fn send(
        &self,
        budget: Duration,
        request: impl Fn(&reqwest::Client, &str) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, SendError> {
        let deadline = tokio::time::Instant::now() + budget;
        let mut channel = self.current();
        let mut tries = 0;
        loop {
            tries += 1;
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let e = match request(&channel.client, &channel.base).timeout(left).send().await {
                Ok(response) => return Ok(response),
                Err(e) => e,
            };
            if channel.kind != Kind::Mtls {
                return Err(SendError::Request(e));
            }
            let tls = crate::upstream::mtls::tls_failure(&e);
            if tries < 3 && !e.is_timeout() {
                if let Some(next) = self.after_failure(&channel, tls.as_ref(), left).await {
                    debug!("{}; retrying over {}", crate::error::describe(&e), next.kind);
                    channel = next;
                    continue;
                }
            }
            return Err(match tls {
                Some(failure) if failure.refused => SendError::Refused(failure.reason),
                _ => SendError::Request(e),
            });
        }
    }

    /// After a request over `used` failed (`tls` says how, if it was TLS): the channel to
    /// retry on at once, if any. New credentials on disk come first (a stat of two files: cheap
    /// enough for every failure; a read, within `left`, only if they changed); under `auto`, a
    /// TLS failure next means plain HTTP, warned once.
    pub(crate) async fn after_failure(
        &self,
        used: &Arc<Channel>,
        tls: Option<&TlsFailure>,
        left: Duration,
    ) -> Option<Arc<Channel>> {
        let current = self.current();
        if !Arc::ptr_eq(&current, used) || self.refresh_async(left.min(self.timeout)).await {
            return Some(self.current());
        }
        let failure = tls?;
        if self.settings.mode != Mode::Auto {
            return None;
        }
        let fallback = match channel::http(&self.endpoint, self.timeout, Kind::HttpFallback) {
            Ok(channel) => channel,
            Err(e) => {
                warn!("cannot fall back to plain HTTP: {e}");
                return None;
            }
        };
        {
            let mut slot = self.current.write().unwrap_or_else(|p| p.into_inner());
            if Arc::ptr_eq(&slot, used) {
                *slot = Arc::new(fallback);
            }
        }
        if !self.warned_fallback.swap(true, Ordering::Relaxed) {
            warn!(
                "mutual TLS handshake with {} failed ({}); mtls=auto: using plain HTTP \
                 until the credentials in {} change",
                self.endpoint,
                failure.reason,
                self.settings.dir.display()
            );
        }
        Some(self.current())
    }

    /// Tries HTTPS again after a fallback, with the credentials last loaded; switches back if
    /// the metadata server answers over it. Returns whether it did.
    pub async fn reprobe(&self) -> bool {
        if self.kind() != Kind::HttpFallback {
            return false;
        }
        let loaded = self.files.lock().unwrap_or_else(|p| p.into_inner()).loaded.clone();
        let Some(Ok(channel)) = loaded.map(|credentials| self.build_mtls(&credentials)) else {
            return false;
        };
        let answer = channel.client.get(&channel.base).timeout(self.timeout).send().await;
        let flavored = |r: &reqwest::Response| {
            r.headers().get("Metadata-Flavor").is_some_and(|v| v.as_bytes() == b"Google")
        };
        match answer {
            Ok(response) if flavored(&response) => {}
            Ok(response) => {
                debug!("HTTPS probe: HTTP {} without Metadata-Flavor", response.status());
                return false;
            }
            Err(e) => {
                debug!("HTTPS probe: {e}");
                return false;
            }
        }
        {
            let mut slot = self.current.write().unwrap_or_else(|p| p.into_inner());
            if slot.kind != Kind::HttpFallback {
                return false;
            }
            *slot = Arc::new(channel);
        }
        self.warned_fallback.store(false, Ordering::Relaxed);
        info!("mutual TLS with {} works again: now using {}", self.endpoint, Kind::Mtls);
        true
    }

    /// Polls the credential files, and retries HTTPS after a fallback, for as long as the
    /// mount lives.
    pub async fn watch(self: Arc<Self>) {
        if self.settings.mode == Mode::Off {
            return;
        }
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut fell_back: Option<tokio::time::Instant> = None;
        loop {
            tick.tick().await;
            let transport = self.clone();
            // Reading files and building a client block briefly; keep them off the I/O workers.
            let _ = tokio::task::spawn_blocking(move || transport.refresh()).await;
            if self.kind() != Kind::HttpFallback {
                fell_back = None;
                continue;
            }
            let since = *fell_back.get_or_insert_with(tokio::time::Instant::now);
            if since.elapsed() >= REPROBE {
                fell_back = Some(tokio::time::Instant::now());
                self.reprobe().await;
            }
        }
    }
}

fn stamp(settings: &Settings) -> Stamp {
    [settings.root_path(), settings.client_path()].map(|path| credfile::stamp(&path).ok())
}

#[cfg(test)]
#[path = "transport_tests.rs"]
mod tests;
