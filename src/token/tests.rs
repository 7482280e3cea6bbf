//! Tokens on a moved clock against an in-memory MDS.

use super::bearer::MAX_LIFETIME;
use super::*;
use std::time::Instant;

use crate::clock::ManualClock;
use crate::upstream::testing::FakeMds;

const PATH: &str = "instance/service-accounts/default/token";

fn answer(mds: &FakeMds, token: &str, expires_in: u64) {
    let body =
        format!(r#"{{"access_token":"{token}","expires_in":{expires_in},"token_type":"Bearer"}}"#);
    mds.set(PATH, &body);
}

fn setup() -> (Arc<ManualClock>, Arc<FakeMds>, Arc<Tokens<FakeMds>>) {
    let clock = Arc::new(ManualClock::default());
    let mds = Arc::new(FakeMds::default());
    let tokens = Arc::new(Tokens::new(mds.clone(), clock.clone(), Duration::from_secs(240)));
    (clock, mds, tokens)
}

#[tokio::test]
async fn expires_in_is_rendered_at_read_time() {
    let (clock, mds, tokens) = setup();
    answer(&mds, "ya29.one", 3599);
    let shared: SharedClock = clock.clone();
    let token = tokens.get(PATH).await.unwrap();
    assert_eq!(
        token.render_json(&shared),
        br#"{"access_token":"ya29.one","expires_in":3599,"token_type":"Bearer"}"#
    );
    clock.advance(Duration::from_secs(100));
    let again = tokens.get(PATH).await.unwrap();
    assert_eq!(again.expires_in(&shared), 3499);
    assert_eq!(mds.requests(PATH), 1);
}

#[tokio::test]
async fn refreshed_in_the_background_before_expiry_and_repolled_when_unchanged() {
    let (clock, mds, tokens) = setup();
    answer(&mds, "ya29.one", 3600);
    tokens.get(PATH).await.unwrap();
    clock.advance(Duration::from_secs(3600 - 241));
    answer(&mds, "ya29.one", 241);
    tokens.refresh_due().await;
    // Not the refresh (the margin is 1 s away) but the recheck for a replaced token.
    assert_eq!(mds.requests(PATH), 2, "rechecked once, whatever the time jumped over");
    tokens.refresh_due().await;
    assert_eq!(mds.requests(PATH), 2, "the same token: the refresh is next");
    clock.advance(Duration::from_secs(1));
    // The MDS still hands out the same token: ask again in REPOLL, not in a loop.
    answer(&mds, "ya29.one", 240);
    tokens.refresh_due().await;
    tokens.refresh_due().await;
    assert_eq!(mds.requests(PATH), 3);
    clock.advance(REPOLL);
    answer(&mds, "ya29.two", 3599);
    tokens.refresh_due().await;
    assert_eq!(mds.requests(PATH), 4);
    assert_eq!(tokens.get(PATH).await.unwrap().access_token(), "ya29.two");
    assert_eq!(mds.requests(PATH), 4, "readers are served the refreshed token from cache");
    let fetches = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    let stats = &tokens.stats;
    assert_eq!((fetches(&stats.new), fetches(&stats.same), fetches(&stats.failed)), (2, 2, 0));
}

/// 16 readers of a cold token, all queued before the MDS may answer.
async fn together(mds: &FakeMds, tokens: &Arc<Tokens<FakeMds>>) -> Vec<Result<Token>> {
    let release = mds.hold();
    let readers: Vec<_> = (0..16)
        .map(|_| {
            let tokens = tokens.clone();
            tokio::spawn(async move { tokens.get(PATH).await })
        })
        .collect();
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    release.send(true).unwrap();
    let mut results = Vec::new();
    for reader in readers {
        results.push(reader.await.unwrap());
    }
    results
}

#[tokio::test]
async fn concurrent_cold_readers_share_one_request() {
    let (_, mds, tokens) = setup();
    answer(&mds, "ya29.one", 3599);
    for result in together(&mds, &tokens).await {
        assert_eq!(result.unwrap().access_token(), "ya29.one");
    }
    assert_eq!(mds.requests(PATH), 1);
}

#[tokio::test]
async fn concurrent_cold_readers_share_one_failure() {
    let (_, mds, tokens) = setup();
    mds.set_down(true);
    for result in together(&mds, &tokens).await {
        assert_eq!(result.unwrap_err().errno(), libc::EIO);
    }
    assert_eq!(mds.requests(PATH), 1, "one outage, one request");
}

#[tokio::test]
async fn an_expired_token_is_never_served() {
    let (clock, mds, tokens) = setup();
    answer(&mds, "ya29.one", 300);
    tokens.get(PATH).await.unwrap();
    mds.set_down(true);
    clock.advance(Duration::from_secs(300) - MIN_LEFT);
    assert_eq!(tokens.get(PATH).await.unwrap().access_token(), "ya29.one");
    // Under MIN_LEFT to live is as good as expired: never served.
    clock.advance(Duration::from_secs(1));
    let err = tokens.get(PATH).await.unwrap_err();
    assert_eq!(err.errno(), libc::EIO);
    mds.set_down(false);
    answer(&mds, "ya29.two", 3599);
    assert_eq!(tokens.get(PATH).await.unwrap().access_token(), "ya29.two");
}

#[tokio::test]
async fn undecodable_token_json_is_refused_without_quoting_it() {
    let (_, mds, tokens) = setup();
    mds.set(PATH, r#"{"access_token":"ya29.secret","expires_in":"soon"}"#);
    let err = tokens.get(PATH).await.unwrap_err();
    assert!(matches!(err, Error::Misconfigured { .. }), "{err:?}");
    assert!(!err.to_string().contains("ya29"), "{err}");
}

#[test]
fn debug_never_shows_the_token() {
    let body = br#"{"access_token":"ya29.secret","expires_in":10,"token_type":"Bearer"}"#;
    let token = Token::parse(PATH, body, Instant::now()).unwrap();
    let shown = format!("{token:?}");
    assert!(!shown.contains("secret") && shown.contains("<redacted>"), "{shown}");
}

#[test]
fn out_of_range_lifetimes_are_refused() {
    let parse = |expires_in: i64| {
        let body = format!(r#"{{"access_token":"ya29.x","expires_in":{expires_in}}}"#);
        Token::parse(PATH, body.as_bytes(), Instant::now())
    };
    assert!(parse(3599).is_ok());
    assert!(matches!(parse(0), Err(Error::Unavailable { .. })), "an expired token");
    assert!(matches!(parse(4), Err(Error::Unavailable { .. })), "under MIN_LEFT");
    assert!(parse(5).is_ok());
    assert!(matches!(parse(-5), Err(Error::Unavailable { .. })));
    assert!(matches!(parse(i64::MAX), Err(Error::Misconfigured { .. })));
}

#[tokio::test]
async fn tokens_nobody_reads_stop_being_refreshed_and_vanished_accounts_are_dropped() {
    let (clock, mds, tokens) = setup();
    answer(&mds, "ya29.one", 3900);
    tokens.get(PATH).await.unwrap();
    clock.advance(IDLE + Duration::from_secs(61));
    tokens.refresh_due().await;
    assert_eq!(mds.requests(PATH), 1, "an idle token is not refreshed");
    answer(&mds, "ya29.two", 3600);
    assert_eq!(tokens.get(PATH).await.unwrap().access_token(), "ya29.one", "still valid");
    clock.advance(Duration::from_secs(1));
    mds.fail(PATH, Error::NotFound);
    tokens.refresh_due().await;
    assert_eq!(mds.requests(PATH), 2);
    assert!(tokens.status().plain.is_empty(), "the vanished account's token is dropped");
    clock.advance(REPOLL * 10);
    tokens.refresh_due().await;
    assert_eq!(mds.requests(PATH), 2, "and not asked for again in the background");
}

#[test]
fn only_rfc6750_token_characters_are_accepted() {
    let parse = |token: &str| {
        let body = serde_json::json!({"access_token": token, "expires_in": 3600}).to_string();
        Token::parse(PATH, body.as_bytes(), Instant::now())
    };
    for good in ["ya29.a0-B_c~d+e/f", "abc=", "abc==", "Z"] {
        assert!(parse(good).is_ok(), "{good}");
    }
    for bad in ["ya29 secret", "ya29\tx", "a\nb", "\"q\"", "a=b", "=", "", "é", "a;b", "a,b"] {
        let err = parse(bad).unwrap_err();
        assert!(matches!(err, Error::Misconfigured { .. }), "{bad:?}: {err:?}");
        assert_eq!(err.errno(), libc::EIO);
        assert!(!err.to_string().contains("secret"), "{err}");
    }
}

#[tokio::test]
async fn a_permanent_failure_is_answered_from_memory_for_a_while() {
    let (clock, mds, tokens) = setup();
    mds.set(PATH, r#"{"access_token":"bad token","expires_in":3600}"#);
    for _ in 0..100 {
        assert!(matches!(tokens.get(PATH).await, Err(Error::Misconfigured { .. })));
    }
    assert_eq!(mds.requests(PATH), 1);
    answer(&mds, "ya29.good", 3600);
    clock.advance(FAILURE_HOLD - Duration::from_millis(1));
    assert!(tokens.get(PATH).await.is_err(), "still held");
    clock.advance(Duration::from_millis(1));
    assert_eq!(tokens.get(PATH).await.unwrap().access_token(), "ya29.good");
    assert_eq!(mds.requests(PATH), 2);
}

#[tokio::test]
async fn a_transient_failure_is_not_held() {
    let (_, mds, tokens) = setup();
    mds.set_down(true);
    assert!(tokens.get(PATH).await.is_err());
    mds.set_down(false);
    answer(&mds, "ya29.back", 3600);
    assert_eq!(tokens.get(PATH).await.unwrap().access_token(), "ya29.back");
}

fn jwt(exp: u64) -> String {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    format!("{}.{}.sig", b64(r#"{"alg":"RS256"}"#), b64(&format!(r#"{{"aud":"a","exp":{exp}}}"#)))
}

#[tokio::test]
async fn identity_tokens_live_until_exp_and_are_refreshed_a_margin_before() {
    let (clock, mds, tokens) = setup();
    let path = "instance/service-accounts/default/identity?audience=a";
    let unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    mds.set(path, &jwt(unix.as_secs() + 3600));
    let token = tokens.get(path).await.unwrap();
    assert_eq!(token.access_token(), jwt(unix.as_secs() + 3600));
    let left = token.expiry().remaining(&*clock).as_secs();
    assert!((3590..=3600).contains(&left), "{left}");
    mds.set(path, &jwt(unix.as_secs() + 7200));
    clock.advance(Duration::from_secs(3000));
    tokens.get(path).await.unwrap();
    assert_eq!(mds.requests(path), 1, "cached until exp - margin");
    clock.advance(Duration::from_secs(400));
    tokens.refresh_due().await;
    assert_eq!(tokens.get(path).await.unwrap().access_token(), jwt(unix.as_secs() + 7200));
    assert_eq!(mds.requests(path), 2);
    // Not read for over an hour (no background refresh): at exp - margin it is not served.
    mds.set(path, &jwt(unix.as_secs() + 9000));
    clock.advance(Duration::from_secs(6900));
    assert_eq!(tokens.get(path).await.unwrap().access_token(), jwt(unix.as_secs() + 7200));
    clock.advance(Duration::from_secs(100));
    assert_eq!(tokens.get(path).await.unwrap().access_token(), jwt(unix.as_secs() + 9000));
    assert_eq!(mds.requests(path), 3);
    for bad in ["not-a-jwt", "a.!!!.c", &jwt(1)] {
        mds.set("x/identity?audience=b", bad);
        assert!(tokens.get("x/identity?audience=b").await.is_err(), "{bad}");
    }
}

#[tokio::test]
async fn an_account_keeps_at_most_sixteen_scope_sets_least_recently_used_dropped_first() {
    let (clock, mds, tokens) = setup();
    let path = |i: usize| format!("{PATH}?enforce_scopes=true&scopes=s{i}");
    for i in 0..=MAX_SCOPE_SETS {
        let body = format!(r#"{{"access_token":"ya29.s{i}","expires_in":3599}}"#);
        mds.set(&path(i), &body);
    }
    answer(&mds, "ya29.full", 3599);
    tokens.get(PATH).await.unwrap();
    for i in 0..MAX_SCOPE_SETS {
        tokens.get(&path(i)).await.unwrap();
        clock.advance(Duration::from_secs(1));
    }
    tokens.get(&path(0)).await.unwrap(); // set 1 is now the least recently read
    clock.advance(Duration::from_secs(1));
    tokens.get(&path(MAX_SCOPE_SETS)).await.unwrap();
    let held: Vec<String> = tokens.slots.lock().unwrap().keys().cloned().collect();
    assert_eq!(held.len(), MAX_SCOPE_SETS + 1, "sixteen sets and the plain token: {held:?}");
    assert!(!held.contains(&path(1)) && held.contains(&path(0)) && held.contains(&PATH.into()));
    tokens.get(&path(1)).await.unwrap();
    assert_eq!(mds.requests(&path(1)), 2, "a dropped set is fetched again");
}

#[test]
fn identity_lifetimes_are_checked_at_their_bounds() {
    use base64::Engine;
    const NOW: i64 = 1_800_000_000;
    let jwt = |exp: i64| {
        let payload = format!(r#"{{"aud":"a","exp":{exp}}}"#);
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(payload);
        format!("eyJhbGciOiJSUzI1NiJ9.{payload}.c2ln")
    };
    let parse =
        |body: &str| Token::parse_identity_at("p/identity", body.as_bytes(), Instant::now(), NOW);
    let day = MAX_LIFETIME.as_secs() as i64;
    assert!(parse(&jwt(NOW + day)).is_ok(), "a day is the longest a token lives");
    assert!(matches!(parse(&jwt(NOW + day + 1)), Err(Error::Misconfigured { .. })));
    let requested = Instant::now();
    let soon = Token::parse_identity_at("p/identity", jwt(NOW + 1).as_bytes(), requested, NOW);
    assert_eq!(soon.unwrap().expiry().instant() - requested, Duration::from_secs(1));
    assert!(matches!(parse(&jwt(NOW)), Err(Error::Unavailable { .. })), "expired");
    for bad in ["", "no dots here", "a.b c.d", "a.%%%.c"] {
        assert!(matches!(parse(bad), Err(Error::Misconfigured { .. })), "{bad:?}");
    }
}

#[test]
fn tags_tell_tokens_apart_and_are_never_zero() {
    let token = |t: &str| {
        let body = format!(r#"{{"access_token":"{t}","expires_in":100}}"#);
        Token::parse(PATH, body.as_bytes(), Instant::now()).unwrap()
    };
    let tags: Vec<u64> = ["ya29.a", "ya29.b", "ya29.c", "ya29.d"].map(|t| token(t).tag()).to_vec();
    assert_eq!(tags[0], token("ya29.a").tag(), "the same token, the same tag");
    for (i, tag) in tags.iter().enumerate() {
        // 0 is what a value that is no token carries (tree.rs).
        assert_eq!(tag & 1, 1, "{tag}");
        assert!(tags[i + 1..].iter().all(|other| other != tag), "{tags:?}");
    }
}

#[tokio::test]
async fn peek_answers_a_usable_token_from_memory_and_nothing_else() {
    let (clock, mds, tokens) = setup();
    answer(&mds, "ya29.one", 300);
    assert!(tokens.peek(PATH).is_none(), "nothing fetched yet");
    tokens.get(PATH).await.unwrap();
    assert_eq!(tokens.peek(PATH).unwrap().access_token(), "ya29.one");
    clock.advance(Duration::from_secs(300) - MIN_LEFT);
    assert_eq!(tokens.peek(PATH).unwrap().access_token(), "ya29.one", "MIN_LEFT left");
    clock.advance(Duration::from_secs(1));
    assert!(tokens.peek(PATH).is_none(), "under MIN_LEFT to live: never served");
    assert_eq!(mds.requests(PATH), 1, "peek never asks the MDS");
}

#[test]
fn an_identity_token_with_a_character_no_jwt_has_is_refused_wherever_it_is() {
    const NOW: i64 = 1_800_000_000;
    let good = jwt(NOW as u64 + 3600);
    let parse = |body: &str| Token::parse_identity_at(PATH, body.as_bytes(), Instant::now(), NOW);
    assert!(parse(&good).is_ok());
    assert!(parse(&format!(" {good}\n")).is_ok(), "surrounding whitespace is trimmed");
    // The payload decodes in each: only the character check refuses them.
    let (header, rest) = good.split_once('.').unwrap();
    for bad in [
        format!("{good}x y"),
        format!("{good}\tz"),
        format!("{good}\nsig"),
        format!("{good}é"),
        format!("{header}\u{7f}.{rest}"),
    ] {
        let err = parse(&bad).unwrap_err();
        assert!(matches!(err, Error::Misconfigured { .. }), "{bad:?}: {err:?}");
    }
}

/// The in-memory MDS with the HTTP client's counters.
#[derive(Debug)]
struct Counted(FakeMds, crate::stats::MdsStats);

impl Mds for Counted {
    async fn get(&self, path: &str) -> Result<bytes::Bytes> {
        self.0.get(path).await
    }

    fn stats(&self) -> Option<&crate::stats::MdsStats> {
        Some(&self.1)
    }
}

#[tokio::test]
async fn an_answer_that_is_no_token_counts_as_a_failed_request_an_outage_only_once() {
    let clock = Arc::new(ManualClock::default());
    let mds = Arc::new(Counted(FakeMds::default(), crate::stats::MdsStats::new("fake")));
    let tokens = Tokens::new(mds.clone(), clock.clone(), Duration::from_secs(240));
    let failures = || mds.1.snapshot().failures;
    mds.0.set(PATH, r#"{"access_token":"bad token","expires_in":3600}"#);
    assert!(matches!(tokens.get(PATH).await, Err(Error::Misconfigured { .. })));
    assert_eq!(failures(), 1, "the client saw a 200: the refusal is counted here");
    clock.advance(FAILURE_HOLD);
    mds.0.set_down(true);
    assert!(tokens.get(PATH).await.is_err());
    assert_eq!(failures(), 1, "an outage is the client's to count");
    assert_eq!(tokens.stats.failed.load(Ordering::Relaxed), 2);
}
