#!/usr/bin/env bash
# make check-today: the e2e fleets that matter, on the second stack
# ("today's releases", tests/today/build.sh), with the existing drivers
# (tests/e2e/fleet.py, djfleet.py) switched by E2E_PYTHON (the
# Python that runs the apps) and E2E_DRIVER (psycopg2 or psycopg).
# pytest itself stays Debian's /usr/bin/python3.  Closing line:
#   today: N passed, N failed
# and the versions used.  A missing piece (no pyenv, no Python 3.13) is one
# line "today: skipped: ..." and exit status 77, never a silent pass.
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
    $PY -m pytest -q -p no:cacheprovider -rfE "$@" 2>&1 | tee "$log" |
    grep -vE '^\.*$|^[.sFEx]+ *\[ *[0-9]+%\]$' || true
  local tally
  tally=$(pytest_tally "$log")
  record "$label" ${tally}
  echo "   ($label: $((SECONDS - t0)) s)"
}

if [ "${1:-}" = "--server" ]; then
  V5=$D/venv-dj5/bin/python V6=$D/venv-dj6/bin/python
  GATE='teeth or empty_db or intermediate or flask_migrate or at_head'
  DJ='fleet_with_shim and (empty-4-containers+gunicorn or behind-4-containers or empty-4-workers or data_behind-8-workers) or without_shim or target_unknown'
  run_pytest "alembic, psycopg2" "$V5" psycopg2 GUARD_FLEET_RUNS=${GUARD_FLEET_RUNS:-10} -- \
    tests/e2e/test_gate_fleet.py -k "$GATE" \
    tests/e2e/test_guard_fleet.py -k "teeth or empty_database or intermediate or $GATE"
  run_pytest "alembic, psycopg 3" "$V5" psycopg GUARD_FLEET_RUNS=${GUARD_FLEET_RUNS:-10} -- \
    tests/e2e/test_gate_fleet.py tests/e2e/test_guard_fleet.py \
    -k "teeth or empty_db or intermediate or flask_migrate or at_head or empty_database"
  run_pytest "transaction_per_migration, guard only" "$V5" psycopg2 -- tests/today/test_today_tpm.py
  run_pytest "Django 5.2" "$V5" psycopg2 -- tests/e2e/test_django.py -k "$DJ"
  run_pytest "Django 6.x" "$V6" psycopg2 -- tests/e2e/test_django.py -k "$DJ"
  run_pytest "oracle, short" "$V5" psycopg2 ORACLE_RUNS=${ORACLE_RUNS:-2} -- tests/oracle/test_oracle.py
  exit 0
fi

mkdir -p "$D"; : >"$RESULTS"
t0=$SECONDS
tests/today/build.sh "$D"; rc=$?
if [ "$rc" = 77 ]; then
  echo "today: 0 passed, 0 failed (skipped: the stack could not be built here; see the line above)"
  exit 77
fi
[ "$rc" = 0 ] || { echo "today: 0 passed, 1 failed (tests/today/build.sh failed, rc=$rc)"; exit 1; }
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
echo "today: $tp passed, $tf failed"
[ "$tf" = 0 ] && [ "$tp" -gt 0 ]
