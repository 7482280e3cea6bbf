//! The thin HTTP layer: hyper 1 over tokio, one task per connection, all logic in handler.rs.
//! With `--tls`, a connection that opens with a TLS handshake is served over HTTPS (tls.rs).
//!
//! A hanging `wait_for_change` request holds only a `watch::Receiver` and a timer, so hundreds of
//! them cost next to nothing and never block other requests (the 2016 Google emulator notes "500 max
//! hanging gets", metadata-api.md §4). The state mutex is never held across an `.await`.
//! Request lines are logged at debug level with the path only: queries (`tokeninfo?access_token=`)
//! and bodies (tokens, identity JWTs) are never logged.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::sync::{oneshot, watch};

use super::handler::{handle, pinned, serve};
use super::http::{parse_query, Request, Response};
use super::state::{Action, State};
use super::tls::{not_enabled, Tls};
use super::tokens::Millis;

pub(crate) type Shared = Arc<Mutex<State>>;

/// The largest request body taken.
const MAX_BODY: usize = 8 << 20;

/// The connection is closed without a response (an injected `drop` fault).
#[derive(Debug, thiserror::Error)]
#[error("connection dropped by an injected fault")]
struct Dropped;

pub(crate) fn now_ms() -> Millis {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as Millis)
}

fn lock(state: &Shared) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Accepts connections until `stop` fires; connection tasks die with the runtime.
pub(crate) async fn run(
    listener: std::net::TcpListener,
    state: Shared,
    tls: Option<Arc<Tls>>,
    mut stop: oneshot::Receiver<()>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            log::error!("emulator: cannot register the listener: {e}");
            return;
        }
    };
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(connection(stream, state.clone(), tls.clone()));
                }
                Err(e) => {
                    log::warn!("emulator: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            _ = &mut stop => break,
        }
    }
}

/// One connection: HTTPS if it opens with a TLS handshake record and `--tls` is on, else HTTP.
async fn connection(stream: tokio::net::TcpStream, state: Shared, tls: Option<Arc<Tls>>) {
    const TLS_HANDSHAKE: u8 = 0x16;
    let mut first = [0u8; 1];
    let starts_tls = tls.is_some()
        && matches!(stream.peek(&mut first).await, Ok(1) if first[0] == TLS_HANDSHAKE);
    match tls {
        Some(tls) if starts_tls => match tls.acceptor().accept(stream).into_fallible().await {
            Ok(stream) => {
                let session = stream.get_ref().1;
                tls.accepted(session.server_name());
                let cert = session.peer_certificates().and_then(|c| c.first()).cloned();
                serve_connection(TokioIo::new(stream), state, Some(tls), cert.map(|c| c.to_vec()))
                    .await
            }
            Err((e, stream)) => {
                tls.refused();
                log::debug!("emulator: TLS handshake refused: {e}");
                linger(stream).await;
            }
        },
        tls => serve_connection(TokioIo::new(stream), state, tls, None).await,
    }
}

/// Close after a refused handshake so that the client reads our alert: closing a socket with
/// the client's unread request in it resets the connection, and a reset can destroy the alert
/// before the client reads it. Stop sending, then drain what the client sent, briefly.
async fn linger(mut stream: tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = stream.shutdown().await;
    let mut sink = [0u8; 4096];
    let drain = async { while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {} };
    let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
}

async fn serve_connection<T>(io: T, state: Shared, tls: Option<Arc<Tls>>, cert: Option<Vec<u8>>)
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let cert = Arc::new(cert);
    let service = service_fn(move |req| respond(state.clone(), tls.clone(), cert.clone(), req));
    // Title-Case names, close to the real MDS (`Metadata-Flavor: Google`) for scripts that
    // grep `curl -i` output. hyper spells two of them `Etag` and `X-Xss-Protection` where the
    // real capture has `ETag` and `X-XSS-Protection` (§2.2); header names are case-insensitive.
    let conn = http1::Builder::new().title_case_headers(true).serve_connection(io, service);
    if let Err(e) = conn.await {
        log::debug!("emulator: connection ended: {e}");
    }
}

async fn respond(
    state: Shared,
    tls: Option<Arc<Tls>>,
    cert: Arc<Option<Vec<u8>>>,
    req: hyper::Request<Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, Dropped> {
    // Client credentials rotated out since this connection's handshake: close it, as a
    // server that re-checks its peers would; the client must come back with the new ones.
    if tls.as_ref().is_some_and(|tls| !tls.admit(cert.as_deref())) {
        log::debug!(
            "{} {} -> dropped: client certificate no longer accepted",
            req.method(),
            req.uri().path()
        );
        return Err(Dropped);
    }
    let (parts, body) = req.into_parts();
    // Bodies are small (guest attributes, control values): a bigger one is refused, never
    // buffered, whatever its path.
    let body = match http_body_util::Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            let too_big = super::http::error_page(413, "Request body too large.");
            return Ok(to_hyper(too_big));
        }
    };
    let request = Request {
        method: parts.method,
        path: parts.uri.path().to_string(),
        query: parse_query(parts.uri.query().unwrap_or("")),
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| {
                (n.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned())
            })
            .collect(),
        body: body.to_vec(),
    };
    if request.path.starts_with("/emulator/tls") {
        let response = tls.as_ref().map_or_else(not_enabled, |tls| tls.control(&request));
        return Ok(to_hyper(response));
    }
    if let Some(tls) = tls.as_ref().filter(|_| !request.path.starts_with("/emulator/")) {
        tls.count(cert.is_some());
    }
    let (reply, changes) = {
        let mut st = lock(&state);
        let changes = st.subscribe();
        (handle(&mut st, &request, now_ms()), changes)
    };
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let mut response = match reply.action {
        Action::Respond(r) => r,
        Action::Drop => {
            log::debug!("{} {} -> dropped", request.method, request.path);
            return Err(Dropped);
        }
        Action::Wait { timeout, etag } => {
            wait(&state, &pinned(&request, &etag), timeout, changes).await
        }
    };
    if reply.strip_flavor {
        response.headers.retain(|(n, _)| *n != "metadata-flavor");
    }
    log::debug!("{} {} -> {}", request.method, request.path, response.status);
    Ok(to_hyper(response))
}

/// Re-serves `req` after every change until its answer is ready, or at the deadline.
async fn wait(
    state: &Shared,
    req: &Request,
    timeout: Option<Duration>,
    mut changes: watch::Receiver<u64>,
) -> Response {
    let deadline = timeout.and_then(|t| tokio::time::Instant::now().checked_add(t));
    loop {
        let changed = match deadline {
            Some(d) => tokio::time::timeout_at(d, changes.changed()).await.ok(),
            None => Some(changes.changed().await),
        };
        let mut st = lock(state);
        let may_wait = matches!(changed, Some(Ok(())));
        changes.borrow_and_update();
        match serve(&mut st, req, now_ms(), may_wait) {
            Action::Respond(r) => return r,
            Action::Wait { .. } if may_wait => continue,
            _ => return super::http::error_page(500, "The emulator could not answer."),
        }
    }
}

fn to_hyper(r: Response) -> hyper::Response<Full<Bytes>> {
    let mut builder = hyper::Response::builder().status(r.status);
    for (name, value) in &r.headers {
        builder = builder.header(*name, value.as_str());
    }
    builder
        .body(Full::new(Bytes::from(r.body)))
        .unwrap_or_else(|_| hyper::Response::new(Full::new(Bytes::new())))
}
