//! One access or identity token as the MDS handed it out: parsed and checked (RFC 6750
//! characters, a sane lifetime, a JWT's `exp`), rendered as the MDS's JSON with `expires_in`
//! as of now, and tagged so a file can tell one token from the next without holding it.
//!
//! The bytes live only here; `Debug` is redacted and no log line carries them.

use std::fmt;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::clock::{Expiry, SharedClock};
use crate::error::{Error, Result};

/// Longer than any real token lives: a bigger `expires_in` means the endpoint is not an MDS.
/// A token with less left than this is never served: by the time a caller has read it, built
/// a request and sent it, it would have expired (and `expires_in` 0 tells a client nothing).
pub const MIN_LEFT: Duration = Duration::from_secs(5);
pub(crate) const MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);

#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    access_token: String,
    token_type: String,
    expiry: Expiry,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token").field("access_token", &"<redacted>").finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct TokenJson {
    access_token: String,
    expires_in: i64,
    #[serde(default = "bearer")]
    token_type: String,
}

fn bearer() -> String {
    "Bearer".into()
}

impl Token {
    /// Parse the MDS token response fetched from `path`. An undecodable body means the endpoint
    /// is not a real MDS; the error names the path, never the body.
    /// `requested` is when the request was sent: the MDS counted `expires_in` from no earlier
    /// than that, so anchoring there never believes a token lives longer than it does.
    pub fn parse(path: &str, body: &[u8], requested: Instant) -> Result<Token> {
        let misconfigured = |reason: &str| Error::Misconfigured {
            path: path.into(),
            reason: format!("undecodable token JSON ({reason})"),
        };
        let json: TokenJson = serde_json::from_slice(body).map_err(|e| {
            // serde's message can quote the input; keep only its category.
            misconfigured(&format!("{:?} error", e.classify()))
        })?;
        if !is_b64token(&json.access_token) {
            return Err(misconfigured("access_token is not an RFC 6750 token"));
        }
        if json.expires_in > MAX_LIFETIME.as_secs() as i64 {
            return Err(misconfigured("expires_in out of range"));
        }
        if json.expires_in < MIN_LEFT.as_secs() as i64 {
            return Err(Error::Unavailable {
                path: path.into(),
                reason: format!(
                    "the metadata server handed out a token with under {} s left",
                    MIN_LEFT.as_secs()
                ),
            });
        }
        Ok(Token {
            access_token: json.access_token,
            token_type: json.token_type,
            expiry: Expiry::after(requested, Duration::from_secs(json.expires_in as u64)),
        })
    }

    /// An identity token (a JWT) fetched from `path`: valid until its `exp` claim. It is new on
    /// every request (reference/metadata-api.md §5.3), so the slot's refresh always replaces it.
    pub fn parse_identity(path: &str, body: &[u8], requested: Instant) -> Result<Token> {
        let unix_now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        Token::parse_identity_at(path, body, requested, unix_now)
    }

    /// [`Token::parse_identity`] with the wall clock's Unix time given, so tests can pin it.
    pub(crate) fn parse_identity_at(
        path: &str,
        body: &[u8],
        requested: Instant,
        unix_now: i64,
    ) -> Result<Token> {
        use base64::Engine;
        let misconfigured = |reason: &str| Error::Misconfigured {
            path: path.into(),
            reason: format!("undecodable identity token ({reason})"),
        };
        let jwt = std::str::from_utf8(body).map_err(|_| misconfigured("not UTF-8"))?.trim();
        if jwt.is_empty() || !jwt.chars().all(|c| c.is_ascii_graphic()) {
            return Err(misconfigured("not a JWT"));
        }
        let payload = jwt.split('.').nth(1).ok_or_else(|| misconfigured("not a JWT"))?;
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload.trim_end_matches('='))
            .map_err(|_| misconfigured("payload is not base64url"))?;
        #[derive(Deserialize)]
        struct Claims {
            exp: i64,
        }
        let claims: Claims =
            serde_json::from_slice(&payload).map_err(|_| misconfigured("no exp claim"))?;
        let left = claims.exp.saturating_sub(unix_now);
        if left > MAX_LIFETIME.as_secs() as i64 {
            return Err(misconfigured("exp out of range"));
        }
        if left < 1 {
            return Err(Error::Unavailable {
                path: path.into(),
                reason: "the metadata server handed out an expired identity token".into(),
            });
        }
        Ok(Token {
            access_token: jwt.to_string(),
            token_type: "Bearer".into(),
            expiry: Expiry::after(requested, Duration::from_secs(left as u64)),
        })
    }

    pub fn access_token(&self) -> &str {
        &self.access_token
    }

    pub fn expiry(&self) -> Expiry {
        self.expiry
    }

    /// Which token this is, as a number that tells tokens apart without carrying one: files
    /// rendered from a token remember it to notice a refresh.
    pub fn tag(&self) -> u64 {
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
        BuildHasherDefault::<DefaultHasher>::default().hash_one(&self.access_token) | 1
    }

    /// Whole seconds left, as the MDS counts them.
    pub fn expires_in(&self, clock: &SharedClock) -> u64 {
        self.expiry.remaining(&**clock).as_secs()
    }

    /// The MDS's JSON with `expires_in` as of now, never the number seen at fetch time.
    pub fn render_json(&self, clock: &SharedClock) -> Vec<u8> {
        self.render_json_with(self.expires_in(clock))
    }

    /// The MDS's JSON saying `expires_in` seconds are left.
    pub fn render_json_with(&self, expires_in: u64) -> Vec<u8> {
        serde_json::json!({
            "access_token": self.access_token,
            "expires_in": expires_in,
            "token_type": self.token_type,
        })
        .to_string()
        .into_bytes()
    }
}

/// RFC 6750 §2.1 `b64token`: `1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
/// Anything else (a space, a quote, a newline) would split or break an unquoted
/// `Authorization: Bearer $(cat access_token)`.
pub fn is_b64token(token: &str) -> bool {
    let body = token.trim_end_matches('=');
    !body.is_empty() && body.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
}
