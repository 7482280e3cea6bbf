//! The store's bounds and renewal, on a moved clock against an in-memory MDS: identity slots
//! and scope sets are LRUs that never drop a set in effect or a slot in use, refreshes run a
//! few at a time, the status is counts, and a replaced token is noticed by the periodic recheck
//! or at once by `renew`, paced.

use std::time::Duration;

use super::*;
use crate::clock::ManualClock;
use crate::upstream::testing::FakeMds;

const ACCOUNT: &str = "instance/service-accounts/default";

fn setup() -> (Arc<ManualClock>, Arc<FakeMds>, Arc<Tokens<FakeMds>>) {
    let clock = Arc::new(ManualClock::default());
    let mds = Arc::new(FakeMds::default());
    let tokens = Arc::new(Tokens::new(mds.clone(), clock.clone(), Duration::from_secs(240)));
    (clock, mds, tokens)
}

fn identity(i: usize) -> String {
    format!("{ACCOUNT}/identity?audience=https:%2F%2Fa{i}.example")
}

fn jwt(exp: u64) -> String {
    use base64::Engine;
    let payload = format!(r#"{{"aud":"a","exp":{exp}}}"#);
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(payload);
    format!("eyJhbGciOiJSUzI1NiJ9.{payload}.c2ln")
}

fn access(mds: &FakeMds, path: &str, token: &str) {
    mds.set(path, &format!(r#"{{"access_token":"{token}","expires_in":3599}}"#));
}

fn held(tokens: &Tokens<FakeMds>) -> Vec<String> {
    tokens.slots.lock().unwrap().keys().cloned().collect()
}

#[tokio::test]
async fn identity_slots_are_an_lru_that_never_drops_one_in_use() {
    let (clock, mds, tokens) = setup();
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    for i in 0..200 {
        mds.set(&identity(i), &jwt(exp.as_secs() + 3600));
    }
    let in_use = tokens.slot(&identity(0));
    for i in 1..200 {
        tokens.get(&identity(i)).await.unwrap();
        clock.advance(Duration::from_millis(10));
    }
    let held = held(&tokens);
    assert!(held.len() <= MAX_IDENTITIES, "{} identity slots", held.len());
    assert!(held.contains(&identity(0)), "the slot in use was dropped");
    assert!(held.contains(&identity(199)) && !held.contains(&identity(1)));
    let status = tokens.status();
    assert_eq!(status.held[Kind::Identity as usize], MAX_IDENTITIES as u64 - 1);
    assert!(status.plain.is_empty(), "no audience in the status");
    let logged = slots::redacted(format!("{}: unavailable", identity(7)), &identity(7));
    assert_eq!(logged, format!("{ACCOUNT}/identity?…: unavailable"), "no audience in a log");
    let scoped = format!("{ACCOUNT}/token?scopes=s1");
    assert_eq!(slots::shown(&scoped), scoped, "a scope set is no secret: shown whole");
    assert_eq!(slots::shown(ACCOUNT), ACCOUNT);
    drop(in_use);
}

#[tokio::test]
async fn the_scope_set_in_effect_is_never_dropped() {
    let (clock, mds, tokens) = setup();
    let set = |i: usize| format!("{ACCOUNT}/token?enforce_scopes=true&scopes=s{i}");
    for i in 0..100 {
        access(&mds, &set(i), &format!("ya29.s{i}"));
    }
    tokens.get(&set(0)).await.unwrap();
    tokens.in_effect(&set(0));
    for i in 1..100 {
        clock.advance(Duration::from_secs(1));
        tokens.get(&set(i)).await.unwrap();
    }
    let kept = held(&tokens);
    assert_eq!(kept.len(), MAX_SCOPE_SETS);
    assert!(kept.contains(&set(0)), "the set a scopes write installed was dropped");
    tokens.in_effect(&format!("{ACCOUNT}/token"));
    clock.advance(Duration::from_secs(1));
    tokens.get(&set(100 - 1)).await.unwrap();
    access(&mds, &set(100), "ya29.new");
    tokens.get(&set(100)).await.unwrap();
    assert!(!held(&tokens).contains(&set(0)), "no longer in effect: an ordinary set");
}

#[tokio::test]
async fn refreshes_run_a_few_at_a_time() {
    let (clock, mds, tokens) = setup();
    let set = |i: usize| format!("{ACCOUNT}{i}/token");
    for i in 0..40 {
        access(&mds, &set(i), "ya29.a");
        tokens.get(&set(i)).await.unwrap();
    }
    clock.advance(RECHECK);
    let release = mds.hold();
    let refresh = tokio::spawn({
        let tokens = tokens.clone();
        async move { tokens.refresh_due().await }
    });
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
    assert_eq!(mds.total_requests(), 40 + REFRESH_CONCURRENCY, "refreshes in flight at once");
    release.send(true).unwrap();
    refresh.await.unwrap();
    assert_eq!(mds.total_requests(), 80, "every due token refreshed in the end");
}

#[tokio::test]
async fn a_replaced_token_is_noticed_by_the_recheck_or_at_once_by_renew_paced() {
    let (clock, mds, tokens) = setup();
    let path = format!("{ACCOUNT}/token");
    access(&mds, &path, "ya29.old");
    tokens.get(&path).await.unwrap();
    access(&mds, &path, "ya29.replaced");
    clock.advance(RECHECK - Duration::from_secs(1));
    tokens.refresh_due().await;
    assert_eq!(tokens.get(&path).await.unwrap().access_token(), "ya29.old");
    clock.advance(Duration::from_secs(1));
    tokens.refresh_due().await;
    assert_eq!(tokens.get(&path).await.unwrap().access_token(), "ya29.replaced");
    assert_eq!(mds.requests(&path), 2, "one recheck");

    access(&mds, &path, "ya29.third");
    tokens.renew(&path).await.unwrap();
    assert_eq!(tokens.get(&path).await.unwrap().access_token(), "ya29.third");
    access(&mds, &path, "ya29.fourth");
    for _ in 0..100 {
        tokens.renew(&path).await.unwrap();
    }
    assert_eq!(mds.requests(&path), 3, "renewals within REPOLL share the last answer");
    clock.advance(REPOLL);
    tokens.renew(&path).await.unwrap();
    assert_eq!(tokens.get(&path).await.unwrap().access_token(), "ya29.fourth");
    assert_eq!(mds.requests(&path), 4);
}

#[tokio::test]
async fn renew_answers_an_outage_as_an_expired_token_and_a_refusal_as_it_is() {
    let (clock, mds, tokens) = setup();
    let path = format!("{ACCOUNT}/token");
    mds.set_down(true);
    let err = tokens.renew(&path).await.unwrap_err();
    assert_eq!(err, Error::TokenExpired { path: path.clone() });
    mds.set_down(false);
    clock.advance(REPOLL);
    let refused = Error::Forbidden { path: path.clone() };
    mds.fail(&path, refused.clone());
    assert_eq!(tokens.renew(&path).await.unwrap_err(), refused, "EACCES, not EIO");
    assert_eq!(mds.requests(&path), 2);
}

#[tokio::test]
async fn only_a_token_that_replaced_another_is_told_to_the_watcher() {
    let (clock, mds, tokens) = setup();
    let mut installs = tokens.watch_installs();
    let path = format!("{ACCOUNT}/token");
    access(&mds, &path, "ya29.first");
    tokens.get(&path).await.unwrap();
    assert!(installs.try_recv().is_err(), "the first token replaced none");
    clock.advance(RECHECK);
    tokens.refresh_due().await;
    assert_eq!(mds.requests(&path), 2);
    assert!(installs.try_recv().is_err(), "the same token again replaced none");
    access(&mds, &path, "ya29.second");
    clock.advance(RECHECK);
    tokens.refresh_due().await;
    assert_eq!(installs.try_recv().unwrap(), path);
    assert!(installs.try_recv().is_err(), "told once");
}
