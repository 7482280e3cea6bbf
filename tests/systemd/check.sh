#!/bin/bash
# Runs inside a container booted by tests/systemd.rs, as the oneshot unit run-tests@.service:
# checks one scenario of the shipped units against the real systemd that booted it, writes
# what it saw to /results/log, and fails if any check failed, which ends the container with
# exit status 1 (0 if all passed). The shipped units are untouched; drop-ins only point them at
# the emulator (metadatafs-test-emulator.service on 127.0.0.1:8080, in the container's own
# network namespace).
set -u
exec >>/results/log 2>&1
echo "== booted"  # first, before anything that could fail: the host tells a boot from a test
failures=0

ok() { echo "ok: $*"; }
fail() {
    echo "FAIL: $*"
    failures=$((failures + 1))
}
check() {
    local what=$1
    shift
    if "$@"; then ok "$what"; else fail "$what" && return 1; fi
}
# Poll for up to 15 s: never a fixed sleep.
eventually() {
    local i
    for i in $(seq 150); do
        "$@" && return 0
        sleep 0.1
    done
    return 1
}
state() { systemctl show -P "$2" "$1"; }
is() { [ "$(state "$1" "$2")" = "$3" ]; }
fstype() { findmnt -n -o FSTYPE --mountpoint /meta | tail -n 1; }
not_mounted() { ! findmnt --mountpoint /meta >/dev/null; }
no_daemon() { ! grep -qx metadatafs /proc/[0-9]*/comm 2>/dev/null; }
as_nobody() { timeout 15 setpriv --reuid=65534 --regid=65534 --clear-groups "$@" >/dev/null; }
# GET from the emulator directly (bash's /dev/tcp; no curl in a minbase root).
mds_get() {
    exec 3<>/dev/tcp/127.0.0.1/8080
    printf 'GET /computeMetadata/v1/%s HTTP/1.0\r\nMetadata-Flavor: Google\r\n\r\n' "$1" >&3
    sed '1,/^\r$/d' <&3
    exec 3<&-
}
# Reads through the mount never hang the test: a stuck mount is a failed check.
same_value() { [ "$(timeout 15 cat /meta/project/project-id)" = "$expected" ]; }

# What a user of the mount sees while it is up, from outside the unit that made it.
check_mount_readable() {
    local unit=$1
    check "$unit: /meta is fuse.metadatafs" test "$(fstype)" = fuse.metadatafs
    check "$unit: project-id read through the mount" same_value
    check "$unit: another user reads a value (allow_other)" \
        as_nobody cat /meta/project/project-id
    check "$unit: another user reads the status" as_nobody cat /meta/.metadatafs/status
    check "$unit: root reads the token" grep -q '"access_token"' /meta/service-accounts/default/token
    check "$unit: another user cannot read the token" \
        bash -c '! setpriv --reuid=65534 --regid=65534 --clear-groups \
            cat /meta/service-accounts/default/token 2>/dev/null'
    check "$unit: the status names the emulator as endpoint" \
        grep -q '"endpoint": "127.0.0.1:8080"' /meta/.metadatafs/status
}

scenario_service() {
    local out pid
    out=$(systemd-analyze verify metadatafs.service meta.mount 2>&1)
    check "systemd-analyze verify exits 0" test $? = 0
    check "systemd-analyze verify says nothing: ${out:-clean}" test -z "$out"
    systemd-analyze security --offline=yes metadatafs.service >/results/security 2>&1
    sed -n 's/.*Overall exposure level for metadatafs.service: \([0-9.]*\).*/\1/p' \
        /results/security >/results/exposure

    check "metadatafs.service starts" systemctl start metadatafs.service
    check "active (running) after READY=1" is metadatafs.service SubState running
    check_mount_readable metadatafs.service

    pid=$(state metadatafs.service MainPID)
    systemctl kill -s SIGKILL metadatafs.service
    restarted() {
        is metadatafs.service SubState running && ! is metadatafs.service MainPID "$pid" &&
            same_value 2>/dev/null
    }
    check "killed, it restarts and reuses the dead mountpoint" eventually restarted
    check "NRestarts counts it" is metadatafs.service NRestarts 1

    check "metadatafs.service stops" systemctl stop metadatafs.service
    check "stopped cleanly, not failed" is metadatafs.service Result success
    check "stop unmounted /meta" not_mounted
    check "the daemon is gone" eventually no_daemon

    # A unit ordered after the service pulls it in and finds the mount live.
    check "a unit ordered after metadatafs.service reads /meta" \
        systemctl start meta-reader.service
    check "the reader saw the value" test "$(cat /results/reader 2>/dev/null)" = "$expected"
    # A busy mount (a shell sitting in it) is detached lazily on stop, never left half-dead.
    (cd /meta && exec sleep 60) &
    local busy=$!
    eventually test -d "/proc/$busy/cwd/project"
    check "stop with a busy mount succeeds" systemctl stop metadatafs.service
    check "the busy mount is detached" not_mounted
    check "stopped cleanly, not failed, though busy" is metadatafs.service Result success
    kill "$busy"
}

scenario_mount() {
    check "meta.mount starts" systemctl start meta.mount
    check "meta.mount is active (mounted)" is meta.mount SubState mounted
    check_mount_readable meta.mount
    check "meta.mount stops" systemctl stop meta.mount
    check "stop unmounted /meta" not_mounted
    check "the daemon is gone" eventually no_daemon

    # A unit that needs /meta pulls the mount unit in and is ordered after it.
    rm -f /results/reader
    check "a unit with RequiresMountsFor=/meta reads it" systemctl start meta-mount-reader.service
    check "the reader saw the value" test "$(cat /results/reader 2>/dev/null)" = "$expected"
    check "meta.mount stops again" systemctl stop meta.mount
    check "the daemon is gone again" eventually no_daemon

    # What an fstab line does: mount(8) runs /sbin/mount.fuse.metadatafs.
    check "mount -t fuse.metadatafs, as fstab does" env GCE_METADATA_HOST=127.0.0.1:8080 \
        mount -t fuse.metadatafs -o allow_other,_netdev metadata /meta
    check "mount(8): /meta is fuse.metadatafs" test "$(fstype)" = fuse.metadatafs
    check "mount(8): project-id read through the mount" same_value
    check "umount /meta" umount /meta
    check "umount: /meta unmounted" not_mounted
    check "umount: the daemon is gone" eventually no_daemon
}

scenario_install() {
    check "scripts/install runs" env BIN_DIR=/src/bin /src/scripts/install
    check "the binary is on PATH" test "$(command -v metadatafs)" = /usr/local/bin/metadatafs
    check "the mount helper links to it" \
        test "$(readlink /sbin/mount.fuse.metadatafs)" = /usr/local/bin/metadatafs
    # The emulator is one of the binaries just installed.
    check "the installed emulator starts" systemctl restart metadatafs-test-emulator.service
    expected=$(mds_get project/project-id)
    check "the emulator answers project-id" test -n "$expected"
    local out
    out=$(systemd-analyze verify metadatafs.service meta.mount 2>&1)
    check "the installed units verify clean: ${out:-clean}" test -z "$out"
    check "the installed service starts" systemctl start metadatafs.service
    check_mount_readable installed
    check "the installed service stops" systemctl stop metadatafs.service
    check "stop unmounted /meta" not_mounted
    check "mount -t fuse.metadatafs finds the installed helper" \
        env GCE_METADATA_HOST=127.0.0.1:8080 mount -t fuse.metadatafs metadata /meta
    check "mount(8): project-id read through the mount" same_value
    check "umount /meta" umount /meta
    check "the daemon is gone" eventually no_daemon
}

# The .deb's scenario (tests/systemd/deb.rs) lives in its own file.
. /usr/local/lib/metadatafs-test/package.sh

echo "== scenario $1 under $(systemctl --version | head -n 1)"
expected=
if [ "$1" != install ]; then
    expected=$(mds_get project/project-id)
    check "the emulator answers project-id" test -n "$expected"
fi
"scenario_$1"
echo "== $failures failed"
if [ "$failures" != 0 ]; then
    journalctl -b --no-pager -o short-monotonic \
        -u metadatafs.service -u meta.mount -u meta-reader.service \
        -u metadatafs-test-emulator.service >/results/journal 2>&1
    journalctl -b --no-pager -p warning >>/results/journal 2>&1
fi
# run-tests@.service turns this into the container's exit status.
[ "$failures" = 0 ]
