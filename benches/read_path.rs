//! The read path, measured against tmpfs, against bare FUSE, and against older builds, in one
//! run over the in-process emulator (loopback only). What it prints, as Markdown tables:
//!
//! 1. **Warm reads**: open+read+close of a ~20-byte value on tmpfs; on a minimal fuser
//!    filesystem built here (floor.rs) answering OPEN with ENOSYS (the no-open floor), with
//!    `FOPEN_KEEP_CACHE` and with `FOPEN_DIRECT_IO`; and on metadatafs (`ttl=3600`) on both
//!    read paths (`no-open`, the default, and `-o read_path=open`): a plain value,
//!    `access_token`, `authorization` and `token`. Plus any older builds named in
//!    `METADATAFS_BENCH_BASELINES` (`label=/path/to/metadatafs:…`): their warm value, token
//!    and `ls -l`. And a warm `ls -l` of a 10-entry directory: readdir and lstat of each
//!    entry, and also as GNU `ls` does it, which asks each entry's SELinux label and ACL.
//!    All of it interleaved round-robin in short batches, round after round for at least
//!    [`MIN_SPAN`], so a noisy neighbour hits every case alike and each case's reads are
//!    spread across the whole span: medians, and means (a `token` version lasts at most a
//!    second, so its mean over the span carries its lookups; reads slower than
//!    [`measure::SLOW`] are the machine, counted and left out of means).
//! 2. **Cold reads**: a never-read value in a directory already listed, and a value at
//!    `ttl=0`, beside one kept-alive HTTP GET of it, interleaved (cold.rs).
//!    `METADATAFS_BENCH_ONLY=cold` runs this part alone, beside the older builds'.
//! 3. **Python**: `open().read()` of a warm value against a kept-alive `requests` GET of it
//!    (python.rs).
//! 4. **FUSE messages per warm read** of each kind of file on each path, and per `ls -l`
//!    (messages.rs); MDS requests per 1000 warm reads; how soon a change made on the emulator
//!    is visible to a new `open()` at `ttl=3600`; the daemons' memory; cold reads over HTTPS
//!    with mutual TLS beside plain HTTP.
//!
//! Targets (issue 14), printed at the end as met or not: warm value, `access_token` and
//! `authorization` ≤ 1.5× tmpfs with 0 FUSE messages per warm `cat`; warm `token` ≤ 2× tmpfs,
//! means over the span; warm `ls -l` ≤ 2× tmpfs; a cold value in a listed directory ≤ 2× one
//! kept-alive GET; Python `open().read()` ≥ 50× faster than a `requests` GET. Issue 13 (the
//! restructure): no figure of this build worse than the older builds' beyond noise.
//!
//! Everything (this process, the daemons, the emulator, Python) runs pinned to one CPU: on a
//! small VM a FUSE round trip costs very different amounts depending on whether the scheduler
//! happened to put client and server on the same core (a cross-core wakeup is an IPI, dear in
//! a VM), and that luck, fixed per process, would otherwise decide the ratios.
//!
//! `cargo bench --bench read_path` (needs root and /dev/fuse). It asserts nothing about the
//! figures: numbers from a shared machine are for comparing, not for failing a build. Every
//! mount is undone when dropped, a panic included.

#[path = "read_path/cold.rs"]
mod cold;
#[path = "read_path/floor.rs"]
mod floor;
#[path = "read_path/measure.rs"]
mod measure;
#[path = "read_path/messages.rs"]
mod messages;
#[path = "read_path/mount.rs"]
mod mount;
#[path = "read_path/python.rs"]
mod python;
#[path = "read_path/report.rs"]
mod report;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use metadatafs::emulator::{Emulator, EmulatorConfig};

use floor::{FloorMount, Open};
use measure::{cat, ls_l, ls_l_gnu, round_robin, Case, Http, Stats};
use messages::PerRead;
use mount::Mount;
use report::{Table, PATHS};

const VALUE: &str = "project/project-id";
/// The files whose warm reads are timed, by the name the tables give them.
const FILES: [(&str, &str); 4] = [
    ("value", VALUE),
    ("access_token", "instance/service-accounts/default/access_token"),
    ("authorization", "instance/service-accounts/default/authorization"),
    ("token", "instance/service-accounts/default/token"),
];
const TOKEN: &str = FILES[3].1;
const STATUS: &str = ".metadatafs/status";
/// Made to hold exactly `floor::KEYS` keys, `k0`..`k9`, before anything is mounted.
const LS_DIR: &str = "instance/attributes";
const CHANGING: &str = "project/attributes/bench-change";
const BATCH: usize = 50;
const MIN_ROUNDS: usize = 40;
const MIN_SPAN: Duration = Duration::from_secs(5);
const MESSAGE_READS: usize = 1000;
const FLOORS: [(&str, Open); 3] = [
    ("floor no-open", Open::None),
    ("floor keep-cache", Open::KeepCache),
    ("floor direct-io", Open::DirectIo),
];

/// An older build, mounted beside this one (`METADATAFS_BENCH_BASELINES`).
struct Old {
    label: String,
    binary: PathBuf,
    mount: Mount,
}

fn main() {
    metadatafs::upstream::mtls::crypto_provider();
    let pinned = pin_to_one_cpu();
    let emulator = Emulator::start(EmulatorConfig::default()).expect("emulator");
    let addr = emulator.addr().to_string();
    let http = Http::new(&addr);
    stage(&http);
    let this = Path::new(env!("CARGO_BIN_EXE_metadatafs"));
    let no_open = Mount::start(this, &addr, "ttl=3600");
    let open = Mount::start(this, &addr, "ttl=3600,read_path=open");
    let olds = baselines(&addr);
    if std::env::var("METADATAFS_BENCH_ONLY").as_deref() == Ok("cold") {
        return cold_only(this, &addr, &http, &olds);
    }
    let cpu = pinned.map_or("not pinned".to_string(), |cpu| format!("all on CPU {cpu}"));
    println!("\n# read_path ({cpu})\n");
    println!("- this build, default mount: read path {}", no_open.read_path());
    println!("- this build, `-o read_path=open`: read path {}", open.read_path());
    for old in &olds {
        println!("- {} ({}): read path {}", old.label, old.binary.display(), old.mount.read_path());
    }

    // 1. Warm reads and `ls -l`, all interleaved.
    let value = std::fs::read(no_open.join(VALUE)).unwrap();
    let shm = tempfile::tempdir_in("/dev/shm").unwrap();
    let (tmpfs, tmpfs_dir) = (shm.path().join("project-id"), shm.path().join("attributes"));
    std::fs::write(&tmpfs, &value).unwrap();
    std::fs::create_dir(&tmpfs_dir).unwrap();
    for i in 0..floor::KEYS {
        std::fs::write(tmpfs_dir.join(format!("k{i}")), format!("value-{i}")).unwrap();
    }
    let floors = FLOORS.map(|(_, open)| FloorMount::mount(&value, open));
    let mut cases = read_cases(&tmpfs, &floors, [&no_open, &open], &olds, value.len());
    let mut dirs = vec![("tmpfs", tmpfs_dir), ("floor no-open", floors[0].dir.clone())];
    dirs.extend(PATHS.iter().zip([&no_open, &open]).map(|(p, m)| (*p, m.join(LS_DIR))));
    cases.extend(ls_cases(dirs, &olds));
    let run = round_robin(&mut cases, BATCH, MIN_ROUNDS, MIN_SPAN);
    let warm: Vec<(String, Stats)> =
        cases.iter().map(|c| c.name.clone()).zip(run.stats.iter().copied()).collect();
    drop(cases);
    let (reads_table, ls_table) = report::warm(&warm, value.len(), &run);
    println!("{reads_table}{ls_table}");

    // 2. Cold reads.
    let ttl0 = Mount::start(this, &addr, "ttl=0");
    let cold_no_open = Mount::start(this, &addr, "ttl=3600");
    let cold_open = Mount::start(this, &addr, "ttl=3600,read_path=open");
    let listed = [
        ("cold, listed directory (no-open)", &cold_no_open),
        ("cold, listed directory (open)", &cold_open),
    ];
    let colds = cold::listed_and_ttl0(&http, &listed, &ttl0, VALUE);
    println!("{}", report::cold(&colds));

    // 3. Python.
    let url = format!("http://{addr}/computeMetadata/v1/{VALUE}");
    let py = python::run(&no_open.join(VALUE), &floors[0].file, &tmpfs, &url);
    println!("{}", report::python(py.as_ref()));

    // 4. FUSE messages, MDS requests, changes, memory, mutual TLS.
    let (messages, table) = fuse_messages(&addr, [&no_open, &open], &olds, &floors);
    println!("{table}{}", mds_requests(&http, [&no_open, &open]));
    for (path, mount) in PATHS.iter().zip([&no_open, &open]) {
        let ms = Stats::of(change_latency(&http, mount, 15));
        println!(
            "change visible to a new open() at ttl=3600, {path} path: median {:.1} ms, \
             mean {:.1} ms (15 changes)",
            ms.median, ms.mean
        );
    }
    let mut rss: Vec<(&str, &Mount)> = vec![("no-open", &no_open), ("open", &open)];
    rss.extend([("ttl=0", &ttl0), ("cold no-open", &cold_no_open), ("cold open", &cold_open)]);
    rss.extend(olds.iter().map(|old| (old.label.as_str(), &old.mount)));
    let rss: Vec<String> = rss.iter().map(|(n, m)| format!("{n} {} KiB", m.rss_kib())).collect();
    println!("\ndaemon RSS after the run: {}", rss.join(", "));
    let (plain, mtls) = cold::over_https(this, VALUE);
    println!("{}", report::https(plain, mtls));

    println!("{}", report::targets(&warm, &colds, py.as_ref(), &messages));
}

/// `METADATAFS_BENCH_ONLY=cold`: the cold reads alone, this build's and each older build's
/// (fresh mounts of them), for a quick look at one change.
fn cold_only(this: &Path, addr: &str, http: &Http, olds: &[Old]) {
    let ttl0 = Mount::start(this, addr, "ttl=0");
    let mut mounts = vec![("cold, listed directory (no-open)".to_string(), this)];
    mounts
        .extend(olds.iter().map(|o| (format!("cold, listed directory ({})", o.label), &*o.binary)));
    let mounts: Vec<(String, Mount)> =
        mounts.into_iter().map(|(n, b)| (n, Mount::start(b, addr, "ttl=3600"))).collect();
    let listed: Vec<(&str, &Mount)> = mounts.iter().map(|(n, m)| (n.as_str(), m)).collect();
    println!("{}", report::cold(&cold::listed_and_ttl0(http, &listed, &ttl0, VALUE)));
}

/// A case that `cat`s `path`, checking it read `len` bytes (any, if 0).
fn reads(name: &str, path: PathBuf, len: usize) -> Case {
    Case::new(name, move || {
        let n = cat(&path);
        assert!(n == len || (len == 0 && n > 0), "{}: read {n} bytes", path.display());
    })
}

/// Warm reads: tmpfs, the floors, each file on each path, the older builds' value and token.
fn read_cases(
    tmpfs: &Path,
    floors: &[FloorMount; 3],
    mounts: [&Mount; 2],
    olds: &[Old],
    len: usize,
) -> Vec<Case> {
    let mut cases = vec![reads("tmpfs", tmpfs.to_path_buf(), len)];
    for ((name, _), floor) in FLOORS.iter().zip(floors) {
        cases.push(reads(name, floor.file.clone(), len));
    }
    for (path, mount) in PATHS.iter().zip(mounts) {
        for (file, at) in FILES {
            cases.push(reads(&format!("{path}: {file}"), mount.join(at), 0));
        }
    }
    for old in olds {
        cases.push(reads(&format!("{}: value", old.label), old.mount.join(VALUE), len));
        cases.push(reads(&format!("{}: token", old.label), old.mount.join(TOKEN), 0));
    }
    cases
}

/// Warm `ls -l` of each directory in `dirs`, plain and as GNU ls does it; plain on the older
/// builds.
fn ls_cases<'a>(mut dirs: Vec<(&'a str, PathBuf)>, olds: &'a [Old]) -> Vec<Case> {
    let n = floor::KEYS as usize;
    let mut cases = Vec::new();
    for (name, dir) in dirs.clone() {
        cases.push(Case::new(format!("ls -l, GNU, {name}"), move || assert_eq!(ls_l_gnu(&dir), n)));
    }
    dirs.extend(olds.iter().map(|old| (old.label.as_str(), old.mount.join(LS_DIR))));
    for (name, dir) in dirs {
        cases.push(Case::new(format!("ls -l, {name}"), move || assert_eq!(ls_l(&dir), n)));
    }
    cases
}

/// The emulator as the bench needs it: `LS_DIR` holding exactly `k0`..`k9`, the cold keys,
/// and the key the change latency is measured on. Done before anything mounts.
fn stage(http: &Http) {
    let keys: Vec<String> = (0..floor::KEYS).map(|i| format!("k{i}")).collect();
    for key in &keys {
        http.put(&format!("{LS_DIR}/{key}"), &format!("value-{}", &key[1..]));
    }
    let listing = http.send(reqwest::Method::GET, &format!("/computeMetadata/v1/{LS_DIR}/"), "");
    for name in listing.lines().map(|n| n.trim_end_matches('/')) {
        if !keys.iter().any(|k| k == name) {
            http.delete(&format!("{LS_DIR}/{name}"));
        }
    }
    for i in 0..cold::COLD_KEYS {
        http.put(&cold::cold_key(i), &format!("cold-{i}"));
    }
    http.put(CHANGING, "initial");
}

/// `METADATAFS_BENCH_BASELINES=label=/path/to/metadatafs:…`, each mounted at `ttl=3600`.
fn baselines(addr: &str) -> Vec<Old> {
    let list = std::env::var("METADATAFS_BENCH_BASELINES").unwrap_or_default();
    list.split(':')
        .filter(|s| !s.is_empty())
        .map(|s| {
            let (label, path) = s.split_once('=').expect("label=/path/to/metadatafs");
            let binary = PathBuf::from(path);
            let mount = Mount::start(&binary, addr, "ttl=3600");
            Old { label: label.to_string(), binary, mount }
        })
        .collect()
}

/// FUSE messages per warm read of each kind of file, on each path; the floors' own counts;
/// and the older builds' (from fresh mounts: their status has no counters).
fn fuse_messages(
    addr: &str,
    mounts: [&Mount; 2],
    olds: &[Old],
    floors: &[FloorMount; 3],
) -> (Vec<(String, [PerRead; 2])>, Table) {
    let title = "FUSE messages per warm read (total without FORGET; then by operation)";
    let mut table = Table::new(title, &["file", "no-open path", "open path"]);
    let mut rows = Vec::new();
    // A `token` changes every second, and in the last moments of each second its name has no
    // TTL left to give: its reads are spread over 3.5 s so every part of the second counts.
    let mut files: Vec<(&str, &str)> =
        FILES.iter().filter(|(_, at)| *at != TOKEN).copied().collect();
    files.push(("status", STATUS));
    for (file, at) in files {
        let per = mounts.map(|m| {
            messages::by_status(m, MESSAGE_READS, || {
                cat(&m.join(at));
            })
        });
        rows.push((file.to_string(), per));
    }
    let spread = mounts.map(|m| {
        let path = m.join(TOKEN);
        messages::by_status(m, 350, || {
            cat(&path);
            std::thread::sleep(Duration::from_millis(10));
        })
    });
    rows.push(("token (350 reads over 3.5 s)".to_string(), spread));
    let ls = mounts.map(|m| {
        messages::by_status(m, 200, || {
            ls_l(&m.join(LS_DIR));
        })
    });
    rows.push(("ls -l of 10 entries".to_string(), ls));
    for (file, per) in &rows {
        table.row([file.clone(), per[0].to_string(), per[1].to_string()]);
    }
    for ((name, _), floor) in FLOORS.iter().zip(floors) {
        let before = floor.requests();
        (0..MESSAGE_READS).for_each(|_| {
            cat(&floor.file);
        });
        let per = (floor.requests() - before) as f64 / MESSAGE_READS as f64;
        table.row([name.to_string(), PerRead::single("all", per).to_string(), String::new()]);
    }
    let before = floors[0].requests();
    (0..200).for_each(|_| {
        ls_l_gnu(&floors[0].dir);
    });
    let per = PerRead::single("all", (floors[0].requests() - before) as f64 / 200.0);
    table.row(["floor no-open: GNU ls -l".to_string(), per.to_string(), String::new()]);
    for old in olds {
        for (file, at) in [("value", VALUE), ("token", TOKEN)] {
            let per = messages::by_unmount(&old.binary, addr, "ttl=3600", at, MESSAGE_READS);
            table.row([format!("{}: {file}", old.label), per.to_string(), String::new()]);
        }
    }
    (rows, table)
}

/// Requests the emulator served during 1000 warm reads of each file, on each path.
fn mds_requests(http: &Http, mounts: [&Mount; 2]) -> Table {
    let mut table = Table::new("MDS requests per 1000 warm reads", &["file", "no-open", "open"]);
    for (file, at) in FILES {
        let counts = mounts.map(|mount| {
            let before = http.requests();
            (0..1000).for_each(|_| {
                cat(&mount.join(at));
            });
            (http.requests() - before).to_string()
        });
        table.row([file.to_string(), counts[0].clone(), counts[1].clone()]);
    }
    table
}

/// Milliseconds from a change on the emulator to a new `open()` seeing it, `n` times.
fn change_latency(http: &Http, mount: &Mount, n: usize) -> Vec<f64> {
    let path = mount.join(CHANGING);
    cat(&path);
    (0..n)
        .map(|i| {
            let value = format!("changed-{i}-{}", mount.path.display());
            let start = Instant::now();
            http.put(CHANGING, &value);
            while std::fs::read(&path).unwrap() != value.as_bytes() {
                assert!(start.elapsed() < Duration::from_secs(30), "change never seen");
                std::thread::sleep(Duration::from_micros(200));
            }
            let ms = start.elapsed().as_secs_f64() * 1e3;
            // Past the watcher's shortest pause between requests: measure the change alone.
            std::thread::sleep(Duration::from_millis(150));
            ms
        })
        .collect()
}

/// Run this process, and everything it starts from now on, on the CPU it is on now.
fn pin_to_one_cpu() -> Option<usize> {
    // SAFETY: sched_getcpu has no preconditions; the cpu_set_t is ours and zeroed first.
    unsafe {
        let cpu = usize::try_from(libc::sched_getcpu()).ok()?;
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        (libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0)
            .then_some(cpu)
    }
}
