#!/usr/bin/env bash
# shellcheck disable=SC2317  # trap handlers are reached only via "trap"
# Run a command against a throw-away PostgreSQL server.
#
#   tests/harness/with-pg.sh CMD ARGS...
#
# Starts a server (tests/harness/pg.sh) in a fresh temp dir, exports PGHOST,
# PGPORT, PGUSER, PGDATABASE and PGHARNESS_DIR, runs CMD, and always
# stops the server and removes the dir (EXIT/INT/TERM/HUP), even when CMD
# fails. Exits with CMD's status.
set -u

if [ $# -eq 0 ]; then
    echo "usage: $0 CMD [ARGS...]" >&2
    exit 2
fi

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
# shellcheck source=tests/harness/pg.sh
. "$here/pg.sh"

pgdir=
cmd_pid=
cleanup() {
    local rc=$?
    trap - EXIT INT TERM HUP
    if [ -n "$cmd_pid" ] && kill -0 "$cmd_pid" 2>/dev/null; then
        kill -TERM "$cmd_pid" 2>/dev/null
        wait "$cmd_pid" 2>/dev/null
    fi
    if [ -n "$pgdir" ]; then
        pg_harness_stop "$pgdir"
    fi
    exit "$rc"
}
on_signal() {
    # 128+signal, like a shell killed by that signal
    exit "$1"
}
trap cleanup EXIT
trap 'on_signal 130' INT
trap 'on_signal 143' TERM
trap 'on_signal 129' HUP

pgdir=$(mktemp -d "${TMPDIR:-/tmp}/migshim-pg.XXXXXX") || exit 1
chmod 755 "$pgdir"

exports=$(pg_harness_start "$pgdir") || {
    echo "with-pg.sh: could not start PostgreSQL" >&2
    exit 1
}
eval "$exports"

# Run CMD in the background so that a signal to us is handled promptly
# (the trap then stops CMD and the server).
"$@" <&0 &
cmd_pid=$!
wait "$cmd_pid"
rc=$?
# wait returns >128 when interrupted by a trapped signal; the trap exits then.
cmd_pid=
exit "$rc"
