//! Handler scenarios across several requests: wait_for_change, ETags, control endpoints, faults,
//! counters, tokens on a moved clock, guest attributes (metadata-api.md §2–§6).

use std::time::Duration;

use hyper::Method;

use super::handler::{handle, pinned, serve};
use super::http::{Request, Response};
use super::state::{Action, State};
use super::tests::{md, respond, state, T0};

fn put(st: &mut State, path: &str, value: &str) -> Response {
    let req = Request::new(Method::PUT, &format!("/emulator/values/{path}")).body(value);
    respond(st, &req)
}

/// The response to `req` at time `at`.
fn handle_at(st: &mut State, req: &Request, at: super::tokens::Millis) -> Response {
    match serve(st, req, at, false) {
        Action::Respond(r) => r,
        _ => panic!("{} did not answer at once", req.path),
    }
}

fn action(st: &mut State, req: &Request, may_wait: bool) -> Action {
    serve(st, req, T0, may_wait)
}

/// §4: wait_for_change hangs while `last_etag` is current (or absent), answers after a change.
#[test]
fn wait_for_change_on_the_handler() {
    let mut st = state();
    let etag =
        respond(&mut st, &md("/instance/maintenance-event")).header("etag").unwrap().to_string();
    let waiting = md(&format!(
        "/instance/maintenance-event?wait_for_change=true&last_etag={etag}&timeout_sec=60"
    ));
    match handle(&mut st, &waiting, T0).action {
        Action::Wait { timeout, .. } => assert_eq!(timeout, Some(Duration::from_secs(60))),
        other => panic!("expected a wait, got {other:?}"),
    }
    let unpinned = md("/instance/maintenance-event?wait_for_change=true");
    let pinned_to = match action(&mut st, &unpinned, true) {
        Action::Wait { timeout: None, etag: seen } => pinned(&unpinned, &seen),
        other => panic!("expected an unbounded wait, got {other:?}"),
    };
    // At the deadline: the current value with the same ETag.
    match action(&mut st, &waiting, false) {
        Action::Respond(r) => assert_eq!(r.header("etag"), Some(etag.as_str())),
        other => panic!("{other:?}"),
    }
    let mut changes = st.subscribe();
    assert_eq!(
        put(&mut st, "instance/maintenance-event", "MIGRATE_ON_HOST_MAINTENANCE").status,
        200
    );
    assert!(changes.has_changed().unwrap(), "a change wakes waiters");
    changes.borrow_and_update();
    match action(&mut st, &waiting, true) {
        Action::Respond(r) => {
            assert_eq!(r.text(), "MIGRATE_ON_HOST_MAINTENANCE");
            assert_ne!(r.header("etag"), Some(etag.as_str()));
        }
        other => panic!("{other:?}"),
    }
    // Without `last_etag`, a waiter is woken by a change from the version it first saw.
    match action(&mut st, &pinned_to, true) {
        Action::Respond(r) => assert_eq!(r.text(), "MIGRATE_ON_HOST_MAINTENANCE"),
        other => panic!("a waiter without last_etag missed the change: {other:?}"),
    }
    // An unrelated change leaves a waiter on this value waiting.
    let new_etag = etag_of(&mut st, "/instance/maintenance-event");
    let waiting =
        md(&format!("/instance/maintenance-event?wait_for_change=true&last_etag={new_etag}"));
    put(&mut st, "instance/attributes/other", "x");
    assert!(changes.has_changed().unwrap());
    assert!(matches!(action(&mut st, &waiting, true), Action::Wait { .. }));
    // A recursive wait sees descendants; a deleted value answers 404.
    let root = etag_of(&mut st, "/?recursive=true");
    let recursive = md(&format!("/?recursive=true&wait_for_change=true&last_etag={root}"));
    assert!(matches!(action(&mut st, &recursive, true), Action::Wait { .. }));
    respond(&mut st, &Request::new(Method::DELETE, "/emulator/values/instance/maintenance-event"));
    assert!(matches!(action(&mut st, &recursive, true), Action::Respond(_)));
    match action(&mut st, &waiting, true) {
        Action::Respond(r) => assert_eq!(r.status, 404),
        other => panic!("{other:?}"),
    }
}

fn etag_of(st: &mut State, target: &str) -> String {
    respond(st, &md(target)).header("etag").unwrap().to_string()
}

#[test]
fn etags_follow_content() {
    let mut st = state();
    let leaf = etag_of(&mut st, "/instance/name");
    let dir = etag_of(&mut st, "/instance/?recursive=true");
    let listing = etag_of(&mut st, "/instance/");
    assert_eq!(etag_of(&mut st, "/instance/name?alt=json"), leaf);
    assert_eq!(etag_of(&mut st, "/instance/?recursive=true&alt=text"), dir);
    put(&mut st, "instance/name", "renamed");
    assert_ne!(etag_of(&mut st, "/instance/name"), leaf);
    assert_ne!(etag_of(&mut st, "/instance/?recursive=true"), dir);
    assert_eq!(etag_of(&mut st, "/instance/"), listing, "names unchanged");
    put(&mut st, "instance/name", "emulated-vm");
    assert_eq!(etag_of(&mut st, "/instance/name"), leaf);
    assert_eq!(etag_of(&mut st, "/instance/?recursive=true"), dir);
}

#[test]
fn control_values_keep_types_and_key_styles() {
    let mut st = state();
    put(&mut st, "instance/id", "42");
    put(&mut st, "instance/tags", "a\nb\n");
    put(&mut st, "instance/attributes/myKey", "v");
    put(&mut st, "instance/new-section/some-key", "v");
    put(&mut st, "instance/disks/2/device-name", "third");
    let json = respond(&mut st, &md("/instance/?recursive=true")).text();
    assert!(json.contains("\"id\":42,"), "{json}");
    assert!(json.contains("\"tags\":[\"a\",\"b\"]"), "{json}");
    assert!(json.contains("\"myKey\":\"v\""), "{json}");
    assert!(json.contains("\"newSection\":{\"someKey\":\"v\"}"), "{json}");
    assert_eq!(respond(&mut st, &md("/instance/disks/")).text(), "0/\n1/\n2/\n");
    put(&mut st, "instance/id", "not a number");
    assert!(respond(&mut st, &md("/instance/?recursive=true"))
        .text()
        .contains("\"id\":\"not a number\""));
    assert_eq!(put(&mut st, "instance/disks/9/mode", "x").status, 409);
    assert_eq!(put(&mut st, "instance/disks", "x").status, 409);
    assert_eq!(put(&mut st, "instance/name/x", "x").status, 409);
    let del = |st: &mut State, p: &str| {
        respond(st, &Request::new(Method::DELETE, &format!("/emulator/values/{p}"))).status
    };
    assert_eq!(del(&mut st, "instance/disks/0"), 200);
    assert_eq!(respond(&mut st, &md("/instance/disks/1/device-name")).text(), "third");
    assert_eq!(del(&mut st, "instance/disks/5"), 404);
}

#[test]
fn faults_and_counters_on_the_handler() {
    let mut st = state();
    let post = |st: &mut State, body: &str| {
        respond(st, &Request::new(Method::POST, "/emulator/faults").body(body)).status
    };
    assert_eq!(
        post(
            &mut st,
            r#"{"prefix":"/computeMetadata/v1/instance/","status":429,"count":2,"latency_ms":5}"#
        ),
        200
    );
    assert_eq!(post(&mut st, r#"{"prefix":"/computeMetadata/v1/project/","no_flavor":true}"#), 200);
    assert_eq!(post(&mut st, r#"{"prefix":"/","drop":true,"count":1}"#), 200);
    assert_eq!(post(&mut st, r#"{"prefix":"/","bogus":1}"#), 400);
    assert_eq!(post(&mut st, r#"{"prefix":"/","count":0}"#), 400);
    for _ in 0..2 {
        let reply = handle(&mut st, &md("/instance/name"), T0);
        assert_eq!(reply.delay, Duration::from_millis(5));
        match reply.action {
            Action::Respond(r) => {
                assert_eq!((r.status, r.header("metadata-flavor")), (429, Some("Google")))
            }
            other => panic!("{other:?}"),
        }
    }
    // The 429 rule is used up: the next instance/ request meets the catch-all drop rule.
    assert!(matches!(handle(&mut st, &md("/instance/name"), T0).action, Action::Drop));
    assert_eq!(respond(&mut st, &md("/instance/name")).status, 200);
    for _ in 0..2 {
        let reply = handle(&mut st, &md("/project/project-id"), T0);
        assert!(reply.strip_flavor, "no_flavor lasts until cleared");
    }
    let token = "/computeMetadata/v1/instance/service-accounts/default/token";
    let rule = format!(r#"{{"prefix":"{token}","body":"{{not json","count":1}}"#);
    assert_eq!(post(&mut st, &rule), 200);
    let r = respond(&mut st, &Request::get(token).header("Metadata-Flavor", "Google"));
    assert_eq!((r.status, r.text().as_str()), (200, "{not json"));
    assert_eq!(r.header("content-type"), Some("application/json"));
    let rule = format!(r#"{{"prefix":"{token}","body":"x","status":500,"count":1}}"#);
    assert_eq!(post(&mut st, &rule), 200);
    let r = respond(&mut st, &Request::get(token).header("Metadata-Flavor", "Google"));
    assert_eq!((r.status, r.text().as_str()), (500, "x"));
    let clear = Request::new(Method::DELETE, "/emulator/faults");
    assert_eq!(respond(&mut st, &clear).status, 200);
    assert!(!handle(&mut st, &md("/project/project-id"), T0).strip_flavor);
    let counters = respond(&mut st, &Request::get("/emulator/counters")).text();
    assert_eq!(
        counters,
        r#"{"/computeMetadata/v1/instance/name":4,"/computeMetadata/v1/instance/service-accounts/default/token":2,"/computeMetadata/v1/project/project-id":3}"#
    );
    respond(&mut st, &Request::new(Method::DELETE, "/emulator/counters"));
    assert_eq!(respond(&mut st, &Request::get("/emulator/counters")).text(), "{}");
}

/// §5.2 on a moved clock: `expires_in` counts down; a new token once only the window is left.
#[test]
fn token_countdown_through_the_handler() {
    let mut st = state();
    let token = |st: &mut State, target: &str, now: u64| -> serde_json::Value {
        match handle(st, &md(target), now).action {
            Action::Respond(r) => serde_json::from_slice(&r.body).unwrap(),
            other => panic!("{other:?}"),
        }
    };
    let path = "/instance/service-accounts/default/token";
    let a = token(&mut st, path, T0);
    assert_eq!(a["expires_in"], 3599, "a fresh token reads 3599, as on a real VM");
    let b = token(&mut st, path, T0 + 600_000);
    assert_eq!(
        (&b["access_token"], &b["expires_in"]),
        (&a["access_token"], &serde_json::json!(2999))
    );
    let c = token(&mut st, path, T0 + 3_300_000);
    assert_ne!(c["access_token"], a["access_token"]);
    let t = a["access_token"].as_str().unwrap();
    let info = respond(&mut st, &Request::get(&format!("/emulator/tokeninfo?access_token={t}")));
    assert_eq!(info.status, 200);
    let logging = "https://www.googleapis.com/auth/logging.write";
    let scoped = token(&mut st, &format!("{path}?scopes={logging}&enforce_scopes=yes"), T0);
    assert_ne!(scoped["access_token"], c["access_token"]);
    put(&mut st, "project/attributes/enable-access-token-enforce-scopes", "true");
    let forced = token(&mut st, &format!("{path}?scopes={logging}"), T0);
    assert_eq!(forced["access_token"], scoped["access_token"]);
    let unknown = respond(&mut st, &Request::get("/emulator/tokeninfo?access_token=nope"));
    assert_eq!((unknown.status, unknown.text().as_str()), (400, r#"{"error":"invalid_token"}"#));
}

#[test]
fn guest_attributes_follow_the_enable_key() {
    let mut st = state();
    let put_ga = md("/instance/guest-attributes/ns/key-1").method(Method::PUT).body("v");
    assert_eq!(respond(&mut st, &put_ga).status, 200);
    assert_eq!(respond(&mut st, &md("/instance/guest-attributes/ns/key-1")).text(), "v");
    assert_eq!(respond(&mut st, &md("/instance/guest-attributes/")).text(), "hostkeys/\nns/\n");
    // Instance attributes win over project attributes.
    put(&mut st, "instance/attributes/enable-guest-attributes", "FALSE");
    put(&mut st, "project/attributes/enable-guest-attributes", "TRUE");
    let r = respond(&mut st, &md("/instance/guest-attributes/ns/key-1"));
    assert_eq!(
        (r.status, r.text().as_str()),
        (403, "Guest attributes endpoint access is disabled.")
    );
    assert_eq!(respond(&mut st, &put_ga).status, 403);
    assert!(respond(&mut st, &md("/instance/?recursive=true"))
        .text()
        .contains("\"guestAttributes\":{}"));
    respond(
        &mut st,
        &Request::new(
            Method::DELETE,
            "/emulator/values/instance/attributes/enable-guest-attributes",
        ),
    );
    let del = md("/instance/guest-attributes/ns/key-1").method(Method::DELETE);
    assert_eq!(respond(&mut st, &del).status, 200);
    assert_eq!(respond(&mut st, &md("/instance/guest-attributes/")).text(), "hostkeys/\n");
}

#[test]
fn guest_attribute_writes_above_the_rate_limit_are_dropped() {
    let mut st = state();
    let put = |st: &mut State, key: &str, at: super::tokens::Millis| {
        let req = md(&format!("/instance/guest-attributes/ns/{key}")).method(Method::PUT).body("v");
        assert_eq!(handle_at(st, &req, at).status, 200, "{key}: answered 200 either way");
    };
    let kept = |st: &mut State, key: &str| {
        respond(st, &md(&format!("/instance/guest-attributes/ns/{key}"))).status == 200
    };
    for (i, at) in [0, 10, 20, 30].into_iter().enumerate() {
        put(&mut st, &format!("burst{i}"), T0 + at);
    }
    assert!((0..3).all(|i| kept(&mut st, &format!("burst{i}"))));
    assert!(!kept(&mut st, "burst3"), "the fourth in a second is dropped");
    for i in 0..6 {
        put(&mut st, &format!("minute{i}"), T0 + 2000 + i * 1100);
    }
    assert!((0..6).all(|i| kept(&mut st, &format!("minute{i}"))));
    put(&mut st, "eleventh", T0 + 20_000);
    assert!(!kept(&mut st, "eleventh"), "the eleventh in a minute is dropped");
    put(&mut st, "later", T0 + 61_000);
    assert!(kept(&mut st, "later"));
}

#[test]
fn redirect_location_uses_the_host() {
    let mut st = state();
    let r = respond(&mut st, &md("/instance/disks").header("Host", "169.254.169.254"));
    assert_eq!(r.status, 301);
    assert_eq!(
        r.header("location"),
        Some("http://169.254.169.254/computeMetadata/v1/instance/disks/")
    );
    assert_eq!(r.text(), "/computeMetadata/v1/instance/disks/\n");
}
