//! Access tokens, identity JWTs and `tokeninfo`.
//!
//! Invariants (metadata-api.md §5.2, §5.3):
//! - one cached access token per (account email, scope set); `default` and the account's email
//!   share it. It is handed out again while more than `cache_window` remains ("the metadata server
//!   caches access tokens until they have 5 minutes of remaining time"), with `expires_in` counting
//!   down in whole seconds; after that a new one with the full lifetime is minted;
//! - identity tokens are new on every request and expire one hour after issue (`exp = iat + 3600`);
//! - tokens are unmistakably fake (`ya29.emulated.…`, signature bytes that sign nothing) but shaped
//!   like real ones. Their bytes are never logged.
//!
//! All time is passed in (`now`, Unix milliseconds) so tests move the clock instead of sleeping.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};

/// Unix time in milliseconds.
pub(crate) type Millis = u64;

#[derive(Debug)]
struct Issued {
    email: String,
    account: String,
    scopes: Vec<String>,
    expiry: Millis,
    revoked: bool,
    serial: u64,
}

#[derive(Debug)]
pub(crate) struct Tokens {
    lifetime: Millis,
    window: Millis,
    serial: u64,
    /// (email, sorted scopes) → token string.
    cache: HashMap<(String, Vec<String>), String>,
    /// Every token ever issued, for tokeninfo.
    issued: HashMap<String, Issued>,
}

/// Claims of an identity token that come from the instance (`format=full`).
#[derive(Debug, Default)]
pub(crate) struct InstanceClaims {
    pub(crate) instance_id: String,
    pub(crate) instance_name: String,
    pub(crate) project_id: String,
    pub(crate) project_number: String,
    pub(crate) zone: String,
    pub(crate) creation_timestamp: u64,
    pub(crate) licenses: Vec<String>,
}

impl Tokens {
    pub(crate) fn new(lifetime: std::time::Duration, window: std::time::Duration) -> Tokens {
        Tokens {
            lifetime: Millis::try_from(lifetime.as_millis()).unwrap_or(Millis::MAX),
            window: Millis::try_from(window.as_millis()).unwrap_or(Millis::MAX),
            serial: 0,
            cache: HashMap::new(),
            issued: HashMap::new(),
        }
    }

    /// The token body for `account` (as requested: `default` or the email).
    pub(crate) fn access_token(
        &mut self,
        account: &str,
        email: &str,
        scopes: &[String],
        now: Millis,
    ) -> String {
        let mut key_scopes = scopes.to_vec();
        key_scopes.sort();
        key_scopes.dedup();
        let key = (email.to_string(), key_scopes);
        let current = self
            .cache
            .get(&key)
            .and_then(|t| self.issued.get(t).map(|i| (t, i)))
            .filter(|(_, i)| !i.revoked && i.expiry > now && i.expiry - now > self.window)
            .map(|(t, i)| (t.clone(), i.expiry));
        let (token, expiry) = match current {
            Some(found) => found,
            None => {
                self.serial += 1;
                let token = mint(email, scopes, self.serial);
                // A fresh token reads `"expires_in":3599` on a real VM (§5.2): the hour started
                // a moment before the answer.
                let expiry = now.saturating_add(self.lifetime).saturating_sub(1);
                self.issued.insert(
                    token.clone(),
                    Issued {
                        email: email.to_string(),
                        account: account.to_string(),
                        scopes: scopes.to_vec(),
                        expiry,
                        revoked: false,
                        serial: self.serial,
                    },
                );
                self.cache.insert(key, token.clone());
                (token, expiry)
            }
        };
        let expires_in = (expiry - now) / 1000;
        format!(
            "{{\"access_token\":{},\"expires_in\":{expires_in},\"token_type\":\"Bearer\"}}",
            super::tree::json_string(&token)
        )
    }

    /// Treats the current tokens of `email` (all accounts if `None`) as expired; with `revoke`,
    /// tokeninfo also reports them revoked. Returns how many tokens were affected.
    pub(crate) fn expire(&mut self, email: Option<&str>, revoke: bool, now: Millis) -> usize {
        let mut n = 0;
        self.cache.retain(|(e, _), token| {
            if email.is_some_and(|want| want != e) {
                return true;
            }
            if let Some(i) = self.issued.get_mut(token) {
                i.expiry = i.expiry.min(now);
                i.revoked |= revoke;
                n += 1;
            }
            false
        });
        n
    }

    /// What the emulator knows about `token`, or `None` if it never issued it.
    pub(crate) fn info(&self, token: &str, now: Millis) -> Option<Value> {
        let i = self.issued.get(token)?;
        let expires_in = (i.expiry as i64 - now as i64).div_euclid(1000);
        Some(json!({
            "email": i.email,
            "account": i.account,
            "scopes": i.scopes,
            "expires_in": expires_in,
            "expired": i.expiry <= now,
            "revoked": i.revoked,
            "serial": i.serial,
        }))
    }

    /// A fresh identity token (§5.3). `full` adds the `google.compute_engine` claims, and
    /// `licenses` (only with `full`) their license ids.
    pub(crate) fn identity(
        &mut self,
        audience: &str,
        email: &str,
        full: Option<(&InstanceClaims, bool)>,
        now: Millis,
    ) -> String {
        self.serial += 1;
        let iat = now / 1000;
        let sub = numeric_id(email);
        let mut payload = serde_json::Map::new();
        payload.insert("aud".into(), json!(audience));
        payload.insert("azp".into(), json!(sub));
        payload.insert("email".into(), json!(email));
        payload.insert("email_verified".into(), json!(true));
        payload.insert("exp".into(), json!(iat + 3600));
        if let Some((c, licenses)) = full {
            let number: Value =
                serde_json::from_str(&c.project_number).unwrap_or_else(|_| json!(c.project_number));
            let mut ce = json!({
                "instance_creation_timestamp": c.creation_timestamp,
                "instance_id": c.instance_id,
                "instance_name": c.instance_name,
                "project_id": c.project_id,
                "project_number": number,
                "zone": c.zone,
            });
            if licenses {
                ce["license_id"] = json!(c.licenses);
            }
            payload.insert("google".into(), json!({ "compute_engine": ce }));
        }
        payload.insert("iat".into(), json!(iat));
        payload.insert("iss".into(), json!("https://accounts.google.com"));
        payload.insert("sub".into(), json!(sub));
        let header = r#"{"alg":"RS256","kid":"emulated-metadata-server","typ":"JWT"}"#;
        let body = Value::Object(payload).to_string();
        format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(body),
            URL_SAFE_NO_PAD.encode(filler(&(email, self.serial, "sig"), 256))
        )
    }
}

/// `ya29.emulated.<base64url(email|scopes|serial)>.<filler>`.
fn mint(email: &str, scopes: &[String], serial: u64) -> String {
    let what = format!("{email}|{}|{serial}", scopes.join(","));
    format!(
        "ya29.emulated.{}.{}",
        URL_SAFE_NO_PAD.encode(what),
        URL_SAFE_NO_PAD.encode(filler(&(email, serial), 96))
    )
}

/// Differs between runs, so a token from an earlier emulator is never mistaken for one of
/// this run's.
fn process_seed() -> u64 {
    use std::hash::BuildHasher;
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *SEED.get_or_init(|| std::collections::hash_map::RandomState::new().hash_one(0u8))
}

/// Deterministic (within a run) bytes that look random (they are not secret: nothing here is a credential).
fn filler<T: Hash>(seed: &T, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    let mut round = 0u64;
    while out.len() < len {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        process_seed().hash(&mut h);
        seed.hash(&mut h);
        round.hash(&mut h);
        out.extend_from_slice(&h.finish().to_le_bytes());
        round += 1;
    }
    out.truncate(len);
    out
}

/// A stable 21-digit numeric id for an account, like the `sub` of real Google tokens.
fn numeric_id(email: &str) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    email.hash(&mut h);
    format!("1{:020}", h.finish() as u128 * 10 % 100_000_000_000_000_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const EMAIL: &str = "sa@p.iam.gserviceaccount.com";

    fn parse(body: &str) -> (String, u64) {
        let v: Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["token_type"], "Bearer");
        (v["access_token"].as_str().unwrap().to_string(), v["expires_in"].as_u64().unwrap())
    }

    #[test]
    fn same_token_until_the_cache_window() {
        let mut t = Tokens::new(Duration::from_secs(3600), Duration::from_secs(300));
        let scopes = vec!["s1".to_string()];
        let t0 = 1_000_000_000;
        let (a, e) = parse(&t.access_token("default", EMAIL, &scopes, t0));
        assert_eq!(e, 3599);
        let (b, e) = parse(&t.access_token(EMAIL, EMAIL, &scopes, t0 + 1_500));
        assert_eq!((b.as_str(), e), (a.as_str(), 3598));
        // Just over 300 s left: still cached. Under: a new one.
        let (c, e) = parse(&t.access_token("default", EMAIL, &scopes, t0 + 3_299_000));
        assert_eq!((c.as_str(), e), (a.as_str(), 300));
        let (d, e) = parse(&t.access_token("default", EMAIL, &scopes, t0 + 3_300_000));
        assert_ne!(d, a);
        assert_eq!(e, 3599);
        assert!(d.starts_with("ya29.emulated."));
        let info = t.info(&a, t0 + 3_300_000).unwrap();
        assert_eq!(info["expires_in"], 299);
        assert_eq!(info["serial"], 1);
        assert_eq!(info["account"], "default");
    }

    #[test]
    fn scope_sets_have_their_own_tokens() {
        let mut t = Tokens::new(Duration::from_secs(3600), Duration::from_secs(300));
        let (a, _) = parse(&t.access_token("default", EMAIL, &["a".into(), "b".into()], 0));
        let (b, _) = parse(&t.access_token("default", EMAIL, &["b".into(), "a".into()], 0));
        let (c, _) = parse(&t.access_token("default", EMAIL, &["a".into()], 0));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(t.info(&c, 0).unwrap()["scopes"], json!(["a"]));
    }

    #[test]
    fn expire_and_revoke() {
        let mut t = Tokens::new(Duration::from_secs(3600), Duration::from_secs(300));
        let (a, _) = parse(&t.access_token("default", EMAIL, &[], 0));
        let (o, _) = parse(&t.access_token("default", "other@x", &[], 0));
        assert_eq!(t.expire(Some(EMAIL), false, 10_000), 1);
        let info = t.info(&a, 10_000).unwrap();
        assert_eq!((info["expired"].clone(), info["revoked"].clone()), (json!(true), json!(false)));
        let (b, _) = parse(&t.access_token("default", EMAIL, &[], 10_000));
        assert_ne!(a, b);
        assert_eq!(t.expire(None, true, 20_000), 2);
        assert_eq!(t.info(&o, 20_000).unwrap()["revoked"], true);
        assert!(t.info("ya29.forged", 0).is_none());
    }

    #[test]
    fn identity_shape() {
        let mut t = Tokens::new(Duration::from_secs(3600), Duration::from_secs(300));
        let claims = InstanceClaims {
            instance_id: "1".into(),
            project_number: "42".into(),
            licenses: vec!["7".into()],
            ..Default::default()
        };
        let a = t.identity("aud", EMAIL, Some((&claims, true)), 5_000_000);
        let b = t.identity("aud", EMAIL, None, 5_000_000);
        assert_ne!(a, b);
        let parts: Vec<&str> = a.split('.').collect();
        assert_eq!(parts.len(), 3);
        let payload: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(payload["exp"], 5000 + 3600);
        assert_eq!(payload["aud"], "aud");
        assert_eq!(payload["google"]["compute_engine"]["project_number"], 42);
        assert_eq!(payload["google"]["compute_engine"]["license_id"], json!(["7"]));
        assert_eq!(numeric_id(EMAIL).len(), 21);
    }
}
