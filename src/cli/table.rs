//! The option table, read from what the parser itself uses: the clap `Args` definition (long
//! options, value names, help, enumerated values) and the `-o` lists (`VALUED`, `FLAGS`,
//! `IGNORED`). The man page and the shell completions are generated from this table, never
//! written by hand, so an option cannot exist without its man entry and its completion; the
//! tests below fail when the lists and `apply_option` disagree with clap.

use clap::CommandFactory;

use super::options::{Args, FLAGS, IGNORED, VALUED};

/// `-o` names with no long option, with their help (clap knows nothing about them).
const O_ONLY: &[(&str, &str)] = &[(
    "ro",
    "Mount read-only, even with a write-through option on [default: read-only unless \
     `scoped_tokens`, `token_scopes` or `guest_attributes` is on]",
)];

/// What a value names, so completions offer files, directories or groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ValueKind {
    File,
    Dir,
    Group,
    Other,
}

/// One option as users write it: `--long VALUE` and/or `-o name=VALUE`.
#[derive(Debug, Clone)]
pub(crate) struct Opt {
    /// `ttl` for `--ttl`; `None` for `-o`-only names.
    pub long: Option<String>,
    pub short: Option<char>,
    /// The `-o` twin: the long name with dashes as underscores.
    pub o_name: String,
    /// `SECS` in `--ttl SECS`; `None` for a flag.
    pub value: Option<String>,
    /// `--emulate[=FIXTURE]`: the value may be left out.
    pub optional_value: bool,
    /// Enumerated values (`mtls=auto|on|off`), empty when any value goes.
    pub values: Vec<String>,
    pub kind: ValueKind,
    pub help: String,
}

impl Opt {
    pub(crate) fn takes_value(&self) -> bool {
        self.value.is_some()
    }
}

/// Every option, in the order `--help` shows them, then the `-o`-only ones.
pub(crate) fn options() -> Vec<Opt> {
    let mut command = Args::command();
    command.build();
    let mut out: Vec<Opt> = command
        .get_arguments()
        .filter(|a| !a.is_positional() && a.get_short() != Some('o'))
        .filter(|a| !matches!(a.get_id().as_str(), "help" | "version"))
        .map(|arg| {
            let long = arg.get_long().expect("every option has a long name").to_string();
            let takes_value = arg.get_action().takes_values();
            let value = takes_value
                .then(|| arg.get_value_names().and_then(|v| v.first()).map(|v| v.to_string()))
                .flatten()
                .or_else(|| takes_value.then(|| "VALUE".to_string()));
            let kind = value.as_deref().map_or(ValueKind::Other, kind_of);
            Opt {
                o_name: long.replace('-', "_"),
                long: Some(long),
                short: arg.get_short(),
                optional_value: arg.get_num_args().is_some_and(|n| n.min_values() == 0),
                values: arg.get_possible_values().iter().map(|v| v.get_name().into()).collect(),
                kind,
                value,
                help: arg.get_help().map(|h| h.to_string()).unwrap_or_default(),
            }
        })
        .collect();
    out.extend(O_ONLY.iter().map(|(name, help)| Opt {
        long: None,
        short: None,
        o_name: name.to_string(),
        value: None,
        optional_value: false,
        values: Vec::new(),
        kind: ValueKind::Other,
        help: help.to_string(),
    }));
    out
}

/// The mount(8) options accepted and ignored, as the parser lists them.
pub(crate) fn ignored() -> &'static [&'static str] {
    IGNORED
}

/// Completions offer what a value names, judged by its name in the table.
fn kind_of(value_name: &str) -> ValueKind {
    match value_name {
        "PATH" | "FIXTURE" => ValueKind::File,
        "DIR" => ValueKind::Dir,
        "NAME|GID" => ValueKind::Group,
        _ => ValueKind::Other,
    }
}

/// What the command's own `about` and usage say, for the man page's NAME and SYNOPSIS.
pub(crate) fn about() -> String {
    Args::command().get_about().map(|a| a.to_string()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn every_long_option_has_its_o_twin_in_the_lists() {
        for opt in options() {
            let flag = FLAGS.contains(&opt.o_name.as_str());
            let valued = VALUED.contains(&opt.o_name.as_str());
            assert!(flag || valued, "-o {} is in neither FLAGS nor VALUED", opt.o_name);
            // A value left out (`emulate`) makes a flag of it; a required one never does.
            if opt.takes_value() && !opt.optional_value {
                assert!(valued && !flag, "-o {} takes a value: VALUED only", opt.o_name);
            } else if !opt.takes_value() {
                assert!(flag && !valued, "-o {} is a flag: FLAGS only", opt.o_name);
            }
            assert!(!opt.help.is_empty(), "{} has no help text", opt.o_name);
        }
    }

    #[test]
    fn every_listed_o_name_is_in_the_table() {
        let table: Vec<String> = options().into_iter().map(|o| o.o_name).collect();
        for name in names(FLAGS).into_iter().chain(names(VALUED)) {
            assert!(table.contains(&name), "-o {name} has no entry (clap or O_ONLY)");
        }
    }

    /// The names `apply_option` matches, read from its source: a name handled there but absent
    /// from the lists would be an option without a man entry or a completion.
    #[test]
    fn apply_option_handles_exactly_the_listed_names() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/");
        let source = ["cli/options.rs"]
            .iter()
            .find_map(|f| std::fs::read_to_string(format!("{dir}{f}")).ok())
            .expect("the cli source");
        let body = source.split("fn apply_option(").nth(1).expect("apply_option");
        let body = &body[..body.find("\n}\n").expect("end of apply_option")];
        let mut handled: Vec<String> = body
            .lines()
            .map(str::trim)
            .filter_map(|l| l.strip_prefix('"')?.split_once("\" =>").map(|(n, _)| n.to_string()))
            .filter(|n| !n.is_empty())
            .collect();
        handled.sort();
        let mut listed = [names(FLAGS), names(VALUED)].concat();
        listed.sort();
        assert_eq!(handled, listed);
        assert!(body.contains("IGNORED.contains"), "IGNORED is what apply_option ignores");
    }

    #[test]
    fn apply_option_accepts_every_name_in_the_table() {
        let samples = ["1", "0", "on", "a", "/x"];
        for opt in options() {
            let ok = |option: String| {
                let args = ["metadatafs", "/tmp", "-o", &option];
                match crate::cli::parse(args, None) {
                    Ok(_) => true,
                    Err(e) => !e.to_string().contains("unknown mount option"),
                }
            };
            let accepted = if opt.takes_value() {
                samples.iter().any(|v| ok(format!("{}={v}", opt.o_name)))
            } else {
                ok(opt.o_name.clone())
            };
            assert!(accepted, "-o {} is not accepted", opt.o_name);
        }
        for name in IGNORED {
            assert!(crate::cli::parse(["metadatafs", "/tmp", "-o", name], None).is_ok(), "{name}");
        }
    }

    #[test]
    fn enumerated_values_and_kinds_come_through() {
        let table = options();
        let mtls = table.iter().find(|o| o.o_name == "mtls").unwrap();
        assert_eq!(mtls.values, ["auto", "on", "off"]);
        let emulate = table.iter().find(|o| o.o_name == "emulate").unwrap();
        assert!(emulate.optional_value && emulate.kind == ValueKind::File);
        let foreground = table.iter().find(|o| o.o_name == "foreground").unwrap();
        assert_eq!((foreground.short, foreground.takes_value()), (Some('f'), false));
        assert!(table.iter().any(|o| o.o_name == "ro" && o.long.is_none()));
    }
}
