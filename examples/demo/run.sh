#!/usr/bin/env bash
# make demo: a fleet of 16 Gunicorn sync workers, each running
# `alembic upgrade head` at start-up on an empty database -- once without and
# once with LD_PRELOAD=build/libmigshim.so -- on a throw-away PostgreSQL,
# then a side-by-side summary.  Everything it starts is stopped and removed
# on exit, Ctrl-C included.  Exit status 0 when the run with the shim booted
# cleanly.
#
#   examples/demo/run.sh [--workers N] [--worker-class sync|gevent]
set -u
cd "$(dirname "$0")/../.." || exit 1

if [ ! -f build/libmigshim.so ] && [ -z "${MIGSHIM_LIB:-}" ]; then
    echo "demo: build/libmigshim.so is not built (run make)" >&2
    exit 1
fi

# tests/harness/with-pg.sh starts the server, exports PGHOST/PGPORT/...,
# runs the demo, and always stops the server and removes its directory; on
# Ctrl-C it sends SIGTERM to the demo, which stops its Gunicorn masters.
exec tests/harness/with-pg.sh /usr/bin/python3 examples/demo/demo.py "$@"
