//! The committed scripts are the generated ones, and the bash one completes what a user types
//! (plain bash, as the script needs no bash-completion helpers).

use super::*;
use crate::cli::generated::check;

#[test]
fn generated_bash_completion_is_committed() {
    check("packaging/completions/metadatafs.bash", &bash());
}

#[test]
fn generated_zsh_completion_is_committed() {
    check("packaging/completions/_metadatafs", &zsh());
}

#[test]
fn generated_fish_completion_is_committed() {
    check("packaging/completions/metadatafs.fish", &fish());
}

/// What bash offers for `line` (the cursor at its end), as `complete -F` would call us.
fn complete_bash(line: &str) -> Vec<String> {
    let script = format!(
        "{}\nCOMP_LINE=\"$1\"; COMP_POINT=${{#1}}; _metadatafs; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        bash()
    );
    let out = std::process::Command::new("bash")
        .args(["-c", &script, "bash", line])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("bash");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

#[test]
fn bash_completes_o_names_and_enumerated_values() {
    assert_eq!(complete_bash("metadatafs -o tt"), ["ttl="]);
    assert_eq!(
        complete_bash("metadatafs /meta -o allow_other,refresh"),
        ["allow_other,refresh_margin="]
    );
    // bash splits at '=': the reply is what follows it.
    assert_eq!(complete_bash("metadatafs -o mtls="), ["auto", "on", "off"]);
    assert_eq!(complete_bash("metadatafs -o ro,mtls=o"), ["on", "off"]);
    assert_eq!(complete_bash("metadatafs --mtls "), ["auto", "on", "off"]);
    assert_eq!(complete_bash("metadatafs --mtls=a"), ["auto"]);
    assert!(complete_bash("metadatafs -o _net").contains(&"_netdev".to_string()));
    let emulate = complete_bash("metadatafs -o emu");
    assert_eq!(emulate, ["emulate", "emulate="]);
}

#[test]
fn bash_completes_long_options_files_and_directories() {
    assert_eq!(complete_bash("metadatafs --refresh"), ["--refresh-margin"]);
    assert_eq!(complete_bash("metadatafs --mtls"), ["--mtls", "--mtls-dir"]);
    assert!(complete_bash("metadatafs -o log_file=Carg").contains(&"Cargo.toml".to_string()));
    assert_eq!(complete_bash("metadatafs -o mtls_dir=sr"), ["src"]);
    assert_eq!(complete_bash("metadatafs --log-file Cargo.t"), ["Cargo.toml"]);
    assert_eq!(complete_bash("metadatafs sr"), ["src"]);
}

#[test]
fn every_option_is_in_every_script() {
    let (bash, zsh, fish) = (bash(), zsh(), fish());
    for opt in table::options() {
        for (shell, script) in [("bash", &bash), ("zsh", &zsh), ("fish", &fish)] {
            assert!(script.contains(&opt.o_name), "{shell}: no -o {}", opt.o_name);
            if let Some(long) = &opt.long {
                assert!(script.contains(long.as_str()), "{shell}: no --{long}");
            }
        }
    }
}
