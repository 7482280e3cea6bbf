//! The dump diff, and what a diff drops from a core the kernel has looked things up in.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::json;

use super::*;
use crate::clock::ManualClock;
use crate::fs::perms::Permissions;
use crate::fs::tree::ROOT;
use crate::fs::FsConfig;
use crate::upstream::dump::{name_of, paths};
use crate::upstream::testing::FakeMds;

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn base() -> Value {
    json!({
        "instance": {
            "attributes": {"ssh-keys": "a", "enable-oslogin": "TRUE", "myKey": "x"},
            "cpuPlatform": "Intel Broadwell",
            "disks": [{"deviceName": "boot", "index": 0}],
            "id": 5737554347302044216u64,
            "networkInterfaces": [{"ip": "10.0.0.2", "accessConfigs": [{"externalIp": "1.2.3.4"}]}],
            "serviceAccounts": {"default": {"email": "sa@x", "scopes": ["s1"]}},
            "tags": ["a"],
            "legacyEndpointAccess": {"0.1": 0, "v1beta1": 0},
        },
        "project": {"attributes": {}, "numericProjectId": 1, "projectId": "p"},
    })
}

fn changed(edit: impl FnOnce(&mut Value)) -> Changes {
    let mut new = base();
    edit(&mut new);
    diff(&base(), &new)
}

#[test]
fn the_same_dump_drops_nothing() {
    assert!(diff(&base(), &base()).is_empty());
}

#[test]
fn a_changed_value_drops_exactly_its_dashed_path() {
    let c = changed(|d| d["instance"]["cpuPlatform"] = json!("AMD Rome"));
    assert_eq!(c.subtrees, set(&["instance/cpu-platform"]));
    assert!(c.listings.is_empty(), "no name came or went");
    let c = changed(|d| d["project"]["numericProjectId"] = json!(2));
    assert_eq!(c.subtrees, set(&["project/numeric-project-id"]));
    let c = changed(|d| d["instance"]["legacyEndpointAccess"]["0.1"] = json!(3));
    assert_eq!(c.subtrees, set(&["instance/legacy-endpoint-access/0.1"]));
}

#[test]
fn user_keys_keep_their_spelling() {
    let c = changed(|d| d["instance"]["attributes"]["myKey"] = json!("y"));
    assert_eq!(c.subtrees, set(&["instance/attributes/myKey"]));
    let c = changed(|d| d["instance"]["serviceAccounts"]["default"]["email"] = json!("o@x"));
    assert_eq!(c.subtrees, set(&["instance/service-accounts/default/email"]));
}

#[test]
fn added_and_removed_keys_drop_their_parent_listing() {
    let c = changed(|d| d["instance"]["attributes"]["new-key"] = json!("v"));
    assert_eq!(c.subtrees, set(&["instance/attributes/new-key"]));
    assert_eq!(c.listings, set(&["instance/attributes"]));
    let c = changed(|d| {
        d["project"]["attributes"] = json!({"a": "1"});
        d["instance"]["attributes"].as_object_mut().unwrap().remove("ssh-keys");
    });
    assert_eq!(c.subtrees, set(&["instance/attributes/ssh-keys", "project/attributes/a"]));
    assert_eq!(c.listings, set(&["instance/attributes", "project/attributes"]));
    let c = changed(|d| {
        d["instance"]["serviceAccounts"]["other@x"] = json!({"email": "other@x"});
    });
    assert_eq!(c.subtrees, set(&["instance/service-accounts/other@x"]));
    assert_eq!(c.listings, set(&["instance/service-accounts"]));
}

#[test]
fn a_changed_array_drops_its_whole_subtree() {
    let c = changed(|d| d["instance"]["disks"][0]["deviceName"] = json!("data"));
    assert_eq!(c.subtrees, set(&["instance/disks"]));
    let c = changed(|d| d["instance"]["tags"] = json!(["a", "b"]));
    assert_eq!(c.subtrees, set(&["instance/tags"]));
    let c = changed(|d| {
        d["instance"]["networkInterfaces"][0]["accessConfigs"][0]["externalIp"] = json!("5.6.7.8")
    });
    assert_eq!(c.subtrees, set(&["instance/network-interfaces"]));
    let c = changed(|d| d["instance"]["serviceAccounts"]["default"]["scopes"] = json!(["s2"]));
    assert_eq!(c.subtrees, set(&["instance/service-accounts/default/scopes"]));
}

#[test]
fn a_key_that_cannot_be_named_for_sure_drops_its_whole_parent() {
    for odd in ["externalIPv6", "some_key", "Upper", "with-dash", "é"] {
        let c = changed(|d| d["instance"][odd] = json!("v"));
        assert_eq!(c.subtrees, set(&["instance"]), "{odd}");
        assert_eq!(c.listings, set(&["instance"]), "{odd}");
    }
    // Unchanged odd keys cost nothing.
    let mut old = base();
    old["instance"]["externalIPv6"] = json!("v");
    assert!(diff(&old, &old.clone()).is_empty());
    // A user key no request can reach is no exception.
    let c = changed(|d| d["instance"]["attributes"]["a b"] = json!("v"));
    assert_eq!(c.subtrees, set(&["instance/attributes"]));
}

#[test]
fn a_value_that_becomes_a_directory_drops_the_listing_too() {
    let c = changed(|d| d["project"]["projectId"] = json!({"x": "1"}));
    assert_eq!(c.subtrees, set(&["project/project-id"]));
    assert_eq!(c.listings, set(&["project"]));
    assert_eq!(diff(&base(), &json!("x")).subtrees, set(&[""]), "not a tree: drop everything");
}

#[test]
fn names_map_camel_case_to_dashes_and_keep_user_keys() {
    let dir = |d: &[&str]| d.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(name_of(&dir(&[]), "instance").as_deref(), Some("instance"));
    let inst = dir(&["instance"]);
    assert_eq!(name_of(&inst, "ipv6ForwardedIps").as_deref(), Some("ipv6-forwarded-ips"));
    assert_eq!(name_of(&inst, "guestAttributes").as_deref(), Some("guest-attributes"));
    let ga = dir(&["instance", "guest-attributes", "hostKeys"]);
    assert_eq!(name_of(&ga, "ssh-ed25519").as_deref(), Some("ssh-ed25519"));
    assert_eq!(
        name_of(&dir(&["instance", "guest-attributes"]), "hostKeys").as_deref(),
        Some("hostKeys")
    );
    assert_eq!(name_of(&inst, "externalIPv6"), None);
    let all = paths(&base());
    assert!(all.contains(&("instance/network-interfaces".into(), true)));
    assert!(all.contains(&("instance/service-accounts/default/scopes".into(), true)));
}

#[derive(Debug, Default)]
struct Recorder(Mutex<Vec<(u64, String)>>);

impl KernelCache for Recorder {
    fn inval_inode(&self, ino: u64) {
        self.0.lock().unwrap().push((ino, String::new()));
    }

    fn inval_entry(&self, parent: u64, name: &str) {
        self.0.lock().unwrap().push((parent, name.to_string()));
    }
}

fn core(mds: FakeMds) -> (Arc<FakeMds>, Core<FakeMds>) {
    let mds = Arc::new(mds);
    let config = FsConfig {
        ttl: Duration::from_secs(3600),
        negative_ttl: Duration::from_secs(5),
        refresh_margin: Duration::from_secs(240),
        max_entries: 100,
        permissions: Permissions::default(),
        scoped_tokens: false,
        token_scopes: None,
        guest_attributes: false,
    };
    (mds.clone(), Core::new(mds, config, Arc::new(ManualClock::default())))
}

async fn walk(core: &Core<FakeMds>, path: &str) -> u64 {
    let mut ino = ROOT;
    for name in path.split('/') {
        ino = core.lookup(ino, OsStr::new(name), crate::fs::Caller::ROOT).await.unwrap().attr.ino;
    }
    ino
}

#[tokio::test]
async fn dropping_a_change_refetches_it_and_tells_the_kernel_which_names_to_forget() {
    let (mds, core) = core(FakeMds::with_tree(&[
        ("project/project-id", "p"),
        ("instance/attributes/a", "1"),
        ("instance/attributes/b", "2"),
    ]));
    let project = walk(&core, "project").await;
    let old = walk(&core, "project/project-id").await;
    let attributes = walk(&core, "instance/attributes").await;
    walk(&core, "instance/attributes/a").await;
    mds.set("project/project-id", "q");
    let changes = Changes { subtrees: set(&["project/project-id"]), listings: BTreeSet::new() };
    let recorder = Arc::new(Recorder::default());
    let kernel: Arc<dyn KernelCache> = recorder.clone();
    assert!(apply(&core, &kernel, &changes).await);
    assert_eq!(*recorder.0.lock().unwrap(), [(project, "project-id".to_string())]);
    let new = walk(&core, "project/project-id").await;
    assert_ne!(new, old, "the changed value is a new inode");
    assert_eq!(mds.requests("project/project-id"), 2);
    assert_eq!(mds.requests("project/"), 1, "the listing did not change");

    // A changed key our listing does not show was misnamed: its parent goes whole.
    let changes =
        Changes { subtrees: set(&["instance/attributes/zzz"]), listings: BTreeSet::new() };
    let forget = core.drop_changed(&changes);
    assert_eq!(
        forget.names,
        [(walk(&core, "instance").await, "attributes".to_string()), (attributes, "a".to_string())]
    );
    assert_eq!(forget.dirs, [attributes], "its listing goes too (the kernel's cached readdir)");
    walk(&core, "instance/attributes/a").await;
    assert_eq!(mds.requests("instance/attributes/"), 2);
    assert_eq!(mds.requests("instance/attributes/a"), 2);
}

#[tokio::test]
async fn the_watcher_waits_for_a_first_read_and_backs_off_when_the_server_misbehaves() {
    let (mds, core) = core(FakeMds::with_tree(&[("project/project-id", "p")]));
    let core = Arc::new(core);
    let status = core.board().watcher.clone();
    let kernel: Arc<dyn KernelCache> = Arc::new(Recorder::default());
    tokio::time::pause();
    let task = tokio::spawn(run(core.clone(), mds.clone(), kernel));
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(mds.total_requests(), 0, "nothing read, nothing asked");
    assert_eq!(status.snapshot().phase, WatcherPhase::NotStarted);
    walk(&core, "project/project-id").await;
    let read = mds.total_requests();
    // The fake MDS has no ETags: every dump is refused, and retried ever more slowly.
    tokio::time::sleep(Duration::from_secs(600)).await;
    let polls = mds.requests("?recursive=true&alt=json");
    assert!((5..=30).contains(&polls), "{polls} polls in 10 minutes");
    assert_eq!(mds.total_requests() - read, polls);
    let state = status.snapshot();
    assert_eq!(state.phase, WatcherPhase::Retrying, "{state:?}");
    assert!(state.last_error.is_some());
    task.abort();
}

#[tokio::test]
async fn a_lookup_answered_across_a_drop_gets_no_ttl() {
    let (_, core) = core(FakeMds::with_tree(&[("project/project-id", "p")]));
    walk(&core, "project").await;
    let epoch = core.changes().current();
    let mut entry = core
        .lookup(walk(&core, "project").await, OsStr::new("project-id"), crate::fs::Caller::ROOT)
        .await
        .unwrap();
    assert!(entry.entry_ttl > Duration::ZERO);
    let mut unchanged = entry.clone();
    drop(core.changes().settle(epoch, &mut unchanged));
    assert_eq!(unchanged.entry_ttl, entry.entry_ttl, "nothing dropped meanwhile");
    let changes = Changes { subtrees: set(&["project/project-id"]), listings: BTreeSet::new() };
    core.drop_changed(&changes);
    drop(core.changes().settle(epoch, &mut entry));
    assert_eq!(entry.entry_ttl, Duration::ZERO);
}

/// A server that answers every long-poll at once, with the same dump and ETag.
#[derive(Debug, Default)]
struct Impatient(std::sync::atomic::AtomicUsize);

impl Mds for Impatient {
    async fn get(&self, _path: &str) -> crate::error::Result<bytes::Bytes> {
        Ok(bytes::Bytes::from_static(b"project/\n"))
    }

    async fn long_poll(
        &self,
        _path: &str,
        _wait: Duration,
    ) -> crate::error::Result<(bytes::Bytes, Option<String>)> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok((bytes::Bytes::from_static(br#"{"project":{}}"#), Some("0123456789abcdef".into())))
    }
}

#[tokio::test]
async fn a_server_that_does_not_hold_the_request_is_not_polled_in_a_loop() {
    let mds = Arc::new(Impatient::default());
    let config = FsConfig {
        ttl: Duration::from_secs(60),
        negative_ttl: Duration::from_secs(5),
        refresh_margin: Duration::from_secs(240),
        max_entries: 10,
        permissions: Permissions::default(),
        scoped_tokens: false,
        token_scopes: None,
        guest_attributes: false,
    };
    let core = Arc::new(Core::new(mds.clone(), config, Arc::new(ManualClock::default())));
    tokio::time::pause();
    let task = tokio::spawn(run(core.clone(), mds.clone(), Arc::new(Recorder::default())));
    core.lookup(ROOT, OsStr::new("project"), crate::fs::Caller::ROOT).await.unwrap();
    tokio::time::sleep(Duration::from_secs(600)).await;
    let polls = mds.0.load(std::sync::atomic::Ordering::SeqCst);
    assert!((5..=30).contains(&polls), "{polls} polls in 10 minutes");
    assert_eq!(core.board().watcher.snapshot().phase, WatcherPhase::Watching);
    task.abort();
}
