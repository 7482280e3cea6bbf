//! metadatafs(8), generated: the prose is a roff template (`metadatafs.8.in` beside this
//! file), the OPTIONS and MOUNT OPTIONS sections come from the option table the parser uses
//! (`table.rs`), so every option, long or `-o`, has its entry with its default.
//!
//! The page is committed as `packaging/man/metadatafs.8` (the .deb and `scripts/install` ship it
//! without running anything); the test at the bottom fails when that file differs from what
//! this generator makes, and `METADATAFS_BLESS=1 cargo test --lib generated` rewrites it.

use super::table::{self, Opt};

const TEMPLATE: &str = include_str!("metadatafs.8.in");

/// The whole page.
pub(crate) fn page() -> String {
    TEMPLATE
        .replace("@VERSION@", env!("CARGO_PKG_VERSION"))
        .replace("@ABOUT@", &escape(&table::about()))
        .replace("@OPTIONS@\n", &options_section())
        .replace("@IGNORED@", &ignored_list())
}

/// One `.TP` entry per option: `--long VALUE`, `-o name=VALUE`, then the help and its default.
fn options_section() -> String {
    let mut out = String::new();
    for opt in table::options() {
        out.push_str(".TP\n");
        out.push_str(&forms(&opt).join(", "));
        out.push('\n');
        out.push_str(&escape(&with_default(&opt)));
        out.push('\n');
        if !opt.values.is_empty() && opt.value.as_deref() != Some(&opt.values.join("|")) {
            let values: Vec<String> = opt.values.iter().map(|v| format!("\\fB{v}\\fR")).collect();
            out.push_str(&format!("One of {}.\n", values.join(", ")));
        }
    }
    out
}

/// The ways of writing one option, in roff: `\fB\-\-ttl\fR \fISECS\fR` and `\fB\-o ttl=\fR…`.
fn forms(opt: &Opt) -> Vec<String> {
    let value = opt.value.as_deref().map(|v| format!("\\fI{}\\fR", escape(v)));
    let mut forms = Vec::new();
    if let Some(short) = opt.short {
        forms.push(format!("\\fB\\-{short}\\fR"));
    }
    if let Some(long) = &opt.long {
        let long = format!("\\fB\\-\\-{}\\fR", long.replace('-', "\\-"));
        forms.push(match (&value, opt.optional_value) {
            (Some(v), true) => format!("{long}[\\fB=\\fR{v}]"),
            (Some(v), false) => format!("{long} {v}"),
            (None, _) => long,
        });
    }
    let o_name = format!("\\fB\\-o {}\\fR", opt.o_name);
    forms.push(match (&value, opt.optional_value) {
        (Some(v), true) => format!("{o_name}[\\fB=\\fR{v}]"),
        (Some(v), false) => format!("\\fB\\-o {}=\\fR{v}", opt.o_name),
        (None, _) => o_name,
    });
    forms
}

/// The help line, with the default said even where clap's help leaves it implicit.
fn with_default(opt: &Opt) -> String {
    let help = opt.help.trim_end_matches('.').to_string();
    if help.contains("[default:") {
        help
    } else if opt.takes_value() && !opt.optional_value {
        format!("{help} [default: unset]")
    } else {
        format!("{help} [default: off]")
    }
}

fn ignored_list() -> String {
    let names: Vec<String> =
        table::ignored().iter().map(|n| format!("\\fB{}\\fR", n.replace('-', "\\-"))).collect();
    names.join(", ")
}

/// Plain text as roff: backslashes and dashes escaped, `code` spans bold, `…` spelled out, and
/// no line starting with a control character.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::new();
    let mut bold = false;
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\e"),
            '-' => out.push_str("\\-"),
            '…' => out.push_str("..."),
            '`' => {
                out.push_str(if bold { "\\fR" } else { "\\fB" });
                bold = !bold;
            }
            _ => out.push(c),
        }
    }
    if out.starts_with(['.', '\'']) {
        out.insert_str(0, "\\&");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_man_page_is_committed() {
        crate::cli::generated::check("packaging/man/metadatafs.8", &page());
    }

    #[test]
    fn every_option_has_an_entry_with_its_default() {
        let page = page();
        for opt in table::options() {
            let o_form = format!("\\fB\\-o {}", opt.o_name);
            assert!(page.contains(&o_form), "no man entry for -o {}", opt.o_name);
            if let Some(long) = &opt.long {
                let long = format!("\\fB\\-\\-{}\\fR", long.replace('-', "\\-"));
                assert!(page.contains(&long), "no man entry for --{long}");
            }
        }
        assert_eq!(page.matches("[default:").count(), table::options().len());
        for placeholder in ["@VERSION@", "@ABOUT@", "@OPTIONS@", "@IGNORED@"] {
            assert!(!page.contains(placeholder), "{placeholder} is left");
        }
    }

    #[test]
    fn escape_makes_plain_roff() {
        assert_eq!(escape("a `b-c` d…"), "a \\fBb\\-c\\fR d...");
        assert_eq!(escape(".x"), "\\&.x");
        assert_eq!(escape("a\\b"), "a\\eb");
    }
}
