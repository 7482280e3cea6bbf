# fish completion for metadatafs-emulator. Its flags are checked against
# `metadatafs-emulator --help` by tests/packaging.rs.
complete -c metadatafs-emulator -f
complete -c metadatafs-emulator -l listen -x -d 'Address to listen on, port 0 picks a free one'
complete -c metadatafs-emulator -l fixture -r -F -d 'The JSON of a recursive dump of a real VM'
complete -c metadatafs-emulator -l token-lifetime -x -d 'Lifetime of a new access token, seconds'
complete -c metadatafs-emulator -l cache-window -x -d 'A cached token is handed out again while more than this remains'
complete -c metadatafs-emulator -l tls -x -a '(__fish_complete_directories)' -d 'Also serve HTTPS with mutual TLS, writing credentials here'
complete -c metadatafs-emulator -s h -l help -d 'Print help'
complete -c metadatafs-emulator -s V -l version -d 'Print version'
