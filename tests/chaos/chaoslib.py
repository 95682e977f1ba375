"""Helpers shared by the chaos tests (tests/chaos/test_*.py) and the soak
driver (tests/chaos/soak.py).

Reused, not copied: the fleet runner (tests/e2e/fleet.py) and the database
watcher and fleet assertions of tests/e2e/test_gate_faults.py (Watcher,
assert_fleet_up, decisions_of, release_lines, run_with_faults,
copy_example).

CHAOS_REPEAT (environment, default 2) is the number of repetitions of each
kill point: `make check` runs the reduced set (2), `make chaos` sets 20.

Where a process waits at the gate depends on the lock mode: with lock =
session on its own 'migshim lock pid=P host=H' connection; with lock = xact
(the default) on the app's own fresh connection, running the shim's wait
statements (WAIT_SQL_RE) -- a waiter then opens no connection, only the
leader does.  tag_app() makes a copy of the example app whose connections
carry application_name 'chaos-app pid=P', so the test can tell whose app
connection waits (app_backends_of, waiting_pids).
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

HERE = Path(__file__).resolve().parent
E2E = HERE.parent / "e2e"
for _p in (str(E2E), str(HERE.parent)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from fleet import (EXAMPLES_DIR, LEAD_LINE_RE, Fleet, FleetResult,  # noqa: E402,F401
                   db_state, migrate, run_fleets)
from test_gate_faults import (HEADS, ONCE_EACH, REVISIONS, Watcher,  # noqa: E402,F401
                              WATCHER_APP, assert_fleet_up, copy_example,
                              decisions_of, release_lines, run_with_faults)

REPEAT = int(os.environ.get("CHAOS_REPEAT", "2"))
PG_BINDIR_CANDIDATES = ["/usr/lib/postgresql/15/bin"]


def random_key() -> int:
    return random.SystemRandom().randrange(1, 1 << 62)


def other_lead_re(pid: int) -> str:
    """A `leading` line of any process but `pid`."""
    return r"migshim\[(?!%d\])(\d+)\]: info: .*\bleading\b" % pid


def lines_of(r: FleetResult, pid: int, level: Optional[str] = None) -> List[str]:
    return [m for p, lv, m in r.migshim_lines(level) if p == pid]


# ---------------------------------------------------------------------------
# the server, from outside

# the shim's wait statements on a waiter's own connection (lock = xact):
# 'BEGIN ...; SELECT pg_catalog.pg_try_advisory_xact_lock(K)', then
# 'SET LOCAL lock_timeout = ...; DO $migshim$BEGIN PERFORM
# pg_catalog.pg_advisory_xact_lock_shared(K); EXCEPTION ... END$migshim$;
# SELECT pg_catalog.pg_try_advisory_xact_lock_shared(K); COMMIT;
# SELECT pg_catalog.table_to_xml(...)'
WAIT_SQL_RE = re.compile(r"pg_catalog\.pg_(try_advisory_xact_lock|advisory_xact_lock_shared)\(")
APP_TAG = "chaos-app pid="

TAG_SNIPPET = (
    "# chaos: name this process's connections (libpq reads PGAPPNAME), so the\n"
    "# test can tell whose app connection waits at the gate\n"
    "os.environ['PGAPPNAME'] = '%s%%d' %% os.getpid()\n" % APP_TAG)


def tag_app(app_dir: Path) -> Path:
    """Patch the copy of the example in `app_dir` (copy_example) so its
    connections' application_name is 'chaos-app pid=<its pid>' (env.py runs
    in the process that migrates, before it connects); returns app_dir."""
    env = Path(app_dir) / "migrations" / "env.py"
    src = env.read_text()
    anchor = "from alembic import context\n"
    assert src.count(anchor) == 1, "examples/flask-alembic/migrations/env.py " \
        "changed: update tag_app()"
    env.write_text(src.replace(anchor, anchor + "\n" + TAG_SNIPPET))
    return Path(app_dir)


def tagged_app(tmp_path, name="flask-alembic-tagged") -> Path:
    return tag_app(copy_example(tmp_path, name))


def app_backends_of(w: Watcher, pid: int) -> List[tuple]:
    """[(backend pid, state, query)] of process `pid`'s own connections
    (a tag_app() copy of the app)."""
    return [(a[0], a[2], a[4]) for a in w.activity() if a[1] == f"{APP_TAG}{pid}"]


def waiting_app_backends(w: Watcher) -> Dict[int, int]:
    """{process pid: backend pid} of tag_app() connections running the
    shim's wait statement right now (lock = xact waiters)."""
    out = {}
    for a in w.activity():
        if a[1].startswith(APP_TAG) and WAIT_SQL_RE.search(a[4]):
            out[int(a[1][len(APP_TAG):])] = a[0]
    return out


def waiting_pids(w: Watcher) -> set:
    """Processes seen in the gate right now: those with a migshim lock
    connection (lock = session waiters, and any leader) plus those whose
    own (tagged) connection runs the shim's wait statement (lock = xact)."""
    pids = set(waiting_app_backends(w))
    for _, app in lock_backends(w):
        pids.add(int(app.split()[2].split("=")[1]))
    return pids


def lock_backends(w: Watcher) -> List[tuple]:
    """[(backend pid, application_name)] of the shim's lock connections."""
    return [(a[0], a[1]) for a in w.activity() if a[1].startswith("migshim lock pid=")]


def lock_conn_of(w: Watcher, pid: int) -> Optional[int]:
    """The backend pid of process `pid`'s lock connection, or None."""
    for bpid, app in lock_backends(w):
        if app.startswith(f"migshim lock pid={pid} "):
            return bpid
    return None


def advisory_holders(w: Watcher, key: Optional[int] = None) -> List[int]:
    """Backend pids holding an exclusive advisory lock (granted) in this
    database; with `key`, on that 64-bit key only."""
    rows = w.rows(
        "SELECT pid, (classid::bigint << 32) | objid::bigint FROM pg_locks"
        " WHERE locktype = 'advisory' AND granted AND mode = 'ExclusiveLock'"
        " AND database = (SELECT oid FROM pg_database"
        "                 WHERE datname = current_database())")
    return [p for p, k in rows if key is None or k == (key & 0xFFFFFFFFFFFFFFFF)]


def wait_until(pred, timeout: float, what: str, interval: float = 0.02):
    """Poll pred() until it returns a true value (returned); AssertionError
    naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.1f}s")
        time.sleep(interval)


def assert_db_once(r: FleetResult, heads=HEADS, runs=ONCE_EACH):
    d = r.describe()
    assert r.alembic_version == heads, d
    assert r.migration_runs == runs, d


# ---------------------------------------------------------------------------
# a dedicated PostgreSQL (restart, max_connections, stop): tests/harness/pg.sh

def pg_bindir() -> str:
    for d in PG_BINDIR_CANDIDATES:
        if os.path.isfile(os.path.join(d, "pg_ctl")):
            return d
    out = subprocess.run(["pg_config", "--bindir"], stdout=subprocess.PIPE,
                         text=True, check=True).stdout.strip()
    return out


def as_pg(argv: List[str]) -> List[str]:
    """argv run as the server's OS user (pg.sh runs it as postgres when
    we are root)."""
    if os.geteuid() == 0:
        return ["runuser", "-u", os.environ.get("PG_HARNESS_USER", "postgres"), "--"] + argv
    return argv


def pg_ctl(pgdir: str, *args: str, timeout: float = 60.0) -> float:
    """pg_ctl -D pgdir/data ARGS -w; returns how long it took."""
    t = time.monotonic()
    subprocess.run(as_pg([os.path.join(pg_bindir(), "pg_ctl"), "-D",
                          os.path.join(pgdir, "data"), "-w", "-t", "60",
                          "-l", os.path.join(pgdir, "postgresql.log")]
                         + list(args)),
                   cwd=pgdir, check=True, timeout=timeout,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.monotonic() - t


CONN_LOST_RE = re.compile(
    r"server closed the connection unexpectedly"
    r"|terminating connection due to administrator command"
    r"|connection to server .* failed"
    r"|no connection to the server")
