//! The write-through without a mount: pacing on a moved clock, scopes against a fake MDS.

use std::ffi::OsStr;
use std::sync::Arc;

use super::*;
use crate::clock::ManualClock;
use crate::fs::FsConfig;
use crate::perms::Permissions;
use crate::testing::FakeMds;

#[test]
fn guest_attribute_requests_stay_under_three_a_second_and_ten_a_minute() {
    let mut pacer = Pacer::default();
    let start = Instant::now();
    let times: Vec<Duration> = (0..12).map(|_| pacer.reserve(start) - start).collect();
    assert_eq!(&times[..3], [Duration::ZERO; 3], "a burst of three goes at once");
    for (i, t) in times.iter().enumerate() {
        let in_a_second = times.iter().filter(|u| **u <= *t && *t - **u < Duration::from_secs(1));
        assert!(in_a_second.count() <= 3, "request {i} at {t:?}");
        let in_a_minute = times.iter().filter(|u| **u <= *t && *t - **u < Duration::from_secs(60));
        assert!(in_a_minute.count() <= 10, "request {i} at {t:?}");
    }
    assert!(times[10] >= Duration::from_secs(60), "the eleventh waits for the minute");
    let later = start + Duration::from_secs(600);
    assert_eq!(pacer.reserve(later), later, "an idle pacer lets the next one go at once");
}

const ACCOUNT: &str = "instance/service-accounts/default";
const RO: &str = "https://www.googleapis.com/auth/devstorage.read_only";

fn core(mds: Arc<FakeMds>) -> Core<FakeMds> {
    let config = FsConfig {
        ttl: Duration::from_secs(60),
        negative_ttl: Duration::from_secs(5),
        refresh_margin: Duration::from_secs(240),
        max_entries: 100,
        permissions: Permissions { uid: 1, gid: 2, scopes_writable: true, ..Default::default() },
        scoped_tokens: true,
        token_scopes: None,
        guest_attributes: true,
    };
    Core::new(mds, config, Arc::new(ManualClock::default()))
}

#[tokio::test]
async fn scopes_change_only_when_the_mds_hands_out_a_token_with_them() {
    let mds = Arc::new(FakeMds::with_tree(&[(&format!("{ACCOUNT}/scopes"), "full\n")]));
    let narrowed = query::scoped_token_path(ACCOUNT, &[RO.to_string()]);
    mds.set(&narrowed, r#"{"access_token":"ya29.narrow","expires_in":3599}"#);
    let core = core(mds.clone());
    let shown =
        || async { core.scopes_content(&format!("{ACCOUNT}/scopes")).await.unwrap().version.bytes };
    assert_eq!(shown().await, "full\n");
    assert_eq!(core.token_path(ACCOUNT), format!("{ACCOUNT}/token"));
    core.set_scopes(ACCOUNT, b"logging.write\n").await.unwrap_err(); // the fake says 404
    assert_eq!(shown().await, "full\n", "a refused write changes nothing");
    core.set_scopes(ACCOUNT, b"devstorage.read_only\n").await.unwrap();
    assert_eq!(shown().await, format!("{RO}\n"));
    assert_eq!(core.token_path(ACCOUNT), narrowed);
    core.set_scopes(ACCOUNT, b"\n").await.unwrap();
    assert_eq!(shown().await, "full\n", "an empty write restores the instance's scopes");
}

#[tokio::test]
async fn a_guest_attribute_is_put_on_close_after_a_write_and_deleted_by_unlink() {
    let key = "instance/guest-attributes/hostkeys/ssh-ed25519";
    let mds = Arc::new(FakeMds::with_tree(&[(key, "old")]));
    let core = core(mds.clone());
    let mut ino = crate::tree::ROOT;
    for name in ["instance", "guest-attributes", "hostkeys"] {
        ino = core.lookup(ino, OsStr::new(name)).await.unwrap().attr.ino;
    }
    let (entry, fh) = core.create(ino, OsStr::new("new-key"), 1).await.unwrap();
    // A shell closes a duplicate of the descriptor before it writes: that sends nothing.
    core.flush(fh).await.unwrap();
    assert!(mds.writes().is_empty());
    assert_eq!(core.write(fh, 0, b"value").await.unwrap(), 5);
    assert_eq!(core.read(fh, 0, 100).unwrap(), "value", "a write handle reads what it holds");
    let _ = entry;
    core.flush(fh).await.unwrap();
    core.release(fh);
    let other = core.lookup(ino, OsStr::new("ssh-ed25519")).await.unwrap().attr.ino;
    assert_eq!(core.open_write(other, 7, true).await.unwrap_err().errno(), libc::EACCES);
    let fh = core.open_write(other, 1, true).await.unwrap();
    core.flush(fh).await.unwrap();
    assert!(core.has_unsent(fh), "truncated only: held for the last close");
    assert_eq!(mds.writes().len(), 1);
    core.send_unsent(fh).await;
    core.release(fh);
    core.unlink(ino, OsStr::new("new-key"), 1).await.unwrap();
    let invalid = core.unlink(ino, OsStr::new("a.b"), 1).await.unwrap_err();
    assert_eq!(invalid.errno(), libc::EINVAL);
    let written = mds.writes();
    assert_eq!(
        written,
        [
            "PUT instance/guest-attributes/hostkeys/new-key value",
            "PUT instance/guest-attributes/hostkeys/ssh-ed25519 ",
            "DELETE instance/guest-attributes/hostkeys/new-key",
        ]
    );
}
