"""Helpers shared by the chaos tests (tests/chaos/test_*.py) and the soak
driver (tests/chaos/soak.py).

Reused, not copied: the fleet runner (tests/e2e/fleet.py) and the database
watcher and fleet assertions of tests/e2e/test_gate_faults.py (Watcher,
assert_fleet_up, decisions_of, release_lines, run_with_faults,
copy_example).

CHAOS_REPEAT (environment, default 2) is the number of repetitions of each
kill point: `make check` runs the reduced set (2), `make chaos` sets 20.
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
