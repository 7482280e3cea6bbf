//! The vocabulary the core's parts share: what a path is ([`Kind`], [`Node`]), what a file
//! inode holds ([`Version`]) and for how long (`Content`), what a query name asks for
//! ([`Target`], [`Form`]), a listing's entries (`Child`) and the status files' names. It
//! sits below every other module of the core, so none of them needs another to name these.

use std::time::{Duration, SystemTime};

use bytes::Bytes;

/// What a path is, and so how its bytes are produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Dir,
    /// A value mirrored from the MDS, cached for `ttl`.
    Value,
    /// `…/service-accounts/ACCOUNT/token`: the token JSON, `expires_in` as of the lookup.
    Token,
    /// `…/service-accounts/ACCOUNT/access_token`: the bare token.
    AccessToken,
    /// `…/service-accounts/ACCOUNT/authorization`: `Authorization: Bearer <token>`.
    Authorization,
    /// A query name (`NAME?k=v`): what it asks of the MDS.
    Query(Box<Target>),
    /// `.metadatafs/status` or `metrics`: rendered at every lookup, never fetched.
    Status(StatusFile),
    Symlink(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub path: String,
    pub kind: Kind,
}

/// What a file inode holds, fixed for its whole life. `Debug` shows sizes, never bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Version {
    /// The file's bytes: what every read of this inode returns, on both read paths.
    pub bytes: Bytes,
    /// When this mount first saw these bytes: the file's mtime and ctime.
    pub seen: SystemTime,
    /// For token files, which token the bytes come from (a hash, never the token); else 0.
    pub tag: u64,
    /// False for a listed key the MDS only answers with parameters (`identity`): size 0, and
    /// opening it says why.
    pub readable: bool,
}

impl Version {
    pub fn size(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// Whether `other` is the same version: the kernel may keep what it has.
    pub fn same(&self, other: &Version) -> bool {
        self.readable == other.readable && self.tag == other.tag && self.bytes == other.bytes
    }
}

impl std::fmt::Debug for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Version({} bytes, readable: {})", self.bytes.len(), self.readable)
    }
}

/// How a token is shown: the MDS's JSON, the bare token, or a header line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    Json,
    Bare,
    Header,
}

impl Form {
    /// The form of the token file called `name`, if it is one.
    pub fn of(name: &str) -> Option<Form> {
        match name {
            "token" => Some(Form::Json),
            "access_token" => Some(Form::Bare),
            "authorization" => Some(Form::Header),
            _ => None,
        }
    }
}

/// What a query name asks of the MDS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// An access token of `account_dir` with exactly these (canonical) scopes.
    Scoped { account_dir: String, scopes: Vec<String>, form: Form },
    /// An identity token; `path` is the MDS path with its canonical query.
    Identity { path: String },
    /// A waiting read: never cached; `base` is the plain value it watches, `limit` the
    /// `timeout_sec` asked for.
    Wait { path: String, base: String, limit: Option<Duration> },
    /// Any other parameters (`recursive`, `alt`): cached like a value.
    Plain { path: String },
}

/// The root directory these files live in.
pub const STATUS_DIR: &str = ".metadatafs";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFile {
    Status,
    Metrics,
}

impl StatusFile {
    /// In name order, as a listing is kept.
    pub const ALL: [StatusFile; 2] = [StatusFile::Metrics, StatusFile::Status];

    pub fn name(self) -> &'static str {
        match self {
            StatusFile::Status => "status",
            StatusFile::Metrics => "metrics",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        StatusFile::ALL.into_iter().find(|f| f.name() == name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Child {
    pub(crate) name: String,
    pub(crate) dir: bool,
}

/// A file's version and how long it stays the current one.
#[derive(Debug)]
pub(crate) struct Content {
    pub(crate) version: Version,
    pub(crate) validity: Duration,
}

impl Content {
    /// The version of a name whose bytes exist only once read (a waiting read): size 0, and
    /// `open` fetches.
    pub(crate) fn unfetched(seen: SystemTime) -> Content {
        let version = Version { bytes: Bytes::new(), seen, tag: 0, readable: false };
        Content { version, validity: Duration::ZERO }
    }

    /// Bytes seen just now and current for no time at all: a guest attribute this mount just
    /// created, a status file rendered at lookup, a waiting read's answer.
    pub(crate) fn written(bytes: Bytes) -> Content {
        let seen = SystemTime::now();
        let version = Version { bytes, seen, tag: 0, readable: true };
        Content { version, validity: Duration::ZERO }
    }
}

/// Who asks, from the FUSE request header: what a lookup may fetch on their behalf is what
/// they may read (SPEC §3), and a waiting read is paced and bounded per user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    /// The calling thread, for its supplementary groups and its hand-off (waits.rs).
    pub pid: u32,
}

impl Caller {
    /// The daemon itself, or a test: may read everything.
    pub const ROOT: Caller = Caller { uid: 0, gid: 0, pid: 0 };
}
