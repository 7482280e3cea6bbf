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
//! A token the server replaced (revoked) is noticed without a restart, two ways. (1) An access
//! token read in the last [`IDLE`] is asked for again every [`RECHECK`] even before its
//! refresh is due: the MDS answers with the same token until about 5 minutes before expiry, so
//! a different answer means the old one was replaced, and it is served from then on. That costs
//! 12 requests an hour per token in use, none for tokens nobody reads. (2) [`Tokens::renew`]
//! (an `fsync` of an open token file, e.g. `sync FILE`) asks at once, for a reader who could
//! open the file; at most once per [`REPOLL`] per token, concurrent callers sharing one request.
//! Identity tokens are minted anew at every request and need neither.
//!
//! Bounds (slots.rs): scope sets and identity audiences are LRUs per account, background
//! refreshes run at most [`REFRESH_CONCURRENCY`] at a time, and the status files get counts.
//!
//! Token bytes live only in [`Token`], whose `Debug` is redacted; no log line carries them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use log::{info, warn};

use crate::clock::{Expiry, SharedClock};
use crate::error::{Error, Result};
use crate::upstream::mds::Mds;

mod bearer;
mod slots;

pub use self::bearer::{is_b64token, Token, MIN_LEFT};
use self::slots::{make_room, redacted, shown, summarize, Pins, Slot};
pub use self::slots::{Kind, Summary, TokenStatus, MAX_IDENTITIES, MAX_SCOPE_SETS};

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
/// How often an access token in use is asked for again before its refresh is due, to notice
/// one the server replaced.
pub const RECHECK: Duration = Duration::from_secs(300);
/// Background refreshes in flight at once, however many tokens are due.
pub const REFRESH_CONCURRENCY: usize = 8;

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
    /// The scope set each account's `token` uses now: never dropped.
    pins: Pins,
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
            pins: Pins::default(),
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
                warn!("{}", redacted(&e, path));
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
        let permits = Arc::new(tokio::sync::Semaphore::new(REFRESH_CONCURRENCY));
        let mut tasks = tokio::task::JoinSet::new();
        for (path, slot) in due {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                break;
            };
            let tokens = self.clone();
            tasks.spawn(async move {
                tokens.refresh(&path, &slot).await;
                drop(permit);
            });
        }
        while tasks.join_next().await.is_some() {}
    }

    /// Asks the MDS for `path`'s token again now, whatever is cached: the token a reader was
    /// refused with may have been replaced. Paced: within [`REPOLL`] of the last renewal of
    /// it, the answer that one got stands; concurrent callers share one request. The next
    /// open of a token file serves what came back.
    pub async fn renew(&self, path: &str) -> Result<()> {
        let slot = self.slot(path);
        let turn = slot.fill.turn().await;
        let now = self.clock.now();
        let renewed = slot.state.lock().unwrap().renewed;
        if renewed.is_some_and(|at| now.saturating_duration_since(at) < REPOLL) {
            let result = self.usable(&slot, path).map(|_| ());
            return result.ok_or(Error::TokenExpired { path: path.into() });
        }
        slot.state.lock().unwrap().renewed = Some(now);
        let result = match self.fetch(path).await {
            Ok(token) => {
                self.install(&slot, path, token);
                Ok(())
            }
            Err(e) if e.is_transient() => Err(Error::TokenExpired { path: path.into() }),
            Err(e) => Err(e),
        };
        turn.finish(&result);
        result
    }

    /// `account_token` (`ACCOUNT/token`, or narrowed to scopes) is what its account's `token`
    /// files read now: a scope set in effect is never dropped to make room.
    pub fn in_effect(&self, account_token: &str) {
        self.pins.set(account_token);
    }

    /// Counts, soonest times, and each account's plain token: see slots.rs.
    pub fn status(&self) -> Summary {
        summarize(&self.slots.lock().unwrap(), &self.clock, self.clock.now())
    }

    async fn refresh(&self, path: &str, slot: &Slot) {
        let Some(_turn) = slot.fill.try_turn() else {
            return;
        };
        match self.fetch(path).await {
            Ok(token) => self.install(slot, path, token),
            Err(e) if e.is_transient() => {
                let mut state = slot.state.lock().unwrap();
                state.next_refresh = self.clock.now() + REPOLL;
                // Asked again every REPOLL: said once per outage, not at every try.
                if !std::mem::replace(&mut state.warned, true) {
                    let e = redacted(&e, path);
                    warn!("{}: token refresh failed, keeping the current token: {e}", shown(path));
                }
            }
            // The account or its token is gone for good: stop refreshing it. Readers holding
            // on get the current token until it expires, then the MDS's answer.
            Err(e) => {
                let e = redacted(&e, path);
                warn!("{}: token refresh refused, no longer refreshing: {e}", shown(path));
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
        // Identity tokens are new at every request: nothing to recheck.
        let recheck = if is_identity(path) { planned } else { planned.min(now + RECHECK) };
        state.next_refresh = if planned <= now { now + REPOLL } else { recheck };
        let replaced = !same && state.token.is_some();
        if !same {
            info!("{}: new token, expires in {} s", shown(path), token.expires_in(&self.clock));
        }
        state.token = Some(token);
        if let Some(installs) = self.installs.lock().unwrap().as_ref().filter(|_| replaced) {
            let _ = installs.send(path.to_string());
        }
        state.failed = None;
        state.warned = false;
    }

    /// How much time left a token from `path` must have to be served: [`MIN_LEFT`], or for an
    /// identity token `refresh_margin` (see `Tokens::usable`). A file showing the token must
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
        if let Some(slot) = slots.get(path) {
            return slot.clone();
        }
        make_room(&mut slots, path, &self.pins);
        let slot = Arc::new(Slot::new(self.clock.now()));
        slots.insert(path.to_string(), slot.clone());
        slot
    }
}

fn is_identity(path: &str) -> bool {
    path.split_once('?').is_some_and(|(base, _)| base.ends_with("/identity"))
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;

#[cfg(test)]
#[path = "model.rs"]
mod model;

#[cfg(test)]
#[path = "bounds_tests.rs"]
mod bounds_tests;
