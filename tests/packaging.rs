//! What ships beside the binaries, checked without installing anything: the man pages render
//! without a warning, the hand-written emulator page and completions name every flag the
//! emulator takes, and the published crate holds exactly what belongs in it. (metadatafs's own
//! man page and completions are generated from the option table and checked in src/cli/.)

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

fn repo(path: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path).display().to_string()
}

/// Under CI a missing tool fails the test; elsewhere it is reported and the check skipped.
fn tool(name: &str) -> bool {
    let found = Command::new("sh").args(["-c", &format!("command -v {name}")]).output();
    let found = found.is_ok_and(|o| o.status.success());
    let ci = ["CI", "METADATAFS_REQUIRE_SYSTEMD"].iter().any(|v| std::env::var_os(v).is_some());
    assert!(found || !ci, "{name} is needed here (scripts/test installs it)");
    if !found {
        eprintln!("SKIPPED: no {name}");
    }
    found
}

const PAGES: &[&str] = &["packaging/man/metadatafs.8", "packaging/man/metadatafs-emulator.1"];

#[test]
fn man_pages_lint_clean_with_mandoc() {
    if !tool("mandoc") {
        return;
    }
    for page in PAGES {
        let out = Command::new("mandoc")
            .args(["-T", "lint", "-W", "warning"])
            .arg(repo(page))
            .output()
            .unwrap();
        let report = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && report.trim().is_empty(), "{page}:\n{report}");
    }
}

#[test]
fn man_pages_render_without_groff_warnings() {
    if !tool("groff") {
        return;
    }
    for page in PAGES {
        let out = Command::new("groff")
            .args(["-man", "-wall", "-z", "-Tutf8"])
            .arg(repo(page))
            .env("LC_ALL", "C.UTF-8")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && stderr.trim().is_empty(), "{page}:\n{stderr}");
    }
}

/// `--flag` names from the emulator's own help.
fn emulator_flags() -> Vec<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_metadatafs-emulator")).arg("--help").output();
    let help = String::from_utf8(out.unwrap().stdout).unwrap();
    let flags: BTreeSet<String> = help
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("--"))
        .map(|w| w.trim_end_matches([',', '.']).to_string())
        .filter(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_lowercase() || c == '-'))
        .collect();
    assert!(flags.contains("fixture") && flags.contains("help"), "{help}");
    flags.into_iter().collect()
}

#[test]
fn the_emulator_page_and_completions_name_every_flag() {
    let files = [
        "packaging/man/metadatafs-emulator.1",
        "packaging/completions/metadatafs-emulator.bash",
        "packaging/completions/_metadatafs-emulator",
        "packaging/completions/metadatafs-emulator.fish",
    ];
    for file in files {
        let text = std::fs::read_to_string(repo(file)).unwrap();
        // roff writes a dash as \-.
        let text = text.replace("\\-", "-");
        for flag in emulator_flags() {
            let named =
                text.contains(&format!("--{flag}")) || text.contains(&format!("-l {flag} "));
            assert!(named, "{file} does not name --{flag}");
        }
    }
}

#[test]
fn bash_completions_parse() {
    for file in ["metadatafs.bash", "metadatafs-emulator.bash"] {
        let path = repo(&format!("packaging/completions/{file}"));
        let status = Command::new("bash").arg("-n").arg(path).status().unwrap();
        assert!(status.success(), "{file}");
    }
}

/// The crate holds the sources, the units, packaging/, docs and the three top-level texts:
/// nothing else (tests, scripts, CI, editor or build leftovers).
#[test]
fn the_published_crate_holds_only_what_belongs() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["package", "--list", "--locked", "--allow-dirty", "--offline"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let listed = String::from_utf8(out.stdout).unwrap();
    let top =
        ["CHANGELOG.md", "Cargo.lock", "Cargo.toml", "Cargo.toml.orig", "LICENSE", "README.md"];
    let dirs = ["src/", "systemd/", "packaging/", "docs/", "benches/"];
    for file in listed.lines() {
        let belongs = top.contains(&file)
            || file == ".cargo_vcs_info.json"
            || dirs.iter().any(|d| file.starts_with(d));
        assert!(belongs, "{file} does not belong in the crate");
    }
    for needed in ["LICENSE", "README.md", "CHANGELOG.md", "packaging/man/metadatafs.8"] {
        assert!(listed.lines().any(|l| l == needed), "{needed} is missing from the crate");
    }
}
