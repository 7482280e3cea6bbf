//! Shell completions for bash, zsh and fish, generated from the option table (`table.rs`):
//! long options, and inside `-o` the comma-separated names (`ttl=`, `allow_other`, mount(8)'s
//! usual ones) and the values of enumerated ones (`mtls=auto|on|off`), files, directories or
//! groups where a value names one. clap_complete knows clap's options but not our `-o` table,
//! so the scripts are written here.
//!
//! Committed under `packaging/completions/` like the man page (see `generated.rs`). The bash
//! script needs nothing from the bash-completion package, so it can be tested with plain bash.

use super::table::{self, Opt, ValueKind};

const HEADER: &str =
    "generated from metadatafs's option table (src/cli/completions.rs): do not edit";

/// What a shell offers after `-o ` for one name: `ttl=` for a valued one, `allow_other` for a
/// flag, both for `emulate[=FIXTURE]`.
fn o_forms(opt: &Opt) -> Vec<String> {
    let mut out = Vec::new();
    if !opt.takes_value() || opt.optional_value {
        out.push(opt.o_name.clone());
    }
    if opt.takes_value() {
        out.push(format!("{}=", opt.o_name));
    }
    out
}

/// Every name offered after `-o `: ours, then mount(8)'s usual ones.
fn o_candidates(opts: &[Opt]) -> Vec<String> {
    let mut out: Vec<String> = opts.iter().flat_map(o_forms).collect();
    out.extend(table::ignored().iter().map(|s| s.to_string()));
    out
}

/// A one-line description without the default or markup, safe inside any shell's quotes.
fn short_help(opt: &Opt) -> String {
    let help = opt.help.split(" [default").next().unwrap_or("");
    help.chars().filter(|c| !matches!(c, '`' | '\'' | '[' | ']' | ':' | '\\' | '"')).collect()
}

fn names_by(opts: &[Opt], kind: ValueKind, o: bool) -> Vec<String> {
    opts.iter()
        .filter(|o| o.kind == kind)
        .filter_map(|opt| if o { Some(opt.o_name.clone()) } else { opt.long.clone() })
        .collect()
}

pub(crate) fn bash() -> String {
    let opts = table::options();
    let mut longs: Vec<String> = vec!["-o".into(), "-h".into(), "--help".into(), "-V".into()];
    longs.push("--version".into());
    for opt in &opts {
        longs.extend(opt.short.map(|s| format!("-{s}")));
        longs.extend(opt.long.as_ref().map(|l| format!("--{l}")));
    }
    let enumerated: String = opts
        .iter()
        .filter(|o| !o.values.is_empty())
        .map(|o| {
            let (long, values) = (o.long.clone().unwrap_or_default(), o.values.join(" "));
            format!("        {}|--{long}) values=\"{values}\" ;;\n", o.o_name)
        })
        .collect();
    let joined = |kind, o: bool| {
        let names = names_by(&opts, kind, o);
        if names.is_empty() {
            "__none__".to_string()
        } else if o {
            names.join("|")
        } else {
            names.iter().map(|n| format!("--{n}")).collect::<Vec<_>>().join("|")
        }
    };
    let valued_longs: Vec<String> = opts
        .iter()
        .filter(|o| o.takes_value() && !o.optional_value)
        .filter_map(|o| o.long.as_ref().map(|l| format!("--{l}")))
        .collect();
    format!(
        r#"# bash completion for metadatafs: {HEADER}
# Self-contained (no bash-completion helpers needed). The word is taken from COMP_LINE up to the
# cursor, whitespace-separated, so '-o a,ttl=' is one word whatever COMP_WORDBREAKS splits.

# Candidates for a value: $1 the option (-o name or --long), $2 what is typed of the value.
_metadatafs_values() {{
    local values=
    case $1 in
{enumerated}        {file_o}|{file_l}) compgen -f -- "$2"; return ;;
        {dir_o}|{dir_l}) compgen -d -- "$2"; return ;;
        {group_o}|{group_l}) compgen -g -- "$2"; return ;;
    esac
    [ -n "$values" ] && compgen -W "$values" -- "$2"
}}

_metadatafs() {{
    local line=${{COMP_LINE:0:COMP_POINT}}
    local cur=${{line##*[[:space:]]}}
    local before=${{line%"$cur"}}
    before=${{before%"${{before##*[![:space:]]}}"}}
    local prev=${{before##*[[:space:]]}}
    local candidates=() c
    if [ "$prev" = -o ]; then
        # -o a,b=c: complete the last piece after the last comma.
        local head= piece=$cur
        case $cur in *,*) head=${{cur%,*}}, piece=${{cur##*,}} ;; esac
        if [[ $piece == *=* ]]; then
            while IFS= read -r c; do candidates+=("$head${{piece%%=*}}=$c"); done \
                < <(_metadatafs_values "${{piece%%=*}}" "${{piece#*=}}")
        else
            for c in {o_names}; do
                [[ $c == "$piece"* ]] && candidates+=("$head$c")
            done
        fi
        compopt -o nospace 2>/dev/null
    elif [[ $cur == --*=* ]]; then
        while IFS= read -r c; do candidates+=("${{cur%%=*}}=$c"); done \
            < <(_metadatafs_values "${{cur%%=*}}" "${{cur#*=}}")
    elif [[ " {valued_longs} " == *" $prev "* ]]; then
        while IFS= read -r c; do candidates+=("$c"); done < <(_metadatafs_values "$prev" "$cur")
    elif [[ $cur == -* ]]; then
        for c in {longs}; do
            [[ $c == "$cur"* ]] && candidates+=("$c")
        done
    else
        while IFS= read -r c; do candidates+=("$c"); done < <(compgen -d -- "$cur")
    fi
    # bash replaces only the part after the last COMP_WORDBREAKS character ('=' or ':').
    local keep=${{cur%"${{cur##*[=:]}}"}}
    COMPREPLY=("${{candidates[@]#"$keep"}}")
}}
complete -F _metadatafs metadatafs
"#,
        file_o = joined(ValueKind::File, true),
        file_l = joined(ValueKind::File, false),
        dir_o = joined(ValueKind::Dir, true),
        dir_l = joined(ValueKind::Dir, false),
        group_o = joined(ValueKind::Group, true),
        group_l = joined(ValueKind::Group, false),
        o_names = o_candidates(&opts).join(" "),
        valued_longs = valued_longs.join(" "),
        longs = longs.join(" "),
    )
}

/// zsh's `_values` spec of a value: its message and action.
fn zsh_action(opt: &Opt) -> String {
    let value = opt.value.clone().unwrap_or_default().replace(':', "\\:");
    let action = match opt.kind {
        _ if !opt.values.is_empty() => format!("({})", opt.values.join(" ")),
        ValueKind::File => "_files".into(),
        ValueKind::Dir => "_files -/".into(),
        ValueKind::Group => "_groups".into(),
        ValueKind::Other => String::new(),
    };
    format!("{value}:{action}")
}

pub(crate) fn zsh() -> String {
    let opts = table::options();
    let mut values = String::new();
    for opt in &opts {
        let help = short_help(opt);
        let spec = match (opt.takes_value(), opt.optional_value) {
            (true, true) => format!("{}[{help}]::{}", opt.o_name, zsh_action(opt)),
            (true, false) => format!("{}[{help}]:{}", opt.o_name, zsh_action(opt)),
            (false, _) => format!("{}[{help}]", opt.o_name),
        };
        values.push_str(&format!("    '{spec}' \\\n"));
    }
    for name in table::ignored() {
        values.push_str(&format!("    '{name}[accepted, no effect]' \\\n"));
    }
    let mut args = String::new();
    for opt in opts.iter().filter(|o| o.long.is_some()) {
        let long = opt.long.as_deref().unwrap();
        let help = short_help(opt);
        let names = match opt.short {
            Some(s) => format!("'(-{s} --{long})'{{-{s},--{long}}}'"),
            None => format!("'--{long}"),
        };
        let spec = match (opt.takes_value(), opt.optional_value) {
            (true, true) => format!("{names}=-[{help}]::{}'", zsh_action(opt)),
            (true, false) => format!("{names}=[{help}]:{}'", zsh_action(opt)),
            (false, _) => format!("{names}[{help}]'"),
        };
        args.push_str(&format!("    {spec} \\\n"));
    }
    format!(
        r#"#compdef metadatafs
# zsh completion for metadatafs: {HEADER}

_metadatafs_mount_options() {{
  _values -s , 'mount option' \
{values}    'x-systemd.automount[systemd mount option, ignored]'
}}

_arguments -s -S \
    '*-o[mount options, comma-separated]:mount options:_metadatafs_mount_options' \
{args}    '(- *)'{{-h,--help}}'[Print help]' \
    '(- *)'{{-V,--version}}'[Print version]' \
    '1:SOURCE or MOUNTPOINT:_files -/' \
    '2::MOUNTPOINT:_files -/'
"#
    )
}

pub(crate) fn fish() -> String {
    let opts = table::options();
    let mut out = format!(
        "# fish completion for metadatafs: {HEADER}\n\n\
         # -o a,b=c: the names, or the values of the last piece's name.\n\
         function __metadatafs_o\n\
         \x20   set -l tok (commandline -ct)\n\
         \x20   set -l head (string replace -r '[^,]*$' '' -- $tok)\n\
         \x20   set -l piece (string replace -r '^.*,' '' -- $tok)\n\
         \x20   switch $piece\n"
    );
    for opt in opts.iter().filter(|o| o.takes_value()) {
        let name = &opt.o_name;
        let list = match opt.kind {
            _ if !opt.values.is_empty() => format!("printf '%s\\n' {}", opt.values.join(" ")),
            ValueKind::File => {
                format!("__fish_complete_path (string replace '{name}=' '' -- $piece)")
            }
            ValueKind::Dir => {
                format!("__fish_complete_directories (string replace '{name}=' '' -- $piece)")
            }
            ValueKind::Group => "__fish_complete_groups | string replace -r '\\t.*' ''".into(),
            ValueKind::Other => continue,
        };
        out.push_str(&format!(
            "        case '{name}=*'\n            for v in ({list})\n                \
             printf '%s\\n' $head'{name}='$v\n            end\n"
        ));
    }
    out.push_str("        case '*'\n");
    for opt in &opts {
        let help = short_help(opt);
        for candidate in o_forms(opt) {
            out.push_str(&format!("            printf '%s\\t%s\\n' $head'{candidate}' '{help}'\n"));
        }
    }
    let ignored = table::ignored().join(" ");
    out.push_str(&format!(
        "            for n in {ignored}\n                printf '%s\\tmount option, no effect\\n' \
         $head$n\n            end\n    end\nend\n\n"
    ));
    out.push_str("complete -c metadatafs -f -a '(__fish_complete_directories)'\n");
    out.push_str("complete -c metadatafs -s o -x -a '(__metadatafs_o)' -d 'Mount options'\n");
    out.push_str("complete -c metadatafs -s h -l help -d 'Print help'\n");
    out.push_str("complete -c metadatafs -s V -l version -d 'Print version'\n");
    for opt in opts.iter().filter(|o| o.long.is_some()) {
        let mut line = format!("complete -c metadatafs -l {}", opt.long.as_deref().unwrap());
        if let Some(s) = opt.short {
            line.push_str(&format!(" -s {s}"));
        }
        if opt.takes_value() {
            line.push_str(match opt.kind {
                ValueKind::File | ValueKind::Dir => " -r -F",
                _ => " -x",
            });
        }
        if !opt.values.is_empty() {
            line.push_str(&format!(" -a '{}'", opt.values.join(" ")));
        } else if opt.kind == ValueKind::Group {
            line.push_str(" -a '(__fish_complete_groups)'");
        }
        line.push_str(&format!(" -d '{}'\n", short_help(opt)));
        out.push_str(&line);
    }
    out
}

#[cfg(test)]
#[path = "completions_tests.rs"]
mod tests;
