//! Model-based tests of [`Tokens`]: random sequences of reads, clock moves, background refresh
//! ticks and changes to what the MDS answers (new tokens, the same token again, lifetimes at
//! and around every boundary, outages, refusals, garbage), run against the real token store
//! over an in-memory MDS and against a reference model. After every step both must agree on
//! what the reader got (which token, how many seconds left, or which errno) and on how many
//! requests reached the MDS — so a refresh that stops, loops, or comes early is caught.
//!
//! The contract the model states:
//! - a read is served the cached token while it is usable, else asks the MDS once;
//! - a token is refreshed in the background `MARGIN` before it expires, and asked for again
//!   every `RECHECK` before that (to notice a replaced token); once the refresh is due, if the
//!   MDS answers with the same token, or fails transiently, it is asked again after `REPOLL`,
//!   never sooner;
//! - a refusal during refresh drops the token's slot (no more background requests);
//! - tokens nobody read for `IDLE` are not refreshed;
//! - an expired token, or one with under `MIN_LEFT` to live, is never served, and a garbage or
//!   out-of-range answer (an `access_token` outside RFC 6750's characters included) never is
//!   either;
//! - a permanent failure on a read is answered from memory for `FAILURE_HOLD`.

use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;

use super::{Tokens, FAILURE_HOLD, IDLE, MIN_LEFT, RECHECK, REPOLL};
use crate::clock::{ManualClock, SharedClock};
use crate::error::Error;
use crate::upstream::testing::FakeMds;

const PATH: &str = "instance/service-accounts/default/token";
const MARGIN: u64 = 240;
const MAX_LIFETIME: i64 = 24 * 3600;

#[derive(Debug, Clone)]
enum Answer {
    /// A well-formed token `tok{id}` with this `expires_in`, with or without the optional
    /// `token_type` (which defaults to `Bearer`).
    Token {
        id: u8,
        expires_in: i64,
        typed: bool,
    },
    /// A token whose bytes are no token (empty, a control character, a space).
    BadToken(&'static str),
    Undecodable,
    Transient,
    Refused,
}

#[derive(Debug, Clone)]
enum Op {
    Read,
    Advance(u64),
    RefreshDue,
    Answer(Answer),
}

fn answer() -> impl Strategy<Value = Answer> {
    let lifetimes = prop_oneof![
        Just(-1i64),
        Just(0),
        Just(1),
        Just(4),
        Just(5),
        Just(6),
        Just(10),
        Just(239),
        Just(240),
        Just(241),
        Just(250),
        Just(300),
        Just(3599),
        Just(MAX_LIFETIME),
        Just(MAX_LIFETIME + 1),
    ];
    prop_oneof![
        6 => (0u8..3, lifetimes, any::<bool>())
            .prop_map(|(id, expires_in, typed)| Answer::Token { id, expires_in, typed }),
        1 => prop_oneof![Just(""), Just("tok\n1"), Just("tok\u{7f}"), Just("tok 1")]
            .prop_map(Answer::BadToken),
        1 => Just(Answer::Undecodable),
        2 => Just(Answer::Transient),
        1 => Just(Answer::Refused),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let secs = prop_oneof![
        Just(1u64),
        Just(4),
        Just(9),
        Just(10),
        Just(11),
        Just(60),
        Just(230),
        Just(1000),
        Just(IDLE.as_secs())
    ];
    prop_oneof![
        4 => Just(Op::Read),
        3 => secs.prop_map(Op::Advance),
        3 => Just(Op::RefreshDue),
        2 => answer().prop_map(Op::Answer),
    ]
}

#[derive(Debug, Clone, Copy)]
struct Held {
    id: u8,
    expiry: u64,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    token: Option<Held>,
    next_refresh: u64,
    last_read: u64,
    /// A permanent failure a read met, and until when it is answered from memory.
    failed: Option<(&'static str, u64)>,
}

#[derive(Debug)]
struct Model {
    now: u64,
    answer: Answer,
    slot: Option<Slot>,
    requests: usize,
}

/// How a fetch went: a token, a transient failure, or a permanent one (with its error).
enum Fetched {
    Token(Held),
    Transient,
    Permanent(&'static str),
}

/// What one read gave: the token's id and seconds left, or which error.
type Outcome = Result<(u8, u64), &'static str>;

/// The error's variant, which decides its errno, log level and message.
fn kind(err: &Error) -> &'static str {
    match err {
        Error::Misconfigured { .. } => "misconfigured",
        Error::TokenExpired { .. } => "token expired",
        Error::NotFound => "not found",
        other => panic!("a token read failed with an error no MDS answer explains: {other:?}"),
    }
}

impl Model {
    fn fetch(&mut self) -> Fetched {
        self.requests += 1;
        match self.answer {
            Answer::Token { expires_in, .. } if expires_in > MAX_LIFETIME => {
                Fetched::Permanent("misconfigured")
            }
            Answer::Token { expires_in, .. } if expires_in < MIN_LEFT.as_secs() as i64 => {
                Fetched::Transient
            }
            Answer::Token { id, expires_in, .. } => {
                Fetched::Token(Held { id, expiry: self.now + expires_in as u64 })
            }
            Answer::BadToken(_) | Answer::Undecodable => Fetched::Permanent("misconfigured"),
            Answer::Transient => Fetched::Transient,
            Answer::Refused => Fetched::Permanent("not found"),
        }
    }

    fn install(&self, slot: &mut Slot, token: Held) {
        let planned = token.expiry.saturating_sub(MARGIN);
        let repoll = self.now + REPOLL.as_secs();
        let recheck = planned.min(self.now + RECHECK.as_secs());
        slot.next_refresh = if planned <= self.now { repoll } else { recheck };
        slot.token = Some(token);
        slot.failed = None;
    }

    fn read(&mut self) -> Outcome {
        let now = self.now;
        let fresh = Slot { token: None, next_refresh: now, last_read: now, failed: None };
        let mut slot = self.slot.unwrap_or(fresh);
        slot.last_read = now;
        self.slot = Some(slot);
        let min_left = MIN_LEFT.as_secs();
        if let Some(token) = slot.token.filter(|t| t.expiry.saturating_sub(now) >= min_left) {
            return Ok((token.id, token.expiry - now));
        }
        if let Some((kind, _)) = slot.failed.filter(|(_, until)| now < *until) {
            return Err(kind);
        }
        match self.fetch() {
            Fetched::Token(token) => {
                self.install(&mut slot, token);
                self.slot = Some(slot);
                Ok((token.id, token.expiry - now))
            }
            Fetched::Transient => Err("token expired"),
            Fetched::Permanent(kind) => {
                slot.failed = Some((kind, now + FAILURE_HOLD.as_secs()));
                self.slot = Some(slot);
                Err(kind)
            }
        }
    }

    fn refresh_due(&mut self) {
        let Some(mut slot) = self.slot else { return };
        let idle = self.now - slot.last_read >= IDLE.as_secs();
        if slot.token.is_none() || slot.next_refresh > self.now || idle {
            return;
        }
        match self.fetch() {
            Fetched::Token(token) => {
                self.install(&mut slot, token);
                self.slot = Some(slot);
            }
            Fetched::Transient => {
                slot.next_refresh = self.now + REPOLL.as_secs();
                self.slot = Some(slot);
            }
            Fetched::Permanent(_) => self.slot = None,
        }
    }
}

fn serve(mds: &FakeMds, answer: &Answer) {
    let token = |access_token: &str, expires_in: i64, typed: bool| {
        let mut body = serde_json::json!({
            "access_token": access_token,
            "expires_in": expires_in,
        });
        if typed {
            body["token_type"] = "Bearer".into();
        }
        mds.set(PATH, &body.to_string());
    };
    match answer {
        Answer::Token { id, expires_in, typed } => token(&format!("tok{id}"), *expires_in, *typed),
        Answer::BadToken(bytes) => token(bytes, 3599, true),
        Answer::Undecodable => mds.set(PATH, r#"{"access_token":"tok9","expires_in":"soon"}"#),
        Answer::Transient => {
            mds.fail(PATH, Error::Unavailable { path: PATH.into(), reason: "down".into() })
        }
        Answer::Refused => mds.fail(PATH, Error::NotFound),
    }
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let clock = Arc::new(ManualClock::default());
    let shared: SharedClock = clock.clone();
    let mds = Arc::new(FakeMds::default());
    let tokens = Arc::new(Tokens::new(mds.clone(), shared.clone(), Duration::from_secs(MARGIN)));
    let first = Answer::Token { id: 0, expires_in: 3599, typed: true };
    serve(&mds, &first);
    let mut model = Model { now: 0, answer: first, slot: None, requests: 0 };
    for (step, op) in ops.into_iter().enumerate() {
        match op {
            Op::Read => {
                let token = runtime.block_on(tokens.get(PATH));
                let got: Outcome = token
                    .as_ref()
                    .map(|t| {
                        let id = t.access_token().trim_start_matches("tok").parse().unwrap();
                        (id, t.expiry().remaining(&*clock).as_secs())
                    })
                    .map_err(kind);
                let want = model.read();
                prop_assert_eq!(got, want, "step {}: read", step);
                if let (Ok(token), Ok((id, left))) = (&token, want) {
                    // The token file: the MDS's JSON with `expires_in` as of this read.
                    let json: serde_json::Value =
                        serde_json::from_slice(&token.render_json(&shared)).unwrap();
                    let file = serde_json::json!({
                        "access_token": format!("tok{id}"),
                        "expires_in": left,
                        "token_type": "Bearer",
                    });
                    prop_assert_eq!(json, file, "step {}: token file", step);
                }
                if let Ok((_, left)) = got {
                    let short = left < MIN_LEFT.as_secs();
                    prop_assert!(!short, "step {}: a token with {} s left was served", step, left);
                }
            }
            Op::Advance(secs) => {
                clock.advance(Duration::from_secs(secs));
                model.now += secs;
            }
            Op::RefreshDue => {
                runtime.block_on(tokens.refresh_due());
                model.refresh_due();
            }
            Op::Answer(answer) => {
                serve(&mds, &answer);
                model.answer = answer;
            }
        }
        prop_assert_eq!(mds.requests(PATH), model.requests, "step {}: MDS requests", step);
        let status = tokens.status().plain;
        let held = model.slot.and_then(|s| s.token.map(|t| (s, t)));
        prop_assert_eq!(status.len(), usize::from(held.is_some()), "step {}: status", step);
        if let (Some(status), Some((slot, token))) = (status.first(), held) {
            prop_assert_eq!(status.expires_in, token.expiry.saturating_sub(model.now));
            prop_assert_eq!(status.refresh_in, slot.next_refresh.saturating_sub(model.now));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn tokens_behave_like_their_model(ops in proptest::collection::vec(op(), 1..80)) {
        run(ops)?;
    }
}
