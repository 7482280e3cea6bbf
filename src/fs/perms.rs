//! Who may read what (SPEC §3). The kernel enforces these modes (`default_permissions`), so a
//! user outside the secret class gets EACCES even on a mount with `allow_other`.

use std::path::Path;

use crate::fs::node::{Caller, Kind, Target};

/// The root symlink users reach service accounts through (see `fs`).
const SERVICE_ACCOUNTS_LINK: &str = "service-accounts";

/// Attribute keys that usually carry credentials or scripts with credentials in them.
const SECRET_ATTRIBUTES: &[&str] = &["kube-env", "startup-script", "shutdown-script", "user-data"];
const SECRET_ATTRIBUTE_PREFIXES: &[&str] =
    &["windows-startup-script-", "sysprep-specialize-script-"];

#[derive(Debug, Clone, Default)]
pub struct Permissions {
    pub uid: u32,
    pub gid: u32,
    /// `secret_group`: secret files become 0440 with this group.
    pub secret_gid: Option<u32>,
    /// `secret_paths`: more globs in the secret class, as [`normalize_glob`] gives them.
    pub secret_paths: Vec<String>,
    /// `scoped_tokens`: each account's `scopes` is writable by the owner (0644).
    pub scopes_writable: bool,
    /// `guest_attributes`: `instance/guest-attributes/` is writable by the owner.
    pub guest_writable: bool,
}

/// The directories whose recursive dump carries secret attributes.
const ATTRIBUTE_DIRS: &[&str] = &["instance/attributes", "project/attributes"];

impl Permissions {
    /// Mode bits and group for `path` of `kind`.
    pub fn mode(&self, path: &str, kind: &Kind) -> (u16, u32) {
        let guest = self.guest_writable
            && (path == GUEST_ATTRIBUTES || path.starts_with("instance/guest-attributes/"));
        match kind {
            Kind::Dir if guest => (0o755, self.gid),
            Kind::Dir => (0o555, self.gid),
            Kind::Symlink(_) => (0o777, self.gid),
            // Counters only: readable by everyone, whatever `secret_paths` matches.
            Kind::Status(_) => (0o444, self.gid),
            _ if self.is_secret(path, kind) => match self.secret_gid {
                Some(gid) => (0o440, gid),
                None => (0o400, self.gid),
            },
            Kind::Value if guest => (0o644, self.gid),
            Kind::Value if self.scopes_writable && is_account_scopes(path) => (0o644, self.gid),
            _ => (0o444, self.gid),
        }
    }

    /// Whether `caller` may read the file at `path`: nothing is fetched for one who may not.
    pub fn may_read(&self, path: &str, kind: &Kind, caller: &Caller) -> bool {
        let (perm, group) = self.mode(path, kind);
        may_read(caller.uid, caller.gid, caller.pid, perm, self.uid, group)
    }

    pub fn is_secret(&self, path: &str, kind: &Kind) -> bool {
        match kind {
            Kind::Token | Kind::AccessToken | Kind::Authorization => return true,
            Kind::Query(target) => return self.is_secret_query(path, target),
            _ => {}
        }
        let secret_attribute = path.rsplit_once("/attributes/").is_some_and(|(_, key)| {
            SECRET_ATTRIBUTES.contains(&key)
                || SECRET_ATTRIBUTE_PREFIXES.iter().any(|p| key.starts_with(p))
        });
        secret_attribute
            || self.secret_paths.iter().any(|glob| glob_match(glob.trim_start_matches('/'), path))
    }
}

/// A `secret_paths` glob as the user wrote it → the form matched against MDS paths. Users
/// write paths as they see them: through the `service-accounts` symlink, with the mountpoint
/// in front (`/meta/project/…`), with a leading `/`, or copied from an MDS URL
/// (`computeMetadata/v1/…`); all of those name the same files. A trailing `/` means
/// everything below that directory.
pub fn normalize_glob(glob: &str, mountpoint: &Path) -> String {
    let mountpoint = mountpoint.to_string_lossy();
    let mountpoint = mountpoint.trim_end_matches('/');
    let mut glob = glob.trim();
    if let Some(rest) = glob.strip_prefix(mountpoint).and_then(|r| r.strip_prefix('/')) {
        glob = rest;
    }
    let glob = glob.trim_start_matches('/');
    let glob = glob.strip_prefix("computeMetadata/v1/").unwrap_or(glob);
    let parts: Vec<&str> = glob.split('/').filter(|p| !p.is_empty() && *p != ".").collect();
    let mut out = parts.join("/");
    if glob.ends_with('/') && !out.is_empty() {
        out.push_str("/**");
    }
    if out == SERVICE_ACCOUNTS_LINK || out.starts_with(&format!("{SERVICE_ACCOUNTS_LINK}/")) {
        out = format!("instance/{out}");
    }
    out
}

/// The directories a normalized glob needs before its first wildcard: if one of them does not
/// exist, the glob matches nothing.
pub fn literal_dirs(glob: &str) -> Option<&str> {
    let wildcard = glob.find(['*', '?']).unwrap_or(glob.len());
    let end = glob[..wildcard].rfind('/')?;
    Some(&glob[..end])
}

impl Permissions {
    /// Token and identity query names are secrets; so is any query of a secret value, and any
    /// dump of a directory that holds secret attributes (`/meta/?recursive=true` has them all).
    fn is_secret_query(&self, path: &str, target: &Target) -> bool {
        if matches!(target, Target::Scoped { .. } | Target::Identity { .. }) {
            return true;
        }
        let base = path.split('?').next().unwrap_or(path).trim_end_matches('/');
        let under = |secret: &str| {
            base.is_empty() || secret == base || secret.starts_with(&format!("{base}/"))
        };
        let below = format!("{base}/");
        self.is_secret(base, &Kind::Value)
            || ATTRIBUTE_DIRS.iter().any(|dir| under(dir))
            || self
                .secret_paths
                .iter()
                .any(|glob| base.is_empty() || glob_reaches(glob.trim_start_matches('/'), &below))
    }
}

/// Whether a caller with `uid`, primary group `gid` and (if asked for) the supplementary
/// groups of thread `pid` may read a file of mode `perm` owned by `owner`:`group`, as the
/// kernel's `default_permissions` check at open would decide.
pub fn may_read(uid: u32, gid: u32, pid: u32, perm: u16, owner: u32, group: u32) -> bool {
    if uid == 0 || perm & 0o004 != 0 || (uid == owner && perm & 0o400 != 0) {
        return true;
    }
    if uid == owner || perm & 0o040 == 0 {
        return false;
    }
    gid == group || supplementary_groups(pid).contains(&group)
}

/// The `Groups:` of `/proc/PID/status`: empty if the thread is gone.
fn supplementary_groups(pid: u32) -> Vec<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let line = status.lines().find_map(|l| l.strip_prefix("Groups:")).unwrap_or_default();
    line.split_whitespace().filter_map(|g| g.parse().ok()).collect()
}

const GUEST_ATTRIBUTES: &str = "instance/guest-attributes";

/// `instance/service-accounts/ACCOUNT/scopes`.
pub fn is_account_scopes(path: &str) -> bool {
    path.strip_suffix("/scopes").and_then(crate::paths::service_account).is_some()
}

/// `*` matches within one path component, `**` across components, `?` one character.
pub fn glob_match(glob: &str, path: &str) -> bool {
    fn go(g: &[u8], p: &[u8]) -> bool {
        match g {
            [] => p.is_empty(),
            [b'*', b'*', rest @ ..] => (0..=p.len()).any(|i| go(rest, &p[i..])),
            [b'*', rest @ ..] => {
                let limit = p.iter().position(|&c| c == b'/').unwrap_or(p.len());
                (0..=limit).any(|i| go(rest, &p[i..]))
            }
            [b'?', rest @ ..] => !p.is_empty() && p[0] != b'/' && go(rest, &p[1..]),
            [c, rest @ ..] => p.first() == Some(c) && go(rest, &p[1..]),
        }
    }
    go(glob.as_bytes(), path.as_bytes())
}

/// Whether `glob` matches some path that starts with `prefix`: a directory's dump holds a
/// secret if a `secret_paths` glob matches something below it, wildcard folders included
/// (`instance/network-interfaces/*/ip` reaches into `instance/network-interfaces/0/`).
fn glob_reaches(glob: &str, prefix: &str) -> bool {
    fn go(g: &[u8], p: &[u8]) -> bool {
        if p.is_empty() {
            return true;
        }
        match g {
            [] => false,
            [b'*', b'*', ..] => true,
            [b'*', rest @ ..] => match p.iter().position(|&c| c == b'/') {
                None => true,
                Some(limit) => (0..=limit).any(|i| go(rest, &p[i..])),
            },
            [b'?', rest @ ..] => p[0] != b'/' && go(rest, &p[1..]),
            [c, rest @ ..] => p[0] == *c && go(rest, &p[1..]),
        }
    }
    go(glob.as_bytes(), prefix.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_glob_reaches_into_the_directories_it_can_match_below() {
        let reaches = |glob, dir: &str| glob_reaches(glob, &format!("{dir}/"));
        let ip = "instance/network-interfaces/*/ip";
        for dir in ["instance", "instance/network-interfaces", "instance/network-interfaces/0"] {
            assert!(reaches(ip, dir), "{dir}");
        }
        for dir in ["project", "instance/disks", "instance/network-interfaces/0/access-configs"] {
            assert!(!reaches(ip, dir), "{dir}");
        }
        assert!(reaches("instance/**/email", "instance/service-accounts/default"));
        assert!(reaches(
            "instance/service-accounts/?efault/email",
            "instance/service-accounts/default"
        ));
        assert!(!reaches(
            "instance/service-accounts/?efault/email",
            "instance/service-accounts/other"
        ));
        assert!(reaches("*/attributes/db-*", "project/attributes"));
        assert!(
            !reaches("project/attributes/db-*", "project/attributes/db-x"),
            "a file, not a dir"
        );
    }

    #[test]
    fn secret_class() {
        let perms = Permissions {
            uid: 0,
            gid: 0,
            secret_gid: None,
            secret_paths: vec!["/project/attributes/db-*".into()],
            ..Default::default()
        };
        let token = "instance/service-accounts/default/token";
        assert_eq!(perms.mode(token, &Kind::Token), (0o400, 0));
        assert_eq!(perms.mode("project/project-id", &Kind::Value), (0o444, 0));
        assert_eq!(perms.mode("instance/attributes/startup-script", &Kind::Value).0, 0o400);
        assert_eq!(
            perms.mode("project/attributes/windows-startup-script-ps1", &Kind::Value).0,
            0o400
        );
        assert_eq!(perms.mode("project/attributes/db-password", &Kind::Value).0, 0o400);
        assert_eq!(perms.mode("instance/attributes/ssh-keys", &Kind::Value).0, 0o444);
        assert_eq!(perms.mode("instance", &Kind::Dir).0, 0o555);
        let everything = Permissions { secret_paths: vec!["**".into()], ..perms.clone() };
        let status = Kind::Status(crate::fs::node::StatusFile::Status);
        assert_eq!(everything.mode(".metadatafs/status", &status).0, 0o444);
        let grouped = Permissions { secret_gid: Some(42), ..perms };
        assert_eq!(grouped.mode(token, &Kind::AccessToken), (0o440, 42));
    }

    #[test]
    fn globs_match_the_path_the_user_wrote() {
        let meta = Path::new("/meta/");
        let normal = |glob| normalize_glob(glob, meta);
        assert_eq!(normal("service-accounts/**"), "instance/service-accounts/**");
        assert_eq!(normal("/meta/service-accounts/*/email"), "instance/service-accounts/*/email");
        assert_eq!(normal("/meta/project/attributes/db-*"), "project/attributes/db-*");
        assert_eq!(normal("/project//attributes/./x"), "project/attributes/x");
        assert_eq!(normal("computeMetadata/v1/instance/zone"), "instance/zone");
        assert_eq!(normal("instance/attributes/"), "instance/attributes/**");
        assert_eq!(normal("/metadata/x"), "metadata/x", "only the mountpoint as a whole");
        let perms =
            Permissions { secret_paths: vec![normal("service-accounts/**")], ..Default::default() };
        let email = "instance/service-accounts/default/email";
        assert_eq!(perms.mode(email, &Kind::Value).0, 0o400);
        assert_eq!(perms.mode("project/project-id", &Kind::Value).0, 0o444);
    }

    #[test]
    fn the_directories_a_glob_needs() {
        assert_eq!(
            literal_dirs("instance/service-accounts/*/email"),
            Some("instance/service-accounts")
        );
        assert_eq!(literal_dirs("nosuch/dir/x"), Some("nosuch/dir"));
        assert_eq!(literal_dirs("**/secret"), None);
        assert_eq!(literal_dirs("project-id"), None);
    }

    #[test]
    fn query_names_of_tokens_secrets_and_dumps_holding_them_are_secret() {
        let perms =
            Permissions { scopes_writable: true, guest_writable: true, ..Default::default() };
        let plain = |path: &str| Kind::Query(Box::new(Target::Plain { path: path.into() }));
        let identity = Kind::Query(Box::new(Target::Identity { path: "x".into() }));
        assert_eq!(
            perms.mode("instance/service-accounts/default/identity?audience=a", &identity).0,
            0o400
        );
        assert_eq!(perms.mode("?recursive=true", &plain("")).0, 0o400);
        assert_eq!(perms.mode("instance/attributes?recursive=true", &plain("")).0, 0o400);
        assert_eq!(perms.mode("instance/attributes/startup-script?alt=json", &plain("")).0, 0o400);
        assert_eq!(perms.mode("instance/zone?alt=json", &plain("")).0, 0o444);
        assert_eq!(perms.mode("instance/disks?recursive=true", &plain("")).0, 0o444);
        assert_eq!(perms.mode("instance/service-accounts/default/scopes", &Kind::Value).0, 0o644);
        assert_eq!(perms.mode("instance/guest-attributes/ns", &Kind::Dir).0, 0o755);
        assert_eq!(perms.mode("instance/guest-attributes/ns/k", &Kind::Value).0, 0o644);
        assert_eq!(
            perms.mode("instance/service-accounts/default/authorization", &Kind::Authorization).0,
            0o400
        );
    }

    #[test]
    fn globs() {
        assert!(glob_match("instance/attributes/*", "instance/attributes/x"));
        assert!(!glob_match("instance/*", "instance/attributes/x"));
        assert!(glob_match("instance/**", "instance/attributes/x"));
        assert!(glob_match("**/secret-?", "project/attributes/secret-1"));
        assert!(!glob_match("**/secret-?", "project/attributes/secret-12"));
    }
}
