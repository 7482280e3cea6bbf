//! The request → response logic, without a socket (Firecracker's MMDS is the model).
//!
//! [`handle`] is the whole emulator for one request: request counters and injected faults
//! (control.rs), then [`serve`], the MDS itself. A `wait_for_change` request whose value has not
//! changed yields [`Action::Wait`]; the server then calls [`serve`] again after each change (and once
//! more with `may_wait = false` at the deadline), so every rule stays here and is unit-tested.
//!
//! MDS rules applied here (metadata-api.md): `GET /` needs no header (§1.2, §2.1); every
//! `/computeMetadata/v1/…` request needs `Metadata-Flavor: Google` and must not carry
//! `X-Forwarded-For` (403, §2.1, §2.3); a directory without its slash is a 301 whose body is the path
//! (§3.2); a slash after a leaf, unknown keys and bad indices are 404 (§3.5); `recursive` and `alt`
//! (§3.3, §3.4); `wait_for_change`, `last_etag`, `timeout_sec` (§4).

use std::time::Duration;

use hyper::Method;

use super::control;
use super::dynamic;
use super::http::{error_page, error_text, not_found, Request, Response, JSON, TEXT};
use super::state::{take_fault, Action, Fault, State};
use super::tokens::Millis;
use super::tree::{etag, Node};

#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) action: Action,
    /// Injected latency before anything else happens.
    pub(crate) delay: Duration,
    /// Injected fault: remove `Metadata-Flavor` from the eventual response.
    pub(crate) strip_flavor: bool,
}

impl Reply {
    fn now(action: Action) -> Reply {
        Reply { action, delay: Duration::ZERO, strip_flavor: false }
    }
}

/// One request, end to end (counters, faults, MDS).
pub(crate) fn handle(st: &mut State, req: &Request, now: Millis) -> Reply {
    if req.path == "/emulator" || req.path.starts_with("/emulator/") {
        return Reply::now(Action::Respond(control::handle(st, req, now)));
    }
    *st.counters.entry(req.path.clone()).or_default() += 1;
    let fault = take_fault(&mut st.faults, &req.path);
    let action = match &fault {
        Some(f) if f.drop => Action::Drop,
        Some(Fault { body: Some(body), status, .. }) => {
            // The normal response (never hanging), with its body (and status) replaced.
            let mut r = match serve(st, req, now, false) {
                Action::Respond(r) => r,
                _ => Response::mds(200, TEXT, ""),
            };
            r.body = body.clone().into_bytes();
            r.status = status.unwrap_or(r.status);
            Action::Respond(r)
        }
        Some(Fault { status: Some(status), .. }) => {
            Action::Respond(error_page(*status, "Injected by the emulator."))
        }
        _ => serve(st, req, now, true),
    };
    Reply {
        action,
        delay: fault.as_ref().map_or(Duration::ZERO, |f| f.latency),
        strip_flavor: fault.is_some_and(|f| f.no_flavor),
    }
}

/// The MDS. With `may_wait = false`, a `wait_for_change` request answers with the current value.
pub(crate) fn serve(st: &mut State, req: &Request, now: Millis, may_wait: bool) -> Action {
    let path = req.path.as_str();
    if req.header_value("x-forwarded-for").is_some() {
        return Action::Respond(forbidden(path, "Request had an X-Forwarded-For header."));
    }
    let respond = |r| Action::Respond(r);
    match path {
        "/" => return respond(Response::mds(200, TEXT, "0.1/\ncomputeMetadata/\n")),
        "/computeMetadata" => return respond(redirect("/computeMetadata/", req)),
        "/computeMetadata/" => return respond(Response::mds(200, TEXT, "v1/\nv1beta1/\n")),
        _ => {}
    }
    if path == "/0.1" || path.starts_with("/0.1/") || path.starts_with("/computeMetadata/v1beta1") {
        return respond(error_text(
            403,
            "Legacy metadata endpoints are disabled. Please use the /v1/ endpoint.",
        ));
    }
    let Some(rest) =
        path.strip_prefix("/computeMetadata/v1").filter(|r| r.is_empty() || r.starts_with('/'))
    else {
        return respond(not_found(path));
    };
    if req.header_value("metadata-flavor") != Some("Google") {
        return respond(forbidden(path, "Missing Metadata-Flavor:Google header."));
    }
    if rest.is_empty() {
        return respond(redirect("/computeMetadata/v1/", req));
    }
    let slash = rest.ends_with('/');
    let segs: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    if let Some(action) = dynamic::route(st, req, &segs, slash, now) {
        return action;
    }
    if req.method != Method::GET && req.method != Method::HEAD {
        return respond(error_page(405, "The request method is not allowed for this URL."));
    }
    serve_tree(st, req, &segs, slash, may_wait)
}

fn serve_tree(st: &State, req: &Request, segs: &[&str], slash: bool, may_wait: bool) -> Action {
    let Some(node) = st.tree.get(segs) else {
        return Action::Respond(not_found(&req.path));
    };
    let recursive = req.flag("recursive");
    let alt = req.param("alt");
    let wait = req.flag("wait_for_change");
    // `timeout_sec` is checked whether or not this request ends up waiting (§4).
    let timeout = match timeout(req) {
        Ok(timeout) => timeout,
        Err(r) if wait => return Action::Respond(r),
        Err(_) => None,
    };
    let hide = dynamic::hidden_guest_attributes(st);
    let (body, content_type, tag) = match node {
        Node::Leaf(_) if slash => return Action::Respond(not_found(&req.path)),
        Node::Leaf(leaf) => {
            // `instance/tags` is the one value whose default format is JSON (§3.4).
            let json = alt == Some("json") || (alt != Some("text") && segs == ["instance", "tags"]);
            let tag = etag("leaf", &leaf.json());
            if json {
                (leaf.json(), JSON, tag)
            } else {
                (leaf.text(), TEXT, tag)
            }
        }
        _ if !slash => return Action::Respond(redirect(&format!("{}/", req.path), req)),
        _ if !recursive => {
            if alt.is_some() {
                return Action::Respond(error_text(
                    400,
                    "alt is only supported for values and recursive requests",
                ));
            }
            if wait {
                return Action::Respond(error_text(
                    400,
                    "wait_for_change is not supported on a directory listing; use recursive=true",
                ));
            }
            let extra: &[&str] = if is_account_dir(segs) { &["token"] } else { &[] };
            let listing = node.listing(extra);
            let tag = etag("listing", &listing);
            (listing, TEXT, tag)
        }
        _ => {
            let mut json = String::new();
            node.json(hide, &mut json);
            let tag = etag("recursive", &json);
            if alt == Some("text") {
                let mut text = String::new();
                node.text_lines("", hide, &mut text);
                (text, TEXT, tag)
            } else {
                (json, JSON, tag)
            }
        }
    };
    if wait && may_wait && req.param("last_etag").is_none_or(|t| t == tag) {
        return Action::Wait { timeout, etag: tag };
    }
    Action::Respond(Response::mds(200, content_type, body).with("etag", tag))
}

/// `req` waiting for a change from `etag`: a request that came without `last_etag` waits for
/// the version it first saw to change, not for whatever is current at each wake-up.
pub(crate) fn pinned(req: &Request, etag: &str) -> Request {
    let mut req = req.clone();
    if req.param("last_etag").is_none() {
        req.query.push(("last_etag".into(), etag.into()));
    }
    req
}

/// `timeout_sec` is an integer number of seconds (§4).
pub(crate) fn timeout(req: &Request) -> Result<Option<Duration>, Response> {
    match req.param("timeout_sec") {
        None => Ok(None),
        Some(v) => v
            .parse::<u64>()
            .map(|s| Some(Duration::from_secs(s)))
            .map_err(|_| error_text(400, "timeout_sec must be a non-negative integer")),
    }
}

/// The 403 the MDS front end gives a request that fails its security checks (§2.1, §2.3).
fn forbidden(path: &str, why: &str) -> Response {
    let path = super::http::escape(path);
    error_page(
        403,
        &format!(
            "Your client does not have permission to get URL <code>{path}</code> from this \
             server. {why}"
        ),
    )
}

fn is_account_dir(segs: &[&str]) -> bool {
    segs.len() == 3 && segs[0] == "instance" && segs[1] == "service-accounts"
}

/// 301 to `target`, body = the path (§3.2); `Location` is absolute, built from `Host`.
pub(crate) fn redirect(target: &str, req: &Request) -> Response {
    let host = req.header_value("host").unwrap_or("metadata.google.internal");
    Response::mds(301, "text/html", format!("{target}\n"))
        .with("location", format!("http://{host}{target}"))
}
