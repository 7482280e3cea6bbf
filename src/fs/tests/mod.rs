//! The core without FUSE: lookup/getattr/readdir/open/read against an in-memory MDS.

use std::ffi::OsStr;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::clock::ManualClock;
use crate::fs::fetch::Cached;
use crate::fs::handles::Handle;
use crate::fs::perms::Permissions;
use crate::fs::tree::ROOT;
use crate::upstream::testing::FakeMds;

mod dirs;
mod write;

const TOKEN: &str = "instance/service-accounts/default/token";
const TTL: Duration = Duration::from_secs(60);

fn tree() -> FakeMds {
    FakeMds::with_tree(&[
        ("project/project-id", "my-project"),
        ("project/attributes/ssh-keys", "alice:ssh-ed25519 AAAA alice"),
        ("instance/attributes/startup-script", "#!/bin/sh\necho hi\n"),
        ("instance/description", ""),
        ("instance/service-accounts/default/email", "sa@example.com"),
        ("instance/service-accounts/default/token", ""),
    ])
}

struct Fixture {
    clock: Arc<ManualClock>,
    mds: Arc<FakeMds>,
    core: Core<FakeMds>,
}

fn fixture(mds: FakeMds) -> Fixture {
    let clock = Arc::new(ManualClock::default());
    let mds = Arc::new(mds);
    mds.set(TOKEN, r#"{"access_token":"ya29.fake","expires_in":3599,"token_type":"Bearer"}"#);
    let config = FsConfig {
        ttl: TTL,
        negative_ttl: Duration::from_secs(5),
        refresh_margin: Duration::from_secs(240),
        max_entries: 100,
        permissions: Permissions { uid: 1, gid: 2, ..Default::default() },
        scoped_tokens: false,
        token_scopes: None,
        guest_attributes: false,
    };
    let core = Core::new(mds.clone(), config, clock.clone());
    Fixture { clock, mds, core }
}

impl Fixture {
    async fn walk(&self, path: &str) -> Result<Entry> {
        let mut entry = self.core.getattr(ROOT)?;
        for name in path.split('/').filter(|n| !n.is_empty()) {
            entry = self.core.lookup(entry.attr.ino, OsStr::new(name), Caller::ROOT).await?;
        }
        Ok(entry)
    }

    /// Read `path` whole on both read paths: through a handle (open path) and by inode
    /// (no-open path), which must agree.
    async fn cat(&self, path: &str) -> Result<Vec<u8>> {
        let ino = self.walk(path).await?.attr.ino;
        let fh = self.core.open(ino, false)?;
        let (opened, by_inode) = (self.read_all(ino, fh)?, self.read_all(ino, 0)?);
        self.core.release(fh);
        assert_eq!(opened, by_inode, "{path}: the two read paths disagree");
        Ok(opened)
    }

    fn read_all(&self, ino: u64, fh: u64) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        loop {
            let chunk = self.core.read(ino, fh, out.len() as u64, 3)?;
            if chunk.is_empty() {
                return Ok(out);
            }
            out.extend_from_slice(&chunk);
        }
    }

    async fn ls(&self, path: &str) -> Result<Vec<String>> {
        let entry = self.walk(path).await?;
        let fh = self.core.opendir(entry.attr.ino).await?;
        let mut names = Vec::new();
        self.core.readdir(entry.attr.ino, fh, 0, |_, e: &DirEntry| {
            names.push(e.name.clone());
            false
        });
        self.core.release(fh);
        // Without a handle (no-open path): the same names.
        let mut again = Vec::new();
        let listed = self.core.readdir(entry.attr.ino, 0, 0, |_, e: &DirEntry| {
            again.push(e.name.clone());
            false
        });
        assert!(matches!(listed, Some(Ok(()))), "listed just now, so cached: {listed:?}");
        assert_eq!(names, again, "{path}: the two read paths disagree");
        Ok(names)
    }
}

#[tokio::test]
async fn values_and_listings_mirror_the_mds() {
    let f = fixture(tree());
    assert_eq!(f.cat("project/project-id").await.unwrap(), b"my-project");
    assert_eq!(f.cat("instance/description").await.unwrap(), b"", "empty value, not an error");
    assert_eq!(f.ls("project").await.unwrap(), [".", "..", "attributes", "project-id"]);
    assert_eq!(
        f.ls("").await.unwrap(),
        [".", "..", ".metadatafs", "instance", "project", "service-accounts"],
        "the root adds the status directory and the service-accounts symlink"
    );
    let account = f.ls("instance/service-accounts/default").await.unwrap();
    assert_eq!(account, [".", "..", "access_token", "authorization", "email", "token"]);
    assert_eq!(f.walk("instance").await.unwrap().attr.kind, FileType::Directory);
    let link = f.walk("service-accounts").await.unwrap();
    assert_eq!(link.attr.kind, FileType::Symlink);
    assert_eq!(f.core.readlink(link.attr.ino).unwrap(), b"instance/service-accounts");
}

#[tokio::test]
async fn stat_size_is_exactly_what_a_read_returns() {
    let f = fixture(tree());
    for path in ["project/project-id", "instance/attributes/startup-script", TOKEN] {
        let size = f.walk(path).await.unwrap().attr.size;
        assert_eq!(size as usize, f.cat(path).await.unwrap().len(), "{path}");
    }
}

#[tokio::test]
async fn missing_names_are_enoent_and_bad_names_never_reach_the_mds() {
    let f = fixture(tree());
    assert_eq!(f.walk("project/nope").await.unwrap_err(), Error::NotFound);
    assert_eq!(f.walk("nope/deeper").await.unwrap_err(), Error::NotFound);
    let before = f.mds.total_requests();
    for bad in ["..", "a%2Fb", "x\u{1}y"] {
        let err = f.core.lookup(ROOT, OsStr::new(bad), Caller::ROOT).await.unwrap_err();
        assert_eq!(err.errno(), libc::EINVAL, "{bad:?}");
    }
    assert_eq!(f.mds.total_requests(), before);
}

#[tokio::test]
async fn warm_reads_cost_no_requests_until_the_ttl_passes() {
    let f = fixture(tree());
    f.cat("project/project-id").await.unwrap();
    let cold = f.mds.total_requests();
    for _ in 0..10 {
        f.cat("project/project-id").await.unwrap();
    }
    assert_eq!(f.mds.total_requests(), cold);
    f.clock.advance(TTL);
    f.mds.set("project/project-id", "renamed");
    assert_eq!(f.cat("project/project-id").await.unwrap(), b"renamed");
}

#[tokio::test]
async fn kernel_names_never_outlive_the_cache_and_inodes_never_change() {
    let f = fixture(tree());
    let entry = f.walk("project/project-id").await.unwrap();
    assert_eq!(entry.entry_ttl, TTL);
    f.clock.advance(Duration::from_secs(45));
    let again = f.walk("project/project-id").await.unwrap();
    assert_eq!(again.entry_ttl, Duration::from_secs(15));
    assert_eq!(again.attr.ino, entry.attr.ino, "same bytes, same inode");
    assert!(again.ttl >= TTL, "an inode's attributes never change");
    let token = f.walk(TOKEN).await.unwrap();
    assert!(token.entry_ttl <= Duration::from_secs(1), "a version a second at most");
    f.clock.advance(Duration::from_millis(300));
    let moved = f.walk(TOKEN).await.unwrap();
    assert_ne!(moved.attr.ino, token.attr.ino, "expires_in went down: a new version");
    assert_eq!(moved.entry_ttl, Duration::from_millis(700), "until the true time left is below it");
    f.clock.advance(Duration::from_millis(200));
    let same = f.walk(TOKEN).await.unwrap();
    assert_eq!(same.attr.ino, moved.attr.ino, "the same second: the same bytes, the same inode");
    assert_eq!(same.attr.mtime, moved.attr.mtime, "and the same attributes: pages kept");
    assert_eq!(same.entry_ttl, Duration::from_millis(500));
    f.clock.advance(Duration::from_secs(3599 - 1000) + Duration::from_millis(500));
    let shorter = f.walk(TOKEN).await.unwrap();
    assert_ne!(shorter.attr.ino, token.attr.ino, "a shorter rendering is a new inode");
    assert_eq!(shorter.attr.size, token.attr.size - 1);
    assert_eq!(f.cat(TOKEN).await.unwrap().len() as u64, shorter.attr.size);
}

#[tokio::test]
async fn one_open_sees_one_value_and_a_change_is_a_new_inode() {
    let f = fixture(tree());
    let entry = f.walk("project/project-id").await.unwrap();
    let ino = entry.attr.ino;
    let fh = f.core.open(ino, false).unwrap();
    assert_eq!(&f.core.read(ino, fh, 0, 2).unwrap()[..], b"my");
    f.clock.advance(TTL);
    f.mds.set("project/project-id", "other-value");
    let stat = f.walk("project/project-id").await.unwrap();
    assert_eq!(stat.attr.size, 11, "stat by path sees the new value");
    assert_ne!(stat.attr.ino, entry.attr.ino);
    let fstat = f.core.getattr(entry.attr.ino).unwrap();
    assert_eq!(fstat.attr.size, 10, "fstat on the open file agrees with what it reads");
    assert_eq!(&f.core.read(ino, fh, 2, 100).unwrap()[..], b"-project");
    assert_eq!(&f.core.read(ino, 0, 2, 100).unwrap()[..], b"-project", "by inode: the same");
    f.core.release(fh);
    assert_eq!(f.core.read(ino, fh, 0, 1).unwrap_err(), Error::Stale);
}

#[tokio::test]
async fn mtime_is_when_the_bytes_were_first_seen() {
    let f = fixture(tree());
    let first = f.walk("project/project-id").await.unwrap().attr.mtime;
    f.clock.advance(TTL);
    std::thread::sleep(Duration::from_millis(5));
    let same = f.walk("project/project-id").await.unwrap().attr.mtime;
    assert_eq!(same, first, "refetched, unchanged");
    f.clock.advance(TTL);
    f.mds.set("project/project-id", "my-projecT");
    let changed = f.walk("project/project-id").await.unwrap().attr.mtime;
    assert!(changed > first, "a same-size change moves mtime");
}

#[tokio::test]
async fn mtime_survives_invalidation_a_failure_and_a_waiting_read_with_the_same_bytes() {
    let f = fixture(tree());
    let path = "project/project-id";
    let first = f.walk(path).await.unwrap().attr.mtime;
    std::thread::sleep(Duration::from_millis(2));
    f.core.files.contents.invalidate(path);
    assert_eq!(f.walk(path).await.unwrap().attr.mtime, first, "refetched after invalidation");
    f.clock.advance(TTL);
    f.mds.fail(path, Error::NotFound);
    assert_eq!(f.walk(path).await.unwrap_err(), Error::NotFound);
    f.clock.advance(TTL);
    f.mds.set(path, "my-project");
    assert_eq!(f.walk(path).await.unwrap().attr.mtime, first, "back after a 404");
    let requests = f.mds.requests(path);
    f.core.files.contents.saw(path, b"my-project");
    assert_eq!(f.walk(path).await.unwrap().attr.mtime, first, "a wait saw the same bytes");
    assert_eq!(f.mds.requests(path), requests, "and kept the cached value");
    f.core.files.contents.saw(path, b"other");
    f.walk(path).await.unwrap();
    assert_eq!(f.mds.requests(path), requests + 1, "another answer drops it");
}

#[tokio::test]
async fn a_token_that_moved_on_is_a_new_inode_and_no_name_outlives_its_window() {
    let f = fixture(tree());
    let before = f.walk(TOKEN).await.unwrap();
    let bare = f.walk("instance/service-accounts/default/access_token").await.unwrap();
    // No name stays current past the serving window (5 s before expiry).
    assert!(bare.entry_ttl <= Duration::from_secs(3599 - 5), "{:?}", bare.entry_ttl);
    assert!(before.entry_ttl <= Duration::from_secs(1), "token: a version a second at most");
    f.clock.advance(Duration::from_secs(3600));
    f.mds.set(TOKEN, r#"{"access_token":"ya29.fresh","expires_in":3599,"token_type":"Bearer"}"#);
    let json = f.cat(TOKEN).await.unwrap();
    assert!(String::from_utf8(json).unwrap().contains("ya29.fresh"));
    let (after, bare_after) = (
        f.walk(TOKEN).await.unwrap(),
        f.walk("instance/service-accounts/default/access_token").await.unwrap(),
    );
    assert_ne!(after.attr.ino, before.attr.ino);
    assert_ne!(bare_after.attr.ino, bare.attr.ino);
    // Whoever still holds the old inode reads the whole old bytes, never a mix.
    assert_eq!(f.core.read(bare.attr.ino, 0, 0, 100).unwrap(), "ya29.fake");
}

#[tokio::test]
async fn token_files_render_expires_in_at_open_and_access_token_is_bare() {
    let f = fixture(tree());
    let first: serde_json::Value = serde_json::from_slice(&f.cat(TOKEN).await.unwrap()).unwrap();
    assert_eq!(first["expires_in"], 3599);
    assert_eq!(first["token_type"], "Bearer");
    f.clock.advance(Duration::from_secs(99));
    let later: serde_json::Value = serde_json::from_slice(&f.cat(TOKEN).await.unwrap()).unwrap();
    assert_eq!(later["expires_in"], 3500);
    let bare = f.cat("instance/service-accounts/default/access_token").await.unwrap();
    assert_eq!(bare, b"ya29.fake");
    assert_eq!(f.mds.requests(TOKEN), 1);
}

#[tokio::test]
async fn secrets_are_owner_only() {
    let f = fixture(tree());
    let mode = |path: &'static str| async { f.walk(path).await.unwrap().attr.perm };
    assert_eq!(mode(TOKEN).await, 0o400);
    assert_eq!(mode("instance/service-accounts/default/access_token").await, 0o400);
    assert_eq!(mode("instance/attributes/startup-script").await, 0o400);
    assert_eq!(mode("project/project-id").await, 0o444);
    assert_eq!(mode("project").await, 0o555);
    let entry = f.walk("project/project-id").await.unwrap();
    assert_eq!((entry.attr.uid, entry.attr.gid), (1, 2));
}

#[tokio::test]
async fn an_outage_serves_cached_values_and_fails_cold_ones_with_eio() {
    let f = fixture(tree());
    f.cat("project/project-id").await.unwrap();
    f.clock.advance(TTL);
    f.mds.set_down(true);
    assert_eq!(f.cat("project/project-id").await.unwrap(), b"my-project");
    let cold = f.cat("instance/description").await.unwrap_err();
    assert_eq!(cold.errno(), libc::EIO);
    f.mds.set_down(false);
    assert_eq!(f.cat("instance/description").await.unwrap(), b"");
}

#[tokio::test]
async fn misconfigured_endpoints_and_oversized_values_are_never_served() {
    let f = fixture(tree());
    let wrong = Error::Misconfigured { path: "project/project-id".into(), reason: "x".into() };
    f.mds.fail("project/project-id", wrong);
    assert_eq!(f.cat("project/project-id").await.unwrap_err().errno(), libc::EIO);
    let big = Error::TooBig { path: "instance/description".into(), size: 10, limit: 1 };
    f.mds.fail("instance/description", big);
    assert_eq!(f.cat("instance/description").await.unwrap_err().errno(), libc::EFBIG);
}

#[tokio::test]
async fn writes_are_refused_and_forgotten_inodes_go_stale() {
    let f = fixture(tree());
    let entry = f.walk("project/project-id").await.unwrap();
    assert_eq!(f.core.open(entry.attr.ino, true).unwrap_err(), Error::ReadOnly);
    f.core.forget(entry.attr.ino, 1);
    assert_eq!(f.core.getattr(entry.attr.ino).unwrap_err(), Error::Stale);
}

#[tokio::test]
async fn a_listed_key_that_needs_parameters_can_be_listed_but_not_read() {
    let f = fixture(tree());
    let identity = "instance/service-accounts/default/identity";
    let listing = "aliases\nemail\nidentity\nscopes\ntoken\n";
    f.mds.set("instance/service-accounts/default/", listing);
    let entry = f.walk(identity).await.unwrap();
    let before = f.mds.requests(identity);
    assert_eq!((entry.attr.size, entry.entry_ttl), (0, Duration::ZERO));
    assert_eq!(f.cat(identity).await.unwrap_err().errno(), libc::EINVAL);
    assert_eq!((before, f.mds.requests(identity)), (0, 0), "nothing sent without an audience");
}

#[test]
fn debug_output_never_carries_values() {
    let handle = Handle::File(Bytes::from_static(b"ya29.secret"));
    let cached = Cached::Value(Bytes::from_static(b"ya29.secret"), std::time::UNIX_EPOCH);
    assert_eq!(format!("{handle:?} {cached:?}"), "File(11 bytes) Value(11 bytes)");
}

#[tokio::test]
async fn a_404_is_remembered_briefly() {
    let f = fixture(tree());
    // Listed, but gone by the time it is fetched.
    f.mds.fail("project/project-id", Error::NotFound);
    assert_eq!(f.walk("project/project-id").await.unwrap_err(), Error::NotFound);
    assert_eq!(f.walk("project/project-id").await.unwrap_err(), Error::NotFound);
    assert_eq!(f.mds.requests("project/project-id"), 1);
    f.clock.advance(Duration::from_secs(5));
    f.mds.set("project/project-id", "back");
    assert_eq!(f.cat("project/project-id").await.unwrap(), b"back");
}

#[tokio::test]
async fn names_missing_from_a_fresh_listing_cost_no_request() {
    let f = fixture(tree());
    f.ls("project").await.unwrap();
    let before = f.mds.total_requests();
    for _ in 0..10 {
        assert_eq!(f.walk("project/no-such-key").await.unwrap_err(), Error::NotFound);
    }
    assert_eq!(f.mds.total_requests(), before);
}

#[tokio::test]
async fn permanent_failures_are_remembered_briefly_like_404s() {
    let f = fixture(tree());
    let big = Error::TooBig { path: "instance/description".into(), size: 10, limit: 1 };
    f.mds.fail("instance/description", big);
    let wrong = Error::Misconfigured { path: "project/".into(), reason: "no flavor".into() };
    for _ in 0..100 {
        assert_eq!(f.walk("instance/description").await.unwrap_err().errno(), libc::EFBIG);
    }
    assert_eq!(f.mds.requests("instance/description"), 1);
    f.mds.fail("project/", wrong);
    for _ in 0..100 {
        assert_eq!(f.walk("project/project-id").await.unwrap_err().errno(), libc::EIO);
    }
    assert_eq!(f.mds.requests("project/"), 1);
    f.clock.advance(Duration::from_secs(5));
    f.mds.set("instance/description", "now small");
    assert_eq!(f.cat("instance/description").await.unwrap(), b"now small");
    // A transient failure is not remembered: the next read asks again.
    f.mds.set_down(true);
    assert!(f.cat("instance/attributes/startup-script").await.is_err());
    f.mds.set_down(false);
    assert!(f.cat("instance/attributes/startup-script").await.is_ok());
}
