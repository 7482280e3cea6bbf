//! `.metadatafs/status` and `metrics` through a real mount of the real daemon against the real
//! emulator: the fields, that they move as reads happen, the Prometheus text format (checked
//! by a strict parser below), that no token byte ever shows, and who may read what.

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use common::{as_nobody, eventually, Emulator, Mount, DEADLINE};
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
    assert_eq!(before["watcher"]["state"], "not started");
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
    assert!(n(&second["cache"]["hits"]) >= n(&first["cache"]["hits"]) + 19);
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
    assert_eq!(requests.value("metadatafs_mds_requests_total", &[("code", "200")]), count);
    assert_eq!(families["metadatafs_mds_up"].value("metadatafs_mds_up", &[]), 1.0);
    let version = [("version", env!("CARGO_PKG_VERSION"))];
    assert_eq!(families["metadatafs_build_info"].value("metadatafs_build_info", &version), 1.0);
    let misses =
        families["metadatafs_cache_misses_total"].value("metadatafs_cache_misses_total", &[]);
    assert!(misses >= 2.0);
    let expires = &families["metadatafs_token_expires_in_seconds"];
    let left = expires.value("metadatafs_token_expires_in_seconds", &[("path", TOKEN)]);
    assert!((3000.0..=3600.0).contains(&left), "{left}");
    let watcher = &families["metadatafs_watcher_state"];
    assert_eq!(watcher.value("metadatafs_watcher_state", &[("state", "not started")]), 1.0);
}

#[test]
fn no_token_byte_in_a_trace_log_the_status_or_the_metrics() {
    let emu = Emulator::start(&[]);
    let env = [("RUST_LOG", "trace")];
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

/// One metric family of a parsed exposition.
#[derive(Debug, Default)]
struct Family {
    kind: String,
    help: String,
    /// (sample name, labels, value)
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

impl Family {
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let want: BTreeMap<String, String> =
            labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let found = self.samples.iter().find(|(n, l, _)| n == name && *l == want);
        found.unwrap_or_else(|| panic!("no sample {name}{want:?} in {self:?}")).2
    }
}

/// A strict parser of the Prometheus text exposition format 0.0.4: every line is a well-formed
/// `# HELP`, `# TYPE`, comment or sample; names and label names are valid; label values use
/// only the three escapes; a family's TYPE and HELP come once, before its samples, and its
/// samples are contiguous; no series repeats; counters are not negative; a histogram has
/// `le`-labelled cumulative buckets ending at `+Inf`, which equals its `_count`, and a `_sum`.
fn parse_exposition(text: &str) -> Result<BTreeMap<String, Family>, String> {
    if !text.ends_with('\n') {
        return Err("the last line does not end with a newline".into());
    }
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    let mut seen = std::collections::HashSet::new();
    let mut current: Option<String> = None;
    for (i, line) in text.lines().enumerate() {
        let fail = |why: &str| format!("line {}: {why}: {line:?}", i + 1);
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.trim_start().splitn(3, ' ');
            let (keyword, name) = (words.next().unwrap_or(""), words.next());
            let rest = words.next().unwrap_or("");
            if keyword != "HELP" && keyword != "TYPE" {
                continue;
            }
            let name = name.filter(|n| metric_name(n)).ok_or_else(|| fail("bad metric name"))?;
            if current.as_deref() != Some(name) && families.contains_key(name) {
                return Err(fail("a family's metadata after its samples or twice"));
            }
            let family = families.entry(name.to_string()).or_default();
            current = Some(name.to_string());
            if keyword == "HELP" {
                if !family.help.is_empty() || rest.is_empty() {
                    return Err(fail("HELP twice or empty"));
                }
                check_escapes(rest, false).map_err(|e| fail(&e))?;
                family.help = rest.to_string();
            } else {
                let kinds = ["counter", "gauge", "histogram", "summary", "untyped"];
                if !family.kind.is_empty() || !family.samples.is_empty() || !kinds.contains(&rest) {
                    return Err(fail("TYPE twice, after samples, or unknown"));
                }
                family.kind = rest.to_string();
            }
            continue;
        }
        if line.trim().is_empty() {
            continue;
        }
        let (name, labels, value) = sample(line).map_err(|e| fail(&e))?;
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .filter_map(|s| name.strip_suffix(s))
            .find(|b| families.get(*b).is_some_and(|f| f.kind == "histogram"))
            .unwrap_or(&name)
            .to_string();
        if current.as_deref() != Some(base.as_str()) && families.contains_key(&base) {
            return Err(fail("the family's samples are not contiguous"));
        }
        if !seen.insert(format!("{name}{labels:?}")) {
            return Err(fail("a series repeats"));
        }
        let family = families.entry(base.clone()).or_default();
        if family.kind.is_empty() {
            return Err(fail("a sample without a TYPE"));
        }
        if family.kind == "counter" && (value < 0.0 || value.is_nan()) {
            return Err(fail("a negative counter"));
        }
        current = Some(base);
        family.samples.push((name, labels, value));
    }
    for (name, family) in &families {
        if family.kind == "histogram" {
            check_histogram(name, family)?;
        }
    }
    Ok(families)
}

fn check_histogram(name: &str, family: &Family) -> Result<(), String> {
    let bucket = format!("{name}_bucket");
    let mut previous: Option<(f64, f64)> = None;
    for (sample, labels, value) in family.samples.iter().filter(|s| s.0 == bucket) {
        let le = labels.get("le").ok_or(format!("{sample} without le"))?;
        let le: f64 = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse().map_err(|_| format!("le {le}"))?
        };
        if let Some((p_le, p_count)) = previous {
            if le <= p_le || *value < p_count {
                return Err(format!("{name}: buckets not ascending and cumulative at le={le}"));
            }
        }
        previous = Some((le, *value));
    }
    let count = family.value(&format!("{name}_count"), &[]);
    family.value(&format!("{name}_sum"), &[]);
    match previous {
        Some((le, inf)) if le == f64::INFINITY && inf == count => Ok(()),
        _ => Err(format!("{name}: the +Inf bucket is missing or differs from _count")),
    }
}

fn metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn label_name(name: &str) -> bool {
    metric_name(name) && !name.contains(':') && !name.starts_with("__")
}

/// Only `\\` and `\n` (and `\"` inside label values) may follow a backslash.
fn check_escapes(text: &str, quoted: bool) -> Result<(), String> {
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('\\' | 'n') => {}
                Some('"') if quoted => {}
                other => return Err(format!("bad escape \\{other:?}")),
            }
        } else if c == '\n' || (quoted && c == '"') {
            return Err("unescaped character".into());
        }
    }
    Ok(())
}

type Sample = (String, BTreeMap<String, String>, f64);

fn sample(line: &str) -> Result<Sample, String> {
    let name_end = line.find(['{', ' ']).ok_or("no value")?;
    let name = &line[..name_end];
    if !metric_name(name) {
        return Err("bad metric name".into());
    }
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(mut inner) = rest.strip_prefix('{') {
        loop {
            if let Some(after) = inner.strip_prefix('}') {
                rest = after;
                break;
            }
            let (label, after) = inner.split_once("=\"").ok_or("bad label")?;
            if !label_name(label) || labels.contains_key(label) {
                return Err(format!("bad or repeated label name {label:?}"));
            }
            let mut end = None;
            let mut escaped = false;
            for (i, c) in after.char_indices() {
                match c {
                    _ if escaped => escaped = false,
                    '\\' => escaped = true,
                    '"' => {
                        end = Some(i);
                        break;
                    }
                    _ => {}
                }
            }
            let end = end.ok_or("unterminated label value")?;
            let raw = &after[..end];
            check_escapes(raw, true)?;
            let value = raw.replace("\\n", "\n").replace("\\\"", "\"").replace("\\\\", "\\");
            labels.insert(label.to_string(), value);
            inner = &after[end + 1..];
            inner = inner.strip_prefix(',').unwrap_or(inner);
        }
    }
    let mut fields = rest.strip_prefix(' ').ok_or("no space before the value")?.split(' ');
    let value = fields.next().ok_or("no value")?;
    let value: f64 = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse().map_err(|_| format!("bad value {v:?}"))?,
    };
    if let Some(timestamp) = fields.next() {
        timestamp.parse::<i64>().map_err(|_| "bad timestamp")?;
    }
    if fields.next().is_some() {
        return Err("trailing fields".into());
    }
    Ok((name.to_string(), labels, value))
}

#[test]
fn the_parser_rejects_what_prometheus_rejects() {
    let good = "# HELP m_total x\n# TYPE m_total counter\nm_total{a=\"q\\\"\"} 1\n";
    assert!(parse_exposition(good).is_ok());
    let bad = [
        "# TYPE m counter\nm 1",                           // no final newline
        "m 1\n",                                           // no TYPE
        "# TYPE m gauge\nm{a=\"x} 1\n",                    // unterminated
        "# TYPE m gauge\nm{a=\"\\t\"} 1\n",                // bad escape
        "# TYPE m gauge\nm one\n",                         // bad value
        "# TYPE m gauge\nm 1\n# TYPE n gauge\nn 1\nm 2\n", // not contiguous
        "# TYPE m gauge\nm 1\nm 1\n",                      // repeated series
        "# TYPE m counter\nm -1\n",                        // negative counter
        "# TYPE 1m gauge\n",                               // bad name
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
        "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n", // no +Inf
    ];
    for text in bad {
        assert!(parse_exposition(text).is_err(), "accepted {text:?}");
    }
}
