//! The command line as a user meets it: bad usage exits 2 with a short message naming the
//! problem, before anything is mounted.

use std::process::Command;

fn run(args: &[&str]) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_metadatafs")).args(args).output().unwrap();
    (output.status.code().unwrap_or(-1), String::from_utf8_lossy(&output.stderr).into_owned())
}

#[test]
fn bad_command_lines_exit_2_naming_the_problem() {
    // A real directory, so only the mistake under test is wrong; checked afterwards for a
    // mount a regression might have left there.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&[], "MOUNTPOINT"),
        (&["/nonexistent-mountpoint"], "does not exist"),
        (&["/etc/hostname"], "not a directory"),
        (&[d, "-o", "frobnicate"], "unknown mount option 'frobnicate'"),
        (&[d, "-o", "ttl=soon"], "'soon' for mount option 'ttl'"),
        (&["--timeout=-3", d], "--timeout"),
        (&["--max-entries", "many", d], "many"),
        (&["--bogus", d], "--bogus"),
        (&["metadata", d, "extra"], "extra"),
        (&[d, "-o", "endpoint=http://x/"], "invalid endpoint"),
        (&[d, "-o", "secret_group=no-such-group-here"], "no such group"),
    ];
    for (args, needle) in cases {
        let (code, stderr) = run(args);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert!(stderr.lines().count() <= 8, "{args:?}: long message: {stderr}");
    }
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    if mounts.lines().any(|l| l.split_whitespace().nth(1) == Some(d)) {
        Command::new("umount").arg("-l").arg(d).status().unwrap();
        panic!("a bad command line mounted {d}");
    }
}

#[test]
fn help_and_version_exit_0() {
    let (code, _) = run(&["--version"]);
    assert_eq!(code, 0);
    let output = Command::new(env!("CARGO_BIN_EXE_metadatafs")).arg("--help").output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for option in ["--emulate", "--endpoint", "--ttl", "--timeout", "--refresh-margin", "-o"] {
        assert!(help.contains(option), "{option} missing from --help");
    }
}
