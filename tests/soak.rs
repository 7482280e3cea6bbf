//! The soak test: many readers of values, listings and tokens, for as long as asked, while the
//! emulator injects every fault it knows in turn and a value keeps changing size under them.
//!
//! It asserts what a user relies on on the worst day: no read ever returns wrong, partial or
//! mixed bytes; `stat`/`fstat` never disagree with what a read returns; no expired token is
//! served, nor one the daemon thinks lives longer than the server says; the only error a
//! reader sees is EIO (the server is failing); and once the faults stop, the daemon's memory
//! and open file descriptors are back to where they were before them.
//!
//! Run it with `scripts/soak SECS` (CI runs 60 s); it prints a summary.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{eventually, Emulator, Mount, StopOnDrop};

const READERS: usize = 12;
const CHURN: &str = "instance/attributes/soak-churn";
/// Sizes the changing value cycles through, across page boundaries and down to one byte.
const CHURN_SIZES: [usize; 7] = [1, 100, 4095, 4096, 4097, 9000, 0];
const STABLE: [&str; 6] = [
    "project/project-id",
    "project/numeric-project-id",
    "instance/hostname",
    "instance/zone",
    "instance/tags",
    "instance/attributes/startup-script",
];

/// The `i`th version of the changing value: a header naming the version, then filler, so a
/// read mixing two versions matches neither.
fn churn_value(i: usize) -> Vec<u8> {
    let size = CHURN_SIZES[i % CHURN_SIZES.len()];
    let mut value = format!("v{i}:").into_bytes();
    value.resize(size.max(value.len()), b'a' + (i % 26) as u8);
    if size == 0 {
        value.clear();
    }
    value
}

/// One fault the emulator injects for a phase, or an action on it.
struct Phase {
    name: &'static str,
    rule: Option<&'static str>,
}

const PHASES: &[Phase] = &[
    Phase { name: "healthy", rule: None },
    Phase { name: "503 everywhere", rule: Some(r#"{"prefix":"/","status":503}"#) },
    Phase {
        name: "300 ms latency under instance/",
        rule: Some(r#"{"prefix":"/computeMetadata/v1/instance/","latency_ms":300}"#),
    },
    Phase {
        name: "dropped connections under project/",
        rule: Some(r#"{"prefix":"/computeMetadata/v1/project/","drop":true}"#),
    },
    Phase { name: "no Metadata-Flavor", rule: Some(r#"{"prefix":"/","no_flavor":true}"#) },
    Phase {
        name: "undecodable token bodies",
        rule: Some(
            r#"{"prefix":"/computeMetadata/v1/instance/service-accounts/default/token","body":"{not json"}"#,
        ),
    },
    Phase { name: "429 everywhere", rule: Some(r#"{"prefix":"/","status":429}"#) },
    Phase {
        name: "token requests slower than the timeout",
        rule: Some(
            r#"{"prefix":"/computeMetadata/v1/instance/service-accounts/","latency_ms":2500}"#,
        ),
    },
    Phase { name: "a 500 burst", rule: Some(r#"{"prefix":"/","status":500,"count":40}"#) },
];

#[derive(Default)]
struct Tally {
    reads: BTreeMap<&'static str, u64>,
    errors: BTreeMap<String, u64>,
    failures: Vec<String>,
}

impl Tally {
    fn fail(&mut self, what: String) {
        if self.failures.len() < 20 {
            self.failures.push(what);
        }
    }
}

struct Expected {
    stable: Vec<(String, Vec<u8>)>,
    attributes: BTreeSet<String>,
    churn: Vec<Vec<u8>>,
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}

/// A tiny xorshift: the readers need variety, not quality.
fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

fn classify(tally: &mut Tally, what: &str, err: &std::io::Error) {
    let errno = err.raw_os_error().unwrap_or(0);
    *tally.errors.entry(format!("{what}: {err}")).or_default() += 1;
    if errno != libc::EIO {
        tally.fail(format!("{what}: unexpected error {err}"));
    }
}

/// Open, `fstat`, read to the end: the bytes and the size `fstat` promised.
fn read_with_fstat(path: &std::path::Path) -> std::io::Result<(Vec<u8>, u64)> {
    let mut file = std::fs::File::open(path)?;
    let size = file.metadata()?.size();
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok((bytes, size))
}

fn reader(
    mount: &Mount,
    emulator: &Emulator,
    expected: &Expected,
    seed: u64,
    stop: &AtomicBool,
) -> Tally {
    let mut tally = Tally::default();
    let mut seed = seed | 1;
    while !stop.load(Ordering::Relaxed) {
        match next(&mut seed) % 8 {
            0..=2 => {
                let (path, want) =
                    &expected.stable[next(&mut seed) as usize % expected.stable.len()];
                *tally.reads.entry("value").or_default() += 1;
                match read_with_fstat(&mount.path(path)) {
                    Ok((bytes, _)) if bytes != *want => tally.fail(format!(
                        "{path}: {} bytes, not the {} expected",
                        bytes.len(),
                        want.len()
                    )),
                    Ok((bytes, size)) if size != bytes.len() as u64 => {
                        tally.fail(format!("{path}: fstat said {size}, read {}", bytes.len()))
                    }
                    Ok(_) => {}
                    Err(e) => classify(&mut tally, "value", &e),
                }
            }
            3 => {
                *tally.reads.entry("changing value").or_default() += 1;
                match read_with_fstat(&mount.path(CHURN)) {
                    Ok((bytes, _)) if !expected.churn.contains(&bytes) => tally.fail(format!(
                        "{CHURN}: {} bytes starting {:?} are no version of it",
                        bytes.len(),
                        String::from_utf8_lossy(&bytes[..bytes.len().min(12)])
                    )),
                    Ok((bytes, size)) if size != bytes.len() as u64 => {
                        tally.fail(format!("{CHURN}: fstat said {size}, read {}", bytes.len()))
                    }
                    Ok(_) => {}
                    Err(e) => classify(&mut tally, "changing value", &e),
                }
            }
            4 => {
                *tally.reads.entry("listing").or_default() += 1;
                match std::fs::read_dir(mount.path("instance/attributes")) {
                    Ok(entries) => {
                        let names: Result<BTreeSet<String>, _> = entries
                            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
                            .collect();
                        match names {
                            Ok(names) if names != expected.attributes => {
                                tally.fail(format!("instance/attributes lists {names:?}"))
                            }
                            Ok(_) => {}
                            Err(e) => classify(&mut tally, "listing", &e),
                        }
                    }
                    Err(e) => classify(&mut tally, "listing", &e),
                }
            }
            5 | 6 => {
                *tally.reads.entry("token").or_default() += 1;
                match mount.read("service-accounts/default/token") {
                    Ok(bytes) => {
                        check_token(&mut tally, emulator, &bytes, next(&mut seed) % 16 == 0)
                    }
                    Err(e) => classify(&mut tally, "token", &e),
                }
            }
            _ => {
                *tally.reads.entry("access_token").or_default() += 1;
                match mount.read("service-accounts/default/access_token") {
                    Ok(bytes) => {
                        let token = String::from_utf8_lossy(&bytes);
                        let shape = !token.is_empty()
                            && token
                                .bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b"-._~+/=".contains(&b));
                        if !shape {
                            tally.fail(format!(
                                "access_token of {} bytes is no bearer token",
                                bytes.len()
                            ));
                        }
                    }
                    Err(e) => classify(&mut tally, "access_token", &e),
                }
            }
        }
    }
    tally
}

/// A token file must parse, have time left, and (sampled) not outlive what the server says.
fn check_token(tally: &mut Tally, emulator: &Emulator, bytes: &[u8], ask_server: bool) {
    let json: serde_json::Value = match serde_json::from_slice(bytes) {
        Ok(json) => json,
        Err(_) => return tally.fail(format!("token file of {} bytes is not JSON", bytes.len())),
    };
    let (Some(token), Some(expires_in)) =
        (json["access_token"].as_str(), json["expires_in"].as_u64())
    else {
        return tally.fail("token JSON lacks access_token or expires_in".into());
    };
    if expires_in == 0 {
        tally.fail("a token with no time left was served".into());
    }
    if ask_server {
        let info = emulator.tokeninfo(token);
        let server_left = info["expires_in"].as_u64().unwrap_or(0);
        if info["expired"] != false || expires_in > server_left + 1 {
            tally.fail(format!("served expires_in {expires_in}, the server says {info}"));
        }
    }
}

/// A hostile local user beside the readers (issue 15): as nobody, distinct identity audiences
/// (EACCES, nothing fetched), floods of waiting reads killed mid-wait (interrupted readers), and
/// a reader interrupted by SIGINT. Counts what it did.
fn hostile(mount: &Mount, stop: &AtomicBool) -> (u64, u64) {
    use std::os::unix::process::CommandExt;
    let nobody = |program: &str, args: &[String]| {
        let mut command = std::process::Command::new(program);
        command.args(args).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
        // SAFETY: become_nobody makes plain system calls only.
        unsafe { command.pre_exec(common::become_nobody) };
        command.spawn().unwrap()
    };
    let (mut audiences, mut killed) = (0, 0);
    while !stop.load(Ordering::Relaxed) {
        audiences += 1;
        let account = "instance/service-accounts/default";
        let audience = format!("{account}/identity?audience=https:%2F%2Fh{audiences}.example");
        let path = mount.path(&audience).display().to_string();
        let status = nobody("/usr/bin/stat", &[path]).wait().unwrap();
        assert!(!status.success(), "nobody could stat an identity name");
        let mut waiting: Vec<_> = (0..10)
            .map(|n| {
                let name = format!("instance/zone?wait_for_change=true&timeout_sec={}", 100 + n);
                nobody("cat", &[mount.path(&name).display().to_string()])
            })
            .collect();
        // Ended by SIGINT (or by a fault phase's error first): never held past the signal.
        let start = Instant::now();
        std::process::Command::new("timeout")
            .args(["-s", "INT", "0.2", "cat"])
            .arg(mount.path("instance/hostname?wait_for_change=true&timeout_sec=100"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(start.elapsed() < Duration::from_secs(3), "SIGINT took {:?}", start.elapsed());
        for child in &mut waiting {
            let _ = child.kill();
            let _ = child.wait();
            killed += 1;
        }
    }
    (audiences, killed)
}

#[test]
#[ignore = "a soak test: run with scripts/soak SECS"]
fn soak() {
    let secs: u64 =
        std::env::var("METADATAFS_SOAK_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(60);
    let emulator = Emulator::start(&["--token-lifetime", "40", "--cache-window", "20"]);
    emulator.control(
        "PUT",
        &format!("values/{CHURN}"),
        &String::from_utf8(churn_value(0)).unwrap(),
    );
    let expected = Expected {
        stable: STABLE.iter().map(|p| (p.to_string(), emulator.get(p).1)).collect(),
        attributes: String::from_utf8(emulator.get("instance/attributes/").1)
            .unwrap()
            .lines()
            .map(|l| l.trim_end_matches('/').to_string())
            .collect(),
        churn: (0..CHURN_SIZES.len() * 4).map(churn_value).collect(),
    };
    let mount =
        Mount::start(&emulator.addr, &["-o", "ttl=1,timeout=2,refresh_margin=25,allow_other"]);
    let pid = mount.pid();
    let stop = AtomicBool::new(false);
    let phase_len = Duration::from_secs((secs / PHASES.len() as u64).max(2));
    let log: Mutex<Vec<String>> = Mutex::default();

    let (tallies, baseline, phases_run, hostile) = std::thread::scope(|scope| {
        // A failed assertion below must stop the readers, or the scope waits for them forever.
        let _stop = StopOnDrop(&stop);
        let readers: Vec<_> = (0..READERS)
            .map(|i| {
                let (mount, emulator, expected, stop) = (&mount, &emulator, &expected, &stop);
                scope.spawn(move || {
                    reader(mount, emulator, expected, 0x9e37_79b9 * (i as u64 + 1), stop)
                })
            })
            .collect();
        // Warm up healthy, then take the baseline the end is compared with.
        std::thread::sleep(Duration::from_secs(2));
        let baseline = (rss_kib(pid), open_fds(pid));
        let hostile = scope.spawn(|| hostile(&mount, &stop));
        let start = Instant::now();
        let mut churned = 0;
        let mut phases_run = 0;
        'phases: for round in 0.. {
            for phase in PHASES {
                if start.elapsed() >= Duration::from_secs(secs) && round + phases_run > 0 {
                    break 'phases;
                }
                emulator.control("DELETE", "faults", "");
                if let Some(rule) = phase.rule {
                    let (status, body) = emulator.control("POST", "faults", rule);
                    assert_eq!(status, 200, "{}: {body}", phase.name);
                }
                log.lock().unwrap().push(phase.name.to_string());
                phases_run += 1;
                let phase_start = Instant::now();
                while phase_start.elapsed() < phase_len {
                    churned += 1;
                    let value =
                        String::from_utf8(churn_value(churned % expected.churn.len())).unwrap();
                    emulator.control("PUT", &format!("values/{CHURN}"), &value);
                    std::thread::sleep(Duration::from_millis(150));
                }
            }
        }
        emulator.control("DELETE", "faults", "");
        stop.store(true, Ordering::Relaxed);
        let tallies: Vec<Tally> = readers.into_iter().map(|r| r.join().unwrap()).collect();
        (tallies, baseline, phases_run, hostile.join().unwrap())
    });

    // Once the faults stop, the daemon gives back what they cost it.
    let settled =
        eventually("memory and descriptors back to the baseline", Duration::from_secs(30), || {
            let now = (rss_kib(pid), open_fds(pid));
            (now.0 <= baseline.0 + 16 * 1024 && now.1 <= baseline.1 + 2).then_some(now)
        });

    let mut total = Tally::default();
    for tally in tallies {
        for (k, v) in tally.reads {
            *total.reads.entry(k).or_default() += v;
        }
        for (k, v) in tally.errors {
            *total.errors.entry(k).or_default() += v;
        }
        total.failures.extend(tally.failures);
    }
    println!(
        "soak: {secs} s, {READERS} readers, {phases_run} fault phases: {}",
        log.lock().unwrap().join(", ")
    );
    println!("  reads: {:?}", total.reads);
    println!("  errors seen by readers: {:?}", total.errors);
    println!(
        "  daemon RSS {} KiB -> {} KiB, open fds {} -> {}",
        baseline.0, settled.0, baseline.1, settled.1
    );
    println!("  MDS requests: {}", emulator.total_count());
    println!(
        "  hostile: {} identity audiences refused to nobody, {} waiting readers killed mid-wait",
        hostile.0, hostile.1
    );
    let identity = emulator.count("instance/service-accounts/default/identity");
    assert_eq!(identity, 0, "identity tokens fetched on behalf of nobody");
    assert!(total.failures.is_empty(), "soak failures:\n{}", total.failures.join("\n"));
    let reads: u64 = total.reads.values().sum();
    assert!(reads > 100 * secs.min(10), "too few reads to mean anything: {reads}");
    assert!(
        mount.read("project/project-id").is_ok(),
        "the mount serves again once the faults stop"
    );
}
