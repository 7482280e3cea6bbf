//! The thin HTTP layer: hyper 1 over tokio, one task per connection, all logic in handler.rs.
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

use super::handler::{handle, pinned, serve, Action, State};
use super::http::{parse_query, Request, Response};
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
                    let state = state.clone();
                    tokio::spawn(async move {
                        let service = service_fn(move |req| respond(state.clone(), req));
                        // Title-Case names, close to the real MDS (`Metadata-Flavor: Google`)
                        // for scripts that grep `curl -i` output. hyper spells two of them
                        // `Etag` and `X-Xss-Protection` where the real capture has `ETag` and
                        // `X-XSS-Protection` (§2.2); header names are case-insensitive.
                        let conn = http1::Builder::new()
                            .title_case_headers(true)
                            .serve_connection(TokioIo::new(stream), service);
                        if let Err(e) = conn.await {
                            log::debug!("emulator: connection ended: {e}");
                        }
                    });
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

async fn respond(
    state: Shared,
    req: hyper::Request<Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, Dropped> {
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
