#!/usr/bin/env bash
# shellcheck disable=SC2317  # trap handlers are reached only via "trap"
# tests/driver_suites/run.sh [SUITE...] — the drivers' own test suites, each
# run twice: plain, then with the library preloaded (issue 22).  The
# verdicts (passed/failed/skipped/error by test id) of the two runs must be
# the same; compare.py prints the table and fails when they differ.
#
# Suites (all by default):
#   asyncpg         asyncpg 0.27.0's tests/ on asyncio; asyncpg's own test
#                   clusters (asyncpg.cluster: initdb + pg_ctl, as the
#                   `postgres` user when run as root: initdb refuses root)
#   asyncpg-uvloop  the same with USE_UVLOOP=1 (asyncpg's switch)
#   pg8000          pg8000 1.10.6's pg8000/tests against a server started by
#                   tests/harness/with-pg.sh, set up as those tests expect
#                   (TCP, SSL, a password, md5/password/gss pg_hba lines)
#
# The tests are the upstream files of the releases Debian bookworm packages
# (python3-asyncpg 0.27.0, python3-pg8000 1.10.6), kept in this directory:
# README.md says why and where from.  They run against the installed
# drivers with /usr/bin/python3; nothing comes from PyPI.
#
# Preloaded means: LD_PRELOAD=<the wire library> MIGSHIM_HEADS=r1, the least
# that makes the wire gate act: every database is behind (no version table),
# so each process's first connection to a database leads (takes the session
# lock, held until that connection closes) and the others pass as "decided
# already in this process".  No other MIGSHIM_* variable reaches the tests
# (the shim refuses unknown ones).  The servers are never preloaded: the
# asyncpg suite's pg_ctl/initdb are reached through wrappers that drop
# LD_PRELOAD (PGINSTALLATION).
#
# Environment:
#   DRIVER_SUITES_LIB   the library to preload (default: build/libmigshim.so)
#   DRIVER_SUITES_OUT   where the logs and JUnit files go (default: build/driver-suites)
#   DRIVER_SUITES_LOG   MIGSHIM_LOG for the preloaded runs (default: unset, i.e. info)
#   DRIVER_SUITES_RERUNS  how many times a differing test is run again each way (default 3)
#   PG_BINDIR            the PostgreSQL binaries (default: /usr/lib/postgresql/15/bin)
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 2
root=$(pwd -P)
here=$root/tests/driver_suites
py=/usr/bin/python3

lib=${DRIVER_SUITES_LIB:-build/libmigshim.so}
out=${DRIVER_SUITES_OUT:-build/driver-suites}
bindir=${PG_BINDIR:-/usr/lib/postgresql/15/bin}
suites=("$@")
[ ${#suites[@]} -gt 0 ] || suites=(asyncpg asyncpg-uvloop pg8000)
for s in "${suites[@]}"; do
    case "$s" in asyncpg|asyncpg-uvloop|pg8000) ;; *) echo "driver-suites: unknown suite $s" >&2; exit 2 ;; esac
done
[ -s "$lib" ] || { echo "driver-suites: no $lib (make all builds it)" >&2; exit 2; }
[ -x "$bindir/initdb" ] || { echo "driver-suites: no $bindir/initdb (make deps)" >&2; exit 2; }
"$py" -c 'import pytest, asyncpg, pg8000, six' || { echo "driver-suites: make deps installs the drivers and pytest" >&2; exit 2; }
for v in asyncpg:0.27.0 pg8000:1.10.6; do
    got=$("$py" -c "import ${v%%:*} as m; print(m.__version__)")
    [ "$got" = "${v#*:}" ] || echo "driver-suites: warning: ${v%%:*} $got installed, the tests are ${v#*:}'s" >&2
done

mkdir -p "$out"; out=$(cd "$out" && pwd -P)
rm -f "$out"/*.xml "$out"/*.log
# A work dir the server's user can enter: the tests, the library and the
# wrapped PostgreSQL binaries are copied there, so no parent of the checkout
# needs to be readable by it, and nothing is written into the checkout.
work=$(mktemp -d "${TMPDIR:-/tmp}/migshim-suites.XXXXXX") || exit 1
chmod 755 "$work"
# A signal stops the running suite (timeout passes it on to pytest, whose
# atexit stops asyncpg's clusters; with-pg.sh stops its server), then the
# work dir goes.
child=
on_signal() {
    trap - INT TERM HUP
    [ -n "$child" ] && kill -TERM "$child" 2>/dev/null && wait "$child"
    exit "$1"
}
trap 'rm -rf "$work"' EXIT
trap 'on_signal 130' INT
trap 'on_signal 143' TERM
trap 'on_signal 129' HUP
cp -r "$here/asyncpg-0.27.0" "$here/pg8000-1.10.6" "$work/"
cp "$lib" "$work/libmigshim.so"
mkdir "$work/pgbin" "$work/tmp"
for f in "$bindir"/*; do
    printf '#!/bin/sh\nexec env -u LD_PRELOAD %s "$@"\n' "$f" >"$work/pgbin/$(basename "$f")"
    chmod 755 "$work/pgbin/$(basename "$f")"
done
asuser=()
if [ "$(id -u)" -eq 0 ]; then
    chown -R postgres "$work"
    asuser=(runuser -u postgres --)
fi

# The environment of every run: only what the tests need (no MIGSHIM_*, no
# PG* of the caller), the preload added by the preloaded run.
base_env=(env -i PATH=/usr/bin:/bin HOME="$work/tmp" TMPDIR="$work/tmp" LANG=C.UTF-8
          PYTHONDONTWRITEBYTECODE=1 PGINSTALLATION="$work/pgbin")
preload_env=(LD_PRELOAD="$work/libmigshim.so" MIGSHIM_HEADS=r1)
[ -n "${DRIVER_SUITES_LOG:-}" ] && preload_env+=(MIGSHIM_LOG="$DRIVER_SUITES_LOG")
# the captured stderr goes into the JUnit files: compare.py counts the shim's lines
pytest=("$py" -m pytest -p no:cacheprovider -rfEs -o junit_family=xunit1 -o junit_logging=system-err)

# run_suite SUITE MODE TAG [TEST-ID...]: one run (the whole suite, or the
# ids given), its JUnit file ($out/SUITE-MODE[-TAG].xml) and log.
run_suite() {
    local suite=$1 mode=$2 tag=$3 extra=() rc t0 name
    shift 3
    name=$suite-$mode${tag:+-$tag}
    [ "$mode" = preloaded ] && extra=("${preload_env[@]}")
    local xml="$work/tmp/$name.xml" log="$out/$name.log"
    t0=$(date +%s)
    case "$suite" in
        asyncpg|asyncpg-uvloop)
            local uv=()
            [ "$suite" = asyncpg-uvloop ] && uv=(USE_UVLOOP=1)
            [ $# -gt 0 ] || set -- tests
            (cd "$work/asyncpg-0.27.0" &&
             exec timeout 1200 "${asuser[@]}" "${base_env[@]}" "${uv[@]}" "${extra[@]}" \
                 "${pytest[@]}" --junitxml="$xml" "$@") >"$log" 2>&1 &
            child=$!; wait "$child"; rc=$?; child= ;;
        pg8000)
            [ $# -gt 0 ] || set -- pg8000/tests
            PG_BINDIR="$bindir" timeout 1200 tests/harness/with-pg.sh \
                "$here/pg8000-run.sh" "$work" "${base_env[@]}" "${extra[@]}" \
                "${pytest[@]}" --junitxml="$xml" "$@" >"$log" 2>&1 &
            child=$!; wait "$child"; rc=$?; child= ;;
    esac
    cp "$xml" "$out/$name.xml" 2>/dev/null
    printf 'driver-suites: %-15s %-9s %-7s exit %d, %d s (%s)\n' "$suite" "$mode" "${tag:-}" "$rc" \
        "$(( $(date +%s) - t0 ))" "$(tail -n 1 "$log")"
}

# A test whose verdict differs is run again, alone, RERUNS times in each
# mode: compare.py lets a difference pass only when the test gives more than
# one verdict without the preload (it is nondeterministic by itself) and the
# preloaded runs gave none but those.
reruns=${DRIVER_SUITES_RERUNS:-3}
args=()
for s in "${suites[@]}"; do
    run_suite "$s" plain ""
    run_suite "$s" preloaded ""
    plain=$out/$s-plain.xml pre=$out/$s-preloaded.xml
    mapfile -t ids < <("$py" "$here/compare.py" --differing "$out/$s-plain.xml" "$out/$s-preloaded.xml")
    if [ ${#ids[@]} -gt 0 ] && [ "$reruns" -gt 0 ]; then
        echo "driver-suites: $s: ${#ids[@]} verdict(s) differ, run again $reruns times each way: ${ids[*]}"
        for k in $(seq 1 "$reruns"); do
            run_suite "$s" plain "rerun$k" "${ids[@]}"
            run_suite "$s" preloaded "rerun$k" "${ids[@]}"
            plain+=",$out/$s-plain-rerun$k.xml" pre+=",$out/$s-preloaded-rerun$k.xml"
        done
    fi
    args+=("$s" "$plain" "$pre")
done
"$py" "$here/compare.py" "${args[@]}" | tee "$out/summary.txt"
exit "${PIPESTATUS[0]}"
