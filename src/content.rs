//! What a file holds and how long that stays true: fetching values and listings into the
//! cache, and turning cached bytes or tokens into the immutable [`Version`] an inode carries.
//!
//! Every function here comes in two flavours: `*_now` answers from what is cached without
//! waiting (so the FUSE thread can reply at once, no hop through the async runtime) and says
//! `None` when a fetch is needed; the async one fetches.
//!
//! A value's `seen` time (its mtime) is when this mount first saw its current bytes: a refetch
//! that brings the same bytes keeps the old time, so `make` and `find -newer` see real changes
//! only, including same-size ones.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use log::warn;

use crate::cache::Weight;
use crate::error::{Error, Result};
use crate::fs::Core;
use crate::mds::Mds;
use crate::perms::is_account_scopes;
use crate::query::{self, unfetched, Form};
use crate::status::{self, StatusFile};
use crate::token::Token;
use crate::tree::{self, Kind, Node, Version};

/// The root symlink to the most used directory.
pub(crate) const SERVICE_ACCOUNTS_LINK: (&str, &str) =
    ("service-accounts", "instance/service-accounts");
/// The bare-token file we add to every service-account directory.
const ACCESS_TOKEN: &str = "access_token";
/// Values of an opened directory fetched at once, and the largest directory that is done for.
const PREFETCH_CONCURRENCY: usize = 8;
const PREFETCH_MAX: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Child {
    pub(crate) name: String,
    pub(crate) dir: bool,
}

/// What the value cache holds for a path. `Debug` shows sizes, never bytes: values may be
/// secrets.
#[derive(Clone)]
pub(crate) enum Cached {
    Listing(Arc<Vec<Child>>),
    Value(Bytes, SystemTime),
    Missing,
    /// A permanent failure (EFBIG, no `Metadata-Flavor`, 400, 403, …), remembered like a 404 so
    /// that no local user can turn syscalls into requests against the MDS's rate limit.
    Failed(Error),
}

impl Weight for Cached {
    fn weight(&self) -> usize {
        match self {
            Cached::Listing(children) => children.iter().map(|c| c.name.len() + 1).sum(),
            Cached::Value(bytes, _) => bytes.len(),
            Cached::Missing | Cached::Failed(_) => 0,
        }
    }
}

impl std::fmt::Debug for Cached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cached::Listing(children) => write!(f, "Listing({} entries)", children.len()),
            Cached::Value(bytes, _) => write!(f, "Value({} bytes)", bytes.len()),
            Cached::Missing => write!(f, "Missing"),
            Cached::Failed(err) => write!(f, "Failed({err})"),
        }
    }
}

/// Directories with an open handle (being listed), and those whose values were prefetched
/// during the current listing. `ls -l` stats each name while it still holds the directory
/// open; plain `ls` or `find` list without looking anything up, and cost no prefetch.
#[derive(Debug, Default)]
pub(crate) struct Listings {
    open: HashMap<u64, u64>,
    claimed: HashSet<u64>,
}

impl Listings {
    pub(crate) fn opened(&mut self, fh: u64, dir: u64) {
        self.open.insert(fh, dir);
    }

    pub(crate) fn closed(&mut self, fh: u64) {
        if let Some(dir) = self.open.remove(&fh) {
            if !self.open.values().any(|d| *d == dir) {
                self.claimed.remove(&dir);
            }
        }
    }

    /// True once per listing of `dir`: the caller prefetches.
    fn claim(&mut self, dir: u64) -> bool {
        self.open.values().any(|d| *d == dir) && self.claimed.insert(dir)
    }
}

/// A file's version and how long it stays the current one.
#[derive(Debug)]
pub(crate) struct Content {
    pub(crate) version: Version,
    pub(crate) validity: Duration,
}

/// The cache key of a directory's listing.
pub(crate) fn listing_key(dir: &str) -> String {
    if dir.is_empty() {
        String::new()
    } else {
        format!("{dir}/")
    }
}

/// The header-line file we add beside it, for `curl -H @file`.
const AUTHORIZATION: &str = "authorization";

/// `identity` (a key the MDS answers only with parameters) of an account directory.
fn needs_parameters(path: &str) -> bool {
    let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
    query::needs_parameters(dir, name)
}

impl<M: Mds> Core<M> {
    /// `dir`'s listing and how long it stays valid, if cached.
    pub(crate) fn listing_now(&self, dir: &str) -> Option<Result<(Arc<Vec<Child>>, Duration)>> {
        if dir == status::DIR {
            return Some(Ok(self.status_listing()));
        }
        let entry = self.cache.get_now(&listing_key(dir))?;
        let listing = listing_of(entry.value, entry.expiry.remaining(&*self.clock));
        Some(
            listing.map(|(children, validity)| {
                (self.writes.with_new_namespaces(dir, children), validity)
            }),
        )
    }

    /// `dir`'s last fetched listing, fresh or not, without counting a cache hit.
    pub(crate) fn last_listing(&self, dir: &str) -> Option<Arc<Vec<Child>>> {
        match self.cache.peek(&listing_key(dir))? {
            Cached::Listing(children) => Some(children),
            _ => None,
        }
    }

    pub(crate) async fn listing(&self, dir: &str) -> Result<(Arc<Vec<Child>>, Duration)> {
        if dir == status::DIR {
            return Ok(self.status_listing());
        }
        self.note_read();
        let key = listing_key(dir);
        let fetch = || {
            // An unchanged listing keeps its `Arc`, so directory handles opened across
            // refreshes (or on every fetch with `ttl=0`) still share one copy.
            let previous = self.last_listing(dir);
            self.fetcher().listing(key.clone(), previous)
        };
        let entry = self.cache.get(&key, fetch).await?;
        let (children, validity) = listing_of(entry.value, entry.expiry.remaining(&*self.clock))?;
        Ok((self.writes.with_new_namespaces(dir, children), validity))
    }

    /// A file's current version, if it can be told without waiting.
    pub(crate) fn content_now(&self, node: &Node) -> Option<Result<Content>> {
        match &node.kind {
            Kind::Value if needs_parameters(&node.path) => Some(Ok(unfetched(self.mounted_at))),
            Kind::Value if self.config.scoped_tokens && is_account_scopes(&node.path) => {
                self.scopes_content_now(&node.path)
            }
            Kind::Value => self.value_now(&node.path),
            Kind::Token | Kind::AccessToken | Kind::Authorization => {
                let token = self.tokens.peek(&self.account_token_path(node))?;
                Some(Ok(self.token_content(node, &token)))
            }
            Kind::Query(target) => self.query_content_now(target),
            Kind::Status(file) => Some(Ok(self.status_content(*file))),
            Kind::Dir | Kind::Symlink(_) => Some(Err(Error::InvalidName("not a file".into()))),
        }
    }

    pub(crate) async fn content(&self, node: &Node) -> Result<Content> {
        match &node.kind {
            // `identity` alone: listed, size 0, and opening it says why (nothing is sent).
            Kind::Value if needs_parameters(&node.path) => Ok(unfetched(self.mounted_at)),
            Kind::Value if self.config.scoped_tokens && is_account_scopes(&node.path) => {
                self.scopes_content(&node.path).await
            }
            Kind::Value => self.value(&node.path).await,
            Kind::Token | Kind::AccessToken | Kind::Authorization => {
                let token = self.tokens.get(&self.account_token_path(node)).await?;
                Ok(self.token_content(node, &token))
            }
            Kind::Query(target) => self.query_content(target).await,
            Kind::Status(file) => Ok(self.status_content(*file)),
            Kind::Dir | Kind::Symlink(_) => Err(Error::InvalidName("not a file".into())),
        }
    }

    /// `.metadatafs/`: ours, never fetched.
    fn status_listing(&self) -> (Arc<Vec<Child>>, Duration) {
        let files = StatusFile::ALL.map(|f| Child { name: f.name().into(), dir: false });
        (Arc::new(files.to_vec()), self.config.ttl)
    }

    /// A status file as of now: rendered, so opened direct-I/O and current for no time at all.
    fn status_content(&self, file: StatusFile) -> Content {
        let (bytes, seen) = (self.render_status(file), SystemTime::now());
        let version = Version { bytes, seen, tag: 0, readable: true, rendered: true };
        Content { version, validity: Duration::ZERO }
    }

    /// Whether a lookup that has to fetch in directory `dir` should fetch the rest of the
    /// directory too: it is being listed, and that was not done yet for this listing.
    pub fn should_prefetch(&self, dir: u64) -> bool {
        self.listings.lock().unwrap().claim(dir)
    }

    /// Fetch the values of directory `ino` that are not cached, several at a time. `ls -l`
    /// of a cold directory looks its names up one after the other, a round trip each; with
    /// this they are cache hits by then (or wait on a fetch already under way).
    pub async fn prefetch(self: Arc<Self>, ino: u64) {
        let Ok((dir, _)) = self.inodes.lock().unwrap().get(ino) else {
            return;
        };
        let Some(children) = self.last_listing(&dir.path) else {
            return;
        };
        if children.len() > PREFETCH_MAX {
            return;
        }
        let permits = Arc::new(tokio::sync::Semaphore::new(PREFETCH_CONCURRENCY));
        let mut tasks = tokio::task::JoinSet::new();
        for child in children.iter() {
            let path = tree::child_path(&dir.path, &child.name);
            if child_kind(&dir.path, child) != Kind::Value || self.cache.is_fresh(&path) {
                continue;
            }
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return;
            };
            let core = self.clone();
            tasks.spawn(async move {
                let _ = core.content(&Node { path, kind: Kind::Value }).await;
                drop(permit);
            });
        }
        while tasks.join_next().await.is_some() {}
    }

    /// `token` renders its JSON anew at every open, so its bytes are only a sample; its length
    /// holds until `expires_in` loses a digit, which bounds how long the version is current.
    /// `access_token` is the bare token, fixed until the token changes.
    fn token_content(&self, node: &Node, token: &Token) -> Content {
        let name = node.path.rsplit('/').next().unwrap_or_default();
        self.token_version(Form::of(name).unwrap_or(Form::Json), token)
    }

    /// A token as the file `form` shows it. `authorization` is fixed like `access_token`.
    pub(crate) fn token_version(&self, form: Form, token: &Token) -> Content {
        let left = token.expiry().remaining(&*self.clock);
        let (bytes, validity, rendered) = if form == Form::Json {
            let secs = left.as_secs();
            let floor = if secs < 10 { 0 } else { 10u64.pow(secs.ilog10()) };
            let json = Bytes::from(token.render_json(&self.clock));
            (json, left.saturating_sub(Duration::from_secs(floor)), true)
        } else {
            (query::render(token, form, &self.clock), left, false)
        };
        let seen = SystemTime::now();
        let version = Version { bytes, seen, tag: token.tag(), readable: true, rendered };
        Content { version, validity }
    }

    /// The current version of the MDS value at `path` (which may carry a query), if cached.
    pub(crate) fn value_now(&self, path: &str) -> Option<Result<Content>> {
        let entry = self.cache.get_now(path)?;
        let validity = self.validity(path, &entry.expiry);
        Some(value_content(entry.value, validity, self.mounted_at))
    }

    /// The current version of the MDS value at `path` (which may carry a query).
    pub(crate) async fn value(&self, path: &str) -> Result<Content> {
        self.note_read();
        let fetch = || {
            // The same bytes as before keep their mtime.
            let previous = match self.cache.peek(path) {
                Some(Cached::Value(bytes, seen)) => Some((bytes, seen)),
                _ => None,
            };
            self.fetcher().value(path.to_string(), previous)
        };
        match self.cache.get(path, fetch).await {
            Ok(entry) => {
                let validity = self.validity(path, &entry.expiry);
                value_content(entry.value, validity, self.mounted_at)
            }
            Err(e) => value_content(Cached::Failed(e), Duration::ZERO, self.mounted_at),
        }
    }

    /// The token file of `node`'s account, narrowed to the scopes in effect (write.rs).
    fn account_token_path(&self, node: &Node) -> String {
        let account_dir = node.path.rsplit_once('/').map_or("", |(dir, _)| dir);
        self.token_path(account_dir)
    }

    /// How long `path`'s cached value stays its current version. Files this mount writes
    /// (guest attributes) are looked up again at every open, so a write shows at once.
    fn validity(&self, path: &str, expiry: &crate::clock::Expiry) -> Duration {
        if self.config.guest_attributes && path.starts_with("instance/guest-attributes/") {
            return Duration::ZERO;
        }
        expiry.remaining(&*self.clock)
    }

    fn fetcher(&self) -> Fetcher<M> {
        let (ttl, negative_ttl) = (self.config.ttl, self.config.negative_ttl);
        Fetcher { mds: self.mds.clone(), ttl, negative_ttl }
    }
}

/// Fetches a value or listing for the cache, owning what it needs, so the cache can also run
/// it in the background (stale-while-revalidate).
#[derive(Debug)]
struct Fetcher<M> {
    mds: Arc<M>,
    ttl: Duration,
    negative_ttl: Duration,
}

impl<M: Mds> Fetcher<M> {
    /// `previous` is the value held before, if any: the same bytes keep their `seen` time.
    async fn value(
        self,
        path: String,
        previous: Option<(Bytes, SystemTime)>,
    ) -> Result<(Cached, Duration)> {
        match self.mds.get(&path).await {
            Ok(bytes) => {
                let seen = match previous {
                    Some((old, seen)) if old == bytes => seen,
                    _ => SystemTime::now(),
                };
                Ok((Cached::Value(bytes, seen), self.ttl))
            }
            Err(e) => self.negative(e),
        }
    }

    /// A 404 or another permanent failure, cached for `negative_ttl`; a transient one is
    /// left to the cache's stale-if-error.
    fn negative(&self, err: Error) -> Result<(Cached, Duration)> {
        match err {
            Error::NotFound => Ok((Cached::Missing, self.negative_ttl)),
            e if e.is_transient() => Err(e),
            e => Ok((Cached::Failed(e), self.negative_ttl)),
        }
    }

    async fn listing(
        self,
        key: String,
        previous: Option<Arc<Vec<Child>>>,
    ) -> Result<(Cached, Duration)> {
        let body = match self.mds.get(&key).await {
            Ok(body) => body,
            Err(e) => return self.negative(e),
        };
        let Ok(text) = std::str::from_utf8(&body) else {
            let reason = "directory listing is not UTF-8".into();
            return self.negative(Error::Misconfigured { path: key, reason });
        };
        let mut children = Vec::new();
        for line in text.lines() {
            let (name, dir) = match line.strip_suffix('/') {
                Some(name) => (name, true),
                None => (line, false),
            };
            if tree::listable(name) {
                children.push(Child { name: name.into(), dir });
            } else {
                warn!("{key}: skipping {name:?}, a name no request can reach");
            }
        }
        add_extras(key.trim_end_matches('/'), &mut children);
        children.sort_by(|a, b| a.name.cmp(&b.name));
        children.dedup_by(|a, b| a.name == b.name);
        let listing = match previous {
            Some(previous) if *previous == children => previous,
            _ => Arc::new(children),
        };
        Ok((Cached::Listing(listing), self.ttl))
    }
}

fn listing_of(cached: Cached, validity: Duration) -> Result<(Arc<Vec<Child>>, Duration)> {
    match cached {
        Cached::Listing(children) => Ok((children, validity)),
        Cached::Failed(err) => Err(err),
        _ => Err(Error::NotFound),
    }
}

pub(crate) fn value_content(
    cached: Cached,
    validity: Duration,
    mounted_at: SystemTime,
) -> Result<Content> {
    match cached {
        // A listed key the MDS answers only with parameters (`identity` wants an audience): it
        // exists, so `ls -l` shows it; opening it says why it can't.
        Cached::Failed(Error::BadRequest { .. }) => Ok(Content {
            version: Version {
                bytes: Bytes::new(),
                seen: mounted_at,
                tag: 0,
                readable: false,
                rendered: false,
            },
            validity: Duration::ZERO,
        }),
        Cached::Value(bytes, seen) => Ok(Content {
            version: Version { bytes, seen, tag: 0, readable: true, rendered: false },
            validity,
        }),
        Cached::Failed(err) => Err(err),
        _ => Err(Error::NotFound),
    }
}

/// What `child` of directory `dir` is, and so how its bytes are made.
pub(crate) fn child_kind(dir: &str, child: &Child) -> Kind {
    let account_dir = tree::service_account(dir).is_some();
    match child.name.as_str() {
        name if dir.is_empty() && name == SERVICE_ACCOUNTS_LINK.0 => {
            Kind::Symlink(SERVICE_ACCOUNTS_LINK.1.into())
        }
        name if dir == status::DIR => StatusFile::from_name(name).map_or(Kind::Value, Kind::Status),
        _ if child.dir => Kind::Dir,
        "token" if account_dir => Kind::Token,
        ACCESS_TOKEN if account_dir => Kind::AccessToken,
        AUTHORIZATION if account_dir => Kind::Authorization,
        _ => Kind::Value,
    }
}

/// The entries this filesystem adds to the MDS's listing of `dir`, once, when it is fetched.
fn add_extras(dir: &str, children: &mut Vec<Child>) {
    if dir.is_empty() {
        // Ours wins over a server key of the same name (see `status`).
        if children.iter().any(|c| c.name == status::DIR) {
            warn!("the metadata server lists {:?}; the status directory hides it", status::DIR);
            children.retain(|c| c.name != status::DIR);
        }
        children.push(Child { name: status::DIR.into(), dir: true });
    }
    let has_token = children.iter().any(|c| c.name == "token");
    let mut add = |name: &str| {
        if !children.iter().any(|c| c.name == name) {
            children.push(Child { name: name.into(), dir: false });
        }
    };
    if dir.is_empty() {
        add(SERVICE_ACCOUNTS_LINK.0);
    }
    if tree::service_account(dir).is_some() && has_token {
        add(ACCESS_TOKEN);
        add(AUTHORIZATION);
    }
}
