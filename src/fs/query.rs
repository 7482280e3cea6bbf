//! Query names (SPEC §2.3): `NAME?k=v&k2=v2` is `NAME` asked with those parameters, so every
//! request the MDS answers is one `cat` away.
//!
//! Invariants:
//! - A name is parsed and checked completely before anything is sent: a parameter outside the
//!   allow-list, a repeated or empty key, a value that is not what its key takes, a bad
//!   `%`-escape, or an escape decoding to a control character or a `..` path segment is
//!   EINVAL with no request made.
//! - `/` cannot appear in a file name, so inside a value it is written `%2F`; values are
//!   decoded here and encoded again when sent, so what reaches the MDS is exactly the value.
//! - Parameters are canonical (sorted keys, normalised values; scope sets expanded, sorted and
//!   deduplicated), so every spelling of one request is one cache entry and one MDS request.
//! - Token and identity query names go to the token slots (`token.rs`): same refresh,
//!   single-flight and never-expired rules as `token`. `wait_for_change` reads are never cached.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::fs::node::{Form, Target};
use crate::paths;

/// The longest `timeout_sec` a waiting read may ask for (an hour).
pub const MAX_TIMEOUT_SEC: u64 = 3600;

/// What a short scope name stands for (`devstorage.read_only`).
pub const SCOPE_PREFIX: &str = "https://www.googleapis.com/auth/";

/// The parameters the MDS takes, and nothing else (SPEC §2.3).
const ALLOWED: &[&str] = &[
    "alt",
    "audience",
    "format",
    "last_etag",
    "licenses",
    "recursive",
    "scopes",
    "timeout_sec",
    "wait_for_change",
];

/// A parsed query name: the name before `?` and its canonical parameters, sorted by key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub base: String,
    pub params: Vec<(&'static str, String)>,
}

impl Query {
    fn get(&self, key: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| *k == key).map(|(_, v)| v.as_str())
    }

    fn only(&self, keys: &[&str], what: &str) -> Result<()> {
        match self.params.iter().find(|(k, _)| !keys.contains(k)) {
            Some((k, _)) => Err(invalid(&format!("{what} takes no {k} parameter"))),
            None => Ok(()),
        }
    }

    /// The query string as sent: canonical order, values percent-encoded.
    pub fn encoded(&self) -> String {
        let pairs: Vec<String> =
            self.params.iter().map(|(k, v)| format!("{k}={}", encode(v))).collect();
        pairs.join("&")
    }
}

fn invalid(why: &str) -> Error {
    Error::InvalidName(why.to_string())
}

/// `Some` if `name` is a query name (it has a `?`), parsed and checked; `None` for a plain name.
pub fn parse(name: &str) -> Result<Option<Query>> {
    let Some((base, query)) = name.split_once('?') else {
        return Ok(None);
    };
    if !base.is_empty() {
        paths::check_name(std::ffi::OsStr::new(base))?;
    }
    if query.is_empty() {
        return Err(invalid("empty query"));
    }
    let mut params: Vec<(&'static str, String)> = Vec::new();
    for pair in query.split('&') {
        let (key, raw) = pair.split_once('=').ok_or_else(|| invalid("parameter without =value"))?;
        if key.is_empty() {
            return Err(invalid("empty parameter name"));
        }
        let Some(&key) = ALLOWED.iter().find(|k| **k == key) else {
            return Err(invalid("unknown query parameter"));
        };
        if params.iter().any(|(k, _)| *k == key) {
            return Err(invalid("repeated query parameter"));
        }
        params.push((key, canonical(key, &decode(raw)?)?));
    }
    params.sort();
    Ok(Some(Query { base: base.to_string(), params }))
}

/// `%xx` decoding. Invalid escapes, non-UTF-8, control characters and `..` path segments are
/// refused: no value the MDS takes needs them, and they are how paths get smuggled.
fn decode(raw: &str) -> Result<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = raw.get(i + 1..i + 3).ok_or_else(|| invalid("truncated %-escape"))?;
            if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(invalid("bad %-escape"));
            }
            out.push(u8::from_str_radix(hex, 16).map_err(|_| invalid("bad %-escape"))?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    let value = String::from_utf8(out).map_err(|_| invalid("%-escape that is not UTF-8"))?;
    if value.chars().any(char::is_control) {
        return Err(invalid("control character in a query value"));
    }
    if value.split('/').any(|segment| segment == "..") {
        return Err(invalid(".. in a query value"));
    }
    Ok(value)
}

/// Percent-encode everything but unreserved characters and `,` (the scope list separator).
fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~,".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The one spelling of `value` for `key`, or EINVAL if `key` cannot take it.
fn canonical(key: &str, value: &str) -> Result<String> {
    let boolean = |t: &str, f: &str| match value.to_ascii_lowercase().as_str() {
        "true" | "on" | "yes" | "1" => Ok(t.to_string()),
        "false" | "off" | "no" | "0" => Ok(f.to_string()),
        _ => Err(invalid(&format!("{key} is true or false"))),
    };
    match key {
        "recursive" | "wait_for_change" => boolean("true", "false"),
        "licenses" => boolean("TRUE", "FALSE"),
        "alt" => match value.to_ascii_lowercase().as_str() {
            v @ ("json" | "text") => Ok(v.to_string()),
            _ => Err(invalid("alt is json or text")),
        },
        "format" => match value {
            "standard" | "full" => Ok(value.to_string()),
            _ => Err(invalid("format is standard or full")),
        },
        // Bounded: a waiting read holds a descriptor upstream for as long as it waits.
        "timeout_sec" => match value.parse::<u32>() {
            Ok(n) if u64::from(n) <= MAX_TIMEOUT_SEC => Ok(n.to_string()),
            _ => Err(invalid("timeout_sec is a whole number of seconds, at most 3600")),
        },
        "last_etag" if !value.is_empty() && value.chars().all(|c| c.is_ascii_alphanumeric()) => {
            Ok(value.to_string())
        }
        "last_etag" => Err(invalid("last_etag is an ETag")),
        "audience" if value.is_empty() => Err(invalid("empty audience")),
        "scopes" => Ok(canonical_scopes(value.split(','))?.join(",")),
        _ => Ok(value.to_string()),
    }
}

/// Scopes expanded (`NAME` → `https://www.googleapis.com/auth/NAME`), sorted and deduplicated.
/// Empty items are skipped; an empty set is EINVAL.
pub fn canonical_scopes<'a>(items: impl IntoIterator<Item = &'a str>) -> Result<Vec<String>> {
    let mut scopes = Vec::new();
    for item in items.into_iter().map(str::trim).filter(|s| !s.is_empty()) {
        if !item.chars().all(|c| c.is_ascii_graphic() && c != ',') {
            return Err(invalid("a scope with a character no scope has"));
        }
        let scope = if item.starts_with("https://") || item.starts_with("http://") {
            item.to_string()
        } else {
            format!("{SCOPE_PREFIX}{item}")
        };
        scopes.push(scope);
    }
    if scopes.is_empty() {
        return Err(invalid("no scopes"));
    }
    scopes.sort();
    scopes.dedup();
    Ok(scopes)
}

/// The MDS path of a token of `account_dir` narrowed to `scopes`. Always `enforce_scopes=true`:
/// the MDS then either really narrows the token or refuses (metadata-api.md §5.2), so a
/// broader token is never served under a narrower name.
pub fn scoped_token_path(account_dir: &str, scopes: &[String]) -> String {
    format!("{account_dir}/token?enforce_scopes=true&scopes={}", encode(&scopes.join(",")))
}

/// Whether the base of a query name is in its directory's listing, and as what.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Base {
    Dir,
    Value,
    Unlisted,
}

/// What `query`, looked up in directory `dir`, asks for. `scoped_tokens` is whether the mount
/// lets users ask for other scopes.
pub fn target(dir: &str, query: &Query, base: Base, scoped_tokens: bool) -> Result<Target> {
    let account = paths::service_account(dir).is_some();
    let name = query.base.as_str();
    if let (true, Some(form)) = (account, Form::of(name)) {
        query.only(&["scopes"], name)?;
        let scopes = query.get("scopes").map(|s| s.split(',').map(String::from).collect());
        if !scoped_tokens {
            return Err(Error::NotPermitted("scoped tokens need -o scoped_tokens".into()));
        }
        let account_dir = dir.to_string();
        return Ok(Target::Scoped { account_dir, scopes: scopes.unwrap_or_default(), form });
    }
    if account && name == "identity" {
        query.only(&["audience", "format", "licenses"], name)?;
        if query.get("audience").is_none() {
            return Err(invalid("identity needs ?audience="));
        }
        return Ok(Target::Identity { path: format!("{dir}/identity?{}", query.encoded()) });
    }
    query.only(&["alt", "last_etag", "recursive", "timeout_sec", "wait_for_change"], name)?;
    let base_path = match base {
        _ if name.is_empty() => format!("{dir}/").trim_start_matches('/').to_string(),
        Base::Dir => format!("{}/", paths::child_path(dir, name)),
        Base::Value => paths::child_path(dir, name),
        Base::Unlisted => return Err(Error::NotFound),
    };
    let path = format!("{base_path}?{}", query.encoded());
    if query.get("wait_for_change") == Some("true") {
        let limit = query.get("timeout_sec").and_then(|s| s.parse().ok());
        let limit = limit.map(Duration::from_secs);
        return Ok(Target::Wait { path, base: base_path, limit });
    }
    if query.get("last_etag").is_some() || query.get("timeout_sec").is_some() {
        return Err(invalid("last_etag and timeout_sec need wait_for_change=true"));
    }
    Ok(Target::Plain { path })
}

#[cfg(test)]
#[path = "query_tests.rs"]
mod tests;
