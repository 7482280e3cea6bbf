//! Control endpoints under `/emulator/` (no `Metadata-Flavor` needed), for tests that stage what
//! the filesystem must survive (SPEC §6): change values, expire or revoke tokens, inject faults,
//! read request counters, and ask what a token carries. Documented in docs/emulator.md.
//!
//! Fault rules match on the request path (without query) by prefix; the first rule that matches
//! applies, and a rule with a `count` is removed once it has affected that many requests.

use std::time::Duration;

use hyper::Method;
use serde::Deserialize;
use serde_json::json;

use super::http::{Request, Response, JSON};
use super::state::{text_at, Fault, State};
use super::tokens::Millis;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultSpec {
    prefix: String,
    status: Option<u16>,
    count: Option<u64>,
    latency_ms: Option<u64>,
    drop: Option<bool>,
    no_flavor: Option<bool>,
    body: Option<String>,
}

pub(crate) fn handle(st: &mut State, req: &Request, now: Millis) -> Response {
    let route = req.path.strip_prefix("/emulator").unwrap_or("");
    let m = &req.method;
    if let Some(rest) = route.strip_prefix("/values/") {
        return values(st, req, rest);
    }
    match (route, m) {
        ("/tokens/expire" | "/tokens/revoke", &Method::POST) => {
            let email = req.param("account").map(|a| {
                text_at(st, &["instance", "service-accounts", a, "email"])
                    .unwrap_or_else(|| a.to_string())
            });
            let revoke = route.ends_with("revoke");
            let n = st.tokens.expire(email.as_deref(), revoke, now);
            ok(json!({ "tokens": n }))
        }
        ("/faults", &Method::POST) => match serde_json::from_slice::<FaultSpec>(&req.body) {
            Ok(spec) if spec.count == Some(0) => bad("count must be at least 1"),
            Ok(spec) if spec.status.is_some_and(|s| !(100..=599).contains(&s)) => {
                bad("status must be an HTTP status code")
            }
            Ok(spec) => {
                st.faults.push(Fault {
                    prefix: spec.prefix,
                    status: spec.status,
                    remaining: spec.count,
                    latency: Duration::from_millis(spec.latency_ms.unwrap_or(0)),
                    drop: spec.drop.unwrap_or(false),
                    no_flavor: spec.no_flavor.unwrap_or(false),
                    body: spec.body,
                });
                ok(json!({ "faults": st.faults.len() }))
            }
            Err(e) => bad(&format!("fault: {e}")),
        },
        ("/faults", &Method::DELETE) => {
            st.faults.clear();
            ok(json!({ "faults": 0 }))
        }
        ("/faults", &Method::GET) => {
            let list: Vec<_> = st
                .faults
                .iter()
                .map(|f| {
                    json!({"prefix": f.prefix, "status": f.status, "count": f.remaining,
                           "latency_ms": f.latency.as_millis() as u64, "drop": f.drop,
                           "no_flavor": f.no_flavor, "body": f.body})
                })
                .collect();
            ok(json!(list))
        }
        ("/counters", &Method::GET) => ok(json!(st.counters)),
        ("/counters", &Method::DELETE) => {
            st.counters.clear();
            ok(json!({}))
        }
        ("/tokeninfo", &Method::GET) => {
            match st.tokens.info(req.param("access_token").unwrap_or(""), now) {
                Some(info) => ok(info),
                None => Response::plain(400, JSON, json!({"error": "invalid_token"}).to_string()),
            }
        }
        ("/tokens/expire" | "/tokens/revoke" | "/faults" | "/counters" | "/tokeninfo", _) => {
            Response::plain(405, JSON, json!({"error": "method not allowed"}).to_string())
        }
        _ => Response::plain(404, JSON, json!({"error": "no such control endpoint"}).to_string()),
    }
}

/// `PUT|DELETE /emulator/values/<path under computeMetadata/v1/>`.
fn values(st: &mut State, req: &Request, rest: &str) -> Response {
    let segs: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    if segs.is_empty() {
        return bad("a path under /computeMetadata/v1/ is required");
    }
    match req.method {
        Method::PUT => {
            let value = String::from_utf8_lossy(&req.body).into_owned();
            match st.tree.set(&segs, &value) {
                Ok(()) => {
                    st.changed();
                    ok(json!({ "set": segs.join("/") }))
                }
                Err(e) => Response::plain(409, JSON, json!({"error": e.to_string()}).to_string()),
            }
        }
        Method::DELETE => {
            if st.tree.remove(&segs) {
                st.changed();
                ok(json!({ "deleted": segs.join("/") }))
            } else {
                Response::plain(404, JSON, json!({"error": "no such value"}).to_string())
            }
        }
        _ => Response::plain(405, JSON, json!({"error": "use PUT or DELETE"}).to_string()),
    }
}

fn ok(v: serde_json::Value) -> Response {
    Response::plain(200, JSON, v.to_string())
}

fn bad(msg: &str) -> Response {
    Response::plain(400, JSON, json!({ "error": msg }).to_string())
}
