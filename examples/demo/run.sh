#!/usr/bin/env bash
# make demo: a fleet of 16 Gunicorn sync workers, each running
# `alembic upgrade head` at start-up on an empty database -- once without and
# once with LD_PRELOAD=build/libmigshim.so -- on a throw-away PostgreSQL,
# then a side-by-side summary; then the same for 8 Django `manage.py migrate`
# processes on a database one data migration behind (examples/django).
# Everything it starts is stopped and removed on exit, Ctrl-C included.  Exit
# status 0 when the runs with the shim were clean.
#
#   examples/demo/run.sh [--workers N] [--worker-class sync|gevent] [--no-django]
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
