//! What each kind of file holds now: the dispatch from a node's [`Kind`] to the part that
//! makes its bytes — plain values and query dumps from [`Contents`], token files from the token
//! store, `scopes` from the write-through, waiting reads from [`Waits`], the status files from
//! the counters. [`Files`] is handed those parts; it holds no state of its own.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::clock::SharedClock;
use crate::error::{Error, Result};
use crate::fs::contents::{Contents, Freshness};
use crate::fs::entry::FsConfig;
use crate::fs::listing::{find, path_needs_parameters};
use crate::fs::node::{Content, Form, Kind, Node, StatusFile, Target};
use crate::fs::perms::is_account_scopes;
use crate::fs::query::{self, scoped_token_path, Base, Query};
use crate::fs::scopes::Scopes;
use crate::fs::status::{self, Board};
use crate::fs::token_files;
use crate::fs::waits::{Waiter, Waits};
use crate::fs::write::{Allowed, Writes};
use crate::paths;
use crate::token::{Token, Tokens};
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
                let path = self.account_token_path(node);
                let token = self.tokens.peek(&path)?;
                Some(Ok(self.account_token_version(node, &path, &token)))
            }
            Kind::Query(target) => self.query_content_now(target),
            Kind::Status(file) => Some(Ok(self.status_content(*file))),
            Kind::Dir | Kind::Symlink(_) => Some(Err(Error::InvalidName("not a file".into()))),
        }
    }

    /// A file's current version; a waiting read waits for it (for `waiter`).
    pub(crate) async fn content(&self, node: &Node, waiter: Waiter) -> Result<Content> {
        if let Some(now) = self.content_now(node) {
            return now;
        }
        match &node.kind {
            Kind::Value if self.scoped_tokens && is_account_scopes(&node.path) => {
                self.scopes.content(&self.contents, &node.path).await
            }
            Kind::Value => self.contents.value(&node.path).await,
            Kind::Token | Kind::AccessToken | Kind::Authorization => {
                let path = self.account_token_path(node);
                let token = self.tokens.get(&path).await?;
                Ok(self.account_token_version(node, &path, &token))
            }
            Kind::Query(target) => self.query_content(target, waiter).await,
            _ => Err(Error::InvalidName("not a file".into())),
        }
    }

    /// A query name's current version, if it can be told without waiting.
    pub(crate) fn query_content_now(&self, target: &Target) -> Option<Result<Content>> {
        match target {
            Target::Scoped { account_dir, scopes, form } => {
                let path = scoped_token_path(account_dir, scopes);
                let token = self.tokens.peek(&path)?;
                Some(Ok(self.token_version(*form, &path, &token)))
            }
            Target::Identity { path } => {
                let token = self.tokens.peek(path)?;
                Some(Ok(self.token_version(Form::Bare, path, &token)))
            }
            Target::Plain { path } => self.contents.value_now(path),
            // Its bytes exist once the server answers: the lookup waits (waits.rs).
            Target::Wait { .. } => None,
        }
    }

    /// A query name's current version: a waiting read waits for the server's answer.
    pub(crate) async fn query_content(&self, target: &Target, waiter: Waiter) -> Result<Content> {
        if let Some(now) = self.query_content_now(target) {
            return now;
        }
        let (path, form) = match target {
            Target::Scoped { account_dir, scopes, form } => {
                (scoped_token_path(account_dir, scopes), *form)
            }
            Target::Identity { path } => (path.clone(), Form::Bare),
            Target::Plain { path } => return self.contents.value(path).await,
            Target::Wait { path, base, limit } => {
                let bytes = self.waits.wait(path, *limit, waiter).await?;
                // A change drops the plain name's cached value; the same bytes keep it, and its mtime.
                self.contents.saw(base, &bytes);
                return Ok(Content::written(bytes));
            }
        };
        let token = self.tokens.get(&path).await?;
        Ok(self.token_version(form, &path, &token))
    }

    /// A token from the MDS path `path` as the file `form` shows it.
    fn token_version(&self, form: Form, path: &str, token: &Token) -> Content {
        token_files::version(form, token, &self.clock, self.tokens.horizon(path))
    }

    /// An account's own token file: with `scoped_tokens`, a write to `scopes` changes which
    /// token it shows, so it is looked up again at every open (this mount has the open path).
    fn account_token_version(&self, node: &Node, path: &str, token: &Token) -> Content {
        let content = self.token_version(form_of(node), path, token);
        match self.scoped_tokens {
            true => Content { validity: Duration::ZERO, ..content },
            false => content,
        }
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

    /// A status file as of now: rendered at every lookup, and current for no time at all,
    /// so every `open()` looks it up again.
    fn status_content(&self, file: StatusFile) -> Content {
        Content::written(self.render_status(file))
    }
}

/// How a token file shows its token.
fn form_of(node: &Node) -> Form {
    let name = node.path.rsplit('/').next().unwrap_or_default();
    Form::of(name).unwrap_or(Form::Json)
}
