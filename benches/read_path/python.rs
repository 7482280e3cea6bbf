//! What a Python program sees: `open(path).read()` of a warm value (on the mount and on tmpfs)
//! against `requests.Session().get()` of it from the emulator on a kept-alive connection, one
//! Python process timing all three interleaved (it inherits this process's CPU pinning).

use std::path::Path;
use std::process::Command;

/// Prints `{"mount": µs, "floor": µs, "tmpfs": µs, "requests": µs}`, medians.
const SCRIPT: &str = r#"
import json, statistics, sys, time
import requests

mount, floor, tmpfs, url = sys.argv[1:5]
rounds, batch = int(sys.argv[5]), int(sys.argv[6])
session = requests.Session()
headers = {"Metadata-Flavor": "Google"}

def read(path):
    with open(path) as f:
        return f.read()

def get():
    return session.get(url, headers=headers).text

expected = get()
cases = {
    "mount": lambda: read(mount),
    "floor": lambda: read(floor),
    "tmpfs": lambda: read(tmpfs),
    "requests": get,
}
samples = {name: [] for name in cases}
for name, op in cases.items():
    for _ in range(batch):
        assert op() == expected, name
names = list(cases)
for r in range(rounds):
    for k in range(len(names)):
        name = names[(r + k) % len(names)]
        op = cases[name]
        for _ in range(batch):
            start = time.perf_counter_ns()
            op()
            samples[name].append((time.perf_counter_ns() - start) / 1000)
print(json.dumps({name: statistics.median(s) for name, s in samples.items()}))
"#;

/// Medians in µs: `open().read()` on the mount, on the no-open floor and on tmpfs, and a
/// `requests` GET.
#[derive(Debug)]
pub struct Python {
    pub mount: f64,
    pub floor: f64,
    pub tmpfs: f64,
    pub requests: f64,
}

pub fn run(mount: &Path, floor: &Path, tmpfs: &Path, url: &str) -> Option<Python> {
    let output = Command::new("python3")
        .args(["-c", SCRIPT])
        .arg(mount)
        .arg(floor)
        .arg(tmpfs)
        .args([url, "100", "20"])
        .output()
        .ok()?;
    if !output.status.success() {
        eprintln!("python3: {}", String::from_utf8_lossy(&output.stderr));
        return None;
    }
    let medians: serde_json::Value = serde_json::from_slice(&output.stdout).ok()?;
    Some(Python {
        mount: medians["mount"].as_f64()?,
        floor: medians["floor"].as_f64()?,
        tmpfs: medians["tmpfs"].as_f64()?,
        requests: medians["requests"].as_f64()?,
    })
}
