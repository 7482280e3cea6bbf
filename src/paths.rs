//! Paths and names of the metadata server's tree, as this crate spells them: relative to
//! `computeMetadata/v1/`, without a leading or trailing slash (the root is the empty path),
//! each name checked before it is ever sent. Every layer uses these; they use nothing.
//!
//! The MDS decodes no escapes in paths (reference/metadata-api.md §1.1), so a name that would
//! need one can only ever reach a different key, or none: such names are refused, never sent.

use std::ffi::OsStr;

use crate::error::{Error, Result};

/// `path` is `prefix` or below it.
pub fn is_under(path: &str, prefix: &str) -> bool {
    prefix.is_empty()
        || path == prefix
        || path.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('/'))
}

/// The path of `name` inside directory `parent`.
pub fn child_path(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_string()
    } else {
        format!("{parent}/{name}")
    }
}

/// `instance/service-accounts/ACCOUNT` → `Some(ACCOUNT)`.
pub fn service_account(dir: &str) -> Option<&str> {
    dir.strip_prefix("instance/service-accounts/").filter(|account| !account.contains('/'))
}

/// Check a name the kernel asks about before anything is sent to the MDS
/// (SPEC §6: `..`, control characters, `%`-escapes in the path → EINVAL).
pub fn check_name(name: &OsStr) -> Result<&str> {
    let invalid = |why: &str| Error::InvalidName(why.to_string());
    let name = name.to_str().ok_or_else(|| invalid("not UTF-8"))?;
    if name.is_empty() || name == "." || name == ".." {
        return Err(invalid("empty, . or .."));
    }
    if name.chars().any(char::is_control) {
        return Err(invalid("control character"));
    }
    if name.contains('%') {
        // The MDS takes no escapes in the path (reference/metadata-api.md §1.1), and `%2F` would
        // smuggle a slash past the kernel's path walk.
        return Err(invalid("%-escape in a path name"));
    }
    if name.contains('?') {
        return Err(invalid("query names are not supported"));
    }
    if !sendable(name) {
        return Err(invalid("a character the metadata server's paths cannot carry"));
    }
    Ok(name)
}

/// Characters a URL path can carry literally. The MDS decodes no escapes in paths
/// (reference/metadata-api.md §1.1), so a name needing one (space, `#`, non-ASCII, …) could
/// only ever reach a different key, or none: such names are refused, never sent.
fn sendable(name: &str) -> bool {
    name.chars().all(|c| c.is_ascii_graphic() && !"%#?\\\"<>`{}|^/".contains(c))
}

/// Names the MDS lists that we must not pass to the kernel as they are.
pub fn listable(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && sendable(name)
}

/// `numericProjectId` → `numeric-project-id`: how the MDS names a camelCase dump key as a path
/// (the emulator serves its fixtures by the same rule).
pub fn dashed(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 4);
    for c in camel.chars() {
        if c.is_ascii_uppercase() {
            out.push('-');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// `text` (a log line, an error for the status file) with every identity token's parameters
/// left out: an audience may be a secret URL, so `…/identity?audience=…&format=full` is shown
/// as `…/identity?…`, wherever it appears (a path, a URL inside a client error).
pub fn redacted(text: &str) -> std::borrow::Cow<'_, str> {
    const MARK: &str = "/identity?";
    if !text.contains(MARK) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(MARK) {
        out.push_str(&rest[..at + MARK.len()]);
        out.push('…');
        let query = &rest[at + MARK.len()..];
        let end = query.find(|c: char| c.is_whitespace() || "()\"'<>`".contains(c));
        rest = &query[end.unwrap_or(query.len())..];
    }
    out.push_str(rest);
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_before_anything_is_sent() {
        assert_eq!(check_name(OsStr::new("project-id")), Ok("project-id"));
        let bad_names = ["..", ".", "a\nb", "a%2Fb", "tab\there", "token?scopes=x", "x#y", "a b"];
        assert!(!listable("x#y") && !listable("a\\b") && !listable("é") && listable("sa@x.com"));
        for bad in bad_names {
            assert!(check_name(OsStr::new(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn paths_and_accounts() {
        assert_eq!(child_path("", "instance"), "instance");
        assert_eq!(child_path("instance", "id"), "instance/id");
        assert_eq!(service_account("instance/service-accounts/default"), Some("default"));
        assert_eq!(service_account("instance/service-accounts/default/token"), None);
        assert_eq!(service_account("project"), None);
    }

    #[test]
    fn identity_parameters_never_reach_a_log_line() {
        let line = "lookup: a/identity?audience=https:%2F%2Fsecret.example&format=full: error \
                    sending request for url (http://h/computeMetadata/v1/a/identity?audience=x)";
        let shown = redacted(line);
        assert!(!shown.contains("secret.example") && !shown.contains("audience"), "{shown}");
        assert!(shown.contains("a/identity?… error") && shown.ends_with("identity?…)"), "{shown}");
        assert_eq!(redacted("project/project-id"), "project/project-id");
    }
}
