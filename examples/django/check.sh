#!/usr/bin/env bash
# examples/django/check.sh — the Django example, started the way a fleet starts it.
#
#   tests/harness/with-pg.sh examples/django/check.sh [PRELOAD]    (or with PGHOST/PGPORT set)
#
# PRELOAD: what goes into LD_PRELOAD (default: build/libmigshim.so of this checkout).
# On a fresh database of the server PGHOST/PGPORT/PGUSER name, in a copy of the project:
#   1. `migshim heads --django` writes the target (the Dockerfile's RUN step);
#   2. four `python3 manage.py migrate --noinput` start together under the shim;
#   3. every one exits 0, exactly one led (MIGSHIM_EVENTS), django_migrations has no
#      duplicate, each data migration's rows exist once, and a following migrate has
#      nothing to do.
# Prints "check.sh: all checks passed" and exits 0, or says what failed and exits 1.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
root=$(cd "$here/../.." && pwd -P)
preload=${1:-$root/build/libmigshim.so}
migshim=$(dirname "${preload##*:}")/migshim
[ -x "$migshim" ] || migshim=$root/build/migshim
PY=/usr/bin/python3
N=4
: "${PGHOST:?set PGHOST/PGPORT (or run under tests/harness/with-pg.sh)}"
# nothing of a test run's own configuration reaches the shim
unset MIGSHIM_BUILD_DIR MIGSHIM_LIB MIGSHIM_CONFIG
for v in $(env | sed -n 's/^\(MIGSHIM_[A-Z_]*\)=.*/\1/p'); do unset "$v"; done

fail() { echo "check.sh: FAILED: $*"; exit 1; }
[ -f "${preload##*:}" ] || fail "no shim at ${preload##*:} (run make)"

tmp=$(mktemp -d /tmp/migshim-djcheck.XXXXXX)
db=migshim_djcheck_$$
cleanup() {
  psql -qX -d postgres -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null 2>&1
  rm -rf "$tmp"
}
trap cleanup EXIT
psql -qX -d postgres -c "CREATE DATABASE \"$db\"" >/dev/null || fail "cannot create $db"
cp -r "$here" "$tmp/project"
rm -rf "$tmp/project/.migshim-django.target"
cd "$tmp/project" || exit 1
export DATABASE_URL="postgresql://${PGUSER:-postgres}@/$db?host=$PGHOST&port=${PGPORT:-5432}"
export PYTHONDONTWRITEBYTECODE=1

echo "== migshim heads --django"
out=$(DJANGO_SETTINGS_MODULE=djexample.settings MIGSHIM_DJANGO_PYTHON=$PY "$migshim" heads --django 2>&1) || fail "heads: $out"
echo "$out"
[[ $out == *" Django migrations; target written to "*".migshim-django.target" ]] || fail "heads said: $out"

echo "== $N x manage.py migrate, together, LD_PRELOAD=${preload##*:}"
pids=()
for i in $(seq $N); do
  LD_PRELOAD=$preload MIGSHIM_LOG=info MIGSHIM_EVENTS=$tmp/events.jsonl \
    $PY manage.py migrate --noinput >"$tmp/out.$i" 2>&1 &
  pids+=($!)
done
rc=0
for i in $(seq $N); do
  wait "${pids[$((i - 1))]}" || { rc=1; echo "--- process $i failed:"; tail -n 20 "$tmp/out.$i"; }
done
[ $rc = 0 ] || fail "a manage.py migrate failed"
grep -h 'migshim\[' "$tmp"/out.* | sed 's/^/  /'
echo "ok: all $N exited 0"

leaders=$(grep -c '"event":"leading"' "$tmp/events.jsonl")
[ "$leaders" = 1 ] || fail "$leaders processes led (want 1)"
echo "ok: one leader"
dups=$(psql -XAt -d "$db" -c "SELECT count(*) FROM (SELECT app, name FROM django_migrations
        GROUP BY 1, 2 HAVING count(*) > 1) d")
[ "$dups" = 0 ] || fail "$dups migrations recorded more than once"
echo "ok: django_migrations has no duplicate (app, name)"
seeded=$(psql -XAt -d "$db" -c "SELECT (SELECT count(*) FROM catalog_category) || ' '
        || (SELECT count(*) FROM catalog_product) || ' ' || (SELECT count(*) FROM billing_currency)
        || ' ' || (SELECT count(*) FROM blog_tag)")
[ "$seeded" = "5 3 4 3" ] || fail "seeded rows: $seeded (want 5 3 4 3)"
echo "ok: each data migration's rows exist once (categories 5, products 3, currencies 4, tags 3)"
again=$($PY manage.py migrate --noinput 2>&1) || fail "migrate again: $again"
[[ $again == *"No migrations to apply."* ]] || fail "a following migrate did something: $again"
echo "ok: a following migrate has nothing to do"
echo "check.sh: all checks passed"
