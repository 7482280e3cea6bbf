//! Access tokens: parsing the MDS token JSON, rendering `expires_in` at open time, and the
//! refresh schedule.
//!
//! The MDS hands out the same token until about 5 minutes before it expires
//! (reference/metadata-api.md §5.2), so refreshing earlier than that is useless: a token is
//! refreshed `refresh_margin` (240 s) before expiry, in the background, while readers keep the
//! current one. If the MDS still answers with the same token, it is asked again every
//! [`REPOLL`], never in a loop. An expired token, or one with under [`MIN_LEFT`] to live, is
//! never served; the read then waits for a fresh one and fails with EIO if the MDS cannot give
//! one within `timeout`. An `access_token` outside RFC 6750's characters is never accepted, and
//! a permanent failure is answered from memory for [`FAILURE_HOLD`].
//!
//! Token bytes live only in [`Token`], whose `Debug` is redacted; no log line carries them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use log::{info, warn};

use crate::cache::Flight;
use crate::clock::{Expiry, SharedClock};
use crate::error::{Error, Result};
use crate::upstream::mds::Mds;

mod bearer;

pub use self::bearer::{is_b64token, Token, MIN_LEFT};

/// How soon to ask again when the MDS answered a refresh with the token we already had, or
/// failed to answer it.
pub const REPOLL: Duration = Duration::from_secs(10);
/// Tokens nobody has read for this long are no longer refreshed in the background; the next
/// read fetches one. Each refresh holds one of the account's limited tokens
/// (reference/metadata-api.md §5.2).
pub const IDLE: Duration = Duration::from_secs(3600);
/// How long a permanent token failure (undecodable body, 403) is answered from memory, as the
/// value cache does for 404s: no local user can turn reads into a request storm.
pub const FAILURE_HOLD: Duration = Duration::from_secs(5);
/// Scope sets one account keeps at once: each holds one of the account's limited tokens
/// (SPEC §2.3; the GCE docs name 600 and `SERVICE_ACCOUNT_TOO_MANY_TOKENS`).
pub const MAX_SCOPE_SETS: usize = 16;

#[derive(Debug)]
struct Slot {
    fill: Flight,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    token: Option<Token>,
    /// A permanent failure, answered from memory until it expires.
    failed: Option<(Error, Expiry)>,
    next_refresh: Instant,
    last_read: Instant,
}

/// What the status file shows of a token: never its bytes.
#[derive(Debug, Clone)]
pub struct TokenStatus {
    pub path: String,
    pub expires_in: u64,
    pub refresh_in: u64,
}

/// How token fetches ended, for the status counters.
#[derive(Debug, Default)]
pub struct TokenStats {
    /// A token we did not have before.
    pub new: AtomicU64,
    /// The MDS handed back the token we already had (its cache window).
    pub same: AtomicU64,
    /// No token: the MDS failed or its answer was refused.
    pub failed: AtomicU64,
}

/// Every token this mount has handed out, keyed by the MDS path (with query) it came from.
#[derive(Debug)]
pub struct Tokens<M> {
    mds: Arc<M>,
    clock: SharedClock,
    margin: Duration,
    slots: Mutex<HashMap<String, Arc<Slot>>>,
    pub stats: TokenStats,
    /// Told the MDS path of every token that replaced another (see [`Tokens::watch_installs`]).
    installs: Mutex<Option<tokio::sync::mpsc::UnboundedSender<String>>>,
}

impl<M: Mds> Tokens<M> {
    pub fn new(mds: Arc<M>, clock: SharedClock, margin: Duration) -> Self {
        Tokens {
            mds,
            clock,
            margin,
            slots: Mutex::new(HashMap::new()),
            stats: TokenStats::default(),
            installs: Mutex::new(None),
        }
    }

    /// The MDS path of each token installed in place of another from now on: files showing
    /// the old one are to be forgotten by the kernel (service/daemon.rs does).
    pub fn watch_installs(&self) -> tokio::sync::mpsc::UnboundedReceiver<String> {
        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
        *self.installs.lock().unwrap() = Some(sender);
        receiver
    }

    /// A token that has not expired: the cached one, or a fresh one if it has.
    pub async fn get(&self, path: &str) -> Result<Token> {
        let slot = self.slot(path);
        if let Some(token) = self.usable(&slot, path) {
            return Ok(token);
        }
        let turn = slot.fill.turn().await;
        if let Some(token) = self.usable(&slot, path) {
            return Ok(token);
        }
        if let Some(Err(err)) = turn.shared_outcome() {
            return Err(err);
        }
        if let Some(err) = self.held_failure(&slot) {
            return Err(err);
        }
        let result = match self.fetch(path).await {
            Ok(token) => {
                self.install(&slot, path, token.clone());
                Ok(token)
            }
            Err(e) if e.is_transient() => {
                warn!("{e}");
                Err(Error::TokenExpired { path: path.into() })
            }
            Err(e) => {
                let until = Expiry::from_now(&*self.clock, FAILURE_HOLD);
                slot.state.lock().unwrap().failed = Some((e.clone(), until));
                Err(e)
            }
        };
        turn.finish(&result);
        result
    }

    /// The cached token if it can be served now, without waiting: what the FUSE thread
    /// answers from directly.
    pub fn peek(&self, path: &str) -> Option<Token> {
        let slot = self.slots.lock().unwrap().get(path).cloned()?;
        self.usable(&slot, path)
    }

    /// Refresh every token whose refresh time has come. Called about once a second by the
    /// daemon's ticker, and directly by tests after moving the clock.
    pub async fn refresh_due(self: &Arc<Self>) {
        let now = self.clock.now();
        let due: Vec<(String, Arc<Slot>)> = {
            let slots = self.slots.lock().unwrap();
            slots
                .iter()
                .filter(|(_, slot)| {
                    let state = slot.state.lock().unwrap();
                    let idle = now.saturating_duration_since(state.last_read) >= IDLE;
                    state.token.is_some() && state.next_refresh <= now && !idle
                })
                .map(|(path, slot)| (path.clone(), slot.clone()))
                .collect()
        };
        let tasks: Vec<_> = due
            .into_iter()
            .map(|(path, slot)| {
                let tokens = self.clone();
                tokio::spawn(async move { tokens.refresh(&path, &slot).await })
            })
            .collect();
        for task in tasks {
            let _ = task.await;
        }
    }

    pub fn status(&self) -> Vec<TokenStatus> {
        let now = self.clock.now();
        let slots = self.slots.lock().unwrap();
        let mut out: Vec<TokenStatus> = slots
            .iter()
            .filter_map(|(path, slot)| {
                let state = slot.state.lock().unwrap();
                state.token.as_ref().map(|t| TokenStatus {
                    path: path.clone(),
                    expires_in: t.expires_in(&self.clock),
                    refresh_in: state.next_refresh.saturating_duration_since(now).as_secs(),
                })
            })
            .collect();
        out.sort_by(|a, b| a.path.cmp(&b.path));
        out
    }

    async fn refresh(&self, path: &str, slot: &Slot) {
        let Some(_turn) = slot.fill.try_turn() else {
            return;
        };
        match self.fetch(path).await {
            Ok(token) => self.install(slot, path, token),
            Err(e) if e.is_transient() => {
                warn!("{path}: token refresh failed, keeping the current token: {e}");
                slot.state.lock().unwrap().next_refresh = self.clock.now() + REPOLL;
            }
            // The account or its token is gone for good: stop refreshing it. Readers holding
            // on get the current token until it expires, then the MDS's answer.
            Err(e) => {
                warn!("{path}: token refresh refused, no longer refreshing: {e}");
                self.slots.lock().unwrap().remove(path);
            }
        }
    }

    async fn fetch(&self, path: &str) -> Result<Token> {
        let requested = self.clock.now();
        let parsed = match self.mds.get(path).await {
            Ok(body) if is_identity(path) => Token::parse_identity(path, &body, requested),
            Ok(body) => Token::parse(path, &body, requested),
            Err(e) => Err(e),
        };
        if let Err(e) = &parsed {
            // The MDS answered, but not with a token: the client did not see that.
            if !matches!(e, Error::Unavailable { .. } | Error::NotFound) {
                if let Some(stats) = self.mds.stats() {
                    stats.failed(e);
                }
            }
            self.stats.failed.fetch_add(1, Ordering::Relaxed);
        }
        parsed
    }

    fn install(&self, slot: &Slot, path: &str, token: Token) {
        let now = self.clock.now();
        let mut state = slot.state.lock().unwrap();
        let same = state.token.as_ref().is_some_and(|t| t.access_token() == token.access_token());
        let counter = if same { &self.stats.same } else { &self.stats.new };
        counter.fetch_add(1, Ordering::Relaxed);
        let planned = token.expiry().instant().checked_sub(self.margin).unwrap_or(now);
        state.next_refresh = if same || planned <= now { now + REPOLL } else { planned };
        let replaced = !same && state.token.is_some();
        if !same {
            info!("{path}: new token, expires in {} s", token.expires_in(&self.clock));
        }
        state.token = Some(token);
        if let Some(installs) = self.installs.lock().unwrap().as_ref().filter(|_| replaced) {
            let _ = installs.send(path.to_string());
        }
        state.failed = None;
    }

    /// How much time left a token from `path` must have to be served: [`MIN_LEFT`], or for an
    /// identity token `refresh_margin` (see [`Tokens::usable`]). A file showing the token must
    /// stop being current that long before it expires.
    pub fn horizon(&self, path: &str) -> Duration {
        if is_identity(path) {
            self.margin.max(MIN_LEFT)
        } else {
            MIN_LEFT
        }
    }

    /// The current token if it has at least [`MIN_LEFT`] to live. An identity token is served
    /// only until `refresh_margin` before its `exp`: the MDS mints a new one on every request,
    /// so a fresh one is always to be had, and the relying party gets a token with time left.
    fn usable(&self, slot: &Slot, path: &str) -> Option<Token> {
        let mut state = slot.state.lock().unwrap();
        state.last_read = self.clock.now();
        let horizon = self.horizon(path);
        state.token.clone().filter(|t| t.expiry().remaining(&*self.clock) >= horizon)
    }

    /// The permanent failure still held for this slot, if any.
    fn held_failure(&self, slot: &Slot) -> Option<Error> {
        let state = slot.state.lock().unwrap();
        let (err, until) = state.failed.as_ref()?;
        (!until.is_expired(&*self.clock)).then(|| err.clone())
    }

    fn slot(&self, path: &str) -> Arc<Slot> {
        let mut slots = self.slots.lock().unwrap();
        if let Some(family) = scope_family(path).filter(|_| !slots.contains_key(path)) {
            drop_least_recent(&mut slots, family, MAX_SCOPE_SETS - 1);
        }
        slots
            .entry(path.to_string())
            .or_insert_with(|| {
                Arc::new(Slot {
                    fill: Flight::default(),
                    state: Mutex::new(State {
                        token: None,
                        failed: None,
                        next_refresh: self.clock.now(),
                        last_read: self.clock.now(),
                    }),
                })
            })
            .clone()
    }
}

fn is_identity(path: &str) -> bool {
    path.split_once('?').is_some_and(|(base, _)| base.ends_with("/identity"))
}

/// `ACCOUNT/token?` for a scoped token of ACCOUNT: the sets that share its limit.
fn scope_family(path: &str) -> Option<&str> {
    let end = path.find("/token?")? + "/token?".len();
    Some(&path[..end])
}

/// Drop the least recently read scope sets of `family` until at most `keep` remain.
fn drop_least_recent(slots: &mut HashMap<String, Arc<Slot>>, family: &str, keep: usize) {
    loop {
        let mut sets: Vec<(Instant, &String)> = slots
            .iter()
            .filter(|(path, _)| path.starts_with(family))
            .map(|(path, slot)| (slot.state.lock().unwrap().last_read, path))
            .collect();
        if sets.len() <= keep {
            return;
        }
        sets.sort();
        let oldest = sets[0].1.clone();
        info!("{oldest}: dropping the least recently used scope set");
        slots.remove(&oldest);
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;

#[cfg(test)]
#[path = "model.rs"]
mod model;
