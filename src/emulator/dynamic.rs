//! The endpoints that are not plain tree values: service-account `token` and `identity`
//! (metadata-api.md §5.2, §5.3) and the writable guest attributes (§6).
//!
//! - `token`/`identity` exist under every account directory (`default/` and each email), are not
//!   in the tree (so recursive dumps never contain them, §3.3), take no trailing slash (404) and
//!   refuse `wait_for_change` (400, §4).
//! - `scopes=` narrows a token only with `enforce_scopes=true` (or the metadata key
//!   `enable-access-token-enforce-scopes`), and only to a subset of the account's scopes; an explicit
//!   false `enforce_scopes` is 400 (§5.2).
//! - Guest attributes are 403 `Guest attributes endpoint access is disabled.` unless
//!   `enable-guest-attributes` is TRUE in instance (first) or project attributes; names are letters,
//!   digits, `_` and `-`; a value lives at exactly `NAMESPACE/KEY` (§6). Writes above 3 a second
//!   or 10 a minute are answered 200 and dropped, as the MDS may drop them.

use hyper::Method;

use super::http::{error_page, error_text, not_found, truthy, Request, Response, JSON, TEXT};
use super::state::{text_at, Action, State};
use super::tokens::{InstanceClaims, Millis};
use super::tree::{Leaf, Node};

/// `Some` if `segs` is a dynamic endpoint (then this is its whole answer).
pub(crate) fn route(
    st: &mut State,
    req: &Request,
    segs: &[&str],
    slash: bool,
    now: Millis,
) -> Option<Action> {
    match segs {
        ["instance", "guest-attributes", rest @ ..] => {
            if !guest_attributes_enabled(st) {
                let body = "Guest attributes endpoint access is disabled.";
                return Some(Action::Respond(error_text(403, body)));
            }
            if req.method == Method::GET || req.method == Method::HEAD {
                return None; // served from the tree like any value
            }
            Some(guest(st, req, rest, slash, now))
        }
        ["instance", "service-accounts", account, end @ ("token" | "identity")] => {
            if !matches!(st.tree.get(&segs[..3]), Some(n) if n.is_dir()) {
                return Some(Action::Respond(not_found(&req.path)));
            }
            let r = if slash {
                not_found(&req.path)
            } else if req.method != Method::GET && req.method != Method::HEAD {
                error_page(405, "The request method is not allowed for this URL.")
            } else if req.flag("wait_for_change") {
                error_text(400, "wait_for_change is not supported on this endpoint")
            } else if *end == "token" {
                token(st, req, account, now)
            } else {
                identity(st, req, account, now)
            };
            Some(Action::Respond(r))
        }
        _ => None,
    }
}

fn token(st: &mut State, req: &Request, account: &str, now: Millis) -> Response {
    let email = account_email(st, account);
    let own: Vec<String> = match st.tree.get(&["instance", "service-accounts", account, "scopes"]) {
        Some(Node::Leaf(Leaf::List(items))) => items.clone(),
        Some(Node::Leaf(l)) => l.text().lines().map(str::to_string).collect(),
        _ => Vec::new(),
    };
    let enforce = match req.param("enforce_scopes").map(|v| v.to_ascii_lowercase()) {
        None => attribute_true(st, "enable-access-token-enforce-scopes"),
        Some(v) if matches!(v.as_str(), "true" | "1" | "yes" | "y") => true,
        Some(v) if matches!(v.as_str(), "false" | "0" | "no" | "n") => {
            return error_text(400, "enforce_scopes=false is not supported");
        }
        Some(_) => return error_text(400, "invalid value for enforce_scopes"),
    };
    let wanted: Vec<String> = req
        .param("scopes")
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    let scopes = if enforce && !wanted.is_empty() {
        if let Some(bad) = wanted.iter().find(|s| !own.contains(s)) {
            return error_text(
                400,
                &format!("requested scope {bad} is not among the scopes of the service account"),
            );
        }
        wanted
    } else {
        own
    };
    let body = st.tokens.access_token(account, &email, &scopes, now);
    Response::mds(200, JSON, body)
}

fn identity(st: &mut State, req: &Request, account: &str, now: Millis) -> Response {
    let audience = req.param("audience").unwrap_or("");
    if audience.is_empty() {
        return error_text(400, "non-empty audience parameter required");
    }
    let email = account_email(st, account);
    let full = req.param("format") == Some("full");
    let licenses = full && req.param("licenses").is_some_and(truthy);
    let claims = full.then(|| instance_claims(st));
    let jwt = st.tokens.identity(audience, &email, claims.as_ref().map(|c| (c, licenses)), now);
    Response::mds(200, TEXT, jwt)
}

fn account_email(st: &State, account: &str) -> String {
    text_at(st, &["instance", "service-accounts", account, "email"])
        .unwrap_or_else(|| account.to_string())
}

fn instance_claims(st: &State) -> InstanceClaims {
    let get = |segs: &[&str]| text_at(st, segs).unwrap_or_default();
    let licenses = match st.tree.get(&["instance", "licenses"]) {
        Some(Node::Array(items)) => items.iter().filter_map(|n| n.text_at(&["id"])).collect(),
        _ => Vec::new(),
    };
    let zone = get(&["instance", "zone"]);
    InstanceClaims {
        instance_id: get(&["instance", "id"]),
        instance_name: get(&["instance", "name"]),
        project_id: get(&["project", "project-id"]),
        project_number: get(&["project", "numeric-project-id"]),
        zone: zone.rsplit('/').next().unwrap_or_default().to_string(),
        creation_timestamp: st.started / 1000,
        licenses,
    }
}

/// `name` is `TRUE` in instance attributes, or (if unset there) in project attributes.
fn attribute_true(st: &State, name: &str) -> bool {
    text_at(st, &["instance", "attributes", name])
        .or_else(|| text_at(st, &["project", "attributes", name]))
        .is_some_and(|v| truthy(v.trim()))
}

pub(crate) fn guest_attributes_enabled(st: &State) -> bool {
    attribute_true(st, "enable-guest-attributes")
}

/// The guest-attributes node to render as `{}` in recursive dumps while they are disabled.
pub(crate) fn hidden_guest_attributes(st: &State) -> Option<&Node> {
    if guest_attributes_enabled(st) {
        None
    } else {
        st.tree.get(&["instance", "guest-attributes"])
    }
}

/// Guest-attribute writes allowed: bursts of 3 a second, 10 a minute (§6).
const GUEST_BURST: (usize, Millis) = (3, 1000);
const GUEST_SUSTAINED: (usize, Millis) = (10, 60_000);

/// Whether a guest-attribute write arriving `now` is within the MDS's rate limit. Every write
/// counts, kept or not. Above the limit the MDS "might arbitrarily remove guest attributes that
/// are in the process of being written" (§6): the emulator answers 200 and drops the write,
/// so a client that does not pace itself loses data here as it would on a VM.
fn guest_write_allowed(st: &mut State, now: Millis) -> bool {
    let writes = &mut st.guest_writes;
    while writes.front().is_some_and(|t| now.saturating_sub(*t) >= GUEST_SUSTAINED.1) {
        writes.pop_front();
    }
    let in_window =
        |window: Millis| writes.iter().filter(|t| now.saturating_sub(**t) < window).count();
    let allowed = in_window(GUEST_BURST.1) < GUEST_BURST.0
        && in_window(GUEST_SUSTAINED.1) < GUEST_SUSTAINED.0;
    writes.push_back(now);
    allowed
}

fn guest(st: &mut State, req: &Request, rest: &[&str], slash: bool, now: Millis) -> Action {
    let valid = |s: &str| {
        !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    };
    let r = match (&req.method, rest) {
        (m, [ns, key]) if *m == Method::PUT || *m == Method::DELETE => {
            if slash || !valid(ns) || !valid(key) {
                error_text(
                    400,
                    "Guest attribute namespaces and keys use only letters, numerals, \
                     underscores and hyphens.",
                )
            } else if !guest_write_allowed(st, now) {
                log::debug!("guest attribute write above the rate limit: dropped");
                Response::mds(200, TEXT, "")
            } else if *m == Method::PUT {
                let value = String::from_utf8_lossy(&req.body).into_owned();
                match st.tree.set(&["instance", "guest-attributes", ns, key], &value) {
                    Ok(()) => {
                        st.changed();
                        Response::mds(200, TEXT, "")
                    }
                    Err(e) => error_text(400, &e.to_string()),
                }
            } else if st.tree.remove(&["instance", "guest-attributes", ns, key]) {
                let ns_path = ["instance", "guest-attributes", ns];
                if matches!(st.tree.get(&ns_path), Some(Node::Object(m)) if m.is_empty()) {
                    st.tree.remove(&ns_path);
                }
                st.changed();
                Response::mds(200, TEXT, "")
            } else {
                not_found(&req.path)
            }
        }
        (m, _) if *m == Method::PUT || *m == Method::DELETE => {
            error_text(400, "Guest attributes must have a namespace: use NAMESPACE/KEY.")
        }
        _ => error_page(405, "The request method is not allowed for this URL."),
    };
    Action::Respond(r)
}
