//! Directory handles, listings and the prefetch of `ls -l`; the status directory.

use super::*;

#[tokio::test]
async fn directory_handles_share_the_cached_listing_and_resume_at_any_offset() {
    let f = fixture(tree());
    let dir = f.walk("project").await.unwrap().attr.ino;
    let handles: Vec<u64> = open_many(&f, dir, 1000).await;
    let (listing, _) = f.core.listing("project").await.unwrap();
    for fh in &handles {
        let d = f.core.handles.dir(*fh).expect("a dir handle");
        assert!(Arc::ptr_eq(&d.children, &listing), "a copy of the listing");
    }
    let all = |fh, offset| {
        let mut seen = Vec::new();
        f.core
            .readdir(dir, fh, offset, |next, e: &DirEntry| {
                seen.push((next, e.name.clone()));
                false
            })
            .unwrap()
            .unwrap();
        seen
    };
    let full = all(handles[0], 0);
    let names: Vec<&str> = full.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(names, [".", "..", "attributes", "project-id"]);
    for (i, (next, _)) in full.iter().enumerate() {
        assert_eq!(all(handles[0], *next), full[i + 1..], "resumed after entry {i}");
    }
    for fh in handles {
        f.core.release(fh);
    }
    assert_eq!(Arc::strong_count(&listing), 2, "only the cache and this test hold it");
}

async fn open_many(f: &Fixture, dir: u64, n: usize) -> Vec<u64> {
    let mut handles = Vec::new();
    for _ in 0..n {
        handles.push(f.core.opendir(dir).await.unwrap());
    }
    handles
}

#[tokio::test]
async fn an_unchanged_listing_keeps_its_copy_across_refreshes() {
    let f = fixture(tree());
    let dir = f.walk("project").await.unwrap().attr.ino;
    let first = f.core.listing("project").await.unwrap().0;
    f.clock.advance(TTL);
    let again = f.core.listing("project").await.unwrap().0;
    assert_eq!(f.mds.requests("project/"), 2, "refetched after the TTL");
    assert!(Arc::ptr_eq(&first, &again), "a second copy of an unchanged listing");
    f.mds.set("project/", "attributes/\nproject-id\nnew-key\n");
    f.clock.advance(TTL);
    let changed = f.core.listing("project").await.unwrap().0;
    assert!(!Arc::ptr_eq(&first, &changed));
    assert_eq!(changed.len(), 3);
    f.core.release(f.core.opendir(dir).await.unwrap());
}

#[tokio::test]
async fn a_directory_is_prefetched_once_per_listing_and_only_while_listed() {
    let f = fixture(tree());
    let project = f.walk("project").await.unwrap().attr.ino;
    let list_from_start =
        || async { f.core.readdir_fresh(project, 0, |_, _| false).await.unwrap() };
    assert!(f.core.prefetch(project, Caller::ROOT).is_none(), "not being listed");
    list_from_start().await;
    let prefetch = f.core.prefetch(project, Caller::ROOT).expect("being listed");
    assert!(f.core.prefetch(project, Caller::ROOT).is_none(), "once per listing");
    prefetch.await;
    assert_eq!(f.mds.requests("project/project-id"), 1);
    f.clock.advance(Duration::from_secs(2));
    assert!(f.core.prefetch(project, Caller::ROOT).is_none(), "listed too long ago");
    list_from_start().await;
    let prefetch = f.core.prefetch(project, Caller::ROOT).expect("a new listing");
    prefetch.await;
    assert_eq!(f.mds.requests("project/project-id"), 1, "fresh values are not fetched again");
}

#[tokio::test]
async fn a_prefetch_fetches_only_what_the_reader_may_read() {
    let f = fixture(tree());
    let attributes = f.walk("instance/attributes").await.unwrap().attr.ino;
    let nobody = Caller { uid: 65534, gid: 65534, pid: 0 };
    let f = &f;
    let prefetch_by = |caller| async move {
        f.core.readdir_fresh(attributes, 0, |_, _| false).await.unwrap();
        f.core.prefetch(attributes, caller).expect("being listed").await;
        f.clock.advance(Duration::from_secs(2));
    };
    prefetch_by(nobody).await;
    assert_eq!(f.mds.requests("instance/attributes/startup-script"), 0, "for nobody");
    prefetch_by(Caller::ROOT).await;
    assert_eq!(f.mds.requests("instance/attributes/startup-script"), 1, "for root");
}

#[tokio::test]
async fn status_files_are_rendered_per_open_and_never_fetched() {
    let mds = tree();
    // A server that listed our name would be hidden, not merged.
    mds.set("", ".metadatafs\ninstance/\nproject/\n");
    let f = fixture(mds);
    assert_eq!(f.ls(".metadatafs").await.unwrap(), [".", "..", "metrics", "status"]);
    let entry = f.walk(".metadatafs/status").await.unwrap();
    assert_eq!(
        (entry.attr.perm, entry.entry_ttl),
        (0o444, Duration::ZERO),
        "looked up at every open"
    );
    let before: serde_json::Value =
        serde_json::from_slice(&f.cat(".metadatafs/status").await.unwrap()).unwrap();
    assert_eq!(before["watcher"]["state"], "not started");
    f.cat("project/project-id").await.unwrap();
    f.cat(TOKEN).await.unwrap();
    f.core.board().watcher.set(crate::stats::WatcherPhase::Watching);
    let after: serde_json::Value =
        serde_json::from_slice(&f.cat(".metadatafs/status").await.unwrap()).unwrap();
    let misses = |s: &serde_json::Value| s["cache"]["misses"].as_u64().unwrap();
    assert!(misses(&after) > misses(&before), "{after}");
    assert_eq!(after["tokens"][0]["path"], TOKEN);
    assert_eq!(after["tokens"][0]["expires_in"], 3599);
    assert_eq!(after["watcher"]["state"], "watching");
    assert!(!after.to_string().contains("ya29.fake"));
    let metrics = String::from_utf8(f.cat(".metadatafs/metrics").await.unwrap()).unwrap();
    assert!(metrics.contains("metadatafs_token_fetches_total{outcome=\"new\"} 1\n"), "{metrics}");
    assert_eq!(f.mds.requests(".metadatafs/"), 0);
    assert_eq!(f.mds.requests(".metadatafs/status"), 0);
}
