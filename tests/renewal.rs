//! The token store against hostile and unlucky readers, through the real daemon: a replaced
//! (revoked) token is renewed by `fsync` of its file without a restart, paced; identity
//! audiences and scope sets are bounded and never shown in the world-readable status files;
//! the set a `scopes` write installed is never pushed out by other sets.

mod common;

use std::time::{Duration, Instant};

use common::{Emulator, Mount};

const ACCOUNT: &str = "instance/service-accounts/default";
const TOKEN_PATH: &str = "instance/service-accounts/default/token";

fn read_string(mount: &Mount, path: &str) -> String {
    String::from_utf8(mount.read(path).unwrap()).unwrap()
}

fn fsync(mount: &Mount, path: &str) -> std::io::Result<()> {
    std::fs::File::open(mount.path(path))?.sync_all()
}

#[test]
fn fsync_of_a_token_file_renews_a_revoked_token_at_once_paced() {
    let emu = Emulator::start(&[]);
    let mount = Mount::start(&emu.addr, &[]);
    let file = format!("{ACCOUNT}/access_token");
    let old = read_string(&mount, &file);
    let (status, _) = emu.control("POST", "tokens/revoke", "");
    assert_eq!(status, 200);
    assert_eq!(emu.tokeninfo(&old)["revoked"], true);
    assert_eq!(read_string(&mount, &file), old, "the daemon cannot know yet");

    let before = emu.count(TOKEN_PATH);
    fsync(&mount, &file).unwrap();
    let renewed = read_string(&mount, &file);
    assert_ne!(renewed, old, "fsync did not renew the revoked token");
    assert_eq!(emu.tokeninfo(&renewed)["revoked"], false);
    let json = read_string(&mount, &format!("{ACCOUNT}/token"));
    assert!(json.contains(&renewed), "token shows the renewed one too");
    assert_eq!(emu.count(TOKEN_PATH), before + 1);

    // A loop of fsyncs is no request pump: one request per token per 10 s at most.
    let start = Instant::now();
    for _ in 0..200 {
        fsync(&mount, &file).unwrap();
        fsync(&mount, &format!("{ACCOUNT}/authorization")).unwrap();
    }
    assert!(start.elapsed() < Duration::from_secs(10));
    assert_eq!(emu.count(TOKEN_PATH), before + 1, "renewals within 10 s share one answer");
    // On any other file fsync sends nothing and succeeds.
    fsync(&mount, "project/project-id").unwrap();
}

#[test]
fn identity_audiences_are_bounded_and_the_status_shows_none_of_them() {
    let emu = Emulator::start(&[]);
    let mount = Mount::start(&emu.addr, &[]);
    for i in 0..300 {
        let name = format!("{ACCOUNT}/identity?audience=https:%2F%2Fa{i}.secret.example");
        std::fs::metadata(mount.path(&name)).unwrap();
    }
    let text = read_string(&mount, ".metadatafs/status");
    let metrics = read_string(&mount, ".metadatafs/metrics");
    for (what, text) in [("status", &text), ("metrics", &metrics)] {
        assert!(!text.contains("secret.example"), "{what} shows audiences");
        assert!(!text.contains("audience"), "{what} names identity paths");
        assert!(text.len() < 16 << 10, "{what} grows with what was looked up: {}", text.len());
    }
    let status: serde_json::Value = serde_json::from_str(&text).unwrap();
    let slots = &status["token_slots"];
    let identities = slots["identity"].as_u64().unwrap();
    assert!((1..=64).contains(&identities), "{slots}");
    assert!(slots["soonest_expires_in"].as_u64().is_some(), "{slots}");
    assert!(metrics.contains("metadatafs_token_slots{kind=\"identity\"}"), "{metrics}");
}

#[test]
fn the_scope_set_a_write_installed_outlives_a_flood_of_other_sets() {
    let emu = Emulator::start(&[]);
    let mount = Mount::start(&emu.addr, &["-o", "scoped_tokens"]);
    std::fs::write(mount.path(&format!("{ACCOUNT}/scopes")), "logging.write\n").unwrap();
    let installed = read_string(&mount, &format!("{ACCOUNT}/access_token"));
    let scopes = ["devstorage.read_only", "monitoring.write", "servicecontrol", "trace.append"];
    for i in 1..16usize {
        let set: Vec<&str> =
            scopes.iter().enumerate().filter(|(b, _)| i & (1 << b) != 0).map(|(_, s)| *s).collect();
        let name = format!("{ACCOUNT}/token?scopes={}", set.join(","));
        std::fs::metadata(mount.path(&name)).unwrap();
    }
    for i in 0..40 {
        // Refused sets (a scope the account lacks) count against the limit too.
        let name = format!("{ACCOUNT}/token?scopes=x{i}");
        let _ = std::fs::metadata(mount.path(&name));
    }
    // The set in effect, by its query name (a lookup the kernel has not cached).
    let before = emu.count(TOKEN_PATH);
    let again = read_string(&mount, &format!("{ACCOUNT}/access_token?scopes=logging.write"));
    assert_eq!(again, installed);
    assert_eq!(emu.count(TOKEN_PATH), before, "the set in effect was dropped and fetched again");
    let info = emu.tokeninfo(&again);
    assert!(info.to_string().contains("logging.write"), "{info}");
}
