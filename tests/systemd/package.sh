# Sourced by check.sh: the .deb's scenario (tests/systemd/deb.rs binds two revisions of it in
# /debs). Everything an admin does with it, in order: install (nothing starts), man page,
# completion, the README's fstab line, the service with tokens for a group, an upgrade while a
# reader loops, remove, purge. Every daemon is pointed at the emulator on loopback: the unit's
# drop-in (metadatafs.service.d/emulator.conf) is in place before the package is installed,
# and mounts made by hand name the emulator; the container has no network but loopback anyway.

deb1=/debs/metadatafs_0.1.0-1_amd64.deb
deb2=/debs/metadatafs_0.1.0-2_amd64.deb
emulator=127.0.0.1:8080

# Every file of the root outside what changes by itself (logs, caches, runtime state), to find
# what purge leaves behind.
snapshot() {
    find / -xdev \( -path /proc -o -path /sys -o -path /dev -o -path /run -o -path /tmp \
        -o -path /var/tmp -o -path /var/log -o -path /var/cache -o -path /var/lib/apt \
        -o -path /var/lib/dpkg -o -path /results \) -prune -o -print | sort
}
fuse_mounts() { grep -c ' fuse\.metadatafs ' /proc/self/mounts; }
no_fuse_mounts() { [ "$(fuse_mounts)" = 0 ]; }
as_alice() { timeout 15 setpriv --reuid=alice --regid=users --init-groups "$@"; }
installed_version() { dpkg-query -W -f='${Version}' metadatafs 2>/dev/null; }
apt_install() { DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@"; }

# Completion as bash-completion loads it for an interactive shell: what `metadatafs -o tt<TAB>`
# offers.
complete_o_tt() {
    bash -c '. /usr/share/bash-completion/bash_completion
        __load_completion metadatafs || exit 1
        COMP_LINE="metadatafs -o tt"; COMP_POINT=${#COMP_LINE}
        COMP_WORDS=(metadatafs -o tt); COMP_CWORD=2
        _metadatafs metadatafs tt -o
        printf "%s\n" "${COMPREPLY[@]}"'
}

# A reader of /meta/project/project-id in a loop: one "." per good read, one "E" per failed
# one, in /tmp/reads, until /tmp/stop-reading exists.
reader() {
    : >/tmp/reads
    while [ ! -e /tmp/stop-reading ]; do
        if [ "$(timeout 5 cat /meta/project/project-id 2>/dev/null)" = "$expected" ]; then
            printf . >>/tmp/reads
        else
            printf E >>/tmp/reads
        fi
    done
}
alice_reads_token() { [ -n "$(as_alice cat /meta/service-accounts/default/access_token)" ]; }
nobody_cannot_read_token() { ! as_nobody cat /meta/service-accounts/default/access_token 2>/dev/null; }
reads() { tr -cd "$1" </tmp/reads | wc -c; }
reads_past() { [ "$(reads .)" -ge "$1" ]; }

scenario_package() {
    local pid out before
    # fuse3 (in the root for the other scenarios) goes first: as root nothing needs it.
    DEBIAN_FRONTEND=noninteractive apt-get remove -y -q fuse3 >/dev/null 2>&1
    check "no fusermount3 or mount.fuse3 before the install" \
        bash -c '! command -v fusermount3 && ! command -v mount.fuse3'
    groupadd tokens && useradd -M -N -g users -G tokens alice
    before=$(snapshot)

    check "apt installs the .deb, its dependencies met by a bookworm root" apt_install "$deb1" ||
        return
    check "installed: 0.1.0-1" test "$(installed_version)" = 0.1.0-1
    check "nothing started at install" is metadatafs.service ActiveState inactive
    check "nothing enabled at install" test "$(systemctl is-enabled metadatafs.service)" = disabled
    check "no mount at install" no_fuse_mounts
    check "the binaries are in /usr/bin" test -x /usr/bin/metadatafs -a -x /usr/bin/metadatafs-emulator
    check "the helper links to the binary" \
        test "$(readlink /sbin/mount.fuse.metadatafs)" = /usr/bin/metadatafs
    check "the units are where systemd looks" \
        test "$(state metadatafs.service FragmentPath)" = /lib/systemd/system/metadatafs.service
    check "the service runs /usr/bin/metadatafs" \
        grep -q '^ExecStart=/usr/bin/metadatafs ' /lib/systemd/system/metadatafs.service
    out=$(systemd-analyze verify metadatafs.service meta.mount 2>&1)
    check "the installed units verify clean: ${out:-clean}" test -z "$out"
    check "README and copyright in /usr/share/doc/metadatafs" \
        test -s /usr/share/doc/metadatafs/README.md -a -s /usr/share/doc/metadatafs/copyright
    check "man metadatafs shows the page" bash -c 'man metadatafs 2>/dev/null | grep -q refresh_margin'
    check "man metadatafs-emulator shows the page" \
        bash -c 'man metadatafs-emulator 2>/dev/null | grep -q cache.window'
    check "man mount.fuse.metadatafs finds the page" man -w mount.fuse.metadatafs
    out=$(complete_o_tt 2>/results/completion.err)
    check "bash completes 'metadatafs -o tt' to ttl=: ${out//$'\n'/ }" test "$out" = ttl=

    # The README's fstab line, through the installed helper (mount.fuse3 is not installed).
    local line
    line=$(grep -m1 -E '^metadata +/meta +fuse\.metadatafs ' /src/README.md)
    check "the README has an fstab line: $line" test -n "$line"
    cp /etc/fstab /tmp/fstab.orig
    echo "$line" >>/etc/fstab
    mkdir -p /meta
    check "mount /meta with the README's fstab line" env GCE_METADATA_HOST=$emulator mount /meta
    check "fstab: /meta is fuse.metadatafs" test "$(fstype)" = fuse.metadatafs
    check "fstab: project-id read through the mount" same_value
    check "fstab: umount /meta" umount /meta
    check "fstab: the daemon is gone" eventually no_daemon
    cp /tmp/fstab.orig /etc/fstab

    # The service, with tokens readable by a group (a runtime drop-in: purge must not meet it).
    mkdir -p /run/systemd/system/metadatafs.service.d
    printf '[Service]\nExecStart=\nExecStart=/usr/bin/metadatafs -f /meta -o allow_other,secret_group=tokens\n' \
        >/run/systemd/system/metadatafs.service.d/tokens.conf
    systemctl daemon-reload
    check "systemctl enable --now metadatafs.service" systemctl enable --now metadatafs.service ||
        return
    check "the service is active" is metadatafs.service SubState running
    check "service: project-id read through the mount" same_value
    check "service: another user in the group reads a token" alice_reads_token
    check "service: a user outside the group cannot" nobody_cannot_read_token

    # The upgrade, while a reader loops: no read fails, and the daemon is not restarted.
    pid=$(state metadatafs.service MainPID)
    rm -f /tmp/stop-reading
    reader &
    local reading=$!
    eventually reads_past 20
    check "apt upgrades to 0.1.0-2 under the reader" apt_install "$deb2" || touch /tmp/stop-reading
    check "installed: 0.1.0-2" test "$(installed_version)" = 0.1.0-2
    local after_upgrade=$(($(reads .) + 20))
    eventually reads_past "$after_upgrade"
    touch /tmp/stop-reading
    wait "$reading"
    echo "reader: $(reads .) good reads, $(reads E) failed"
    check "the reader saw no error during the upgrade" test "$(reads E)" = 0
    check "the reader read before, during and after" test "$(reads .)" -ge 40
    check "the daemon was not restarted" is metadatafs.service MainPID "$pid"
    check "it still runs the old binary, replaced on disk" \
        bash -c "readlink /proc/$pid/exe | grep -q '(deleted)'"
    check "the service is still active" is metadatafs.service SubState running
    check "systemd read the new unit files" is metadatafs.service NeedDaemonReload no
    check "still enabled after the upgrade" \
        test "$(systemctl is-enabled metadatafs.service)" = enabled
    check "the admin's restart switches to the new binary" systemctl restart metadatafs.service
    check "restarted: a new daemon, serving" eventually same_value
    check "restarted: running the installed binary" \
        bash -c "! readlink /proc/$(state metadatafs.service MainPID)/exe | grep -q deleted"

    # Remove: no unit, no mount, no daemon, including a mount made by hand elsewhere.
    mkdir -p /tmp/by-hand
    check "a mount by hand at /tmp/by-hand" metadatafs --endpoint "$emulator" /tmp/by-hand
    check "apt remove" env DEBIAN_FRONTEND=noninteractive apt-get remove -y -q metadatafs
    check "removed: no fuse.metadatafs mount left" no_fuse_mounts
    check "removed: no daemon left" eventually no_daemon
    check "removed: systemd knows no metadatafs.service" is metadatafs.service LoadState not-found
    check "removed: nor meta.mount" is meta.mount LoadState not-found
    check "removed: no binary" test ! -e /usr/bin/metadatafs -a ! -e /sbin/mount.fuse.metadatafs

    # Purge: nothing of the package, or of what its units did, is left.
    rm -rf /run/systemd/system/metadatafs.service.d
    check "apt purge" env DEBIAN_FRONTEND=noninteractive apt-get purge -y -q metadatafs
    check "purged: dpkg -L knows nothing" bash -c '! dpkg -L metadatafs >/dev/null 2>&1'
    out=$(diff <(echo "$before") <(snapshot))
    check "purged: no file left behind or missing: ${out:-none}" test -z "$out"
}
