#!/usr/bin/env bash
# Throw-away PostgreSQL server for migshim's tests.
#
# Usage (executable):
#   eval "$(tests/harness/pg.sh start DIR)"   # initdb + start, prints export lines
#   tests/harness/pg.sh stop DIR              # immediate stop, then rm -rf DIR
#
# Usage (sourced):
#   . tests/harness/pg.sh
#   pg_harness_start DIR      # same output as "pg.sh start DIR"
#   pg_harness_stop DIR
#
# The server:
#   * data directory DIR/data, log DIR/postgresql.log (log_line_prefix has the pid)
#   * Unix socket in DIR, TCP only on 127.0.0.1 on a free port in 20000-60000
#   * trust authentication for local and 127.0.0.1 / ::1
#   * fsync=off, max_connections=200
# When run as root, initdb/postgres run as the "postgres" user (runuser) and DIR
# is chowned to it; DIR's parents must be traversable by that user.
#
# Environment knobs:
#   PG_BINDIR      (default: pg_config --bindir, else /usr/lib/postgresql/15/bin)
#   PG_HARNESS_USER  OS user to run the server as when root (default postgres)

pg_harness__log() { printf 'pg.sh: %s\n' "$*" >&2; }

pg_harness__bindir() {
    if [ -n "${PG_BINDIR:-}" ]; then
        printf '%s\n' "$PG_BINDIR"; return
    fi
    local d
    for d in /usr/lib/postgresql/15/bin /usr/lib/postgresql/*/bin; do
        if [ -x "$d/initdb" ]; then printf '%s\n' "$d"; return; fi
    done
    if command -v pg_config >/dev/null 2>&1; then
        d=$(pg_config --bindir 2>/dev/null)
        if [ -x "$d/initdb" ]; then printf '%s\n' "$d"; return; fi
    fi
    if command -v initdb >/dev/null 2>&1; then
        dirname "$(command -v initdb)"; return
    fi
    return 1
}

# Run a command as the server's OS user (root) or as ourselves (non-root).
pg_harness__as_pg() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u "${PG_HARNESS_USER:-postgres}" -- "$@"
    else
        "$@"
    fi
}

# Is 127.0.0.1:PORT (and the matching Unix socket name) free?
pg_harness__port_free() {
    local port=$1
    if command -v ss >/dev/null 2>&1; then
        if ss -Htan "sport = :$port" 2>/dev/null | grep -q .; then
            return 1
        fi
    fi
    # A real bind test is the authority (ss may be missing or filtered).
    /usr/bin/python3 - "$port" <<'PYEOF' 2>/dev/null
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
finally:
    s.close()
PYEOF
}

pg_harness__pick_port() {
    local port
    for _ in $(seq 1 200); do
        port=$(( 20000 + (RANDOM * 32768 + RANDOM) % 40001 ))
        if pg_harness__port_free "$port"; then
            printf '%s\n' "$port"; return 0
        fi
    done
    return 1
}

pg_harness_start() {
    local dir=${1:?usage: pg.sh start DIR}
    local bindir port user attempt
    bindir=$(pg_harness__bindir) || { pg_harness__log "cannot find initdb"; return 1; }
    user=${PG_HARNESS_USER:-postgres}

    mkdir -p "$dir" || return 1
    dir=$(cd "$dir" && pwd -P) || return 1
    if [ -e "$dir/data" ]; then
        pg_harness__log "$dir/data already exists; refusing to reuse it"
        return 1
    fi
    # Unix socket paths are limited to ~107 bytes.
    if [ $(( ${#dir} + 20 )) -gt 107 ]; then
        pg_harness__log "directory path too long for a Unix socket: $dir"
        return 1
    fi
    if [ "$(id -u)" -eq 0 ]; then
        chown "$user" "$dir" || return 1
        chmod 755 "$dir" || return 1
        if ! runuser -u "$user" -- test -x "$dir"; then
            pg_harness__log "user $user cannot enter $dir (check its parents' permissions)"
            return 1
        fi
    fi

    # initdb (run from DIR so the server user can stat its cwd)
    if ! (cd "$dir" && pg_harness__as_pg "$bindir/initdb" -D "$dir/data" \
            -U postgres --auth=trust --encoding=UTF8 --locale=C.UTF-8 \
            --no-sync >"$dir/initdb.log" 2>&1); then
        # C.UTF-8 may be missing on some systems: retry with plain C
        rm -rf "$dir/data"
        if ! (cd "$dir" && pg_harness__as_pg "$bindir/initdb" -D "$dir/data" \
                -U postgres --auth=trust --encoding=UTF8 --locale=C \
                --no-sync >>"$dir/initdb.log" 2>&1); then
            pg_harness__log "initdb failed:"; cat "$dir/initdb.log" >&2
            return 1
        fi
    fi

    # Authentication: trust for the socket and loopback only.
    cat >"$dir/data/pg_hba.conf" <<'EOF'
# migshim test harness: trust, loopback only
local   all             all                                     trust
host    all             all             127.0.0.1/32            trust
host    all             all             ::1/128                 trust
local   replication     all                                     trust
host    replication     all             127.0.0.1/32            trust
EOF

    for attempt in 1 2 3 4 5; do
        port=$(pg_harness__pick_port) || { pg_harness__log "no free port found"; return 1; }
        cat >"$dir/data/postgresql.auto.conf" <<EOF
# written by tests/harness/pg.sh
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
unix_socket_permissions = 0777
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
shared_buffers = 32MB
logging_collector = off
log_line_prefix = '%m [%p] %q%u@%d '
log_min_messages = warning
log_connections = off
log_timezone = 'UTC'
timezone = 'UTC'
datestyle = 'iso, mdy'
lc_messages = 'C'
EOF
        chown "$(stat -c %u "$dir/data")" "$dir/data/postgresql.auto.conf" 2>/dev/null || true
        if (cd "$dir" && pg_harness__as_pg "$bindir/pg_ctl" -D "$dir/data" \
                -l "$dir/postgresql.log" -w -t 60 -s start >&2); then
            for _ in $(seq 1 100); do
                if "$bindir/pg_isready" -q -h "$dir" -p "$port" -U postgres -d postgres; then
                    cat <<EOF
export PGHOST='$dir'
export PGPORT='$port'
export PGUSER='postgres'
export PGDATABASE='postgres'
export PGHARNESS_DIR='$dir'
EOF
                    return 0
                fi
                sleep 0.1
            done
            pg_harness__log "server started but pg_isready never succeeded; log:"
            tail -n 30 "$dir/postgresql.log" >&2
            pg_harness_kill_server "$dir"
            return 1
        fi
        pg_harness__log "start on port $port failed (attempt $attempt); log tail:"
        tail -n 10 "$dir/postgresql.log" >&2 2>/dev/null
        pg_harness_kill_server "$dir"
    done
    return 1
}

# Stop the server in DIR (immediate mode) without removing anything.
pg_harness_kill_server() {
    local dir=${1:?}
    local bindir pid
    local pidfile="$dir/data/postmaster.pid"
    [ -f "$pidfile" ] || return 0
    pid=$(head -n 1 "$pidfile" 2>/dev/null)
    case "$pid" in ''|*[!0-9]*) return 0 ;; esac
    bindir=$(pg_harness__bindir) || bindir=
    if kill -0 "$pid" 2>/dev/null; then
        if [ -n "$bindir" ]; then
            (cd "$dir" && pg_harness__as_pg "$bindir/pg_ctl" -D "$dir/data" \
                -m immediate -w -t 30 -s stop >/dev/null 2>&1) || true
        fi
        # Fallback: signal the postmaster (its own pid, from postmaster.pid).
        if kill -0 "$pid" 2>/dev/null; then
            kill -QUIT "$pid" 2>/dev/null || true
            for _ in $(seq 1 50); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.1
            done
        fi
        if kill -0 "$pid" 2>/dev/null; then
            kill -KILL "$pid" 2>/dev/null || true
            sleep 0.2
        fi
    fi
    return 0
}

pg_harness_stop() {
    local dir=${1:?usage: pg.sh stop DIR}
    [ -d "$dir" ] || return 0
    pg_harness_kill_server "$dir"
    # Safety: only remove directories that look like ours.
    if [ -d "$dir/data" ] || [ -f "$dir/postgresql.log" ] || [ -f "$dir/initdb.log" ] \
            || [ -z "$(ls -A "$dir" 2>/dev/null)" ]; then
        rm -rf "$dir"
    else
        pg_harness__log "not removing $dir: does not look like a pg.sh directory"
        return 1
    fi
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -u
    case "${1:-}" in
        start) shift; pg_harness_start "$@" ;;
        stop)  shift; pg_harness_stop "$@" ;;
        *) echo "usage: $0 start|stop DIR" >&2; exit 2 ;;
    esac
fi
