//! Query names, scoped tokens, the scopes write-through, identity tokens, waiting reads and
//! `authorization` files (waiting reads: tests/waiting.rs): real mounts of the real daemon against the real emulator. The
//! emulator's `tokeninfo` is the judge of which scopes a token really carries.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::{as_nobody, Emulator, Mount};

const ACCOUNT: &str = "instance/service-accounts/default";
const RO: &str = "https://www.googleapis.com/auth/devstorage.read_only";
const LOG: &str = "https://www.googleapis.com/auth/logging.write";

fn text(mount: &Mount, path: &str) -> String {
    String::from_utf8(mount.read(path).unwrap_or_else(|e| panic!("{path}: {e}"))).unwrap()
}

fn errno(result: std::io::Result<impl Sized>) -> i32 {
    result.err().and_then(|e| e.raw_os_error()).expect("an error")
}

fn mode(mount: &Mount, path: &str) -> u32 {
    std::fs::metadata(mount.path(path)).unwrap().permissions().mode() & 0o777
}

/// The scopes the emulator says the token in `access_token` carries.
fn scopes_of(emu: &Emulator, token: &str) -> Vec<String> {
    let info = emu.tokeninfo(token.trim());
    info["scopes"].as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect()
}

fn bearer(header: &str) -> &str {
    header.strip_prefix("Authorization: Bearer ").and_then(|t| t.strip_suffix('\n')).unwrap()
}

#[test]
fn bad_query_names_fail_with_einval_and_send_nothing() {
    let emu = Emulator::start(&[]);
    let mount = Mount::start(&emu.addr, &[]);
    // Warm the directories the names live in, so only the names themselves could be sent.
    mount.read("instance/zone").unwrap();
    std::fs::read_dir(mount.path(ACCOUNT)).unwrap().for_each(drop);
    emu.settle();
    let before = emu.total_count();
    let einval = [
        "instance/zone?foo=bar",
        "instance/zone?recursive=true&recursive=true",
        "instance/zone?=x",
        "instance/zone?recursive",
        "instance/zone?",
        "instance/zone?alt=xml",
        "instance/zone?timeout_sec=5",
        "instance/zo%6Ee?alt=text",
        "instance/zone?wait_for_change=true&timeout_sec=soon",
        "instance/attributes?recursive=true&x%2Fy=1",
        "?recursive=%0A",
        "instance/service-accounts/default/identity",
        "instance/service-accounts/default/identity?format=full",
        "instance/service-accounts/default/identity?audience=a%0Ab",
        "instance/service-accounts/default/identity?audience=x%2F..%2Fy",
        "instance/service-accounts/default/identity?audience=%zz",
        "instance/service-accounts/default/token?wait_for_change=true",
    ];
    for name in einval {
        assert_eq!(errno(mount.read(name)), libc::EINVAL, "{name}");
        assert_eq!(errno(std::fs::metadata(mount.path(name))), libc::EINVAL, "stat {name}");
    }
    // Scoped tokens without `-o scoped_tokens`: EACCES, also nothing sent.
    for name in ["token?scopes=devstorage.read_only", "access_token?scopes=logging.write"] {
        let path = format!("{ACCOUNT}/{name}");
        assert_eq!(errno(mount.read(&path)), libc::EACCES, "{name}");
    }
    assert_eq!(emu.total_count(), before, "a refused name sent a request");
}

#[test]
fn query_names_on_the_root_and_directories_return_the_dump_and_are_never_listed() {
    let emu = Emulator::start(&[]);
    let mount = Mount::start(&emu.addr, &[]);
    let cases = [
        ("?recursive=true&alt=json", "?alt=json&recursive=true"),
        ("instance/attributes?recursive=true", "instance/attributes/?recursive=true"),
        ("instance/disks/?recursive=true&alt=text", "instance/disks/?alt=text&recursive=true"),
        ("instance/tags?alt=text", "instance/tags?alt=text"),
        ("project/numeric-project-id?alt=json", "project/numeric-project-id?alt=json"),
    ];
    for (name, request) in cases {
        let (status, expected) = emu.get(request);
        assert_eq!(status, 200, "{request}");
        let meta = std::fs::metadata(mount.path(name)).unwrap();
        assert_eq!(mount.read(name).unwrap(), expected, "{name}");
        assert_eq!(meta.len(), expected.len() as u64, "stat size of {name}");
    }
    assert!(text(&mount, "?recursive=true&alt=json").starts_with("{\"instance\":{"));
    // Dumps that hold secret attributes are secrets themselves; other dumps are not.
    assert_eq!(mode(&mount, "?recursive=true&alt=json"), 0o400);
    assert_eq!(mode(&mount, "instance/attributes?recursive=true"), 0o400);
    assert_eq!(mode(&mount, "instance/disks/?recursive=true&alt=text"), 0o444);
    for dir in ["", "instance", "instance/attributes"] {
        for entry in std::fs::read_dir(mount.path(dir)).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            assert!(!name.contains('?'), "ls {dir} lists {name}");
        }
    }
    assert_eq!(errno(mount.read("instance/no-such-key?alt=json")), libc::ENOENT);
}

#[test]
fn scoped_tokens_any_spelling_is_one_request_and_carries_exactly_those_scopes() {
    let emu = Emulator::start(&[]);
    let mount = Mount::start(&emu.addr, &["-o", "scoped_tokens"]);
    let short = format!("{ACCOUNT}/access_token?scopes=logging.write,devstorage.read_only");
    let long = format!(
        "{ACCOUNT}/token?scopes=https:%2F%2Fwww.googleapis.com%2Fauth%2Fdevstorage.read_only,\
         logging.write,logging.write"
    );
    let header = format!("{ACCOUNT}/authorization?scopes=devstorage.read_only,logging.write");
    let bare = text(&mount, &short);
    let json: serde_json::Value = serde_json::from_str(&text(&mount, &long)).unwrap();
    assert_eq!(json["access_token"], bare.as_str());
    assert_eq!(bearer(&text(&mount, &header)), bare);
    assert_eq!(emu.count(&format!("{ACCOUNT}/token")), 1, "three spellings, one request");
    assert_eq!(scopes_of(&emu, &bare), [RO, LOG]);
    let full = text(&mount, &format!("{ACCOUNT}/access_token"));
    assert_ne!(full, bare, "the plain token is another token");
    assert_eq!(scopes_of(&emu, &full).len(), 6);
    for name in [&short, &long, &header] {
        assert_eq!(mode(&mount, name), 0o400, "{name} is a secret");
        let size = std::fs::metadata(mount.path(name)).unwrap().len();
        assert_eq!(size, mount.read(name).unwrap().len() as u64, "stat size of {name}");
    }
    // A scope the account lacks: the MDS refuses and no broader token is served instead.
    let lacking = format!("{ACCOUNT}/token?scopes=cloud-platform");
    assert_eq!(errno(mount.read(&lacking)), libc::EINVAL);
}

#[test]
fn writing_scopes_narrows_the_accounts_tokens_and_only_when_the_mds_agrees() {
    let emu = Emulator::start(&[]);
    let mount = Mount::start(&emu.addr, &["-o", "scoped_tokens,allow_other,timeout=1"]);
    let scopes = format!("{ACCOUNT}/scopes");
    let instance_scopes = text(&mount, &scopes);
    assert_eq!(instance_scopes.lines().count(), 6);
    assert_eq!(mode(&mount, &scopes), 0o644);

    std::fs::write(mount.path(&scopes), "devstorage.read_only\n").unwrap();
    assert_eq!(text(&mount, &scopes), format!("{RO}\n"));
    let token = text(&mount, &format!("{ACCOUNT}/access_token"));
    assert_eq!(scopes_of(&emu, &token), [RO]);
    let json: serde_json::Value =
        serde_json::from_str(&text(&mount, &format!("{ACCOUNT}/token"))).unwrap();
    assert_eq!(json["access_token"], token.as_str());
    assert_eq!(bearer(&text(&mount, &format!("{ACCOUNT}/authorization"))), token);

    // A scope the account lacks: EINVAL, and the scopes in effect stay.
    let refused = std::fs::write(mount.path(&scopes), "cloud-platform\n").unwrap_err();
    assert_eq!(refused.raw_os_error(), Some(libc::EINVAL));
    assert_eq!(text(&mount, &scopes), format!("{RO}\n"));
    assert_eq!(text(&mount, &format!("{ACCOUNT}/access_token")), token);

    // The MDS unreachable: EIO, nothing changes.
    let fault = format!(r#"{{"prefix":"/computeMetadata/v1/{ACCOUNT}/token","status":503}}"#);
    assert_eq!(emu.control("POST", "faults", &fault).0, 200);
    let down = std::fs::write(mount.path(&scopes), "logging.write\n").unwrap_err();
    assert_eq!(down.raw_os_error(), Some(libc::EIO));
    emu.control("DELETE", "faults", "");
    assert_eq!(text(&mount, &scopes), format!("{RO}\n"));

    // Another user may not write, even with allow_other.
    let (ok, stderr) = as_nobody(
        "/bin/sh",
        &[
            Path::new("-c"),
            Path::new(&format!("echo logging.write > '{}'", mount.path(&scopes).display())),
        ],
    );
    assert!(!ok && stderr.contains("Permission denied"), "{stderr}");
    assert_eq!(text(&mount, &scopes), format!("{RO}\n"));

    // Several scopes in one write, any separator; then an empty write restores the instance's.
    std::fs::write(mount.path(&scopes), "logging.write devstorage.read_only,logging.write\n")
        .unwrap();
    assert_eq!(text(&mount, &scopes), format!("{RO}\n{LOG}\n"));
    std::fs::write(mount.path(&scopes), "\n").unwrap();
    assert_eq!(text(&mount, &scopes), instance_scopes);
    let token = text(&mount, &format!("{ACCOUNT}/access_token"));
    assert_eq!(scopes_of(&emu, &token).len(), 6);
}

#[test]
fn token_scopes_set_the_scopes_at_mount_time() {
    let emu = Emulator::start(&[]);
    let mount = Mount::start(&emu.addr, &["-o", "token_scopes=logging.write,devstorage.read_only"]);
    let token = text(&mount, &format!("{ACCOUNT}/access_token"));
    assert_eq!(scopes_of(&emu, &token), [RO, LOG]);
    assert_eq!(text(&mount, &format!("{ACCOUNT}/scopes")), format!("{RO}\n{LOG}\n"));
}

#[test]
fn identity_tokens_are_cached_per_parameters_and_shared_by_concurrent_readers() {
    let emu = Emulator::start(&[]);
    let mount = Mount::start(&emu.addr, &[]);
    let name = format!("{ACCOUNT}/identity?audience=https:%2F%2Fexample.com&format=full");
    let readers: Vec<_> = (0..20)
        .map(|_| {
            let (mount, name) = (mount.share(), name.clone());
            std::thread::spawn(move || String::from_utf8(mount.read(&name).unwrap()).unwrap())
        })
        .collect();
    let tokens: Vec<String> = readers.into_iter().map(|r| r.join().unwrap()).collect();
    assert!(tokens.iter().all(|t| *t == tokens[0]), "every reader got the same token");
    assert_eq!(emu.count(&format!("{ACCOUNT}/identity")), 1, "one request for 20 readers");
    assert_eq!(text(&mount, &name), tokens[0], "cached");
    use base64::Engine;
    let payload = tokens[0].split('.').nth(1).unwrap();
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap();
    let claims: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(claims["aud"], "https://example.com", "%2F is a slash inside a value");
    assert!(claims["google"]["compute_engine"]["instance_id"].is_string(), "format=full");
    let other = text(&mount, &format!("{ACCOUNT}/identity?audience=other"));
    assert_ne!(other, tokens[0]);
    assert_eq!(emu.count(&format!("{ACCOUNT}/identity")), 2);
    assert_eq!(mode(&mount, &name), 0o400);
    let (ok, _) = as_nobody("/bin/cat", &[&mount.path(&name)]);
    assert!(!ok, "another user reads no identity token");
}

#[test]
fn authorization_files_make_curl_header_files() {
    let emu = Emulator::start(&[]);
    let mount = Mount::start(&emu.addr, &[]);
    let header = text(&mount, &format!("{ACCOUNT}/authorization"));
    let token = text(&mount, &format!("{ACCOUNT}/access_token"));
    assert_eq!(header, format!("Authorization: Bearer {token}\n"));
    assert_eq!(mode(&mount, &format!("{ACCOUNT}/authorization")), 0o400);
    let listed: Vec<String> = std::fs::read_dir(mount.path(ACCOUNT))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(listed.contains(&"authorization".to_string()), "{listed:?}");
    // Everything else stays read-only.
    let denied = std::fs::write(mount.path(&format!("{ACCOUNT}/authorization")), "x");
    assert_eq!(errno(denied), libc::EROFS);
    assert_eq!(errno(std::fs::write(mount.path(&format!("{ACCOUNT}/scopes")), "x")), libc::EROFS);
}

#[test]
fn a_trace_log_never_contains_scoped_identity_or_header_token_bytes() {
    let mut mount =
        Mount::start_with(&["--emulate"], &["-o", "scoped_tokens"], &[("RUST_LOG", "trace")]);
    let mut secrets = vec![
        text(&mount, &format!("{ACCOUNT}/access_token?scopes=devstorage.read_only")),
        text(&mount, &format!("{ACCOUNT}/identity?audience=https:%2F%2Fexample.com")),
        bearer(&text(&mount, &format!("{ACCOUNT}/authorization"))).to_string(),
    ];
    std::fs::write(mount.path(&format!("{ACCOUNT}/scopes")), "logging.write\n").unwrap();
    secrets.push(text(&mount, &format!("{ACCOUNT}/access_token")));
    assert!(std::fs::write(mount.path(&format!("{ACCOUNT}/scopes")), "cloud-platform\n").is_err());
    mount.signal(libc::SIGTERM);
    let log = mount.log_text();
    assert!(log.contains("identity"), "trace logging was on: {log}");
    for secret in secrets {
        // The identity JWT's header is the same for every token: check its payload instead.
        let secret = match secret.starts_with("ya29.") {
            true => secret,
            false => secret.split('.').nth(1).unwrap().to_string(),
        };
        assert!(secret.len() > 40, "{secret}");
        assert!(!log.contains(&secret), "a token leaked into the log");
        assert!(!log.contains(&secret[..40]), "a token prefix leaked into the log");
    }
}
