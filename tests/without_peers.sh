#!/bin/bash
# Run a command as on a machine without DCMTK, Orthanc (+ its DICOMweb plugin) and PostgreSQL, to check that
# `python3 -m pytest -m "not interop"` needs none of them (as root: it uses unshare and mount):
#
#     tests/without_peers.sh python3 -m pytest -m "not interop"
#
# The script runs itself in a new private mount namespace (unshare) and changes mounts only there: /usr/bin,
# /usr/sbin and /usr/local/bin list every entry but the dcmtk package's programs, Orthanc and the PostgreSQL links;
# /usr/lib/postgresql and /usr/share/orthanc are empty. Nothing changes for any other process.
set -euo pipefail
INSIDE=--in-a-private-mount-namespace
if [ "${1:-}" != "$INSIDE" ]; then
    exec unshare --mount --propagation private "$0" "$INSIDE" "$@"
fi
shift
# unshare exec'd this script: its parent is the caller, in the mount namespace that must stay untouched
if [ "$(readlink /proc/$$/ns/mnt)" = "$(readlink /proc/$PPID/ns/mnt)" ]; then
    echo "$0: not in a mount namespace of its own; refusing to change mounts" >&2
    exit 2
fi
work=$(mktemp -d /tmp/without-peers.XXXXXX)

hide_from() {  # hide_from DIR NAME...: DIR lists every entry but NAME...
    local dir=$1 key
    shift
    key=$(echo "$dir" | tr / _)
    mkdir -p "$work/orig$key" "$work/shadow$key"
    mount --bind "$dir" "$work/orig$key"
    mount -t tmpfs tmpfs "$work/shadow$key"
    local skip=" $* " entry name
    for entry in "$work/orig$key"/* "$work/orig$key"/.[!.]*; do
        [ -e "$entry" ] || [ -L "$entry" ] || continue
        name=$(basename "$entry")
        case "$skip" in *" $name "*) continue ;; esac
        ln -s "$entry" "$work/shadow$key/$name"
    done
    mount --bind "$work/shadow$key" "$dir"
}

hide_from /usr/bin $(dpkg -L dcmtk 2>/dev/null | grep '^/usr/bin/' | xargs -r -n1 basename | tr '\n' ' ')
hide_from /usr/sbin Orthanc
hide_from /usr/local/bin pg_ctl initdb postgres
for dir in /usr/lib/postgresql /usr/share/orthanc; do
    if [ -d "$dir" ]; then mount -t tmpfs tmpfs "$dir"; fi
done
exec "$@"
