//! Running the filesystem: daemonizing, mounting, readiness, signals, unmounting.
//!
//! - Without `-f` the process re-executes itself with `-f` in a new session and waits on a pipe
//!   until the child reports the mount live (or why it failed): never fork a multi-threaded
//!   process. So `mount -t fuse.metadatafs` and fstab get an honest exit status.
//! - With `-f` it mounts, tells systemd `READY=1` (Type=notify) once the mount answers, and on
//!   SIGTERM/SIGINT says `STOPPING=1`, unmounts (lazily if busy) and exits 0.
//! - A mountpoint left by a killed daemon ("Transport endpoint is not connected") is detached
//!   first and reused. A live mount is never mounted over (autofs excepted: systemd automount
//!   mounts us there), and the daemon only ever unmounts its own mount: unmounting goes by path,
//!   which names whatever is on top (see `mounts`). fuser's unmount-on-drop is disarmed for the
//!   same reason.

use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use log::{debug, info, warn};

use crate::cli::Config;
use crate::clock::SystemClock;
use crate::emulator::{Emulator, EmulatorConfig};
use crate::fs::perms::{self, Permissions};
use crate::fs::{Core, FsConfig};
use crate::fuse::FuseFs;
use crate::service::logging;
use crate::service::mounts;
pub use crate::service::readiness::is_background_child;
use crate::service::readiness::{report, sd_notify, spawn_background, take_ready_pipe};
use crate::service::watch;
use crate::upstream::mds::{HttpConfig, HttpMds, Mds};
use crate::upstream::mtls::{self, Mode, Settings};

/// How long an unmount waits for the kernel to end the session before the daemon exits anyway.
const UNMOUNT_GRACE: Duration = Duration::from_secs(5);
/// How often the main thread checks whether the FUSE session ended (an external `umount`).
const SESSION_POLL: Duration = Duration::from_millis(250);
/// How soon 404s are asked about again.
const NEGATIVE_TTL: Duration = Duration::from_secs(5);

pub fn run(config: Config) -> Result<()> {
    if !config.foreground {
        spawn_background()?;
        if config.log_file.is_none() && !logging::syslog_available() {
            // The last chance to tell anyone: the daemon's stderr is /dev/null.
            eprintln!(
                "metadatafs: warning: no syslog socket at {}: the daemon's log goes nowhere \
                 (use -o log_file=PATH, or -f)",
                logging::syslog_socket().display()
            );
        }
        return Ok(());
    }
    let mut ready_pipe = take_ready_pipe();
    let result = serve(&config, &mut ready_pipe);
    if let (Err(e), Some(pipe)) = (&result, ready_pipe) {
        report(&pipe, &format!("error: {e:#}"));
    }
    result
}

fn serve(config: &Config, ready_pipe: &mut Option<OwnedFd>) -> Result<()> {
    raise_nofile();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .thread_name("metadatafs-io")
        .enable_all()
        .build()
        .context("starting the I/O runtime")?;
    let mode = Mode::resolve(config.mtls, std::env::var(mtls::MODE_ENV).ok().as_deref())
        .map_err(anyhow::Error::msg)?;
    let emulated_tls = EmulatedTlsDir::new(config, mode)?;
    let emulator = match &config.emulate {
        Some(fixture) => Some(
            Emulator::start(EmulatorConfig {
                fixture: fixture.clone(),
                tls: emulated_tls.as_ref().map(|d| d.path.clone()),
                ..Default::default()
            })
            .context("starting the emulator")?,
        ),
        None => None,
    };
    let endpoint = emulator.as_ref().map_or(config.endpoint.clone(), |e| e.addr().to_string());
    let mtls = match &emulator {
        // --emulate speaks plain HTTP unless mutual TLS was asked for outright.
        Some(emulator) => Settings {
            mode: if emulator.tls_dir().is_some() { Mode::On } else { Mode::Off },
            dir: emulator.tls_dir().map_or_else(|| mtls::DEFAULT_DIR.into(), Into::into),
        },
        None => Settings {
            mode,
            dir: config.mtls_dir.clone().unwrap_or_else(|| mtls::DEFAULT_DIR.into()),
        },
    };
    let http = HttpConfig { endpoint, timeout: config.timeout, max_value: config.max_value, mtls };
    let mds = Arc::new(HttpMds::new(http)?);
    let endpoint = mds.endpoint().to_string();
    runtime.spawn(mds.transport().clone().watch());
    let transport = mds.transport().clone();
    let clock = Arc::new(SystemClock::default());
    let core = Arc::new(Core::new(mds.clone(), fs_config(config), clock));
    runtime.spawn(refresh_tokens(core.clone()));

    // Listen before mounting: a SIGTERM that arrives while we mount unmounts right after,
    // instead of killing us with the mount up.
    let (signals, signal) = mpsc::channel();
    runtime.spawn(forward_signals(signals));

    mounts::prepare_mountpoint(&config.mountpoint)?;
    let open_path = match (config.read_only, config.open_path) {
        (false, _) => Some("a write-through option is on"),
        (true, true) => Some("read_path=open"),
        (true, false) => None,
    };
    let fs = FuseFs::new(core.clone(), runtime.handle().clone(), open_path);
    let kernel_slot = fs.kernel_slot();
    let session =
        fuser::Session::new(fs, &config.mountpoint, &fuser_config(config)).map_err(|e| {
            anyhow::anyhow!("mounting {}: {e}{}", config.mountpoint.display(), hint(&e))
        })?;
    // The notifier has to be taken before the session runs.
    let kernel: Arc<dyn watch::KernelCache> = Arc::new(session.notifier());
    let _ = kernel_slot.set(kernel.clone());
    runtime.spawn(watch::run(core.clone(), mds, kernel.clone()));
    runtime.spawn(forget_replaced_tokens(core.clone(), kernel.clone()));
    runtime.spawn(forget_changed_listings(core.clone(), kernel));
    // `spawn` moves fuser's unmount-on-drop into the handle, which is never dropped: fuser
    // unmounts by path, and by the time the session ends the path may name another mount.
    let session =
        std::mem::ManuallyDrop::new(session.spawn().context("starting the FUSE session")?);

    mounts::wait_until_live(&config.mountpoint)?;
    let ours = mounts::top(&config.mountpoint).map(|m| m.id);
    if let Some(pipe) = ready_pipe.take() {
        report(&pipe, "ok");
    }
    sd_notify("READY=1");
    info!("mounted {endpoint} on {} over {}", config.mountpoint.display(), transport.kind());
    runtime.spawn(check_secret_paths(core.clone(), config.clone()));

    let signal = loop {
        match signal.recv_timeout(SESSION_POLL) {
            Ok(name) => break Some(name),
            Err(mpsc::RecvTimeoutError::Timeout) if !session.guard.is_finished() => {}
            Err(mpsc::RecvTimeoutError::Timeout) => break None,
            Err(mpsc::RecvTimeoutError::Disconnected) => bail!("signal channel closed"),
        }
    };
    sd_notify("STOPPING=1");
    match signal {
        None => info!("{} was unmounted", config.mountpoint.display()),
        Some(name) => {
            let top = mounts::top(&config.mountpoint);
            if ours.is_some() && top.as_ref().map(|m| m.id) == ours {
                info!("{name}: unmounting {}", config.mountpoint.display());
                mounts::unmount(&config.mountpoint);
                let deadline = Instant::now() + UNMOUNT_GRACE;
                while !session.guard.is_finished() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(10));
                }
            } else {
                // Exiting closes our FUSE connection, so our mount stops wherever it is.
                let what = top.map_or("nothing".into(), |m| m.describe());
                warn!(
                    "{name}: not unmounting {}: the mount there now is not ours ({what})",
                    config.mountpoint.display()
                );
            }
        }
    }
    runtime.shutdown_timeout(Duration::from_secs(1));
    drop(emulator);
    drop(emulated_tls);
    Ok(())
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit: every reader waiting on the MDS may hold
/// a connection, and systemd's default soft limit (1024) is soon reached. The unit sets
/// `LimitNOFILE=` (soft = hard), so there this only reports; elsewhere (a shell, fstab) the
/// hard limit is usually far above the soft one. Logged at info either way.
fn raise_nofile() {
    // SAFETY: getrlimit/setrlimit write and read one struct we own.
    let mut limit: libc::rlimit = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        warn!("descriptors: getrlimit: {}", std::io::Error::last_os_error());
        return;
    }
    let (soft, hard) = (limit.rlim_cur, limit.rlim_max);
    if soft >= hard {
        info!("descriptors: limit {soft}");
        return;
    }
    limit.rlim_cur = hard;
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } == 0 {
        info!("descriptors: limit raised from {soft} to {hard}");
    } else {
        let e = std::io::Error::last_os_error();
        info!("descriptors: limit {soft} (raising it to {hard} failed: {e})");
    }
}

/// Where `--emulate -o mtls=on` has the emulator write its credentials: `mtls_dir` if given,
/// else a private directory removed at exit (never the guest agent's real one).
#[derive(Debug)]
struct EmulatedTlsDir {
    path: std::path::PathBuf,
    private: bool,
}

impl EmulatedTlsDir {
    fn new(config: &Config, mode: Mode) -> Result<Option<EmulatedTlsDir>> {
        if config.emulate.is_none() || mode != Mode::On {
            return Ok(None);
        }
        if let Some(dir) = &config.mtls_dir {
            return Ok(Some(EmulatedTlsDir { path: dir.clone(), private: false }));
        }
        // Made here, exclusively and 0700: a name someone else created first is never used.
        use std::hash::{BuildHasher, RandomState};
        use std::os::unix::fs::DirBuilderExt;
        for _ in 0..16 {
            let suffix = RandomState::new().hash_one(Instant::now()) % 1_000_000_000;
            let path = std::env::temp_dir().join(format!("metadatafs-emulate-mtls.{suffix}"));
            match std::fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => return Ok(Some(EmulatedTlsDir { path, private: true })),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e).context("creating a directory for the emulator's TLS"),
            }
        }
        bail!("could not create a directory for the emulator's TLS")
    }
}

impl Drop for EmulatedTlsDir {
    fn drop(&mut self) {
        if self.private {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// What to do about the usual reasons a FUSE mount fails.
fn hint(err: &std::io::Error) -> &'static str {
    if !Path::new("/dev/fuse").exists() {
        return " (no /dev/fuse: load the fuse module with `modprobe fuse`)";
    }
    // SAFETY: geteuid cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    match err.kind() {
        std::io::ErrorKind::NotFound if !root => {
            " (mounting as a user needs fusermount3: install the fuse3 package)"
        }
        std::io::ErrorKind::PermissionDenied if !root => {
            " (not permitted: run as root, or check that fusermount3 is setuid and \
             `user_allow_other` is in /etc/fuse.conf for allow_other)"
        }
        _ => "",
    }
}

fn fs_config(config: &Config) -> FsConfig {
    // SAFETY: geteuid/getegid cannot fail.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    FsConfig {
        ttl: config.ttl,
        negative_ttl: NEGATIVE_TTL.min(config.ttl),
        refresh_margin: config.refresh_margin,
        max_entries: config.max_entries,
        permissions: Permissions {
            uid,
            gid,
            secret_gid: config.secret_gid,
            secret_paths: secret_globs(config),
            scopes_writable: config.scoped_tokens,
            guest_writable: config.guest_attributes,
        },
        scoped_tokens: config.scoped_tokens,
        token_scopes: config.token_scopes.clone(),
        guest_attributes: config.guest_attributes,
    }
}

fn fuser_config(config: &Config) -> fuser::Config {
    use fuser::MountOption::*;
    let mut options = vec![
        FSName(config.source.clone()),
        // fuser's direct mount drops `Subtype`; the kernel takes it as a mount option, and
        // then shows the type as `fuse.metadatafs`, as fstab and systemd units name it.
        CUSTOM("subtype=metadatafs".into()),
        DefaultPermissions,
        NoSuid,
        NoDev,
    ];
    if config.read_only {
        options.push(RO);
    }
    let mut fuser_config = fuser::Config::default();
    fuser_config.mount_options = options;
    fuser_config.acl = if config.allow_other {
        fuser::SessionACL::All
    } else if config.allow_root {
        fuser::SessionACL::RootAndOwner
    } else {
        fuser::SessionACL::Owner
    };
    fuser_config
}

fn secret_globs(config: &Config) -> Vec<String> {
    let globs = config.secret_paths.iter();
    globs.map(|glob| perms::normalize_glob(glob, &config.mountpoint)).collect()
}

/// Warn about `secret_paths` globs that can match nothing on this server: a glob that names a
/// directory the MDS does not list protects nothing, and its author believes otherwise.
async fn check_secret_paths<M: Mds>(core: Arc<Core<M>>, config: Config) {
    for (written, glob) in config.secret_paths.iter().zip(secret_globs(&config)) {
        let Some(dirs) = perms::literal_dirs(&glob) else {
            continue;
        };
        match core.is_dir(dirs).await {
            Ok(true) => {}
            Ok(false) => warn!(
                "secret_paths '{written}' matches nothing: the metadata server has no directory \
                 {dirs}/ (globs are relative to the mount root, e.g. instance/attributes/KEY)"
            ),
            Err(e) => debug!("secret_paths '{written}' not checked: {e}"),
        }
    }
}

async fn refresh_tokens<M: Mds>(core: Arc<Core<M>>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        core.tokens().refresh_due().await;
    }
}

/// SIGTERM, SIGINT and SIGHUP (a closed terminal under `-f`) all unmount cleanly, as libfuse
/// daemons do, rather than leave a dead mount behind.
async fn forward_signals(signals: mpsc::Sender<&'static str>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        warn!("cannot listen for SIGTERM/SIGINT/SIGHUP");
        return;
    };
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
        _ = hup.recv() => "SIGHUP",
    };
    let _ = signals.send(name);
}

/// A refreshed token replaced another: the kernel forgets the names showing the old one, so
/// the next `open()` of `access_token` gets the new one (fs/token_files.rs).
async fn forget_replaced_tokens<M: Mds>(core: Arc<Core<M>>, kernel: Arc<dyn watch::KernelCache>) {
    let mut installs = core.tokens().watch_installs();
    while let Some(path) = installs.recv().await {
        watch::tell(&kernel, core.token_replaced(&path)).await;
    }
}

/// A listing fetched again changed (its `ttl` ran out, no watcher saw it): the kernel drops
/// the copy it may hold, so the next `ls` shows the new one.
async fn forget_changed_listings<M: Mds>(core: Arc<Core<M>>, kernel: Arc<dyn watch::KernelCache>) {
    let mut changed = core.watch_listings();
    while let Some(dir) = changed.recv().await {
        watch::tell(&kernel, core.listing_changed(&dir)).await;
    }
}
