# fish completion for metadatafs: generated from metadatafs's option table (src/cli/completions.rs): do not edit

# -o a,b=c: the names, or the values of the last piece's name.
function __metadatafs_o
    set -l tok (commandline -ct)
    set -l head (string replace -r '[^,]*$' '' -- $tok)
    set -l piece (string replace -r '^.*,' '' -- $tok)
    switch $piece
        case 'emulate=*'
            for v in (__fish_complete_path (string replace 'emulate=' '' -- $piece))
                printf '%s\n' $head'emulate='$v
            end
        case 'secret_group=*'
            for v in (__fish_complete_groups | string replace -r '\t.*' '')
                printf '%s\n' $head'secret_group='$v
            end
        case 'log_file=*'
            for v in (__fish_complete_path (string replace 'log_file=' '' -- $piece))
                printf '%s\n' $head'log_file='$v
            end
        case 'mtls=*'
            for v in (printf '%s\n' auto on off)
                printf '%s\n' $head'mtls='$v
            end
        case 'mtls_dir=*'
            for v in (__fish_complete_directories (string replace 'mtls_dir=' '' -- $piece))
                printf '%s\n' $head'mtls_dir='$v
            end
        case 'read_path=*'
            for v in (printf '%s\n' auto open)
                printf '%s\n' $head'read_path='$v
            end
        case '*'
            printf '%s\t%s\n' $head'foreground' 'Stay in the foreground (systemd Type=notify)'
            printf '%s\t%s\n' $head'endpoint=' 'MDS address HOSTPORT'
            printf '%s\t%s\n' $head'emulate' 'Run the built-in emulator on a free loopback port and mount it'
            printf '%s\t%s\n' $head'emulate=' 'Run the built-in emulator on a free loopback port and mount it'
            printf '%s\t%s\n' $head'ttl=' 'Seconds a value or listing is served from cache'
            printf '%s\t%s\n' $head'timeout=' 'Seconds a read may wait for the MDS before failing with EIO'
            printf '%s\t%s\n' $head'refresh_margin=' 'Refresh tokens this many seconds before they expire'
            printf '%s\t%s\n' $head'secret_group=' 'Secret files become 0440 with this group'
            printf '%s\t%s\n' $head'secret_paths=' 'More paths in the secret class, colon-separated globs'
            printf '%s\t%s\n' $head'scoped_tokens' 'Allow tokens with other scopes token?scopes=… names and writes to <account>/scopes'
            printf '%s\t%s\n' $head'token_scopes=' 'Scopes for every token read, implies --scoped-tokens'
            printf '%s\t%s\n' $head'guest_attributes' 'Allow writes under instance/guest-attributes/'
            printf '%s\t%s\n' $head'max_entries=' 'Cache size bound, in entries'
            printf '%s\t%s\n' $head'max_value=' 'Largest value served, in bytes; larger ones fail with EFBIG'
            printf '%s\t%s\n' $head'allow_other' 'Let users other than the mounting one read'
            printf '%s\t%s\n' $head'allow_root' 'Let root read as well as the mounting user'
            printf '%s\t%s\n' $head'log_file=' 'Append log lines to this file instead of stderr (foreground) or syslog (background)'
            printf '%s\t%s\n' $head'mtls=' 'HTTPS with mutual TLS to the MDS'
            printf '%s\t%s\n' $head'mtls_dir=' 'Where root.crt and client.key live'
            printf '%s\t%s\n' $head'read_path=' 'How reads reach the daemon auto (no OPEN at all on a read-only mount, where the kernel allows) or open (an OPEN per open(), as on mounts that write)'
            printf '%s\t%s\n' $head'ro' 'Mount read-only, even with a write-through option on'
            for n in _netdev nofail noauto auto user users nouser defaults nosuid nodev noexec suid dev exec async sync atime noatime relatime strictatime nodiratime rw default_permissions
                printf '%s\tmount option, no effect\n' $head$n
            end
    end
end

complete -c metadatafs -f -a '(__fish_complete_directories)'
complete -c metadatafs -s o -x -a '(__metadatafs_o)' -d 'Mount options'
complete -c metadatafs -s h -l help -d 'Print help'
complete -c metadatafs -s V -l version -d 'Print version'
complete -c metadatafs -l foreground -s f -d 'Stay in the foreground (systemd Type=notify)'
complete -c metadatafs -l endpoint -x -d 'MDS address HOSTPORT'
complete -c metadatafs -l emulate -r -F -d 'Run the built-in emulator on a free loopback port and mount it'
complete -c metadatafs -l ttl -x -d 'Seconds a value or listing is served from cache'
complete -c metadatafs -l timeout -x -d 'Seconds a read may wait for the MDS before failing with EIO'
complete -c metadatafs -l refresh-margin -x -d 'Refresh tokens this many seconds before they expire'
complete -c metadatafs -l secret-group -x -a '(__fish_complete_groups)' -d 'Secret files become 0440 with this group'
complete -c metadatafs -l secret-paths -x -d 'More paths in the secret class, colon-separated globs'
complete -c metadatafs -l scoped-tokens -d 'Allow tokens with other scopes token?scopes=… names and writes to <account>/scopes'
complete -c metadatafs -l token-scopes -x -d 'Scopes for every token read, implies --scoped-tokens'
complete -c metadatafs -l guest-attributes -d 'Allow writes under instance/guest-attributes/'
complete -c metadatafs -l max-entries -x -d 'Cache size bound, in entries'
complete -c metadatafs -l max-value -x -d 'Largest value served, in bytes; larger ones fail with EFBIG'
complete -c metadatafs -l allow-other -d 'Let users other than the mounting one read'
complete -c metadatafs -l allow-root -d 'Let root read as well as the mounting user'
complete -c metadatafs -l log-file -r -F -d 'Append log lines to this file instead of stderr (foreground) or syslog (background)'
complete -c metadatafs -l mtls -x -a 'auto on off' -d 'HTTPS with mutual TLS to the MDS'
complete -c metadatafs -l mtls-dir -r -F -d 'Where root.crt and client.key live'
complete -c metadatafs -l read-path -x -a 'auto open' -d 'How reads reach the daemon auto (no OPEN at all on a read-only mount, where the kernel allows) or open (an OPEN per open(), as on mounts that write)'
