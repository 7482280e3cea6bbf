//! The command line: clap for the flags, our own parser for `-o a,b=c`, both folded into one
//! plain [`Config`] that the rest of the program uses (it never sees clap).
//!
//! Every long option has an `-o name[=value]` twin (dashes become underscores), so fstab lines
//! and systemd units can say everything. The usual mount(8)/FUSE options are accepted; any other
//! `-o` option is an error naming it.

pub mod mount_helper;

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::error::ErrorKind;
use clap::{CommandFactory, Parser};

use crate::upstream::mtls::Mode;

/// The MDS's link-local address: no DNS needed at boot (reference/metadata-api.md §9.2).
pub const DEFAULT_ENDPOINT: &str = "169.254.169.254";

/// Options mount(8), fstab and systemd pass that need no action from us.
const IGNORED: &[&str] = &[
    "_netdev",
    "nofail",
    "noauto",
    "auto",
    "user",
    "users",
    "nouser",
    "defaults",
    "nosuid",
    "nodev",
    "noexec",
    "suid",
    "dev",
    "exec",
    "async",
    "sync",
    "atime",
    "noatime",
    "relatime",
    "strictatime",
    "nodiratime",
    "rw",
    "default_permissions",
];

#[derive(Debug, Parser)]
#[command(
    name = "metadatafs",
    version,
    about = "Mount the GCE metadata server as a filesystem",
    override_usage = "metadatafs [OPTIONS] MOUNTPOINT\n       metadatafs SOURCE MOUNTPOINT [-o OPT[,OPT...]]"
)]
struct Args {
    /// [SOURCE] MOUNTPOINT; SOURCE is `metadata`, `none`, `default` or HOST[:PORT]
    #[arg(value_name = "MOUNTPOINT", required = true, num_args = 1..=2)]
    positional: Vec<PathBuf>,
    /// Stay in the foreground (systemd Type=notify)
    #[arg(short = 'f', long)]
    foreground: bool,
    /// Mount options, comma-separated: every long option as name[=value], plus mount(8)'s
    #[arg(short = 'o', value_name = "OPT[,OPT...]")]
    options: Vec<String>,
    /// MDS address HOST[:PORT] [default: $GCE_METADATA_HOST, else 169.254.169.254]
    #[arg(long, value_name = "HOST[:PORT]")]
    endpoint: Option<String>,
    /// Run the built-in emulator on a free loopback port and mount it
    #[arg(long, value_name = "FIXTURE", num_args = 0..=1, require_equals = true, default_missing_value = "")]
    emulate: Option<String>,
    /// Seconds a value or listing is served from cache [default: 60]
    #[arg(long, value_name = "SECS", value_parser = seconds())]
    ttl: Option<u64>,
    /// Seconds a read may wait for the MDS before failing with EIO [default: 10]
    #[arg(long, value_name = "SECS", value_parser = seconds())]
    timeout: Option<u64>,
    /// Refresh tokens this many seconds before they expire [default: 240]
    #[arg(long, value_name = "SECS", value_parser = seconds())]
    refresh_margin: Option<u64>,
    /// Secret files become 0440 with this group
    #[arg(long, value_name = "NAME|GID")]
    secret_group: Option<String>,
    /// More paths in the secret class, colon-separated globs
    #[arg(long, value_name = "GLOB:GLOB")]
    secret_paths: Option<String>,
    /// Allow tokens with other scopes: `token?scopes=…` names and writes to `<account>/scopes`
    #[arg(long)]
    scoped_tokens: bool,
    /// Scopes for every token read, implies --scoped-tokens
    #[arg(long, value_name = "S1,S2")]
    token_scopes: Option<String>,
    /// Allow writes under instance/guest-attributes/
    #[arg(long)]
    guest_attributes: bool,
    /// Cache size bound, in entries [default: 10000]
    #[arg(long, value_name = "N")]
    max_entries: Option<usize>,
    /// Largest value served, in bytes; larger ones fail with EFBIG [default: 1048576]
    #[arg(long, value_name = "BYTES")]
    max_value: Option<u64>,
    /// Let users other than the mounting one read
    #[arg(long)]
    allow_other: bool,
    /// Let root read as well as the mounting user
    #[arg(long)]
    allow_root: bool,
    /// Append log lines to this file instead of stderr (foreground) or syslog (background)
    #[arg(long, value_name = "PATH")]
    log_file: Option<PathBuf>,
    /// HTTPS with mutual TLS to the MDS [default: $GCE_METADATA_MTLS_MODE, else auto]
    #[arg(long, value_name = "auto|on|off", value_parser = ["auto", "on", "off"])]
    mtls: Option<String>,
    /// Where root.crt and client.key live [default: /run/google-mds-mtls]
    #[arg(long, value_name = "DIR")]
    mtls_dir: Option<PathBuf>,
}

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
    })
}

/// The longest duration any option takes: ten years.
const MAX_SECS: u64 = 10 * 365 * 24 * 3600;

fn seconds() -> clap::builder::RangedU64ValueParser<u64> {
    clap::value_parser!(u64).range(..=MAX_SECS)
}

/// Split `-o` values at commas, except that `token_scopes=a,b` keeps its list: a piece without
/// `=` that is no option name belongs to the `token_scopes` before it.
fn join_lists(options: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for piece in options.iter().flat_map(|o| o.split(',')).map(str::trim) {
        let continues_list = !piece.contains('=')
            && !is_option_name(piece)
            && out.last().is_some_and(|last| last.starts_with("token_scopes="));
        match out.last_mut() {
            Some(last) if continues_list => {
                last.push(',');
                last.push_str(piece);
            }
            _ => out.push(piece.to_string()),
        }
    }
    out
}

/// The `-o` names that stand alone.
const FLAGS: &[&str] = &[
    "emulate",
    "foreground",
    "scoped_tokens",
    "guest_attributes",
    "allow_other",
    "allow_root",
    "ro",
];

fn is_option_name(name: &str) -> bool {
    FLAGS.contains(&name) || IGNORED.contains(&name) || name.starts_with("x-")
}

fn usage_error(kind: ErrorKind, message: String) -> clap::Error {
    Args::command().error(kind, message)
}

fn number<T: std::str::FromStr>(name: &str, value: Option<&str>) -> Result<T, clap::Error> {
    let value = value.unwrap_or("");
    value.parse().map_err(|_| {
        usage_error(
            ErrorKind::InvalidValue,
            format!("invalid value '{value}' for mount option '{name}': expected a number"),
        )
    })
}

fn duration(name: &str, value: Option<&str>) -> Result<u64, clap::Error> {
    let secs = number(name, value)?;
    if secs > MAX_SECS {
        let message = format!("mount option '{name}': {secs} seconds is more than ten years");
        return Err(usage_error(ErrorKind::InvalidValue, message));
    }
    Ok(secs)
}

fn text(name: &str, value: Option<&str>) -> Result<String, clap::Error> {
    match value {
        Some(v) if !v.is_empty() => Ok(v.to_string()),
        _ => Err(usage_error(
            ErrorKind::InvalidValue,
            format!("mount option '{name}' needs a value: -o {name}=VALUE"),
        )),
    }
}

fn apply_option(args: &mut Args, option: &str, read_only: &mut bool) -> Result<(), clap::Error> {
    let (name, value) = match option.split_once('=') {
        Some((name, value)) => (name, Some(value)),
        None => (option, None),
    };
    match name {
        "" => {}
        "endpoint" => args.endpoint = Some(text(name, value)?),
        "emulate" => args.emulate = Some(value.unwrap_or("").to_string()),
        "foreground" => args.foreground = true,
        "ttl" => args.ttl = Some(duration(name, value)?),
        "timeout" => args.timeout = Some(duration(name, value)?),
        "refresh_margin" => args.refresh_margin = Some(duration(name, value)?),
        "secret_group" => args.secret_group = Some(text(name, value)?),
        "secret_paths" => args.secret_paths = Some(text(name, value)?),
        "scoped_tokens" => args.scoped_tokens = true,
        "token_scopes" => args.token_scopes = Some(text(name, value)?),
        "guest_attributes" => args.guest_attributes = true,
        "max_entries" => args.max_entries = Some(number(name, value)?),
        "max_value" => args.max_value = Some(number(name, value)?),
        "allow_other" => args.allow_other = true,
        "allow_root" => args.allow_root = true,
        "ro" => *read_only = true,
        "log_file" => args.log_file = Some(PathBuf::from(text(name, value)?)),
        "mtls" => {
            let mode = text(name, value)?;
            if Mode::from_option(&mode).is_none() {
                let message = format!(
                    "invalid value '{mode}' for mount option 'mtls': expected auto, on or off"
                );
                return Err(usage_error(ErrorKind::InvalidValue, message));
            }
            args.mtls = Some(mode);
        }
        "mtls_dir" => args.mtls_dir = Some(PathBuf::from(text(name, value)?)),
        _ if IGNORED.contains(&name) || name.starts_with("x-") || name == "comment" => {}
        _ => {
            let hint =
                suggestion(name).map(|s| format!("; did you mean '{s}'?")).unwrap_or_default();
            let message = format!("unknown mount option '{name}'{hint}");
            return Err(usage_error(ErrorKind::UnknownArgument, message));
        }
    }
    Ok(())
}

/// The `-o` names taking a value, for suggestions.
const VALUED: &[&str] = &[
    "endpoint",
    "ttl",
    "timeout",
    "refresh_margin",
    "secret_group",
    "secret_paths",
    "token_scopes",
    "max_entries",
    "max_value",
    "log_file",
    "mtls",
    "mtls_dir",
];

/// The known option closest to `name`, if it is a likely typo of it: at most one edit per
/// four characters (one for short names), so `frobnicate` gets no far-fetched guess.
fn suggestion(name: &str) -> Option<&'static str> {
    let names = VALUED.iter().chain(FLAGS).chain(IGNORED).copied();
    names
        .map(|known| (strsim::levenshtein(name, known), known))
        .filter(|(edits, known)| *edits <= (known.len() / 4).max(1))
        .min_by_key(|(edits, _)| *edits)
        .map(|(_, known)| known)
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
mod tests {
    use super::*;

    fn parse_ok(args: &[&str]) -> Config {
        parse(std::iter::once("metadatafs").chain(args.iter().copied()), None).unwrap()
    }

    fn parse_err(args: &[&str]) -> String {
        let err = parse(std::iter::once("metadatafs").chain(args.iter().copied()), None);
        err.unwrap_err().to_string()
    }

    #[test]
    fn defaults() {
        let config = parse_ok(&["/tmp"]);
        assert_eq!(config.endpoint, DEFAULT_ENDPOINT);
        assert_eq!(config.ttl, Duration::from_secs(60));
        assert_eq!(config.timeout, Duration::from_secs(10));
        assert_eq!(config.refresh_margin, Duration::from_secs(240));
        assert_eq!(config.max_entries, 10_000);
        assert_eq!(config.max_value, 1 << 20);
        assert!(!config.foreground && !config.allow_other && config.emulate.is_none());
    }

    #[test]
    fn mount_form_with_o_twins_and_tolerated_options() {
        let config = parse_ok(&[
            "10.0.0.1:8080",
            "/tmp",
            "-o",
            "rw,_netdev,nofail,x-systemd.automount,allow_other,ttl=5,timeout=3",
            "-o",
            "refresh_margin=100,secret_group=0,secret_paths=a/*:b,max_entries=7,max_value=9",
        ]);
        assert_eq!(config.endpoint, "10.0.0.1:8080");
        assert!(config.allow_other);
        assert_eq!(config.ttl, Duration::from_secs(5));
        assert_eq!(config.timeout, Duration::from_secs(3));
        assert_eq!(config.refresh_margin, Duration::from_secs(100));
        assert_eq!(config.secret_gid, Some(0));
        assert_eq!(config.secret_paths, vec!["a/*", "b"]);
        assert_eq!((config.max_entries, config.max_value), (7, 9));
    }

    #[test]
    fn token_scopes_keep_their_commas_inside_o() {
        let config = parse_ok(&["/tmp", "-o", "token_scopes=a,b,allow_other,ttl=3"]);
        let expanded = ["https://www.googleapis.com/auth/a", "https://www.googleapis.com/auth/b"];
        assert_eq!(config.token_scopes, Some(expanded.map(String::from).to_vec()));
        assert!(config.allow_other && config.scoped_tokens);
        assert!(parse_err(&["/tmp", "-o", "ttl=3,b"]).contains("unknown mount option 'b'"));
        for bad in ["token_scopes=,", "token_scopes=a\tb"] {
            assert!(parse_err(&["/tmp", "-o", bad]).contains("invalid token_scopes"), "{bad}");
        }
    }

    #[test]
    fn read_only_unless_a_write_through_option_is_on() {
        assert!(parse_ok(&["/tmp"]).read_only);
        assert!(parse_ok(&["/tmp", "-o", "rw"]).read_only);
        assert!(!parse_ok(&["/tmp", "-o", "guest_attributes"]).read_only);
        assert!(!parse_ok(&["/tmp", "--scoped-tokens"]).read_only);
        assert!(!parse_ok(&["/tmp", "-o", "token_scopes=a,b"]).read_only);
        assert!(parse_ok(&["/tmp", "-o", "guest_attributes,ro"]).read_only);
    }

    #[test]
    fn a_mistyped_o_option_gets_a_suggestion() {
        assert!(parse_err(&["/tmp", "-o", "tll=3"]).contains("did you mean 'ttl'?"));
        assert!(parse_err(&["/tmp", "-o", "allow_othr"]).contains("did you mean 'allow_other'?"));
        assert!(parse_err(&["/tmp", "-o", "secret_path=a"]).contains("'secret_paths'"));
        assert!(!parse_err(&["/tmp", "-o", "frobnicate"]).contains("did you mean"));
    }

    #[test]
    fn mountpoint_problems_are_one_line() {
        let message = parse_err(&["/nonexistent-dir"]);
        assert_eq!(message.trim_end().lines().count(), 1, "{message}");
        assert!(!message.contains("Usage"), "{message}");
    }

    #[test]
    fn log_file_is_made_absolute() {
        let config = parse_ok(&["/tmp", "-o", "log_file=rel.log"]);
        assert!(config.log_file.unwrap().is_absolute());
    }

    #[test]
    fn endpoint_precedence() {
        let env = Some("env-host:1".to_string());
        let parse_env = |args: &[&str]| {
            parse(std::iter::once("metadatafs").chain(args.iter().copied()), env.clone()).unwrap()
        };
        assert_eq!(parse_env(&["/tmp"]).endpoint, "env-host:1");
        assert_eq!(parse_env(&["metadata", "/tmp"]).endpoint, "env-host:1");
        assert_eq!(parse_env(&["src:2", "/tmp"]).endpoint, "src:2");
        assert_eq!(parse_env(&["src:2", "/tmp", "-o", "endpoint=opt:3"]).endpoint, "opt:3");
        assert_eq!(parse_env(&["--endpoint", "flag:4", "/tmp"]).endpoint, "flag:4");
    }

    #[test]
    fn mtls_options() {
        let config = parse_ok(&["/tmp"]);
        assert_eq!((config.mtls, config.mtls_dir), (None, None));
        let config = parse_ok(&["/tmp", "-o", "mtls=on,mtls_dir=/etc/mds"]);
        assert_eq!(config.mtls, Some(Mode::On));
        assert_eq!(config.mtls_dir, Some(PathBuf::from("/etc/mds")));
        assert_eq!(parse_ok(&["--mtls", "off", "/tmp"]).mtls, Some(Mode::Off));
        assert!(parse_err(&["/tmp", "-o", "mtls=yes"]).contains("expected auto, on or off"));
        assert!(parse_err(&["/tmp", "-o", "mtls"]).contains("needs a value"));
        assert!(parse_err(&["--mtls", "strict", "/tmp"]).contains("'strict'"));
    }

    #[test]
    fn emulate_forms() {
        assert_eq!(parse_ok(&["--emulate", "/tmp"]).emulate, Some(None));
        let with = parse_ok(&["--emulate=/f.json", "/tmp"]).emulate;
        assert_eq!(with, Some(Some(PathBuf::from("/f.json"))));
        assert_eq!(parse_ok(&["/tmp", "-o", "emulate"]).emulate, Some(None));
    }

    #[test]
    fn bad_usage_names_the_problem() {
        assert!(parse_err(&[]).contains("MOUNTPOINT"));
        assert!(parse_err(&["/tmp", "-o", "bogus"]).contains("unknown mount option 'bogus'"));
        assert!(parse_err(&["/tmp", "-o", "ttl=abc"]).contains("'abc' for mount option 'ttl'"));
        assert!(parse_err(&["/tmp", "-o", "ttl=18446744073709551615"]).contains("ten years"));
        assert!(parse_err(&["--timeout", "18446744073709551615", "/tmp"]).contains("--timeout"));
        assert!(parse_err(&["--ttl", "x", "/tmp"]).contains("'x'"));
        assert!(parse_err(&["/nonexistent-dir"]).contains("does not exist"));
        assert!(parse_err(&["/etc/hostname"]).contains("is not a directory"));
        assert!(parse_err(&["/tmp", "-o", "endpoint=http://x/"]).contains("invalid endpoint"));
        assert!(
            parse_err(&["/tmp", "-o", "secret_group=no-such-group-x"]).contains("no such group")
        );
    }
}
