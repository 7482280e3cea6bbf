# bash completion for metadatafs: generated from metadatafs's option table (src/cli/completions.rs): do not edit
# Self-contained (no bash-completion helpers needed). The word is taken from COMP_LINE up to the
# cursor, whitespace-separated, so '-o a,ttl=' is one word whatever COMP_WORDBREAKS splits.

# Candidates for a value: $1 the option (-o name or --long), $2 what is typed of the value.
_metadatafs_values() {
    local values=
    case $1 in
        mtls|--mtls) values="auto on off" ;;
        read_path|--read-path) values="auto open" ;;
        emulate|log_file|--emulate|--log-file) compgen -f -- "$2"; return ;;
        mtls_dir|--mtls-dir) compgen -d -- "$2"; return ;;
        secret_group|--secret-group) compgen -g -- "$2"; return ;;
    esac
    [ -n "$values" ] && compgen -W "$values" -- "$2"
}

_metadatafs() {
    local line=${COMP_LINE:0:COMP_POINT}
    local cur=${line##*[[:space:]]}
    local before=${line%"$cur"}
    before=${before%"${before##*[![:space:]]}"}
    local prev=${before##*[[:space:]]}
    local candidates=() c
    if [ "$prev" = -o ]; then
        # -o a,b=c: complete the last piece after the last comma.
        local head= piece=$cur
        case $cur in *,*) head=${cur%,*}, piece=${cur##*,} ;; esac
        if [[ $piece == *=* ]]; then
            while IFS= read -r c; do candidates+=("$head${piece%%=*}=$c"); done \
                < <(_metadatafs_values "${piece%%=*}" "${piece#*=}")
        else
            for c in foreground endpoint= emulate emulate= ttl= timeout= refresh_margin= secret_group= secret_paths= scoped_tokens token_scopes= guest_attributes max_entries= max_value= allow_other allow_root log_file= mtls= mtls_dir= read_path= ro _netdev nofail noauto auto user users nouser defaults nosuid nodev noexec suid dev exec async sync atime noatime relatime strictatime nodiratime rw default_permissions; do
                [[ $c == "$piece"* ]] && candidates+=("$head$c")
            done
        fi
        compopt -o nospace 2>/dev/null
    elif [[ $cur == --*=* ]]; then
        while IFS= read -r c; do candidates+=("${cur%%=*}=$c"); done \
            < <(_metadatafs_values "${cur%%=*}" "${cur#*=}")
    elif [[ " --endpoint --ttl --timeout --refresh-margin --secret-group --secret-paths --token-scopes --max-entries --max-value --log-file --mtls --mtls-dir --read-path " == *" $prev "* ]]; then
        while IFS= read -r c; do candidates+=("$c"); done < <(_metadatafs_values "$prev" "$cur")
    elif [[ $cur == -* ]]; then
        for c in -o -h --help -V --version -f --foreground --endpoint --emulate --ttl --timeout --refresh-margin --secret-group --secret-paths --scoped-tokens --token-scopes --guest-attributes --max-entries --max-value --allow-other --allow-root --log-file --mtls --mtls-dir --read-path; do
            [[ $c == "$cur"* ]] && candidates+=("$c")
        done
    else
        while IFS= read -r c; do candidates+=("$c"); done < <(compgen -d -- "$cur")
    fi
    # bash replaces only the part after the last COMP_WORDBREAKS character ('=' or ':').
    local keep=${cur%"${cur##*[=:]}"}
    COMPREPLY=("${candidates[@]#"$keep"}")
}
complete -F _metadatafs metadatafs
