#!/bin/sh
# slim-ns.sh -- COMMAND [ARGS...]
#
# Runs COMMAND in a private mount namespace (unshare -m; needs root) that
# emulates a slim image: libconfig and the system libpq cannot be loaded.
# An empty file is bind-mounted over each library's real file, so every
# name that reaches it (libconfig.so.9, libpq.so.5, the ld.so cache entry)
# fails with "file too short"; nothing outside the namespace changes.
# COMMAND keeps this pid (unshare and sh exec), so a caller can signal it.
set -eu
[ "${1:-}" = "--" ] && shift
[ $# -gt 0 ] || { echo "usage: $0 -- COMMAND [ARGS...]" >&2; exit 64; }

hide=
for soname in libconfig.so.9 libpq.so.5; do
    p=$(/sbin/ldconfig -p | awk -v n="$soname" '$1 == n && /x86-64|=>/ { print $NF; exit }')
    [ -n "$p" ] || continue
    hide="$hide $(readlink -f "$p")"
done
empty=$(mktemp "${TMPDIR:-/tmp}/slim-ns-empty.XXXXXX")
export HIDE="$hide"

# The mounts are made inside the new namespace; the empty file may go once
# they are made (a bind mount keeps its inode).
exec unshare -m --propagation private -- /bin/sh -c '
    empty=$1; shift
    for f in $HIDE; do mount --bind "$empty" "$f"; done
    rm -f "$empty"
    exec "$@"' slim-ns "$empty" "$@"
