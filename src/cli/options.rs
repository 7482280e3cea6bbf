//! The option table: every long option (clap's [`Args`]) and its `-o name[=value]` twin
//! ([`apply_option`]), the mount(8)/FUSE options accepted without effect, and the
//! suggestions for a mistyped name. The man page and the completions are made from here.

use std::path::PathBuf;

use clap::error::ErrorKind;
use clap::{CommandFactory, Parser};

use crate::upstream::mtls::Mode;

/// Options mount(8), fstab and systemd pass that need no action from us.
pub(crate) const IGNORED: &[&str] = &[
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
pub(crate) struct Args {
    /// [SOURCE] MOUNTPOINT; SOURCE is `metadata`, `none`, `default` or HOST[:PORT]
    #[arg(value_name = "MOUNTPOINT", required = true, num_args = 1..=2)]
    pub(crate) positional: Vec<PathBuf>,
    /// Stay in the foreground (systemd Type=notify)
    #[arg(short = 'f', long)]
    pub(crate) foreground: bool,
    /// Mount options, comma-separated: every long option as name[=value], plus mount(8)'s
    #[arg(short = 'o', value_name = "OPT[,OPT...]")]
    pub(crate) options: Vec<String>,
    /// MDS address HOST[:PORT] [default: $GCE_METADATA_HOST, else 169.254.169.254]
    #[arg(long, value_name = "HOST[:PORT]")]
    pub(crate) endpoint: Option<String>,
    /// Run the built-in emulator on a free loopback port and mount it
    #[arg(long, value_name = "FIXTURE", num_args = 0..=1, require_equals = true, default_missing_value = "")]
    pub(crate) emulate: Option<String>,
    /// Seconds a value or listing is served from cache [default: 60]
    #[arg(long, value_name = "SECS", value_parser = seconds())]
    pub(crate) ttl: Option<u64>,
    /// Seconds a read may wait for the MDS before failing with EIO [default: 10]
    #[arg(long, value_name = "SECS", value_parser = seconds())]
    pub(crate) timeout: Option<u64>,
    /// Refresh tokens this many seconds before they expire [default: 240]
    #[arg(long, value_name = "SECS", value_parser = seconds())]
    pub(crate) refresh_margin: Option<u64>,
    /// Secret files become 0440 with this group
    #[arg(long, value_name = "NAME|GID")]
    pub(crate) secret_group: Option<String>,
    /// More paths in the secret class, colon-separated globs
    #[arg(long, value_name = "GLOB:GLOB")]
    pub(crate) secret_paths: Option<String>,
    /// Allow tokens with other scopes: `token?scopes=…` names and writes to `<account>/scopes`
    #[arg(long)]
    pub(crate) scoped_tokens: bool,
    /// Scopes for every token read, implies --scoped-tokens
    #[arg(long, value_name = "S1,S2")]
    pub(crate) token_scopes: Option<String>,
    /// Allow writes under instance/guest-attributes/
    #[arg(long)]
    pub(crate) guest_attributes: bool,
    /// Cache size bound, in entries [default: 10000]
    #[arg(long, value_name = "N")]
    pub(crate) max_entries: Option<usize>,
    /// Largest value served, in bytes; larger ones fail with EFBIG [default: 1048576]
    #[arg(long, value_name = "BYTES")]
    pub(crate) max_value: Option<u64>,
    /// Let users other than the mounting one read
    #[arg(long)]
    pub(crate) allow_other: bool,
    /// Let root read as well as the mounting user
    #[arg(long)]
    pub(crate) allow_root: bool,
    /// Append log lines to this file instead of stderr (foreground) or syslog (background)
    #[arg(long, value_name = "PATH")]
    pub(crate) log_file: Option<PathBuf>,
    /// HTTPS with mutual TLS to the MDS [default: $GCE_METADATA_MTLS_MODE, else auto]
    #[arg(long, value_name = "auto|on|off", value_parser = ["auto", "on", "off"])]
    pub(crate) mtls: Option<String>,
    /// Where root.crt and client.key live [default: /run/google-mds-mtls]
    #[arg(long, value_name = "DIR")]
    pub(crate) mtls_dir: Option<PathBuf>,
    /// How reads reach the daemon: auto (no OPEN at all on a read-only mount, where the
    /// kernel allows) or open (an OPEN per open(), as on mounts that write) [default: auto]
    #[arg(long, value_name = "auto|open", value_parser = ["auto", "open"])]
    pub(crate) read_path: Option<String>,
}

/// The longest duration any option takes: ten years.
const MAX_SECS: u64 = 10 * 365 * 24 * 3600;

fn seconds() -> clap::builder::RangedU64ValueParser<u64> {
    clap::value_parser!(u64).range(..=MAX_SECS)
}

/// Split `-o` values at commas, except that `token_scopes=a,b` keeps its list: a piece without
/// `=` that is no option name belongs to the `token_scopes` before it.
pub(crate) fn join_lists(options: &[String]) -> Vec<String> {
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
pub(crate) const FLAGS: &[&str] = &[
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

pub(crate) fn usage_error(kind: ErrorKind, message: String) -> clap::Error {
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

pub(crate) fn apply_option(
    args: &mut Args,
    option: &str,
    read_only: &mut bool,
) -> Result<(), clap::Error> {
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
        "read_path" => match text(name, value)?.as_str() {
            path @ ("auto" | "open") => args.read_path = Some(path.to_string()),
            other => {
                let message = format!(
                    "invalid value '{other}' for mount option 'read_path': expected auto or open"
                );
                return Err(usage_error(ErrorKind::InvalidValue, message));
            }
        },
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
pub(crate) const VALUED: &[&str] = &[
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
    "read_path",
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
