//! The token store's slots and their bounds: one slot per MDS token path, grouped into the
//! families that share a limit, and what the status files may show of them.
//!
//! Invariants:
//! - Every family a reader can grow is bounded, least recently read dropped first: an
//!   account's scope sets ([`MAX_SCOPE_SETS`], each one of the account's limited tokens) and
//!   its identity audiences ([`MAX_IDENTITIES`]). A slot being read or fetched (held outside
//!   the table) and the set a `scopes` write put in effect ([`Pins`]) are never the ones
//!   dropped, so a family can only exceed its cap by what is in flight at that moment.
//! - The status files see a [`Summary`]: counts by kind, the soonest expiry and refresh, and
//!   per-token detail only for each account's plain `token` (no parameters). Audiences and
//!   scope sets (an audience may be a secret URL) never leave the store, and the summary's size
//!   does not grow with what was looked up.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use log::debug;

use crate::cache::Flight;
use crate::clock::{Expiry, SharedClock};
use crate::error::Error;
use crate::token::bearer::Token;

/// Scope sets one account keeps at once: each holds one of the account's limited tokens
/// (SPEC §2.3; the GCE docs name 600 and `SERVICE_ACCOUNT_TOO_MANY_TOKENS`).
pub const MAX_SCOPE_SETS: usize = 16;
/// Identity tokens (audiences and formats) one account keeps at once.
pub const MAX_IDENTITIES: usize = 64;

#[derive(Debug)]
pub(crate) struct Slot {
    pub(crate) fill: Flight,
    pub(crate) state: Mutex<State>,
}

#[derive(Debug)]
pub(crate) struct State {
    pub(crate) token: Option<Token>,
    /// A permanent failure, answered from memory until it expires.
    pub(crate) failed: Option<(Error, Expiry)>,
    pub(crate) next_refresh: Instant,
    pub(crate) last_read: Instant,
    /// When a reader last had this token renewed (paces [`super::Tokens::renew`]).
    pub(crate) renewed: Option<Instant>,
    /// A failed refresh was warned about; the next ones are not, until one works.
    pub(crate) warned: bool,
}

impl Slot {
    pub(crate) fn new(now: Instant) -> Slot {
        let state = State {
            token: None,
            failed: None,
            next_refresh: now,
            last_read: now,
            renewed: None,
            warned: false,
        };
        Slot { fill: Flight::default(), state: Mutex::new(state) }
    }
}

/// What kind of token a path asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `ACCOUNT/token`, no parameters.
    Plain,
    /// `ACCOUNT/token?scopes=…`.
    Scoped,
    /// `ACCOUNT/identity?audience=…`.
    Identity,
}

pub(crate) fn kind(path: &str) -> Kind {
    match path.split_once('?') {
        None => Kind::Plain,
        Some((base, _)) if base.ends_with("/identity") => Kind::Identity,
        Some(_) => Kind::Scoped,
    }
}

/// `path` as logs show it: an identity token's parameters are hidden (an audience may be a
/// secret URL); scope sets and plain paths are shown.
pub(crate) fn shown(path: &str) -> String {
    match path.split_once('?') {
        Some((base, _)) if kind(path) == Kind::Identity => format!("{base}?…"),
        _ => path.to_string(),
    }
}

/// `message` (an error naming `path`) with `path` shown as [`shown`] shows it.
pub(crate) fn redacted(message: impl std::fmt::Display, path: &str) -> String {
    message.to_string().replace(path, &shown(path))
}

/// The family `path` shares a cap with (`ACCOUNT/token?`, `ACCOUNT/identity?`), and the cap.
pub(crate) fn family(path: &str) -> Option<(&str, usize)> {
    let (base, _) = path.split_once('?')?;
    let cap = if kind(path) == Kind::Identity { MAX_IDENTITIES } else { MAX_SCOPE_SETS };
    Some((&path[..=base.len()], cap))
}

/// The scope set each account's `token` uses now (installed by a `scopes` write or
/// `token_scopes`): never dropped while it is in effect. Keyed by family.
#[derive(Debug, Default)]
pub(crate) struct Pins {
    in_effect: Mutex<HashMap<String, String>>,
}

impl Pins {
    /// `path` is what its account's `token` reads now; the account's earlier set is not.
    pub(crate) fn set(&self, account_token: &str) {
        let mut pins = self.in_effect.lock().unwrap();
        match family(account_token) {
            Some((family, _)) => {
                if pins.get(family).map(String::as_str) != Some(account_token) {
                    pins.insert(family.to_string(), account_token.to_string());
                }
            }
            None => {
                pins.remove(&format!("{account_token}?"));
            }
        }
    }

    fn contains(&self, path: &str) -> bool {
        let pins = self.in_effect.lock().unwrap();
        family(path).is_some_and(|(family, _)| pins.get(family).is_some_and(|p| p == path))
    }
}

/// Make room for one more slot in `path`'s family: drop the least recently read ones that
/// are neither pinned nor in use until fewer than the cap remain.
pub(crate) fn make_room(slots: &mut HashMap<String, Arc<Slot>>, path: &str, pins: &Pins) {
    let Some((family, cap)) = family(path) else {
        return;
    };
    let mut members: Vec<(Instant, String)> = slots
        .iter()
        .filter(|(p, _)| p.starts_with(family))
        .map(|(p, slot)| (slot.state.lock().unwrap().last_read, p.clone()))
        .collect();
    if members.len() < cap {
        return;
    }
    members.sort();
    let mut excess = members.len() + 1 - cap;
    for (_, victim) in members {
        if excess == 0 {
            break;
        }
        let in_use = slots.get(&victim).is_some_and(|slot| Arc::strong_count(slot) > 1);
        if in_use || pins.contains(&victim) {
            continue;
        }
        // Debug only: the path may carry an audience, and this happens at an attacker's pace.
        debug!("dropping the least recently read token of its kind ({:?})", kind(&victim));
        slots.remove(&victim);
        excess -= 1;
    }
}

/// One account's plain token as the status files show it: never its bytes.
#[derive(Debug, Clone)]
pub struct TokenStatus {
    pub path: String,
    pub expires_in: u64,
    pub refresh_in: u64,
}

/// What the status files show of the store: bounded whatever was looked up.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Slots holding a token, by kind: plain, scoped, identity.
    pub held: [u64; 3],
    /// Seconds until the soonest expiry, and the soonest refresh, of any held token.
    pub soonest_expiry: Option<u64>,
    pub next_refresh: Option<u64>,
    /// Each account's plain `token`, by path.
    pub plain: Vec<TokenStatus>,
}

pub(crate) fn summarize(
    slots: &HashMap<String, Arc<Slot>>,
    clock: &SharedClock,
    now: Instant,
) -> Summary {
    let mut summary = Summary::default();
    for (path, slot) in slots {
        let state = slot.state.lock().unwrap();
        let Some(token) = &state.token else {
            continue;
        };
        let expires_in = token.expires_in(clock);
        let refresh_in = state.next_refresh.saturating_duration_since(now).as_secs();
        let kind = kind(path);
        summary.held[kind as usize] += 1;
        let soonest = |old: Option<u64>, new: u64| Some(old.map_or(new, |o| o.min(new)));
        summary.soonest_expiry = soonest(summary.soonest_expiry, expires_in);
        summary.next_refresh = soonest(summary.next_refresh, refresh_in);
        if kind == Kind::Plain {
            summary.plain.push(TokenStatus { path: path.clone(), expires_in, refresh_in });
        }
    }
    summary.plain.sort_by(|a, b| a.path.cmp(&b.path));
    summary
}
