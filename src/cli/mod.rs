//! The command line: clap for the flags, our own parser for `-o a,b=c`, both folded into one
//! plain [`Config`] that the rest of the program uses (it never sees clap).
//!
//! Every long option has an `-o name[=value]` twin (dashes become underscores), so fstab lines
//! and systemd units can say everything. The usual mount(8)/FUSE options are accepted; any other
//! `-o` option is an error naming it.

pub mod mount_helper;
mod options;

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::error::ErrorKind;
use clap::Parser;

use self::options::{apply_option, join_lists, usage_error, Args};

use crate::upstream::mtls::Mode;

/// The MDS's link-local address: no DNS needed at boot (reference/metadata-api.md §9.2).
pub const DEFAULT_ENDPOINT: &str = "169.254.169.254";

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub mountpoint: PathBuf,
    /// Shown in /proc/mounts.
    pub source: String,
    pub endpoint: String,
    /// `Some(None)`: the built-in fixture; `Some(Some(path))`: that fixture.
    pub emulate: Option<Option<PathBuf>>,
    pub foreground: bool,
    pub ttl: Duration,
    pub timeout: Duration,
    pub refresh_margin: Duration,
    pub secret_gid: Option<u32>,
    pub secret_paths: Vec<String>,
    pub scoped_tokens: bool,
    pub token_scopes: Option<Vec<String>>,
    pub guest_attributes: bool,
    pub max_entries: usize,
    pub max_value: u64,
    pub allow_other: bool,
    pub allow_root: bool,
    /// Mounted `ro`: asked for, or no write-through option is on (so `test -w` and
    /// `Files.isWritable` tell the truth). Write-through features rely on this being false.
    pub read_only: bool,
    /// `log_file=PATH`: log lines are appended there instead of stderr or syslog.
    pub log_file: Option<PathBuf>,
    /// `mtls=`; `None` leaves it to `GCE_METADATA_MTLS_MODE` (see `mtls::Mode::resolve`).
    pub mtls: Option<Mode>,
    /// `mtls_dir=`; `None` is the guest agent's directory (or, with `--emulate`, a private one).
    pub mtls_dir: Option<PathBuf>,
    /// `read_path=open`: an OPEN per `open()` even where the kernel could do without.
    pub open_path: bool,
}

/// Parse the command line; usage errors come back as clap errors, which print a one-line
/// message plus the usage line and exit 2.
pub fn parse<I, T>(args: I, env_endpoint: Option<String>) -> Result<Config, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let mut args = Args::try_parse_from(args)?;
    let mut read_only = false;
    for option in join_lists(&std::mem::take(&mut args.options)) {
        apply_option(&mut args, &option, &mut read_only)?;
    }
    let (source, mountpoint) = match args.positional.as_slice() {
        [mountpoint] => (None, mountpoint.clone()),
        [source, mountpoint] => (Some(source.to_string_lossy().into_owned()), mountpoint.clone()),
        _ => unreachable!("clap enforces 1..=2 positionals"),
    };
    check_mountpoint(&mountpoint)?;
    // Absolute, so the daemon and mount tables agree on it whatever the working directory.
    let mountpoint = std::path::absolute(&mountpoint).unwrap_or(mountpoint);
    let source_endpoint = source
        .clone()
        .filter(|s| !matches!(s.as_str(), "metadata" | "none" | "default" | "metadatafs"));
    let endpoint = args
        .endpoint
        .or(source_endpoint)
        .or(env_endpoint.filter(|e| !e.is_empty()))
        .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
    check_endpoint(&endpoint)?;
    let secret_gid = args.secret_group.as_deref().map(resolve_group).transpose()?;
    let token_scopes = args.token_scopes.as_deref().map(check_token_scopes).transpose()?;
    let scoped_tokens = args.scoped_tokens || token_scopes.is_some();
    let writes = scoped_tokens || args.guest_attributes;
    Ok(Config {
        mountpoint,
        source: source.unwrap_or_else(|| "metadata".into()),
        endpoint,
        emulate: args.emulate.map(|f| (!f.is_empty()).then(|| PathBuf::from(f))),
        foreground: args.foreground,
        ttl: Duration::from_secs(args.ttl.unwrap_or(60)),
        timeout: Duration::from_secs(args.timeout.unwrap_or(10).max(1)),
        refresh_margin: Duration::from_secs(args.refresh_margin.unwrap_or(240)),
        secret_gid,
        secret_paths: args
            .secret_paths
            .map(|p| p.split(':').filter(|g| !g.is_empty()).map(String::from).collect())
            .unwrap_or_default(),
        scoped_tokens,
        token_scopes,
        guest_attributes: args.guest_attributes,
        max_entries: args.max_entries.unwrap_or(10_000).max(1),
        max_value: args.max_value.unwrap_or(1 << 20),
        allow_other: args.allow_other,
        allow_root: args.allow_root,
        read_only: read_only || !writes,
        // Absolute: the background daemon may not share our idea of the working directory.
        log_file: args.log_file.map(|p| std::path::absolute(&p).unwrap_or(p)),
        mtls: args.mtls.as_deref().and_then(Mode::from_option),
        mtls_dir: args.mtls_dir,
        open_path: args.read_path.as_deref() == Some("open"),
    })
}

/// A problem with what the command line names (not how it is written): one line, no usage block.
fn runtime_error(message: String) -> clap::Error {
    clap::Error::raw(ErrorKind::ValueValidation, format!("{message}\n"))
}

fn check_mountpoint(path: &std::path::Path) -> Result<(), clap::Error> {
    let problem = match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => return Ok(()),
        Ok(_) => "is not a directory".to_string(),
        // A mount left by a killed daemon: cleaned up and reused at mount time.
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => "does not exist".to_string(),
        Err(e) => e.to_string(),
    };
    Err(runtime_error(format!("mountpoint {}: {problem}", path.display())))
}

fn check_endpoint(endpoint: &str) -> Result<(), clap::Error> {
    let bad = endpoint.is_empty()
        || endpoint.contains(['/', '?', '#', '@', ' '])
        || endpoint.starts_with("http:")
        || reqwest::Url::parse(&format!("http://{endpoint}/")).is_err();
    if bad {
        return Err(usage_error(
            ErrorKind::InvalidValue,
            format!("invalid endpoint '{endpoint}': expected HOST[:PORT]"),
        ));
    }
    Ok(())
}

/// `token_scopes=a,b` as the canonical set (short names expanded, sorted, deduplicated).
fn check_token_scopes(scopes: &str) -> Result<Vec<String>, clap::Error> {
    crate::fs::query::canonical_scopes(scopes.split(',')).map_err(|e| {
        usage_error(ErrorKind::InvalidValue, format!("invalid token_scopes '{scopes}': {e}"))
    })
}

fn resolve_group(group: &str) -> Result<u32, clap::Error> {
    if let Ok(gid) = group.parse() {
        return Ok(gid);
    }
    let unknown = || runtime_error(format!("secret_group '{group}': no such group"));
    let name = std::ffi::CString::new(group).map_err(|_| unknown())?;
    // SAFETY: getgrnam_r writes only into the buffers we own and pass with their sizes.
    unsafe {
        let mut entry: libc::group = std::mem::zeroed();
        let mut buf = vec![0 as libc::c_char; 16 * 1024];
        let mut result = std::ptr::null_mut();
        let rc =
            libc::getgrnam_r(name.as_ptr(), &mut entry, buf.as_mut_ptr(), buf.len(), &mut result);
        if rc != 0 || result.is_null() {
            return Err(unknown());
        }
        Ok(entry.gr_gid)
    }
}

#[cfg(test)]
mod tests;
