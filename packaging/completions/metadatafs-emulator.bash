# bash completion for metadatafs-emulator. Its flags are checked against
# `metadatafs-emulator --help` by tests/packaging.rs.
_metadatafs_emulator() {
    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}
    case $prev in
        --fixture) COMPREPLY=($(compgen -f -- "$cur")); return ;;
        --tls) COMPREPLY=($(compgen -d -- "$cur")); return ;;
        --listen | --token-lifetime | --cache-window) return ;;
    esac
    COMPREPLY=($(compgen -W '--listen --fixture --token-lifetime --cache-window --tls
        --help --version -h -V' -- "$cur"))
}
complete -F _metadatafs_emulator metadatafs-emulator
