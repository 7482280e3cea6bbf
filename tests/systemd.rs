//! The shipped units (`systemd/`) under a real systemd: each test boots a container with
//! `systemd-nspawn` as `reference/systemd-under-test.md` describes, with the real binaries and
//! the unit files bound in unchanged, plus drop-ins that only point them at an emulator inside
//! the container (`tests/systemd/*.d/`). `tests/systemd/check.sh` runs there as the oneshot
//! `run-tests@SCENARIO.service`, checks one scenario and ends the container: exit status 0 if
//! every check passed.
//!
//! - The Debian root is built once with mmdebstrap (about 30 s) and cached in
//!   `/var/cache/metadatafs-test` (`METADATAFS_TEST_CACHE` overrides); it is rebuilt when absent.
//!   Containers run with `--volatile=overlay`, so the root stays clean and several can share it.
//! - nspawn runs from a private cgroup of ours (it leaves its `supervisor/` and `payload/`
//!   there with `--keep-unit`), removed afterwards with anything left in it.
//! - Where systemd-nspawn cannot run (not root, no /dev/fuse, no nspawn or root) the tests say
//!   so and pass, except when `CI` or `METADATAFS_REQUIRE_SYSTEMD` is set: then they fail.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The .deb built by cargo-deb, checked by lintian and installed in a container.
#[path = "systemd/deb.rs"]
mod deb;

const SUITE: &str = "bookworm";
// man-db and bash-completion: the package test reads the man page and completes as a user would.
const PACKAGES: &str = "systemd,systemd-sysv,fuse3,dbus,man-db,bash-completion";
const BOOT_DEADLINE: Duration = Duration::from_secs(180);
const UNIT_DIR: &str = "/usr/local/lib/systemd/system";

/// Test-only units and drop-ins in `tests/systemd/`, bound in beside the shipped units.
const TEST_UNITS: &[&str] = &[
    "metadatafs-test-emulator.service",
    "meta-reader.service",
    "meta-mount-reader.service",
    "run-tests@.service",
    "metadatafs.service.d",
    "meta.mount.d",
];

#[test]
fn the_service_starts_ready_serves_restarts_and_unmounts_on_stop() {
    let Some(outcome) = boot("service") else { return };
    outcome.assert_passed();
    let exposure = std::fs::read_to_string(outcome.results.path().join("exposure")).unwrap();
    let exposure: f64 = exposure.trim().parse().unwrap_or_else(|_| {
        panic!("no exposure level in: {}", outcome.file("security"));
    });
    eprintln!("systemd-analyze security --offline=yes metadatafs.service: {exposure}");
    assert!(exposure <= 4.0, "exposure {exposure} > 4.0:\n{}", outcome.file("security"));
}

#[test]
fn the_mount_unit_mounts_serves_and_unmounts() {
    let Some(outcome) = boot("mount") else { return };
    outcome.assert_passed();
}

#[test]
fn scripts_install_puts_everything_where_systemd_and_mount_find_it() {
    let Some(outcome) = boot("install") else { return };
    outcome.assert_passed();
}

/// PREFIX and DESTDIR, checked on the host: a staged tree, units naming the installed binary.
#[test]
fn scripts_install_honours_prefix_and_destdir() {
    let stage = tempfile::tempdir().unwrap();
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_metadatafs")).parent().unwrap();
    let status = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/install"))
        .env("DESTDIR", stage.path())
        .env("PREFIX", "/opt/metadatafs")
        .env("BIN_DIR", bin_dir)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let staged = |path: &str| stage.path().join(path.trim_start_matches('/'));
    for bin in ["metadatafs", "metadatafs-emulator"] {
        assert!(staged(&format!("/opt/metadatafs/bin/{bin}")).is_file(), "{bin}");
    }
    let unit = std::fs::read_to_string(staged("/etc/systemd/system/metadatafs.service")).unwrap();
    assert!(unit.contains("\nExecStart=/opt/metadatafs/bin/metadatafs -f /meta -o allow_other\n"));
    assert!(staged("/etc/systemd/system/meta.mount").is_file());
    let link = std::fs::read_link(staged("/sbin/mount.fuse.metadatafs")).unwrap();
    assert_eq!(link, Path::new("/opt/metadatafs/bin/metadatafs"));
    assert!(staged("/opt/metadatafs/share/doc/metadatafs/README.md").is_file());
}

/// Any of these gives the service its own mount namespace, and its mount would be invisible to
/// everyone else while the unit says active (the container tests catch that too; this says why).
#[test]
fn the_service_has_no_mount_namespace_directive() {
    const NAMESPACING: &[&str] = &[
        "ProtectSystem",
        "ProtectHome",
        "PrivateTmp",
        "PrivateDevices",
        "PrivateMounts",
        "ProtectProc",
        "ProcSubset",
        "ProtectKernelTunables",
        "ProtectKernelModules",
        "ProtectKernelLogs",
        "ProtectControlGroups",
        "ReadOnlyPaths",
        "ReadWritePaths",
        "InaccessiblePaths",
        "ExecPaths",
        "NoExecPaths",
        "TemporaryFileSystem",
        "BindPaths",
        "BindReadOnlyPaths",
        "RootDirectory",
        "RootImage",
        "MountImages",
        "MountAPIVFS",
        "PrivateUsers",
        "DynamicUser",
        "StateDirectory",
        "CacheDirectory",
        "LogsDirectory",
    ];
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/metadatafs.service"),
    )
    .unwrap();
    for line in unit.lines().filter(|l| !l.starts_with('#')) {
        let key = line.split('=').next().unwrap().trim();
        assert!(!NAMESPACING.contains(&key), "{line}: a private mount namespace hides the mount");
    }
}

struct Outcome {
    code: Option<i32>,
    results: tempfile::TempDir,
}

impl Outcome {
    fn file(&self, name: &str) -> String {
        std::fs::read_to_string(self.results.path().join(name)).unwrap_or_default()
    }

    fn assert_passed(&self) {
        let log = self.file("log");
        eprintln!("{log}");
        assert!(
            self.code == Some(0) && log.contains("== 0 failed"),
            "container exited with {:?}\n--- log\n{log}\n--- journal\n{}\n--- console\n{}",
            self.code,
            self.file("journal"),
            self.file("console"),
        );
    }
}

/// Boot a container running `check.sh SCENARIO`; `None` if nspawn cannot run here.
fn boot(scenario: &str) -> Option<Outcome> {
    boot_with(scenario, Vec::new())
}

/// `boot`, with more read-only binds `(host path, container path)`.
fn boot_with(scenario: &str, extra: Vec<(PathBuf, String)>) -> Option<Outcome> {
    if let Err(why) = can_run().and_then(|()| root()) {
        return skip(&why);
    }
    let root = root().unwrap();
    let results = tempfile::tempdir().unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bin = env!("CARGO_BIN_EXE_metadatafs");
    let emulator = env!("CARGO_BIN_EXE_metadatafs-emulator");
    // The sources scripts/install works from, for the install scenario.
    let mut binds = vec![
        (repo.join("tests/systemd/check.sh"), "/usr/local/lib/metadatafs-test/check.sh".into()),
        (repo.join("tests/systemd/package.sh"), "/usr/local/lib/metadatafs-test/package.sh".into()),
        (repo.join("scripts/install"), "/src/scripts/install".to_string()),
        (repo.join("systemd"), "/src/systemd".into()),
        (repo.join("packaging"), "/src/packaging".into()),
        (repo.join("README.md"), "/src/README.md".into()),
        (PathBuf::from(bin), "/src/bin/metadatafs".into()),
        (PathBuf::from(emulator), "/src/bin/metadatafs-emulator".into()),
    ];
    binds.extend(extra);
    if scenario == "package" {
        // The package brings its own binary, units and helper; the test emulator is ours.
        binds.push((emulator.into(), "/usr/local/bin/metadatafs-emulator".into()));
    } else if scenario != "install" {
        // The recipe: binaries and unit files bound in where systemd and mount(8) find them.
        binds.push((bin.into(), "/usr/bin/metadatafs".into()));
        binds.push((bin.into(), "/usr/sbin/mount.fuse.metadatafs".into()));
        binds.push((emulator.into(), "/usr/local/bin/metadatafs-emulator".into()));
        for unit in ["metadatafs.service", "meta.mount"] {
            binds.push((repo.join("systemd").join(unit), format!("{UNIT_DIR}/{unit}")));
        }
    }
    for unit in TEST_UNITS {
        binds.push((repo.join("tests/systemd").join(unit), format!("{UNIT_DIR}/{unit}")));
    }

    // One name for the container and our cgroup: concurrent runs share nothing but the root.
    let name = format!("metadatafs-test-{}-{scenario}", std::process::id());
    let cgroup = Cgroup::create(&name);
    let console = std::fs::File::create(results.path().join("console")).unwrap();
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(r#"for d in $CGROUPS; do echo $$ > "$d/cgroup.procs" || exit 98; done; exec "$@""#)
        .arg("sh")
        .env(
            "CGROUPS",
            cgroup.dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(" "),
        )
        .arg("systemd-nspawn")
        .args(["-q", "--volatile=overlay", "--register=no", "--keep-unit", "--private-network"])
        .arg(format!("--machine={name}"))
        .arg("-D")
        .arg(&root)
        .arg("--bind=/dev/fuse")
        .args(binds.iter().map(|(from, to)| format!("--bind-ro={}:{to}", from.display())))
        .arg(format!("--bind={}:/results", results.path().display()))
        .args(["--console=read-only", "-b"])
        .arg(format!("systemd.wants=run-tests@{scenario}.service"))
        .stdin(Stdio::null())
        .stdout(console.try_clone().unwrap())
        .stderr(console);
    let mut child = command.spawn().expect("run systemd-nspawn");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if start.elapsed() > BOOT_DEADLINE {
            // SAFETY: signalling our own child; SIGTERM makes nspawn power the container off.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let grace = Instant::now();
            while child.try_wait().unwrap().is_none() && grace.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(Duration::from_millis(100));
            }
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    drop(cgroup);
    let _ = child.kill();
    let _ = child.wait();
    eprintln!("{scenario}: container ran {:.1} s", start.elapsed().as_secs_f64());
    let outcome = Outcome { code: status.and_then(|s| s.code()), results };
    if !outcome.file("log").contains("== booted") {
        // The container never got to run the checks: nspawn cannot boot one here.
        let console = outcome.file("console");
        let tail: Vec<&str> = console.lines().rev().take(15).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return skip(&format!("no container booted ({:?}):\n{}", outcome.code, tail.join("\n")));
    }
    Some(outcome)
}

/// Say why the tests cannot run here, and pass; or fail where they must run (CI).
fn skip<T>(why: &str) -> Option<T> {
    let required = ["CI", "METADATAFS_REQUIRE_SYSTEMD"]
        .iter()
        .any(|v| std::env::var(v).is_ok_and(|v| !v.is_empty() && v != "0" && v != "false"));
    assert!(!required, "the systemd unit tests must run here (CI is set), but: {why}");
    eprintln!("SKIPPED: the systemd unit tests cannot run here: {why}");
    None
}

fn can_run() -> Result<(), String> {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err("not root".into());
    }
    if !Path::new("/dev/fuse").exists() {
        return Err("no /dev/fuse".into());
    }
    if !found("systemd-nspawn") {
        return Err("no systemd-nspawn (apt-get install systemd-container)".into());
    }
    if Cgroup::parents().is_empty() {
        return Err("no writable cgroup hierarchy under /sys/fs/cgroup".into());
    }
    Ok(())
}

fn found(program: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).any(|dir| dir.join(program).is_file())
}

/// The cached Debian root, built on first use: one builder at a time across processes.
fn root() -> Result<PathBuf, String> {
    static BUILT: Mutex<Option<Result<PathBuf, String>>> = Mutex::new(None);
    let mut built = BUILT.lock().unwrap();
    if built.is_none() {
        *built = Some(build_root());
    }
    built.clone().unwrap()
}

fn build_root() -> Result<PathBuf, String> {
    let cache = std::env::var_os("METADATAFS_TEST_CACHE")
        .map_or_else(|| PathBuf::from("/var/cache/metadatafs-test"), PathBuf::from);
    let root = cache.join(format!("{SUITE}-root"));
    std::fs::create_dir_all(&cache).map_err(|e| format!("{}: {e}", cache.display()))?;
    let lock = std::fs::File::create(cache.join("lock")).map_err(|e| e.to_string())?;
    // SAFETY: flock on a descriptor we own; released when `lock` is dropped.
    unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) };
    // Written last, so a root cut short or built from other packages is built again.
    let stamp = format!("{SUITE} {PACKAGES}\n");
    let stamp_path = |root: &Path| root.join("etc/metadatafs-test-root");
    if std::fs::read_to_string(stamp_path(&root)).is_ok_and(|s| s == stamp) {
        return Ok(root);
    }
    if !found("mmdebstrap") {
        return Err("no mmdebstrap to build the container root (apt-get install mmdebstrap)".into());
    }
    eprintln!("building the container root in {} (once, about 30 s)", root.display());
    let partial = cache.join(format!("{SUITE}-root.partial"));
    let _ = std::fs::remove_dir_all(&partial);
    let output = Command::new("mmdebstrap")
        .args(["--variant=minbase", &format!("--include={PACKAGES}"), SUITE])
        .arg(&partial)
        .output()
        .map_err(|e| format!("mmdebstrap: {e}"))?;
    if !output.status.success() {
        let _ = std::fs::remove_dir_all(&partial);
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(format!("mmdebstrap failed ({}): {}", output.status, stderr.trim()));
    }
    std::fs::write(stamp_path(&partial), &stamp).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_dir_all(&root);
    std::fs::rename(&partial, &root).map_err(|e| e.to_string())?;
    Ok(root)
}

/// A cgroup of ours in every hierarchy systemd uses, with nspawn and the container in it.
struct Cgroup {
    dirs: Vec<PathBuf>,
}

impl Cgroup {
    /// The named systemd v1 hierarchy and the unified one (hybrid), or just the unified one.
    fn parents() -> Vec<PathBuf> {
        let base = Path::new("/sys/fs/cgroup");
        let candidates = if base.join("cgroup.controllers").exists() {
            vec![base.to_path_buf()]
        } else {
            vec![base.join("systemd"), base.join("unified")]
        };
        candidates.into_iter().filter(|d| d.join("cgroup.procs").exists()).collect()
    }

    fn create(name: &str) -> Cgroup {
        let dirs: Vec<PathBuf> = Self::parents().into_iter().map(|p| p.join(name)).collect();
        for dir in &dirs {
            std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        }
        Cgroup { dirs }
    }
}

impl Drop for Cgroup {
    /// Kill whatever the container left (only processes in our own cgroup), then remove the
    /// tree depth first.
    fn drop(&mut self) {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            if let Ok(entries) = std::fs::read_dir(dir) {
                for entry in entries.flatten().filter(|e| e.path().is_dir()) {
                    walk(&entry.path(), out);
                }
            }
            out.push(dir.to_path_buf());
        }
        let mut tree = Vec::new();
        for dir in &self.dirs {
            walk(dir, &mut tree);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let pids: Vec<i32> = tree
                .iter()
                .filter_map(|d| std::fs::read_to_string(d.join("cgroup.procs")).ok())
                .flat_map(|text| text.lines().filter_map(|l| l.parse().ok()).collect::<Vec<_>>())
                .collect();
            if pids.is_empty() || Instant::now() > deadline {
                break;
            }
            for pid in pids {
                // SAFETY: a process in the cgroup this test created for its container.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        for dir in tree {
            let _ = std::fs::remove_dir(dir);
        }
    }
}
