//! What each kind of file holds now: the dispatch from a node's [`Kind`] to the part that
//! makes its bytes — plain values and query dumps from [`Contents`], token files from the token
//! store, `scopes` from the write-through, waiting reads from [`Waits`], the status files from
//! the counters. [`Files`] is handed those parts; it holds no state of its own.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use crate::clock::SharedClock;
use crate::error::{Error, Result};
use crate::fs::contents::{Contents, Freshness};
use crate::fs::entry::FsConfig;
use crate::fs::listing::{find, path_needs_parameters};
use crate::fs::node::{Content, Form, Kind, Node, StatusFile, Target, Version};
use crate::fs::perms::is_account_scopes;
use crate::fs::query::{self, scoped_token_path, Base, Query};
use crate::fs::scopes::Scopes;
use crate::fs::status::{self, Board};
use crate::fs::token_files;
use crate::fs::waits::Waits;
use crate::fs::write::{Allowed, Writes};
use crate::paths;
use crate::token::Tokens;
use crate::upstream::mds::Mds;

#[derive(Debug)]
pub(crate) struct Files<M> {
    pub(crate) mds: Arc<M>,
    pub(crate) contents: Arc<Contents<M>>,
    pub(crate) tokens: Arc<Tokens<M>>,
    pub(crate) writes: Arc<Writes<M>>,
    pub(crate) scopes: Arc<Scopes>,
    pub(crate) waits: Waits<M>,
    pub(crate) board: Board,
    pub(crate) clock: SharedClock,
    pub(crate) scoped_tokens: bool,
    pub(crate) max_entries: usize,
}

impl<M: Mds> Files<M> {
    /// The parts, wired: each is handed the client, cache, clock or token store it needs.
    pub(crate) fn new(mds: Arc<M>, config: &FsConfig, clock: SharedClock) -> Self {
        let tokens = Arc::new(Tokens::new(mds.clone(), clock.clone(), config.refresh_margin));
        let freshness = Freshness {
            ttl: config.ttl,
            negative_ttl: config.negative_ttl,
            max_entries: config.max_entries,
            guest_attributes: config.guest_attributes,
        };
        let contents = Arc::new(Contents::new(mds.clone(), clock.clone(), freshness));
        let scopes = Arc::new(Scopes::new(config.token_scopes.clone()));
        let allowed = Allowed {
            owner: config.permissions.uid,
            scoped_tokens: config.scoped_tokens,
            guest_attributes: config.guest_attributes,
        };
        let (tokens2, contents2, scopes2) = (tokens.clone(), contents.clone(), scopes.clone());
        let writes = Writes::new(mds.clone(), tokens2, contents2, scopes2, clock.clone(), allowed);
        Files {
            waits: Waits::new(mds.clone()),
            board: status::Board::new(&*clock),
            writes: Arc::new(writes),
            scoped_tokens: config.scoped_tokens,
            max_entries: config.max_entries,
            mds,
            contents,
            tokens,
            scopes,
            clock,
        }
    }

    /// A file's current version, if it can be told without waiting.
    pub(crate) fn content_now(&self, node: &Node) -> Option<Result<Content>> {
        let mounted_at = self.contents.mounted_at;
        match &node.kind {
            // `identity` alone: listed, size 0, and opening it says why (nothing is sent).
            Kind::Value if path_needs_parameters(&node.path) => {
                Some(Ok(Content::unfetched(mounted_at)))
            }
            Kind::Value if self.scoped_tokens && is_account_scopes(&node.path) => {
                self.scopes.content_now(&self.contents, &node.path)
            }
            Kind::Value => self.contents.value_now(&node.path),
            Kind::Token | Kind::AccessToken | Kind::Authorization => {
                let token = self.tokens.peek(&self.account_token_path(node))?;
                Some(Ok(token_files::version(form_of(node), &token, &self.clock)))
            }
            Kind::Query(target) => self.query_content_now(target),
            Kind::Status(file) => Some(Ok(self.status_content(*file))),
            Kind::Dir | Kind::Symlink(_) => Some(Err(Error::InvalidName("not a file".into()))),
        }
    }

    pub(crate) async fn content(&self, node: &Node) -> Result<Content> {
        if let Some(now) = self.content_now(node) {
            return now;
        }
        match &node.kind {
            Kind::Value if self.scoped_tokens && is_account_scopes(&node.path) => {
                self.scopes.content(&self.contents, &node.path).await
            }
            Kind::Value => self.contents.value(&node.path).await,
            Kind::Token | Kind::AccessToken | Kind::Authorization => {
                let token = self.tokens.get(&self.account_token_path(node)).await?;
                Ok(token_files::version(form_of(node), &token, &self.clock))
            }
            Kind::Query(target) => self.query_content(target).await,
            _ => Err(Error::InvalidName("not a file".into())),
        }
    }

    /// A query name's current version, if it can be told without waiting.
    pub(crate) fn query_content_now(&self, target: &Target) -> Option<Result<Content>> {
        match target {
            Target::Scoped { account_dir, scopes, form } => {
                let token = self.tokens.peek(&scoped_token_path(account_dir, scopes))?;
                Some(Ok(token_files::version(*form, &token, &self.clock)))
            }
            Target::Identity { path } => {
                let token = self.tokens.peek(path)?;
                Some(Ok(token_files::version(Form::Bare, &token, &self.clock)))
            }
            Target::Plain { path } => self.contents.value_now(path),
            Target::Wait { .. } => Some(Ok(Content::unfetched(self.contents.mounted_at))),
        }
    }

    /// A query name's current version. A waiting read has none until it is opened.
    pub(crate) async fn query_content(&self, target: &Target) -> Result<Content> {
        if let Some(now) = self.query_content_now(target) {
            return now;
        }
        let (path, form) = match target {
            Target::Scoped { account_dir, scopes, form } => {
                (scoped_token_path(account_dir, scopes), *form)
            }
            Target::Identity { path } => (path.clone(), Form::Bare),
            Target::Plain { path } => return self.contents.value(path).await,
            Target::Wait { .. } => return Ok(Content::unfetched(self.contents.mounted_at)),
        };
        let token = self.tokens.get(&path).await?;
        Ok(token_files::version(form, &token, &self.clock))
    }

    /// What the query name `query` in directory `dir` asks for, and how long the answer to
    /// "does its base exist" holds.
    pub(crate) async fn query_target(
        &self,
        dir: &str,
        query: &Query,
    ) -> Result<(Target, Duration)> {
        let mut validity = self.contents.freshness_ttl();
        let base = if query.base.is_empty() {
            Base::Dir
        } else if paths::service_account(dir).is_some()
            && (Form::of(&query.base).is_some() || query.base == "identity")
        {
            Base::Value
        } else {
            let (children, listed) = self.contents.listing(dir).await?;
            validity = listed;
            match find(dir, &children, &query.base) {
                Ok(node) if node.kind == Kind::Dir => Base::Dir,
                Ok(_) => Base::Value,
                Err(Error::NotFound) => Base::Unlisted,
                Err(e) => return Err(e),
            }
        };
        Ok((query::target(dir, query, base, self.scoped_tokens)?, validity))
    }

    /// A waiting read: wait (sharing the upstream request with every other reader of the same
    /// name) and return the new bytes. Never cached.
    pub(crate) async fn wait_content(&self, target: &Target) -> Result<Bytes> {
        let Target::Wait { path, base, limit } = target else {
            return Err(Error::InvalidName("not a waiting read".into()));
        };
        let bytes = self.waits.wait(path, *limit).await?;
        // The value may have changed: the plain name should not serve the old one.
        self.contents.saw(base, &bytes);
        Ok(bytes)
    }

    /// The token file of `node`'s account, narrowed to the scopes in effect (scopes.rs).
    fn account_token_path(&self, node: &Node) -> String {
        let account_dir = node.path.rsplit_once('/').map_or("", |(dir, _)| dir);
        let path = self.scopes.token_path(account_dir);
        self.tokens.in_effect(&path);
        path
    }

    /// `.metadatafs/status` or `metrics` as of now.
    pub(crate) fn render_status(&self, file: StatusFile) -> Bytes {
        let sources = status::Sources {
            board: &self.board,
            clock: &*self.clock,
            max_entries: self.max_entries,
            cache: self.contents.cache_stats(),
            tokens: self.tokens.status(),
            token_stats: &self.tokens.stats,
            mds: self.mds.stats(),
            transport: self.mds.transport_kind().map(|k| k.name()),
        };
        Bytes::from(status::render(file, &sources))
    }

    /// A status file as of now: rendered, so opened direct-I/O and current for no time at all.
    fn status_content(&self, file: StatusFile) -> Content {
        let (bytes, seen) = (self.render_status(file), SystemTime::now());
        let version = Version { bytes, seen, tag: 0, readable: true, rendered: true };
        Content { version, validity: Duration::ZERO }
    }
}

/// How a token file shows its token.
fn form_of(node: &Node) -> Form {
    let name = node.path.rsplit('/').next().unwrap_or_default();
    Form::of(name).unwrap_or(Form::Json)
}
