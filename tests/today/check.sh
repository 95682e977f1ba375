#!/usr/bin/env bash
# The today suite of make check (tests/run.sh; alone: make check-today):
# builds the second stack ("today's releases", tests/today/build.sh), then
# runs the e2e fleets that matter on it, with the existing drivers
# (tests/e2e/fleet.py, djfleet.py) switched by E2E_PYTHON (the
# Python that runs the apps) and E2E_DRIVER (psycopg2 or psycopg).
# pytest itself stays Debian's /usr/bin/python3.  Closing line:
#   today: N passed, N failed (<versions>; T s)
# and, for tests/run.sh, $B/today/tally ("N N") and $B/today/label.  A
# missing piece (no pyenv, no Python 3.13) is one line "today: skipped: ..."
# (the reason also in $B/today/skipped) and exit status 77, never a silent
# pass; tests/run.sh makes that a failure with CI=true.
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
. "$ROOT/tests/harness/pytest-tally.sh"
B=${B:-build}
D=$ROOT/$B/today
export MIGSHIM_BUILD_DIR=$ROOT/$B
RESULTS=${TODAY_RESULTS:-$D/results}
PY=/usr/bin/python3

record() { printf '%s %s %s\n' "$1" "$2" "$3" >>"$RESULTS"; }

run_pytest() { # label python driver env... -- pytest args...
  local label=$1 python=$2 driver=$3; shift 3
  local envs=()
  while [ "$1" != "--" ]; do envs+=("$1"); shift; done; shift
  local log=$D/pytest-${label//[^a-zA-Z0-9]/_}.log t0=$SECONDS
  echo "== today: $label (python $python, driver $driver)"
  env E2E_PYTHON="$python" E2E_DRIVER="$driver" "${envs[@]}" \
    $PY -m pytest -q -p no:cacheprovider -rfE --durations=8 "$@" 2>&1 | tee "$log" |
    grep -vE '^\.*$|^[.sFEx]+ *\[ *[0-9]+%\]$' || true
  local tally
  tally=$(pytest_tally "$log")
  record "$label" ${tally}
  echo "   ($label: $((SECONDS - t0)) s)"
}

# The scenarios issue 21 names, each once, sized for make check's CI time
# (docs/compatibility.md: what each takes): Alembic from empty and from
# behind, Flask-Migrate, transaction_per_migration, on psycopg2 and psycopg 3;
# the guard-only fleets; Django migrate containers and Gunicorn call_command
# workers on Django 5.2 (psycopg 3, and psycopg2 alone) and 6.x; target
# unknown; a short oracle.  Every group keeps its teeth: the same fleet
# without the shim (or without the guard) must fail.
if [ "${1:-}" = "--server" ]; then
  V5=$D/venv-dj5/bin/python V6=$D/venv-dj6/bin/python V5P2=$D/venv-dj5-pg2/bin/python
  REPEATS="GATE_FLEET_REPEATS=${GATE_FLEET_REPEATS:-3} GUARD_FLEET_RUNS=${GUARD_FLEET_RUNS:-6}"
  GATE='teeth or empty_db or intermediate_revision[8] or flask_migrate'
  DJ_SHIM='empty-4-containers+gunicorn or behind-4-containers or data_behind-8-workers'
  run_pytest "alembic, psycopg2" "$V5" psycopg2 $REPEATS -- \
    tests/e2e/test_gate_fleet.py tests/e2e/test_guard_fleet.py \
    -k "$GATE or guard_alone_16_workers_from_an_empty or guard_alone_16_workers_from_an_intermediate"
  # psycopg 3 in pure Python is the slow one: the same fleets less often; the
  # Flask-Migrate layout (the same driver path as flask-alembic) on psycopg2
  # only.  The guard-off control too: its workers start so spread out that
  # 3 attempts without the guard did not always race (2026-12-07, load 25);
  # the guard-alone fleets still must have raced in 3 of their 6 runs
  # (test_guard_fleet.py's MIN_RACED_RUNS), and the gate's control runs here.
  run_pytest "alembic, psycopg 3" "$V5" psycopg GATE_FLEET_REPEATS=${GATE_FLEET_REPEATS:-2} \
    GUARD_FLEET_RUNS=${GUARD_FLEET_RUNS:-6} -- \
    tests/e2e/test_gate_fleet.py tests/e2e/test_guard_fleet.py \
    -k "race_without_shim or empty_db or intermediate_revision[8] or guard_alone_16_workers_from_an_empty"
  run_pytest "transaction_per_migration, guard only" "$V5" psycopg2 -- tests/today/test_today_tpm.py
  # (Django picks psycopg 3 itself where it imports; the driver argument only
  # makes the Alembic apps' URL, and the Django example wants postgresql://)
  run_pytest "Django 5.2, psycopg 3" "$V5" psycopg2 -- tests/e2e/test_django.py \
    -k "fleet_with_shim and ($DJ_SHIM) and not data_behind-4 or without_shim or target_unknown"
  run_pytest "Django 5.2, psycopg2 alone" "$V5P2" psycopg2 -- tests/e2e/test_django.py \
    -k "fleet_with_shim and (empty-4-containers+gunicorn or data_behind-8-workers) or without_shim"
  run_pytest "Django 6.x, psycopg 3" "$V6" psycopg2 -- tests/e2e/test_django.py \
    -k "fleet_with_shim and (empty-4-containers+gunicorn or data_behind-8-workers) or without_shim"
  run_pytest "oracle, short" "$V5" psycopg2 ORACLE_RUNS=${ORACLE_RUNS:-2} -- tests/oracle/test_oracle.py
  exit 0
fi

mkdir -p "$D"; : >"$RESULTS"
# For tests/run.sh (make check): the tally ("PASSED FAILED"), the stack's
# label, or why it was skipped.
rm -f "$D/tally" "$D/label" "$D/skipped"
t0=$SECONDS
out=$(tests/today/build.sh "$D" 2>&1); rc=$?
printf '%s\n' "$out"
if [ "$rc" = 77 ]; then
  grep -m1 '^today: skipped: ' <<<"$out" | sed 's/^today: skipped: //' >"$D/skipped"
  echo "today: 0 passed, 0 failed (skipped: the stack could not be built here; see the line above)"
  exit 77
fi
[ "$rc" = 0 ] || { echo "0 1" >"$D/tally"; echo "today: 0 passed, 1 failed (tests/today/build.sh failed, rc=$rc)"; exit 1; }
echo "today: stack ready in $((SECONDS - t0)) s"
make -s B="$B" tests >/dev/null || { echo "building the tests failed"; record tests-build 0 1; }
TODAY_RESULTS=$RESULTS tests/harness/with-pg.sh "$0" --server || record harness 0 1

echo
echo "== today: summary ($((SECONDS - t0)) s)"
tp=0; tf=0
while read -r line; do
  p=$(awk '{print $(NF-1)}' <<<"$line"); f=$(awk '{print $NF}' <<<"$line")
  label=$(awk '{NF-=2; print}' <<<"$line")
  printf '  %-40s %4s passed, %s failed\n' "$label" "$p" "$f"
  tp=$((tp + p)); tf=$((tf + f))
done <"$RESULTS"
echo "versions (tests/today/versions.txt):"
sed 's/^/  /' "$D/versions.out"
# "py3.13.0, SQLAlchemy 2.0.52, Alembic 1.18.4, psycopg 3.3.5, psycopg2 2.9.10, Django 5.2.18/6.1.1"
v() { sed -n "s/^$1:\(.*,\)\{0,1\} $2 \([^ ,]*\).*/\2/p" "$D/versions.out"; }
echo "py$(v venv-dj5 python), SQLAlchemy $(v venv-dj5 sqlalchemy), Alembic $(v venv-dj5 alembic)," \
     "psycopg $(v venv-dj5 psycopg), psycopg2 $(v venv-dj5 psycopg2)," \
     "Django $(v venv-dj5 django)/$(v venv-dj6 django)" >"$D/label"
echo "$tp $tf" >"$D/tally"
echo "today: $tp passed, $tf failed ($(cat "$D/label"); $((SECONDS - t0)) s)"
[ "$tf" = 0 ] && [ "$tp" -gt 0 ]
