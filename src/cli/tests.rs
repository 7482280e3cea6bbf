//! The command line: both forms, the `-o` twins, and every kind of bad usage.

use super::*;

fn parse_ok(args: &[&str]) -> Config {
    parse(std::iter::once("metadatafs").chain(args.iter().copied()), None).unwrap()
}

fn parse_err(args: &[&str]) -> String {
    let err = parse(std::iter::once("metadatafs").chain(args.iter().copied()), None);
    err.unwrap_err().to_string()
}

#[test]
fn defaults() {
    let config = parse_ok(&["/tmp"]);
    assert_eq!(config.endpoint, DEFAULT_ENDPOINT);
    assert_eq!(config.ttl, Duration::from_secs(60));
    assert_eq!(config.timeout, Duration::from_secs(10));
    assert_eq!(config.refresh_margin, Duration::from_secs(240));
    assert_eq!(config.max_entries, 10_000);
    assert_eq!(config.max_value, 1 << 20);
    assert!(!config.foreground && !config.allow_other && config.emulate.is_none());
}

#[test]
fn mount_form_with_o_twins_and_tolerated_options() {
    let config = parse_ok(&[
        "10.0.0.1:8080",
        "/tmp",
        "-o",
        "rw,_netdev,nofail,x-systemd.automount,allow_other,ttl=5,timeout=3",
        "-o",
        "refresh_margin=100,secret_group=0,secret_paths=a/*:b,max_entries=7,max_value=9",
    ]);
    assert_eq!(config.endpoint, "10.0.0.1:8080");
    assert!(config.allow_other);
    assert_eq!(config.ttl, Duration::from_secs(5));
    assert_eq!(config.timeout, Duration::from_secs(3));
    assert_eq!(config.refresh_margin, Duration::from_secs(100));
    assert_eq!(config.secret_gid, Some(0));
    assert_eq!(config.secret_paths, vec!["a/*", "b"]);
    assert_eq!((config.max_entries, config.max_value), (7, 9));
}

#[test]
fn token_scopes_keep_their_commas_inside_o() {
    let config = parse_ok(&["/tmp", "-o", "token_scopes=a,b,allow_other,ttl=3"]);
    let expanded = ["https://www.googleapis.com/auth/a", "https://www.googleapis.com/auth/b"];
    assert_eq!(config.token_scopes, Some(expanded.map(String::from).to_vec()));
    assert!(config.allow_other && config.scoped_tokens);
    assert!(parse_err(&["/tmp", "-o", "ttl=3,b"]).contains("unknown mount option 'b'"));
    for bad in ["token_scopes=,", "token_scopes=a\tb"] {
        assert!(parse_err(&["/tmp", "-o", bad]).contains("invalid token_scopes"), "{bad}");
    }
}

#[test]
fn read_only_unless_a_write_through_option_is_on() {
    assert!(parse_ok(&["/tmp"]).read_only);
    assert!(parse_ok(&["/tmp", "-o", "rw"]).read_only);
    assert!(!parse_ok(&["/tmp", "-o", "guest_attributes"]).read_only);
    assert!(!parse_ok(&["/tmp", "--scoped-tokens"]).read_only);
    assert!(!parse_ok(&["/tmp", "-o", "token_scopes=a,b"]).read_only);
    assert!(parse_ok(&["/tmp", "-o", "guest_attributes,ro"]).read_only);
}

#[test]
fn a_mistyped_o_option_gets_a_suggestion() {
    assert!(parse_err(&["/tmp", "-o", "tll=3"]).contains("did you mean 'ttl'?"));
    assert!(parse_err(&["/tmp", "-o", "allow_othr"]).contains("did you mean 'allow_other'?"));
    assert!(parse_err(&["/tmp", "-o", "secret_path=a"]).contains("'secret_paths'"));
    assert!(!parse_err(&["/tmp", "-o", "frobnicate"]).contains("did you mean"));
}

#[test]
fn mountpoint_problems_are_one_line() {
    let message = parse_err(&["/nonexistent-dir"]);
    assert_eq!(message.trim_end().lines().count(), 1, "{message}");
    assert!(!message.contains("Usage"), "{message}");
}

#[test]
fn log_file_is_made_absolute() {
    let config = parse_ok(&["/tmp", "-o", "log_file=rel.log"]);
    assert!(config.log_file.unwrap().is_absolute());
}

#[test]
fn endpoint_precedence() {
    let env = Some("env-host:1".to_string());
    let parse_env = |args: &[&str]| {
        parse(std::iter::once("metadatafs").chain(args.iter().copied()), env.clone()).unwrap()
    };
    assert_eq!(parse_env(&["/tmp"]).endpoint, "env-host:1");
    assert_eq!(parse_env(&["metadata", "/tmp"]).endpoint, "env-host:1");
    assert_eq!(parse_env(&["src:2", "/tmp"]).endpoint, "src:2");
    assert_eq!(parse_env(&["src:2", "/tmp", "-o", "endpoint=opt:3"]).endpoint, "opt:3");
    assert_eq!(parse_env(&["--endpoint", "flag:4", "/tmp"]).endpoint, "flag:4");
}

#[test]
fn mtls_options() {
    let config = parse_ok(&["/tmp"]);
    assert_eq!((config.mtls, config.mtls_dir), (None, None));
    let config = parse_ok(&["/tmp", "-o", "mtls=on,mtls_dir=/etc/mds"]);
    assert_eq!(config.mtls, Some(Mode::On));
    assert_eq!(config.mtls_dir, Some(PathBuf::from("/etc/mds")));
    assert_eq!(parse_ok(&["--mtls", "off", "/tmp"]).mtls, Some(Mode::Off));
    assert!(parse_err(&["/tmp", "-o", "mtls=yes"]).contains("expected auto, on or off"));
    assert!(parse_err(&["/tmp", "-o", "mtls"]).contains("needs a value"));
    assert!(parse_err(&["--mtls", "strict", "/tmp"]).contains("'strict'"));
}

#[test]
fn emulate_forms() {
    assert_eq!(parse_ok(&["--emulate", "/tmp"]).emulate, Some(None));
    let with = parse_ok(&["--emulate=/f.json", "/tmp"]).emulate;
    assert_eq!(with, Some(Some(PathBuf::from("/f.json"))));
    assert_eq!(parse_ok(&["/tmp", "-o", "emulate"]).emulate, Some(None));
}

#[test]
fn bad_usage_names_the_problem() {
    assert!(parse_err(&[]).contains("MOUNTPOINT"));
    assert!(parse_err(&["/tmp", "-o", "bogus"]).contains("unknown mount option 'bogus'"));
    assert!(parse_err(&["/tmp", "-o", "ttl=abc"]).contains("'abc' for mount option 'ttl'"));
    assert!(parse_err(&["/tmp", "-o", "ttl=18446744073709551615"]).contains("ten years"));
    assert!(parse_err(&["--timeout", "18446744073709551615", "/tmp"]).contains("--timeout"));
    assert!(parse_err(&["--ttl", "x", "/tmp"]).contains("'x'"));
    assert!(parse_err(&["/nonexistent-dir"]).contains("does not exist"));
    assert!(parse_err(&["/etc/hostname"]).contains("is not a directory"));
    assert!(parse_err(&["/tmp", "-o", "endpoint=http://x/"]).contains("invalid endpoint"));
    assert!(parse_err(&["/tmp", "-o", "secret_group=no-such-group-x"]).contains("no such group"));
}
