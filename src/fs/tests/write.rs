//! The write-through without a mount: pacing on a moved clock, scopes against a fake MDS.

use std::ffi::OsStr;
use std::sync::Arc;

use super::*;

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
    let narrowed = crate::fs::query::scoped_token_path(ACCOUNT, &[RO.to_string()]);
    mds.set(&narrowed, r#"{"access_token":"ya29.narrow","expires_in":3599}"#);
    let core = core(mds.clone());
    let shown = || async {
        core.files
            .scopes
            .content(&core.files.contents, &format!("{ACCOUNT}/scopes"))
            .await
            .unwrap()
            .version
            .bytes
    };
    assert_eq!(shown().await, "full\n");
    assert_eq!(core.files.scopes.token_path(ACCOUNT), format!("{ACCOUNT}/token"));
    core.files.writes.set_scopes(ACCOUNT, b"logging.write\n").await.unwrap_err(); // the fake says 404
    assert_eq!(shown().await, "full\n", "a refused write changes nothing");
    core.files.writes.set_scopes(ACCOUNT, b"devstorage.read_only\n").await.unwrap();
    assert_eq!(shown().await, format!("{RO}\n"));
    assert_eq!(core.files.scopes.token_path(ACCOUNT), narrowed);
    core.files.writes.set_scopes(ACCOUNT, b"\n").await.unwrap();
    assert_eq!(shown().await, "full\n", "an empty write restores the instance's scopes");
}

#[tokio::test]
async fn a_guest_attribute_is_put_on_close_after_a_write_and_deleted_by_unlink() {
    let key = "instance/guest-attributes/hostkeys/ssh-ed25519";
    let mds = Arc::new(FakeMds::with_tree(&[(key, "old")]));
    let core = core(mds.clone());
    let mut ino = crate::fs::tree::ROOT;
    for name in ["instance", "guest-attributes", "hostkeys"] {
        ino = core.lookup(ino, OsStr::new(name), crate::fs::Caller::ROOT).await.unwrap().attr.ino;
    }
    let (entry, fh) = core.create(ino, OsStr::new("new-key"), 1).await.unwrap();
    // A shell closes a duplicate of the descriptor before it writes: that sends nothing.
    core.writes().flush(fh).await.unwrap();
    assert!(mds.writes().is_empty());
    assert_eq!(core.writes().write(fh, 0, b"value").await.unwrap(), 5);
    assert_eq!(core.read(ino, fh, 0, 100).unwrap(), "value", "a write handle reads what it holds");
    let _ = entry;
    core.writes().flush(fh).await.unwrap();
    core.release(fh);
    let other = core
        .lookup(ino, OsStr::new("ssh-ed25519"), crate::fs::Caller::ROOT)
        .await
        .unwrap()
        .attr
        .ino;
    assert_eq!(core.open_write(other, 7, true).await.unwrap_err().errno(), libc::EACCES);
    let fh = core.open_write(other, 1, true).await.unwrap();
    core.writes().flush(fh).await.unwrap();
    assert!(core.writes().has_unsent(fh), "truncated only: held for the last close");
    assert_eq!(mds.writes().len(), 1);
    core.writes().send_unsent(fh).await;
    core.release(fh);
    core.writes().unlink(&core.node(ino).unwrap(), OsStr::new("new-key"), 1).await.unwrap();
    let invalid = core.writes().unlink(&core.node(ino).unwrap(), OsStr::new("a.b"), 1).await;
    let invalid = invalid.unwrap_err();
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
