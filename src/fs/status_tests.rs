//! Rendering without a mount: the JSON fields, the exposition format, dates.

use std::collections::BTreeMap;

use super::*;
use crate::stats::Histogram;

fn snapshot() -> Snapshot {
    let now = (Instant::now(), UNIX_EPOCH + Duration::from_secs(1_795_000_000));
    let mut latency = Histogram::default();
    latency.observe(Duration::from_millis(3));
    latency.observe(Duration::from_secs(30));
    Snapshot {
        uptime: Duration::from_secs(42),
        started_at: now.1 - Duration::from_secs(42),
        now,
        endpoint: Some("169.254.169.254".into()),
        transport: Some("https-mtls"),
        mds: MdsCounters {
            requests: BTreeMap::from([("200".into(), 5), ("none".into(), 1)]),
            latency,
            last_answer: Some((true, now.0)),
            failures: 1,
            last_error: Some(Event { message: "x: unavailable".into(), at: now.0 }),
        },
        cache: [3, 100, 60, 7, 3, 0, 1],
        tokens: Summary {
            held: [1, 2, 40],
            soonest_expiry: Some(1200),
            next_refresh: Some(60),
            plain: vec![crate::token::TokenStatus {
                path: "instance/service-accounts/a\"b/token".into(),
                expires_in: 3599,
                refresh_in: 3359,
            }],
        },
        token_fetches: [1, 0, 0],
        watcher: WatcherState::default(),
        read_path: ("no-open", "a read-only mount"),
        fuse: vec![("lookup", 3), ("read", 1)],
    }
}

#[test]
fn status_json_has_every_field() {
    let json = status_json(&snapshot());
    assert_eq!(json["version"], VERSION);
    assert_eq!(json["uptime_seconds"], 42);
    assert_eq!(json["endpoint"], "169.254.169.254");
    assert_eq!(json["transport"], "https-mtls");
    assert_eq!(json["mds"]["answered_last"], true);
    assert_eq!(json["mds"]["requests"]["200"], 5);
    assert_eq!(json["mds"]["last_error"]["message"], "x: unavailable");
    assert_eq!(json["cache"]["entries"], 3);
    assert_eq!(json["cache"]["stale_served"], 1);
    assert_eq!(json["tokens"][0]["expires_in"], 3599);
    assert_eq!(json["tokens"][0]["expires_at"], "2026-11-18T12:06:39Z");
    assert_eq!(json["tokens"].as_array().unwrap().len(), 1, "plain tokens only");
    assert_eq!(json["token_slots"]["identity"], 40);
    assert_eq!(json["token_slots"]["soonest_expires_in"], 1200);
    assert_eq!(json["token_slots"]["next_refresh_in"], 60);
    assert_eq!(json["watcher"]["state"], "not started");
    assert_eq!(json["watcher"]["last_error"], Value::Null);
}

#[test]
fn metrics_follow_the_exposition_format() {
    let text = metrics_text(&snapshot());
    assert!(text.ends_with('\n'));
    assert!(text.contains("metadatafs_build_info{version=\""));
    assert!(text.contains("metadatafs_mds_requests_total{code=\"none\"} 1\n"));
    assert!(text.contains("metadatafs_mds_request_duration_seconds_bucket{le=\"0.005\"} 1\n"));
    assert!(text.contains("metadatafs_mds_request_duration_seconds_bucket{le=\"10\"} 1\n"));
    assert!(text.contains("metadatafs_mds_request_duration_seconds_bucket{le=\"+Inf\"} 2\n"));
    assert!(text.contains("metadatafs_mds_request_duration_seconds_count 2\n"));
    assert!(text.contains("metadatafs_mds_request_duration_seconds_sum 30.003\n"));
    assert!(text.contains(r#"{path="instance/service-accounts/a\"b/token"} 3599"#), "{text}");
    assert!(text.contains("metadatafs_watcher_state{state=\"not started\"} 1\n"));
    assert!(text.contains("metadatafs_mds_transport{kind=\"https-mtls\"} 1\n"));
    assert!(text.contains("metadatafs_mds_transport{kind=\"http\"} 0\n"));
    let mut typed = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(name.starts_with("metadatafs_"), "{line}");
            assert_eq!(name.ends_with("_total"), kind == "counter", "{line}");
            assert!(!typed.contains(&name), "{name} typed twice");
            typed.push(name);
        }
    }
}

#[test]
fn dates_are_utc_rfc3339() {
    assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
    assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)), "2000-02-29T00:00:00Z");
    assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(4_102_444_799)), "2099-12-31T23:59:59Z");
}

#[test]
fn names_round_trip() {
    for file in StatusFile::ALL {
        assert_eq!(StatusFile::from_name(file.name()), Some(file));
    }
    assert_eq!(StatusFile::from_name("tokens"), None);
    let names = StatusFile::ALL.map(StatusFile::name);
    assert!(names.is_sorted());
}
