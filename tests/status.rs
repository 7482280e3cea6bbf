//! `.metadatafs/status` and `metrics` through a real mount of the real daemon against the real
//! emulator: the fields, that they move as reads happen, the Prometheus text format (checked
//! by a strict parser below), that no token byte ever shows, and who may read what.

mod common;
#[path = "status/prometheus.rs"]
mod prometheus;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use common::{as_nobody, eventually, Emulator, Mount, DEADLINE};
use prometheus::{parse_exposition, Family};
use serde_json::Value;

const STATUS: &str = ".metadatafs/status";
const METRICS: &str = ".metadatafs/metrics";
const TOKEN: &str = "instance/service-accounts/default/token";
const ACCESS_TOKEN: &str = "instance/service-accounts/default/access_token";

fn status(mount: &Mount) -> Value {
    let bytes = mount.read(STATUS).unwrap();
    serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&bytes)))
}

fn metrics(mount: &Mount) -> BTreeMap<String, Family> {
    let text = String::from_utf8(mount.read(METRICS).unwrap()).unwrap();
    parse_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn n(value: &Value) -> u64 {
    value.as_u64().unwrap_or_else(|| panic!("not a count: {value}"))
}

#[test]
fn status_has_every_field_and_moves_as_reads_happen() {
    let emu = Emulator::start(&[]);
    let mount = Mount::start(&emu.addr, &["-o", "timeout=1"]);
    let root: Vec<String> = std::fs::read_dir(&mount.mountpoint)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(root.contains(&".metadatafs".to_string()), "listed at the root: {root:?}");

    let before = status(&mount);
    assert_eq!(before["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(before["endpoint"], emu.addr);
    assert_eq!(before["transport"], "http");
    // Listing the root was the first read: the change watcher starts with it.
    let state = before["watcher"]["state"].as_str().unwrap();
    assert!(["not started", "watching"].contains(&state), "{state}");
    assert!(before["uptime_seconds"].is_u64() && before["started_at"].is_string());
    for field in ["entries", "max_entries", "bytes", "hits", "misses", "evictions", "stale_served"]
    {
        n(&before["cache"][field]);
    }
    assert!(before["mds"]["requests"].is_object() && before["tokens"].is_array());

    assert_eq!(mount.read("project/project-id").unwrap(), emu.get("project/project-id").1);
    mount.read("project/project-id").unwrap();
    mount.read(TOKEN).unwrap();
    let after = status(&mount);
    assert!(n(&after["cache"]["misses"]) > n(&before["cache"]["misses"]), "{after:#}");
    assert!(n(&after["cache"]["hits"]) > n(&before["cache"]["hits"]), "{after:#}");
    assert!(n(&after["cache"]["entries"]) > 0 && n(&after["cache"]["bytes"]) > 0);
    assert!(n(&after["mds"]["requests"]["200"]) >= 3, "{after:#}");
    assert_eq!(after["mds"]["answered_last"], true);
    assert_eq!(after["mds"]["last_error"], Value::Null);
    let token = &after["tokens"][0];
    assert_eq!(token["path"], TOKEN);
    assert!((3000..=3600).contains(&n(&token["expires_in"])), "{token}");
    assert!(n(&token["refresh_in"]) < n(&token["expires_in"]));
    assert!(token["expires_at"].as_str().unwrap().ends_with('Z'));

    // A failing server shows in the counters and as the last error.
    let fault = r#"{"prefix":"/computeMetadata/v1/instance/hostname","status":503}"#;
    emu.control("POST", "faults", fault);
    assert!(mount.read("instance/hostname").is_err());
    let failed = status(&mount);
    assert!(n(&failed["mds"]["requests"]["503"]) >= 1, "{failed:#}");
    let error = failed["mds"]["last_error"]["message"].as_str().unwrap();
    assert!(error.contains("instance/hostname") && error.contains("503"), "{error}");
    assert!(n(&failed["mds"]["failures"]) >= 1);

    // A server that is gone: the status still answers at once, and says so.
    let mut emu = emu;
    emu.stop();
    assert!(mount.read("instance/zone").is_err());
    let started = std::time::Instant::now();
    let down = status(&mount);
    assert!(started.elapsed() < std::time::Duration::from_millis(500), "the status waited");
    assert_eq!(down["mds"]["answered_last"], false, "{down:#}");
    assert!(n(&down["mds"]["requests"]["none"]) >= 1, "{down:#}");
    assert!(n(&down["uptime_seconds"]) >= n(&before["uptime_seconds"]));
}

#[test]
fn the_status_answers_when_the_server_never_did() {
    // Nothing listens there: not even the root listing can be fetched.
    let mount = Mount::start("127.0.0.1:1", &["-o", "timeout=1"]);
    let fresh = status(&mount);
    assert_eq!(fresh["endpoint"], "127.0.0.1:1");
    assert_eq!(fresh["mds"]["answered_last"], Value::Null, "no request yet: {fresh:#}");
    let err = mount.read("project/project-id").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    let down = status(&mount);
    assert_eq!(down["mds"]["answered_last"], false, "{down:#}");
    assert!(n(&down["mds"]["requests"]["none"]) >= 1, "{down:#}");
    assert!(down["mds"]["last_error"]["message"].as_str().unwrap().contains("unavailable"));
    let families = metrics(&mount);
    assert_eq!(families["metadatafs_mds_up"].value("metadatafs_mds_up", &[]), 0.0);
}

#[test]
fn one_open_sees_one_rendering_and_the_next_open_a_fresh_one() {
    let emu = Emulator::start(&[]);
    let mount = Mount::start(&emu.addr, &[]);
    let mut file = std::fs::File::open(mount.path(STATUS)).unwrap();
    let mut head = [0u8; 16];
    file.read_exact(&mut head).unwrap();
    for _ in 0..20 {
        mount.read("project/project-id").unwrap();
    }
    mount.read(TOKEN).unwrap();
    let mut rest = Vec::new();
    file.read_to_end(&mut rest).unwrap();
    let first: Value = serde_json::from_slice(&[&head[..], &rest].concat()).unwrap();
    assert_eq!(first["tokens"], Value::Array(vec![]), "one open, one snapshot: {first:#}");
    // Every open renders anew, at whatever size it now has: never a stale page-cached copy.
    let second = status(&mount);
    assert_eq!(second["tokens"][0]["path"], TOKEN);
    // Warm reads are the kernel's page cache now; the first read of the value was a miss.
    assert!(n(&second["cache"]["misses"]) > n(&first["cache"]["misses"]), "{second:#}");
    let families = metrics(&mount);
    assert_eq!(families["metadatafs_token_expires_in_seconds"].samples.len(), 1);
}

#[test]
fn metrics_are_prometheus_text_with_counters_and_a_latency_histogram() {
    let emu = Emulator::start(&[]);
    let mount = Mount::start(&emu.addr, &[]);
    mount.read("project/project-id").unwrap();
    mount.read(ACCESS_TOKEN).unwrap();
    let families = metrics(&mount);
    for (name, family) in &families {
        assert!(name.starts_with("metadatafs_"), "{name}");
        assert!(!family.help.is_empty(), "{name} has no HELP");
        assert_eq!(family.kind == "counter", name.ends_with("_total"), "{name}: {}", family.kind);
    }
    let latency = &families["metadatafs_mds_request_duration_seconds"];
    assert_eq!(latency.kind, "histogram");
    let count = latency.value("metadatafs_mds_request_duration_seconds_count", &[]);
    assert!(count >= 3.0, "{count}");
    let requests = &families["metadatafs_mds_requests_total"];
    // Every request is counted; the watcher's long-polls are left out of the latencies.
    assert!(requests.value("metadatafs_mds_requests_total", &[("code", "200")]) >= count);
    assert_eq!(families["metadatafs_mds_up"].value("metadatafs_mds_up", &[]), 1.0);
    let version = [("version", env!("CARGO_PKG_VERSION"))];
    assert_eq!(families["metadatafs_build_info"].value("metadatafs_build_info", &version), 1.0);
    let misses =
        families["metadatafs_cache_misses_total"].value("metadatafs_cache_misses_total", &[]);
    assert!(misses >= 2.0);
    let expires = &families["metadatafs_token_expires_in_seconds"];
    let left = expires.value("metadatafs_token_expires_in_seconds", &[("path", TOKEN)]);
    assert!((3000.0..=3600.0).contains(&left), "{left}");
    // Something was read, so the change watcher runs; one state at a time.
    let watcher = &families["metadatafs_watcher_state"];
    assert_eq!(watcher.samples.iter().map(|s| s.2).sum::<f64>(), 1.0);
    common::eventually("the watcher to be watching", common::DEADLINE, || {
        let families = metrics(&mount);
        let watcher = &families["metadatafs_watcher_state"];
        (watcher.value("metadatafs_watcher_state", &[("state", "watching")]) == 1.0).then_some(())
    });
}

#[test]
fn no_token_byte_in_a_trace_log_the_status_or_the_metrics() {
    let emu = Emulator::start(&[]);
    // Every crate at trace (a bare `trace` would raise only ours): hyper, reqwest, fuser too.
    let env = [("RUST_LOG", "trace,metadatafs=trace")];
    let mount = Mount::start_with(&["--endpoint", &emu.addr], &[], &env);
    let token = String::from_utf8(mount.read(ACCESS_TOKEN).unwrap()).unwrap();
    assert!(token.len() > 20, "{token}");
    let json = String::from_utf8(mount.read(TOKEN).unwrap()).unwrap();
    assert!(json.contains(&token));
    // A refresh and a second token, so both are in flight somewhere.
    emu.control("POST", "tokens/expire", "");
    mount.read("instance/service-accounts/default/email").unwrap();
    let texts = [
        String::from_utf8(mount.read(STATUS).unwrap()).unwrap(),
        String::from_utf8(mount.read(METRICS).unwrap()).unwrap(),
    ];
    let log = eventually("trace lines in the log", DEADLINE, || {
        let log = mount.log_text();
        log.contains("TRACE").then_some(log)
    });
    // The token's body, past the recognisable `ya29.` prefix every token shares.
    let secret = &token[token.len() - 16..];
    for (what, text) in [("status", &texts[0]), ("metrics", &texts[1]), ("trace log", &log)] {
        assert!(!text.contains(secret), "{what} carries token bytes");
        assert!(!text.contains(&token[..token.len() / 2]), "{what} carries a token prefix");
    }
    assert!(texts[0].contains(TOKEN), "the status names the token's path");
}

#[test]
fn another_user_reads_status_and_metrics_but_not_tokens() {
    let emu = Emulator::start(&[]);
    let mount = Mount::start(&emu.addr, &["-o", "allow_other,secret_paths=**"]);
    mount.read(TOKEN).unwrap();
    let cat = |path: &str| as_nobody("cat", &[Path::new(&mount.path(path))]);
    for path in [STATUS, METRICS] {
        let (ok, stderr) = cat(path);
        assert!(ok, "nobody cannot read {path}: {stderr}");
    }
    let (ok, stderr) = cat(TOKEN);
    assert!(!ok && stderr.contains("Permission denied"), "{stderr}");
    let (ok, stderr) = cat(ACCESS_TOKEN);
    assert!(!ok && stderr.contains("Permission denied"), "{stderr}");
}

#[test]
fn version_flag_prints_the_version_the_status_shows() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_metadatafs"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(output.status.success());
    let expected = format!("metadatafs {}\n", env!("CARGO_PKG_VERSION"));
    assert_eq!(String::from_utf8_lossy(&output.stdout), expected);
}
