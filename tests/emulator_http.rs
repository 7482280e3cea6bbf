//! The real `metadatafs-emulator` binary over real HTTP: MDS headers and errors, listings,
//! recursive/alt, wait_for_change (with hundreds of hanging requests), tokens, identity, guest
//! attributes, every control endpoint, fixtures, CLI errors and SIGTERM.

mod emulator_support;

use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use emulator_support::{eventually, request, Emu, V1};
use serde_json::{json, Value};

const SA: &str = "/instance/service-accounts/default";

#[test]
fn detection_ping_headers_and_security_checks() {
    let emu = Emu::start(&[]);
    let root = emu.req("GET", "/", &[], b"");
    assert_eq!(root.status, 200);
    assert_eq!(root.text(), "0.1/\ncomputeMetadata/\n");
    assert_eq!(root.header("metadata-flavor"), Some("Google"));
    let name = emu.md("/instance/name");
    assert_eq!((name.status, name.text().as_str()), (200, "emulated-vm"));
    assert_eq!(name.header("server"), Some("Metadata Server for VM"));
    assert_eq!(name.header("content-type"), Some("application/text"));
    let etag = name.etag();
    assert!(etag.len() == 16 && etag.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')));
    assert!(name.header("date").is_some());
    let no_header = emu.req("GET", &format!("{V1}/instance/name"), &[], b"");
    assert_eq!(no_header.status, 403);
    assert!(no_header.text().contains("Missing Metadata-Flavor:Google header."));
    assert_eq!(no_header.header("metadata-flavor"), Some("Google"));
    let xff = emu.req(
        "GET",
        &format!("{V1}/instance/name"),
        &[("Metadata-Flavor", "Google"), ("X-Forwarded-For", "10.0.0.1")],
        b"",
    );
    assert_eq!(xff.status, 403);
    let lower =
        emu.req("GET", &format!("{V1}/instance/name"), &[("metadata-flavor", "Google")], b"");
    assert_eq!(lower.status, 200);
}

#[test]
fn listings_redirects_and_404s() {
    let emu = Emu::start(&[]);
    let project = emu.md("/project/");
    assert_eq!(project.text(), "attributes/\nnumeric-project-id\nproject-id\n");
    assert!(project.header("etag").is_some());
    assert_eq!(emu.md("/instance/disks/").text(), "0/\n1/\n");
    let redirect = emu.md("/instance");
    assert_eq!(redirect.status, 301);
    assert_eq!(redirect.text(), "/computeMetadata/v1/instance/\n");
    let location = format!("http://{}/computeMetadata/v1/instance/", emu.addr);
    assert_eq!(redirect.header("location"), Some(location.as_str()));
    assert_eq!(redirect.header("metadata-flavor"), Some("Google"));
    for missing in ["/instance/nope", "/instance/disks/9/", "/instance/name/", "/instance/tags/0"] {
        assert_eq!(emu.md(missing).status, 404, "{missing}");
    }
    assert_eq!(emu.md("/instance/attributes/empty-value").status, 200);
    assert_eq!(emu.md("/instance/attributes/empty-value").body, b"");
}

#[test]
fn recursive_and_alt_renderings() {
    let emu = Emu::start(&[]);
    let all = emu.md("/?recursive=true");
    assert_eq!(all.header("content-type"), Some("application/json"));
    assert!(all.text().contains("\"id\":5737554347302044216,"), "exact 64-bit digits");
    let v = all.json();
    assert_eq!(v["project"]["numericProjectId"], json!(523926462582u64));
    assert_eq!(v["instance"]["networkInterfaces"][0]["accessConfigs"][0]["type"], "ONE_TO_ONE_NAT");
    assert!(v["instance"]["serviceAccounts"]["default"]["token"].is_null());
    let text = emu.md("/instance/?recursive=true&alt=text").text();
    assert!(text.contains("disks/1/device-name data\n"), "{text}");
    assert!(text.contains("attributes/startup-script #!/bin/bash\n"), "{text}");
    assert_eq!(emu.md("/instance/tags").text(), "[\"http-server\",\"ssh\"]");
    assert_eq!(emu.md("/instance/tags?alt=text").text(), "http-server\nssh\n");
    assert_eq!(emu.md("/instance/id?alt=json").header("content-type"), Some("application/json"));
    assert_eq!(emu.md("/project/?alt=json").status, 400);
    // One ETag for every rendering of a leaf; listing and recursive ETags of a dir differ.
    assert_eq!(emu.md("/instance/tags").etag(), emu.md("/instance/tags?alt=text").etag());
    assert_ne!(emu.md("/project/").etag(), emu.md("/project/?recursive=true").etag());
}

#[test]
fn wait_for_change_returns_the_new_value() {
    let emu = Emu::start(&[]);
    let path = format!("{V1}/instance/maintenance-event");
    let first = emu.get(&path);
    let etag = first.etag();
    // A different last_etag (or 0) answers at once.
    let at_once = emu.get(&format!("{path}?wait_for_change=true&last_etag=0"));
    assert_eq!((at_once.text().as_str(), at_once.etag()), ("NONE", etag.clone()));
    let addr = emu.addr.clone();
    let target = format!("{path}?wait_for_change=true&last_etag={etag}&timeout_sec=30");
    let waiter = std::thread::spawn(move || {
        request(&addr, "GET", &target, &[("Metadata-Flavor", "Google")], b"").unwrap()
    });
    eventually(Duration::from_secs(10), "the waiter to arrive", || {
        let counters = emu.control("GET", "/emulator/counters", "").json();
        (counters["/computeMetadata/v1/instance/maintenance-event"] == 3).then_some(())
    });
    let set = emu.control(
        "PUT",
        "/emulator/values/instance/maintenance-event",
        "TERMINATE_ON_HOST_MAINTENANCE",
    );
    assert_eq!(set.status, 200);
    let changed = waiter.join().unwrap();
    assert_eq!(changed.text(), "TERMINATE_ON_HOST_MAINTENANCE");
    assert_ne!(changed.etag(), etag);
    // Restoring the value restores its ETag.
    emu.control("PUT", "/emulator/values/instance/maintenance-event", "NONE");
    assert_eq!(emu.get(&path).etag(), etag);
    // timeout_sec answers with the current value.
    let started = Instant::now();
    let timed = emu.get(&format!("{path}?wait_for_change=true&last_etag={etag}&timeout_sec=1"));
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert_eq!((timed.status, timed.etag()), (200, etag));
    assert_eq!(emu.md("/project/?wait_for_change=true").status, 400);
    assert_eq!(emu.md(&format!("{SA}/token?wait_for_change=true")).status, 400);
}

#[test]
fn wait_for_change_without_last_etag_wakes_on_the_next_change() {
    let emu = Emu::start(&[]);
    let addr = emu.addr.clone();
    let target = format!("{V1}/instance/maintenance-event?wait_for_change=true");
    let waiter = std::thread::spawn(move || {
        request(&addr, "GET", &target, &[("Metadata-Flavor", "Google")], b"").unwrap()
    });
    eventually(Duration::from_secs(10), "the waiter to arrive", || {
        let counters = emu.control("GET", "/emulator/counters", "").json();
        (counters["/computeMetadata/v1/instance/maintenance-event"] == 1).then_some(())
    });
    let value = "MIGRATE_ON_HOST_MAINTENANCE";
    let set = emu.control("PUT", "/emulator/values/instance/maintenance-event", value);
    assert_eq!(set.status, 200);
    eventually(Duration::from_secs(10), "the waiter to wake", || {
        waiter.is_finished().then_some(())
    });
    assert_eq!(waiter.join().unwrap().text(), value);
    let bad = emu.md("/instance/name?wait_for_change=true&timeout_sec=abc&last_etag=stale");
    assert_eq!(bad.status, 400, "timeout_sec is checked even when the answer is immediate");
}

#[test]
fn recursive_wait_sees_descendant_changes() {
    let emu = Emu::start(&[]);
    let etag = emu.md("/?recursive=true").etag();
    let addr = emu.addr.clone();
    let target =
        format!("{V1}/?recursive=true&wait_for_change=true&last_etag={etag}&timeout_sec=30");
    let waiter = std::thread::spawn(move || {
        request(&addr, "GET", &target, &[("Metadata-Flavor", "Google")], b"").unwrap()
    });
    eventually(Duration::from_secs(10), "the waiter to arrive", || {
        let counters = emu.control("GET", "/emulator/counters", "").json();
        (counters["/computeMetadata/v1/"] == 2).then_some(())
    });
    emu.control("PUT", "/emulator/values/project/attributes/new-key", "v");
    let changed = waiter.join().unwrap();
    assert_eq!(changed.json()["project"]["attributes"]["new-key"], "v");
}

#[test]
fn hundreds_of_hanging_requests_do_not_starve_others() {
    let emu = Emu::start(&[]);
    const N: usize = 200;
    let path = format!("{V1}/instance/attributes/team");
    let etag = emu.get(&path).etag();
    let waiters: Vec<_> = (0..N)
        .map(|_| {
            let addr = emu.addr.clone();
            let target = format!("{path}?wait_for_change=true&last_etag={etag}&timeout_sec=60");
            std::thread::spawn(move || {
                request(&addr, "GET", &target, &[("Metadata-Flavor", "Google")], b"").unwrap()
            })
        })
        .collect();
    eventually(Duration::from_secs(30), "all waiters to arrive", || {
        let counters = emu.control("GET", "/emulator/counters", "").json();
        (counters["/computeMetadata/v1/instance/attributes/team"] == json!(N + 1)).then_some(())
    });
    let started = Instant::now();
    assert_eq!(emu.md("/project/project-id").text(), "emulated-project");
    assert!(started.elapsed() < Duration::from_secs(1), "took {:?}", started.elapsed());
    emu.control("PUT", "/emulator/values/instance/attributes/team", "changed");
    for w in waiters {
        assert_eq!(w.join().unwrap().text(), "changed");
    }
}

fn token(emu: &Emu, query: &str) -> Value {
    let r = emu.md(&format!("{SA}/token{query}"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    r.json()
}

fn tokeninfo(emu: &Emu, token: &Value) -> Value {
    let t = token["access_token"].as_str().unwrap();
    emu.control("GET", &format!("/emulator/tokeninfo?access_token={t}"), "").json()
}

#[test]
fn tokens_are_cached_until_the_window_and_controllable() {
    let emu = Emu::start(&["--token-lifetime", "305", "--cache-window", "300"]);
    let a = token(&emu, "");
    assert_eq!(a["token_type"], "Bearer");
    assert!(a["access_token"].as_str().unwrap().starts_with("ya29.emulated."));
    assert!(a["expires_in"].as_u64().unwrap() >= 301);
    let email = "523926462582-compute@developer.gserviceaccount.com";
    let b = emu.md(&format!("/instance/service-accounts/{email}/token")).json();
    assert_eq!(a["access_token"], b["access_token"], "default and the email share tokens");
    let info = tokeninfo(&emu, &a);
    assert_eq!((info["email"].as_str(), info["account"].as_str()), (Some(email), Some("default")));
    // After ~5 s only the cache window is left: a new token with the full lifetime.
    let c = eventually(Duration::from_secs(20), "a new token", || {
        let t = token(&emu, "");
        (t["access_token"] != a["access_token"]).then_some(t)
    });
    assert!(c["expires_in"].as_u64().unwrap() >= 301);
    // Expire and revoke through the control endpoints.
    assert_eq!(emu.control("POST", "/emulator/tokens/expire?account=default", "").status, 200);
    let d = token(&emu, "");
    assert_ne!(d["access_token"], c["access_token"]);
    assert_eq!(tokeninfo(&emu, &c)["expired"], true);
    assert_eq!(emu.control("POST", "/emulator/tokens/revoke", "").status, 200);
    assert_eq!(tokeninfo(&emu, &d)["revoked"], true);
    assert_ne!(token(&emu, "")["access_token"], d["access_token"]);
    let forged = emu.control("GET", "/emulator/tokeninfo?access_token=ya29.forged", "");
    assert_eq!((forged.status, forged.json()), (400, json!({"error": "invalid_token"})));
}

#[test]
fn scoped_tokens_need_enforce_scopes_and_a_subset() {
    let emu = Emu::start(&[]);
    let logging = "https://www.googleapis.com/auth/logging.write";
    let full = token(&emu, &format!("?scopes={logging}"));
    assert_eq!(tokeninfo(&emu, &full)["scopes"].as_array().unwrap().len(), 6);
    let narrow = token(&emu, &format!("?scopes={logging}&enforce_scopes=true"));
    assert_eq!(tokeninfo(&emu, &narrow)["scopes"], json!([logging]));
    assert_ne!(full["access_token"], narrow["access_token"]);
    let other = "https://www.googleapis.com/auth/cloud-platform";
    assert_eq!(emu.md(&format!("{SA}/token?scopes={other}&enforce_scopes=true")).status, 400);
    assert_eq!(emu.md(&format!("{SA}/token?scopes={logging}&enforce_scopes=false")).status, 400);
}

#[test]
fn identity_tokens_are_fresh_jwts() {
    let emu = Emu::start(&[]);
    let missing = emu.md(&format!("{SA}/identity"));
    assert_eq!(
        (missing.status, missing.text().as_str()),
        (400, "non-empty audience parameter required")
    );
    let q = "?audience=https%3A%2F%2Fexample.com&format=full&licenses=TRUE";
    let a = emu.md(&format!("{SA}/identity{q}")).text();
    let b = emu.md(&format!("{SA}/identity{q}")).text();
    assert_ne!(a, b, "a new token per request");
    let parts: Vec<&str> = a.split('.').collect();
    assert_eq!(parts.len(), 3);
    let payload: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    assert_eq!(payload["aud"], "https://example.com");
    assert_eq!(payload["iss"], "https://accounts.google.com");
    assert_eq!(payload["exp"].as_u64().unwrap(), payload["iat"].as_u64().unwrap() + 3600);
    let ce = &payload["google"]["compute_engine"];
    assert_eq!(ce["instance_id"], "5737554347302044216");
    assert_eq!(ce["project_number"], json!(523926462582u64));
    assert_eq!(ce["zone"], "us-central1-a");
    assert_eq!(ce["license_id"], json!(["3853522013536123851"]));
    let standard = emu.md(&format!("{SA}/identity?audience=x")).text();
    let p: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD.decode(standard.split('.').nth(1).unwrap()).unwrap(),
    )
    .unwrap();
    assert!(p.get("google").is_none());
}

#[test]
fn guest_attributes_read_write_delete() {
    let emu = Emu::start(&[]);
    let flavor = [("Metadata-Flavor", "Google")];
    let key = format!("{V1}/instance/guest-attributes/testing/key_1");
    assert_eq!(emu.req("PUT", &key, &flavor, b"hello").status, 200);
    assert_eq!(emu.get(&key).text(), "hello");
    assert_eq!(emu.md("/instance/guest-attributes/testing/").text(), "key_1\n");
    let bad = format!("{V1}/instance/guest-attributes/testing/bad.key");
    assert_eq!(emu.req("PUT", &bad, &flavor, b"x").status, 400);
    let no_ns = format!("{V1}/instance/guest-attributes/lonely");
    assert_eq!(emu.req("PUT", &no_ns, &flavor, b"x").status, 400);
    assert_eq!(emu.req("PUT", &key, &[], b"x").status, 403, "needs the flavor header");
    assert_eq!(emu.req("DELETE", &key, &flavor, b"").status, 200);
    assert_eq!(emu.get(&key).status, 404);
    assert_eq!(emu.md("/instance/guest-attributes/").text(), "hostkeys/\n");
}

#[test]
fn guest_attributes_disabled_unless_enabled() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vm.json");
    std::fs::write(
        &path,
        r#"{"instance":{"attributes":{},"guestAttributes":{},"id":1},"project":{"projectId":"p"}}"#,
    )
    .unwrap();
    let emu = Emu::start(&["--fixture", path.to_str().unwrap()]);
    let r = emu.md("/instance/guest-attributes/");
    assert_eq!(
        (r.status, r.text().as_str()),
        (403, "Guest attributes endpoint access is disabled.")
    );
    let put = emu.req(
        "PUT",
        &format!("{V1}/instance/guest-attributes/ns/k"),
        &[("Metadata-Flavor", "Google")],
        b"v",
    );
    assert_eq!(put.status, 403);
    assert!(emu.md("/?recursive=true").text().contains("\"guestAttributes\":{}"));
    emu.control("PUT", "/emulator/values/project/attributes/enable-guest-attributes", "TRUE");
    assert_eq!(emu.md("/instance/guest-attributes/").status, 200);
}

#[test]
fn control_values_create_change_and_delete() {
    let emu = Emu::start(&[]);
    let before = emu.md("/instance/?recursive=true").etag();
    assert_eq!(emu.control("PUT", "/emulator/values/instance/attributes/fooBar", "1").status, 200);
    assert_eq!(emu.md("/instance/attributes/fooBar").text(), "1");
    assert_ne!(emu.md("/instance/?recursive=true").etag(), before);
    assert_eq!(emu.control("PUT", "/emulator/values/instance/new-dir/some-key", "x").status, 200);
    let v = emu.md("/instance/?recursive=true").json();
    assert_eq!(v["attributes"]["fooBar"], "1", "attribute keys stay verbatim");
    assert_eq!(v["newDir"]["someKey"], "x", "server-style keys are camelCase in JSON");
    assert_eq!(emu.control("DELETE", "/emulator/values/instance/new-dir", "").status, 200);
    assert_eq!(
        emu.control("DELETE", "/emulator/values/instance/attributes/fooBar", "").status,
        200
    );
    assert_eq!(emu.md("/instance/?recursive=true").etag(), before);
    assert_eq!(emu.control("DELETE", "/emulator/values/instance/nope", "").status, 404);
    assert_eq!(emu.control("PUT", "/emulator/values/instance/id/x", "1").status, 409);
    emu.control("PUT", "/emulator/values/instance/id", "42");
    assert!(emu.md("/instance/?recursive=true").text().contains("\"id\":42,"));
}

#[test]
fn control_faults_and_counters() {
    let emu = Emu::start(&[]);
    let fault = |body: Value| {
        assert_eq!(emu.control("POST", "/emulator/faults", &body.to_string()).status, 200)
    };
    fault(json!({"prefix": "/computeMetadata/v1/instance/", "status": 503, "count": 2}));
    let r = emu.md("/instance/name");
    assert_eq!((r.status, r.header("metadata-flavor")), (503, Some("Google")));
    assert_eq!(emu.md("/instance/name").status, 503);
    assert_eq!(emu.md("/instance/name").status, 200);
    assert_eq!(emu.md("/project/project-id").status, 200);
    fault(json!({"prefix": "/computeMetadata/v1/project/", "drop": true, "count": 1}));
    assert!(request(
        &emu.addr,
        "GET",
        &format!("{V1}/project/project-id"),
        &[("Metadata-Flavor", "Google")],
        b""
    )
    .is_err());
    assert_eq!(emu.md("/project/project-id").status, 200);
    fault(json!({"prefix": "/computeMetadata/v1/project/", "no_flavor": true, "count": 1}));
    let r = emu.md("/project/project-id");
    assert_eq!((r.status, r.header("metadata-flavor")), (200, None));
    fault(json!({"prefix": "/computeMetadata/v1/project/", "latency_ms": 300}));
    let started = Instant::now();
    assert_eq!(emu.md("/project/project-id").status, 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(emu.control("DELETE", "/emulator/faults", "").status, 200);
    assert_eq!(emu.control("GET", "/emulator/faults", "").json(), json!([]));
    assert_eq!(emu.md("/project/project-id").status, 200);
    assert_eq!(emu.control("POST", "/emulator/faults", "{\"status\":500}").status, 400);
    let counters = emu.control("GET", "/emulator/counters", "").json();
    assert_eq!(
        counters["/computeMetadata/v1/instance/name"], 3,
        "counted even when a fault answers"
    );
    assert_eq!(counters["/computeMetadata/v1/project/project-id"], 6);
    assert!(counters.get("/emulator/counters").is_none());
    assert_eq!(emu.control("DELETE", "/emulator/counters", "").status, 200);
    assert_eq!(emu.control("GET", "/emulator/counters", "").json(), json!({}));
}

#[test]
fn fixtures_and_command_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.json");
    std::fs::write(
        &good,
        r#"{"instance":{"id":18446744073709551615,"serviceAccounts":{"sa@p.iam.gserviceaccount.com":{"email":"sa@p.iam.gserviceaccount.com","scopes":["s"]}},"virtualClock":{"driftToken":"0"}},"project":{"attributes":{"sshKeys":"k"},"numericProjectId":7}}"#,
    )
    .unwrap();
    let emu = Emu::start(&["--fixture", good.to_str().unwrap()]);
    assert_eq!(emu.md("/instance/id").text(), "18446744073709551615");
    assert_eq!(emu.md("/instance/virtual-clock/drift-token").text(), "0");
    assert_eq!(emu.md("/project/attributes/sshKeys").text(), "k");
    assert_eq!(emu.md("/instance/service-accounts/").text(), "sa@p.iam.gserviceaccount.com/\n");
    assert_eq!(emu.md(&format!("{SA}/token")).status, 404, "no default account in this fixture");
    drop(emu);

    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{\"instance\":{\"disks\":[{\"index\":0},\"x\"]},\"project\":{}}")
        .unwrap();
    let out = run_cli(&["--fixture", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("instance.disks[1]: expected an object"), "{err}");
    std::fs::write(&bad, "{\n  \"instance\": {\n    \"id\": ,\n").unwrap();
    let err = String::from_utf8_lossy(&run_cli(&["--fixture", bad.to_str().unwrap()]).stderr)
        .into_owned();
    assert!(err.contains("line 3 column"), "{err}");

    for bad in [
        &["--listen", "not-an-address"][..],
        &["--token-lifetime", "18446744073709551615"],
        &["--token-lifetime", "0"],
        &["--token-lifetime", "60", "--cache-window", "300"],
    ] {
        let out = run_cli(bad);
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
        assert_eq!(String::from_utf8_lossy(&out.stderr).trim().lines().count(), 1, "{bad:?}");
    }
}

#[test]
fn oversized_request_bodies_are_refused_unread() {
    let emu = Emu::start(&[]);
    let big = vec![b'x'; 9 << 20];
    // The server may close before the client has sent it all: a reset is a refusal too.
    match request(&emu.addr, "PUT", "/emulator/values/instance/attributes/big", &[], &big) {
        Ok(put) => assert_eq!(put.status, 413),
        Err(e) => eprintln!("refused with a closed connection: {e}"),
    }
    assert_eq!(emu.md("/instance/attributes/big").status, 404, "nothing was stored");
}

fn run_cli(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_metadatafs-emulator"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn sigterm_stops_cleanly() {
    let mut emu = Emu::start(&[]);
    assert_eq!(emu.md("/project/project-id").status, 200);
    let pid = emu.child.id() as libc::pid_t;
    // SAFETY: signalling our own child process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    assert_eq!(emu.wait_exit(Duration::from_secs(10)).code(), Some(0));
}

#[test]
fn trace_logs_never_contain_token_bytes() {
    use std::io::Read;
    let mut emu = Emu::start_with_env(&[], &[("RUST_LOG", "trace")]);
    let access = token(&emu, "");
    let access = access["access_token"].as_str().unwrap().to_string();
    let info = emu.control("GET", &format!("/emulator/tokeninfo?access_token={access}"), "");
    assert_eq!(info.status, 200);
    let id = emu.md(&format!("{SA}/identity?audience=x")).text();
    let pid = emu.child.id() as libc::pid_t;
    // SAFETY: signalling our own child process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    emu.wait_exit(Duration::from_secs(10));
    let mut log = String::new();
    emu.child.stderr.take().unwrap().read_to_string(&mut log).unwrap();
    assert!(log.contains("/token -> 200"), "trace logging is on: {log}");
    for secret in [access.as_str(), id.as_str(), "ya29.", "eyJ"] {
        assert!(!log.contains(secret), "log leaks {secret}");
    }
}

#[test]
fn library_starts_with_and_without_a_runtime() {
    use metadatafs::emulator::{Emulator, EmulatorConfig};
    let emu = Emulator::start(EmulatorConfig::default()).unwrap();
    let r = request(&emu.addr().to_string(), "GET", "/", &[], b"").unwrap();
    assert_eq!(r.status, 200);
    emu.shutdown();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let emu = Emulator::start(EmulatorConfig::default()).unwrap();
        let addr = emu.addr().to_string();
        let r = tokio::task::spawn_blocking(move || request(&addr, "GET", "/", &[], b"").unwrap())
            .await
            .unwrap();
        assert_eq!(r.status, 200);
        drop(emu);
    });
    let bad = EmulatorConfig { fixture: Some("/nonexistent.json".into()), ..Default::default() };
    let err = Emulator::start(bad).unwrap_err().to_string();
    assert!(err.starts_with("fixture /nonexistent.json: "), "{err}");
}
