#!/usr/bin/env bash
# make bench — migshim's performance figures (issue 6); never part of make check.
#
#   bench/run.sh                          full run, ~5-8 min on 2 cores
#   BENCH_QUICK=1 bench/run.sh            smoke run, ~1-2 min, rough figures
#   BENCH_ONLY=steady,handoff bench/run.sh   some measurements only
#                                         (steady instr gate handoff fleet footprint big)
#
# Builds the shim (if needed) and the programs in bench/c/, starts a
# throw-away PostgreSQL (tests/harness/with-pg.sh: Unix socket + 127.0.0.1),
# runs bench/bench.py against it, stops it.  Results: build/bench/out/
# (results.csv, table.txt, handoff.png, raw samples).
# Needs: valgrind (callgrind), gnuplot (gnuplot-nox), postgresql (pgbench),
# python3-psycopg2, gunicorn + the flask-alembic example's packages.
set -euo pipefail
cd "$(dirname "$0")/.."

# The driver and the server never run with the shim: only the measured
# programs get LD_PRELOAD, from bench.py.
unset LD_PRELOAD
while IFS= read -r v; do unset "$v"; done < <(compgen -e | grep '^MIGSHIM_' | grep -vE '^MIGSHIM_(WIRE_)?LIB$' || true)

make -s all    # the library under test, up to date
make -s -f bench/bench.mk bench-progs
for t in valgrind gnuplot; do
    command -v "$t" >/dev/null || echo "bench: $t not found: its figure is skipped (apt-get install ${t/gnuplot/gnuplot-nox})" >&2
done
exec tests/harness/with-pg.sh /usr/bin/python3 bench/bench.py
