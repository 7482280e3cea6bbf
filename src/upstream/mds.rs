//! The MDS client: one `reqwest::Client` at a time (plain HTTP or mutual TLS, swapped whole by
//! `transport`), one place that adds `Metadata-Flavor: Google` and checks it on the way back,
//! one retry loop.
//!
//! Retry policy (reference/metadata-api.md §2.4, §8, §9): connect errors, timeouts, 5xx and 429
//! are transient and retried with exponential backoff and jitter, all inside the caller's
//! `timeout`; 4xx, a missing `Metadata-Flavor` response header and oversized bodies are
//! permanent. Redirects are never followed: a 301 means we asked for a directory as a file.
//! Once a request has used up its `timeout` on transient failures, the next ones make a single
//! attempt until one succeeds; only a server that could not be connected to at all makes them
//! fail at once for a while (see `Outage`). Response bodies are never logged: they may be
//! tokens.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use log::debug;
use reqwest::StatusCode;

use crate::clock::jitter;
use crate::error::{describe, Error, Result};
use crate::stats::MdsStats;
use crate::upstream::mtls::Settings;
use crate::upstream::transport::{Kind, SendError, Transport, TransportError};

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How long requests fail at once after the MDS could not be reached (see [`Outage`]).
const OUTAGE_HOLD: Duration = Duration::from_secs(2);
/// How long after a request ran out of retries the next ones try only once (see `strained`).
const STRAIN: Duration = Duration::from_secs(5);

/// What the filesystem core needs from a metadata server. `path` is relative to
/// `computeMetadata/v1/` and may carry a query string.
pub trait Mds: Send + Sync + 'static {
    /// GET the path; `Ok` only for a 200 whose body arrived whole.
    fn get(&self, path: &str) -> impl Future<Output = Result<Bytes>> + Send;

    /// What requests travel over now (plain HTTP or mutual TLS), for the status file; `None`
    /// for a server that is no network client.
    fn transport_kind(&self) -> Option<Kind> {
        None
    }

    /// One request that may hang up to `wait` (a `wait_for_change` long-poll): no retries,
    /// the caller paces itself. Returns the body and its `ETag`.
    fn long_poll(
        &self,
        path: &str,
        wait: Duration,
    ) -> impl Future<Output = Result<(Bytes, Option<String>)>> + Send {
        let _ = wait;
        async move { Ok((self.get(path).await?, None)) }
    }

    /// A waiting GET (`wait_for_change`): like `get`, but it may take up to `limit` plus the
    /// usual `timeout`, and running that long says nothing about the MDS being down.
    fn wait(&self, path: &str, limit: Duration) -> impl Future<Output = Result<Bytes>> + Send {
        let _ = limit;
        self.get(path)
    }

    /// PUT `body` to the path (guest attributes). A server that takes no writes: EROFS.
    fn put(&self, path: &str, body: Bytes) -> impl Future<Output = Result<()>> + Send {
        let _ = (path, body);
        async { Err(Error::ReadOnly) }
    }

    /// DELETE the path (guest attributes). A server that takes no writes: EROFS.
    fn delete(&self, path: &str) -> impl Future<Output = Result<()>> + Send {
        let _ = path;
        async { Err(Error::ReadOnly) }
    }

    /// The client's counters for the status file; `None` for one that keeps none.
    fn stats(&self) -> Option<&MdsStats> {
        None
    }
}

/// The largest recursive dump the watcher takes: the whole tree, so more than one value.
const MAX_DUMP: u64 = 64 << 20;

#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// `HOST[:PORT]`.
    pub endpoint: String,
    /// Longest one `get` may take, retries included.
    pub timeout: Duration,
    /// Bodies above this are refused (EFBIG).
    pub max_value: u64,
    /// Whether and how to use HTTPS with mutual TLS (`transport`, `mtls`).
    pub mtls: Settings,
}

#[derive(Debug)]
pub struct HttpMds {
    transport: Arc<Transport>,
    config: HttpConfig,
    outage: Mutex<Outage>,
    /// Until when requests make one attempt, not a retry loop: set when a request used up its
    /// `timeout` on transient failures, cleared by any success. Retries ride out a hiccup; in
    /// a storm they only multiply the wait, and a read that needs one more cold name after an
    /// expired one already cost a `timeout` should not wait a second one.
    strained: Mutex<Option<Instant>>,
    stats: MdsStats,
}

/// When a request could not connect to the MDS at all for its whole `timeout`, the next
/// requests for a short while fail at once instead of each waiting out a `timeout` of its own:
/// a read that walks three cold directories during an outage fails after one `timeout`, not
/// three, and cached values are served stale without delay. Only connect failures count: an
/// HTTP error (5xx, 429) or one slow answer (a token request that timed out after connecting)
/// says the server is there, and one path failing says nothing about the others.
#[derive(Debug, Default)]
struct Outage {
    until: Option<(Instant, String)>,
}

impl Outage {
    fn begin(&mut self, hold: Duration, why: String) {
        self.until = Some((Instant::now() + hold, why));
    }

    fn end(&mut self) {
        self.until = None;
    }

    /// Why requests fail at once now, if they do.
    fn current(&self) -> Option<String> {
        let (until, why) = self.until.as_ref()?;
        (Instant::now() < *until).then(|| format!("unreachable, not retried yet ({why})"))
    }
}

/// How far one attempt got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Contact {
    /// The connection could not be made (refused, no route, connect timeout).
    NoConnection,
    /// Connected, or not known to have failed connecting, but no answer came in time.
    NoAnswer,
    /// An HTTP answer came, whatever its status.
    Answered,
}

impl HttpMds {
    /// The client `config` calls for; under `mtls=on` without usable credentials, an error
    /// naming the file.
    pub fn new(config: HttpConfig) -> Result<Self, TransportError> {
        let transport = Transport::new(&config.endpoint, config.timeout, config.mtls.clone())?;
        let (outage, strained) = (Mutex::new(Outage::default()), Mutex::new(None));
        let stats = MdsStats::new(&config.endpoint);
        Ok(HttpMds { transport: Arc::new(transport), config, outage, strained, stats })
    }

    pub fn endpoint(&self) -> &str {
        &self.config.endpoint
    }

    /// Which channel requests take, for the status file and logs; `transport().watch()`
    /// follows credential rotations.
    pub fn transport(&self) -> &Arc<Transport> {
        &self.transport
    }

    /// One request, and how far it got.
    async fn attempt(&self, call: &Call<'_>, budget: Duration) -> (Result<Bytes>, Contact) {
        let path = call.path;
        let request = |client: &reqwest::Client, base: &str| {
            let request = client.request(call.method.clone(), format!("{base}{path}"));
            match &call.body {
                Some(body) => request.body(body.clone()),
                None => request,
            }
        };
        let started = Instant::now();
        let response = match self.transport.send(budget, request).await {
            Ok(response) => response,
            // The server is not the one root.crt vouches for, or it refuses our certificate:
            // retrying will not change that, and nothing it says is served.
            Err(SendError::Refused(reason)) => {
                self.stats.attempt(path, None, false, started.elapsed());
                let reason = format!("TLS handshake failed: {reason}");
                return (
                    Err(Error::Misconfigured { path: path.into(), reason }),
                    Contact::Answered,
                );
            }
            Err(SendError::Request(e)) => {
                self.stats.attempt(path, None, false, started.elapsed());
                let reason = if e.is_timeout() { "timed out".into() } else { describe(&e) };
                let contact =
                    if e.is_connect() { Contact::NoConnection } else { Contact::NoAnswer };
                return (Err(Error::Unavailable { path: path.into(), reason }), contact);
            }
        };
        let (code, flavored) = (response.status().as_u16(), is_flavored(&response));
        debug!("{} {path} -> {code}", call.method);
        let result = self.answer(path, response, self.config.max_value).await;
        self.stats.attempt(path, Some(code), flavored, started.elapsed());
        (result, Contact::Answered)
    }

    async fn answer(&self, path: &str, response: reqwest::Response, limit: u64) -> Result<Bytes> {
        let unavailable = |reason: String| Error::Unavailable { path: path.to_string(), reason };
        let status = response.status();
        match status {
            // Whatever answered is not the metadata server (a proxy, a captive portal, a wrong
            // endpoint): nothing it says is served, and retrying will not change it.
            _ if !is_flavored(&response) => Err(Error::Misconfigured {
                path: path.into(),
                reason: format!("HTTP {} without Metadata-Flavor: Google", status.as_u16()),
            }),
            StatusCode::OK => self.read_body(path, response, limit).await,
            StatusCode::NOT_FOUND => Err(Error::NotFound),
            StatusCode::BAD_REQUEST => Err(Error::BadRequest { path: path.into() }),
            StatusCode::FORBIDDEN => Err(Error::Forbidden { path: path.into() }),
            StatusCode::TOO_MANY_REQUESTS => Err(unavailable("HTTP 429".into())),
            s if s.is_server_error() => Err(unavailable(format!("HTTP {}", s.as_u16()))),
            s => Err(Error::Misconfigured {
                path: path.into(),
                reason: format!("unexpected HTTP {}", s.as_u16()),
            }),
        }
    }

    async fn read_body(
        &self,
        path: &str,
        mut response: reqwest::Response,
        limit: u64,
    ) -> Result<Bytes> {
        let too_big = |size| Error::TooBig { path: path.into(), size, limit };
        if let Some(len) = response.content_length().filter(|&len| len > limit) {
            return Err(too_big(len));
        }
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    body.extend_from_slice(&chunk);
                    if body.len() as u64 > limit {
                        return Err(too_big(body.len() as u64));
                    }
                }
                Ok(None) => return Ok(Bytes::from(body)),
                // A body cut short is never served: the read fails and may be retried.
                Err(e) => {
                    return Err(Error::Unavailable { path: path.into(), reason: describe(&e) })
                }
            }
        }
    }
}

/// One logical request: retried as a whole within `timeout`.
#[derive(Debug)]
struct Call<'a> {
    method: reqwest::Method,
    path: &'a str,
    body: Option<Bytes>,
    timeout: Duration,
    /// A waiting read: running out of time is its nature, not an outage.
    waiting: bool,
}

impl Mds for HttpMds {
    fn transport_kind(&self) -> Option<Kind> {
        Some(self.transport.kind())
    }

    async fn long_poll(&self, path: &str, wait: Duration) -> Result<(Bytes, Option<String>)> {
        let request = |client: &reqwest::Client, base: &str| client.get(format!("{base}{path}"));
        let started = Instant::now();
        let response = match self.transport.send(wait, request).await {
            Ok(response) => response,
            Err(SendError::Refused(reason)) => {
                self.stats.attempt(path, None, false, started.elapsed());
                let reason = format!("TLS handshake failed: {reason}");
                return Err(Error::Misconfigured { path: path.into(), reason });
            }
            Err(SendError::Request(e)) => {
                self.stats.attempt(path, None, false, started.elapsed());
                let reason = if e.is_timeout() { "timed out".into() } else { describe(&e) };
                return Err(Error::Unavailable { path: path.into(), reason });
            }
        };
        let (code, flavored) = (response.status().as_u16(), is_flavored(&response));
        let etag = response.headers().get(reqwest::header::ETAG).and_then(|v| v.to_str().ok());
        let etag = etag.map(str::to_string);
        let result = self.answer(path, response, MAX_DUMP).await;
        self.stats.attempt(path, Some(code), flavored, started.elapsed());
        Ok((result?, etag))
    }

    async fn get(&self, path: &str) -> Result<Bytes> {
        let timeout = self.config.timeout;
        self.send(Call { method: reqwest::Method::GET, path, body: None, timeout, waiting: false })
            .await
    }

    async fn wait(&self, path: &str, limit: Duration) -> Result<Bytes> {
        let timeout = limit.saturating_add(self.config.timeout);
        self.send(Call { method: reqwest::Method::GET, path, body: None, timeout, waiting: true })
            .await
    }

    async fn put(&self, path: &str, body: Bytes) -> Result<()> {
        let (method, timeout) = (reqwest::Method::PUT, self.config.timeout);
        self.send(Call { method, path, body: Some(body), timeout, waiting: false }).await?;
        Ok(())
    }

    async fn delete(&self, path: &str) -> Result<()> {
        let (method, timeout) = (reqwest::Method::DELETE, self.config.timeout);
        self.send(Call { method, path, body: None, timeout, waiting: false }).await?;
        Ok(())
    }

    fn stats(&self) -> Option<&MdsStats> {
        Some(&self.stats)
    }
}

impl HttpMds {
    /// Every request but the watcher's long-poll: retried inside its timeout, and its failure
    /// counted for the status file.
    async fn send(&self, call: Call<'_>) -> Result<Bytes> {
        let result = self.send_with_retries(call).await;
        if let Err(e) = &result {
            self.stats.failed(e);
        }
        result
    }

    async fn send_with_retries(&self, call: Call<'_>) -> Result<Bytes> {
        let path = call.path;
        if let Some(reason) = self.outage.lock().unwrap().current() {
            return Err(Error::Unavailable { path: path.into(), reason });
        }
        let deadline = Instant::now() + call.timeout;
        let mut backoff = FIRST_BACKOFF;
        let once = self.strained.lock().unwrap().is_some_and(|until| Instant::now() < until);
        // Unreachable: some attempt could not connect and none got an answer. (The last
        // attempt may be cut short by the deadline mid-connect, which reads as no answer.)
        let (mut no_connection, mut answered) = (false, false);
        loop {
            let budget = deadline.saturating_duration_since(Instant::now());
            let err = match self.attempt(&call, budget).await {
                (Ok(body), _) => {
                    self.outage.lock().unwrap().end();
                    *self.strained.lock().unwrap() = None;
                    return Ok(body);
                }
                (Err(e), _) if !e.is_transient() => {
                    self.outage.lock().unwrap().end();
                    return Err(e);
                }
                (Err(e), contact) => {
                    no_connection |= contact == Contact::NoConnection;
                    answered |= contact == Contact::Answered;
                    e
                }
            };
            let pause = jitter(backoff);
            if once || Instant::now() + pause >= deadline {
                if call.waiting {
                    return Err(err);
                }
                *self.strained.lock().unwrap() = Some(Instant::now() + STRAIN);
                let unreachable = no_connection && !answered;
                if let (true, Error::Unavailable { reason, .. }) = (unreachable, &err) {
                    let hold = self.config.timeout.min(OUTAGE_HOLD);
                    self.outage.lock().unwrap().begin(hold, reason.clone());
                }
                return Err(err);
            }
            debug!("retrying {path} in {pause:?}: {err}");
            tokio::time::sleep(pause).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

fn is_flavored(response: &reqwest::Response) -> bool {
    response.headers().get("Metadata-Flavor").is_some_and(|v| v.as_bytes() == b"Google")
}

#[cfg(test)]
#[path = "mds_tests.rs"]
mod http_tests;
