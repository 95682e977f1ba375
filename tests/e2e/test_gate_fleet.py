"""End to end: Gunicorn fleets of the example apps, each worker running
`alembic upgrade head` as it imports the app, on a fresh database.

* teeth: without the shim the fleet races (a worker fails to boot with
  UniqueViolation / "already exists"); if this stops reproducing, the
  other tests prove nothing.
* with LD_PRELOAD=build/libmigshim.so: every worker boots, the database ends
  at the heads, each revision ran exactly once (rows in migration_runs, a
  table with no unique key), and exactly one process logged that it leads.

The shapes covered: empty database (x10), an intermediate revision (8 and
16 workers), the Flask-Migrate layout, gevent workers, --preload, two
masters on one database, a database already at head.

Run: tests/harness/with-pg.sh /usr/bin/python3 -m pytest -q tests/e2e
(or plain pytest: the `pg` fixture of tests/conftest.py starts a server).
The fleet runner and the gate's log wording live in tests/e2e/fleet.py.
"""

import os
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fleet import (Fleet, FleetResult, GATE_KINDS, GATE_PATTERNS,  # noqa: E402
                   migrate, run_fleet, run_fleets)

HEADS = ["0003cccc"]
REVISIONS = ["0001aaaa", "0002bbbb", "0003cccc"]
ONCE_EACH = {rev: 1 for rev in REVISIONS}

TEETH_ATTEMPTS = 5
SHIM_REPEATS = int(os.environ.get("GATE_FLEET_REPEATS", "10"))   # make check-today: fewer


# ---------------------------------------------------------------------------
# assertions shared by the tests

def assert_booted(r: FleetResult, n: int):
    """The fleet came up cleanly and the database is at the heads with
    every revision applied exactly once."""
    assert r.booted, r.describe()
    assert r.master_alive_at_end, r.describe()
    assert r.workers_failed == 0, r.describe()
    assert len(r.worker_pids) == n, r.describe()
    assert set(r.worker_pids) <= set(r.ready_pids), r.describe()
    assert not r.race_errors(), "\n".join(r.race_errors()[:10]) + \
        "\n" + r.describe()
    assert not r.migshim_problems(), "\n".join(r.migshim_problems()) + \
        "\n" + r.describe()


def assert_db(r: FleetResult, runs=None):
    assert r.alembic_version == HEADS, r.describe()
    assert r.migration_runs == (runs or ONCE_EACH), r.describe()


def assert_one_leader(results, workers, migrated=REVISIONS):
    """Across the fleets' output: exactly one 'leading' line, every process
    in `workers` logged exactly one decision, and the revisions in
    `migrated` were all run by the leader."""
    merged = {}
    lead_lines = []
    for r in results:
        for pid, kinds in r.gate_decisions().items():
            merged.setdefault(pid, []).extend(kinds)
        lead_lines += r.gate_lines("lead")
    desc = "\n\n".join(r.describe() for r in results)
    assert len(lead_lines) == 1, f"leader lines: {lead_lines}\n{desc}"
    leader = lead_lines[0][0]
    for pid in workers:
        assert len(merged.get(pid, [])) == 1, \
            f"pid {pid} decisions: {merged.get(pid)}\n{desc}"
    others = [p for p in workers if p != leader]
    for pid in others:
        assert merged[pid][0] in ("wait", "at_head", "found_head"), \
            f"pid {pid}: {merged[pid]}\n{desc}"
    pids = results[0].migration_pids
    for rev in migrated:
        assert pids.get(rev) == [leader], \
            f"{rev} run by {pids.get(rev)}, leader {leader}\n{desc}"
    return leader


def server_log_path(pg):
    """The PostgreSQL server log, when this session can read it."""
    cands = []
    if os.environ.get("MIGSHIM_TEST_PGLOG"):
        cands.append(Path(os.environ["MIGSHIM_TEST_PGLOG"]))
    for d in (getattr(pg, "pgdir", None), os.environ.get("PGHARNESS_DIR")):
        if d:
            cands.append(Path(d) / "postgresql.log")
    if pg.host.startswith("/"):           # the socket dir is pg.sh's DIR
        cands.append(Path(pg.host) / "postgresql.log")
        cands.append(Path(pg.host) / "log")
    for c in cands:
        if c.is_file() and os.access(c, os.R_OK):
            return c
    return None


# ---------------------------------------------------------------------------
# no server needed

def test_gate_patterns_classify_the_gates_lines():
    """The wording fleet.GATE_PATTERNS expects, as the gate logs it."""
    samples = {
        'database "d": leading: this process holds the migration lock '
        '(key -1439946696980394220) and migrates from (none) to 0003cccc':
            "lead",
        'database "d": waited 0.257 s for the migration lock; database at '
        '0003cccc; proceeding': "wait",
        'database "d": migrated to 0003cccc; migration lock released after '
        '0.630 s': None,
        'database "d": waiting 5 s so far for the migration lock held by '
        'pid 7': None,
        'database "d" is at head (0003cccc); proceeding': "at_head",
        'database "d": waited 0.412 s; a peer migrated it to 0003cccc; '
        'proceeding': "wait",
        'database "d": a peer migrated it to 0003cccc before this process '
        'got the lock; proceeding': "found_head",
    }
    for msg, kind in samples.items():
        r = FleetResult(label="t", example="x", workers=1,
                        worker_class="sync", preload=False, shim=True,
                        stderr=f"migshim[42]: info: {msg}\n")
        assert r.gate_decisions() == ({42: [kind]} if kind else {}), msg
    assert set(GATE_KINDS) == {k for k, _ in GATE_PATTERNS}


# ---------------------------------------------------------------------------
# teeth: the race is real

def test_teeth_race_without_shim(make_db):
    """16 sync workers on an empty database, no shim: at least one of up to
    5 runs fails to boot or has a worker fail with the race's errors."""
    seen = []
    for attempt in range(TEETH_ATTEMPTS):
        db = make_db()
        r = run_fleet("flask-alembic", db.dsn, workers=16, shim=False)
        seen.append(r.summary())
        assert not r.migshim_lines(), "the shim leaked into the fleet"
        # the race, not just any failure: a worker died or the fleet did
        # not boot, *and* the output shows the race's errors
        if ((not r.booted) or r.workers_failed) and r.race_errors():
            break
    else:
        pytest.fail("no race in %d runs without the shim:\n%s"
                    % (TEETH_ATTEMPTS, "\n".join(seen)))
    print(f"\nraced on attempt {attempt + 1}: {r.summary()}")


# ---------------------------------------------------------------------------
# with the shim

def test_shim_empty_db_16_sync_repeated(make_db, migshim_lib):
    """16 sync workers, empty database, shim: clean every time (x10)."""
    times = []
    for i in range(SHIM_REPEATS):
        db = make_db()
        r = run_fleet("flask-alembic", db.dsn, workers=16, shim=True,
                      label=f"shim run {i + 1}/{SHIM_REPEATS}")
        assert_booted(r, 16)
        assert_db(r)
        assert_one_leader([r], r.worker_pids)
        times.append(r.elapsed)
    print("\ntime to all ready: " + ", ".join(f"{t:.2f}s" for t in times))


@pytest.mark.parametrize("workers", [8, 16])
def test_shim_from_intermediate_revision(make_db, migshim_lib, workers):
    """Database pre-migrated to 0001aaaa without the shim; the fleet takes
    it the rest of the way, 0002bbbb and 0003cccc exactly once."""
    db = make_db()
    migrate("flask-alembic", db.dsn, "0001aaaa")
    r = run_fleet("flask-alembic", db.dsn, workers=workers, shim=True)
    assert_booted(r, workers)
    assert_db(r)
    leader = assert_one_leader([r], r.worker_pids,
                               migrated=["0002bbbb", "0003cccc"])
    (lead_msg,) = [m for p, m in r.gate_lines("lead") if p == leader]
    assert "0001aaaa" in lead_msg, lead_msg


def test_shim_flask_migrate_layout(make_db, migshim_lib):
    """migrations/alembic.ini without script_location, Flask-Migrate's
    env.py on the app's pooled Flask-SQLAlchemy engine."""
    db = make_db()
    r = run_fleet("flask-migrate", db.dsn, workers=16, shim=True)
    assert_booted(r, 16)
    assert_db(r)
    assert_one_leader([r], r.worker_pids)


def test_shim_gevent_workers(make_db, migshim_lib):
    """-k gevent with psycogreen: psycopg2 runs libpq asynchronously
    (PQconnectStart/PQconnectPoll, PQsendQuery/PQgetResult)."""
    db = make_db()
    r = run_fleet("flask-alembic", db.dsn, workers=16, worker_class="gevent",
                  shim=True)
    assert_booted(r, 16)
    assert_db(r)
    assert_one_leader([r], r.worker_pids)


def test_shim_preload(make_db, migshim_lib):
    """--preload: the master imports the app and migrates once, before it
    forks; the workers only connect for /ready and must neither lead nor
    wait."""
    db = make_db()
    r = run_fleet("flask-alembic", db.dsn, workers=16, preload=True,
                  shim=True)
    assert_booted(r, 16)
    assert_db(r)
    leader = assert_one_leader([r], [r.master_pid])
    assert leader == r.master_pid, r.describe()
    for kind in ("lead", "wait"):
        assert not [p for p, _ in r.gate_lines(kind)
                    if p in r.worker_pids], r.describe()


def test_shim_two_masters_same_db(make_db, migshim_lib):
    """Two independent Gunicorn masters (8 workers each) on one database at
    the same time: still one leader among all 16 workers."""
    db = make_db()
    a = Fleet("flask-alembic", db.dsn, workers=8, shim=True, label="master A")
    b = Fleet("flask-alembic", db.dsn, workers=8, shim=True, label="master B")
    ra, rb = run_fleets([a, b])
    for r in (ra, rb):
        assert_booted(r, 8)
        assert_db(r)
    assert_one_leader([ra, rb], ra.worker_pids + rb.worker_pids)


def test_shim_db_already_at_head(make_db, migshim_lib, pg):
    """Database already at head: the gate does not act on any worker, so at
    the default level no process prints a migshim line at all (the rule of
    silence); no process leads or waits, nothing is migrated, and (when the
    server log is readable) no advisory lock function was called on this
    database."""
    db = make_db()
    migrate("flask-alembic", db.dsn, "head")
    log = server_log_path(pg)
    log_start = 0
    if log is not None:
        conn = pg.connect(db.name)
        try:
            with conn.cursor() as cur:
                cur.execute("SHOW log_line_prefix")
                if "%d" not in cur.fetchone()[0]:
                    log = None      # cannot tell this database's lines apart
                else:
                    cur.execute(f'ALTER DATABASE "{db.name}" '
                                f"SET log_statement = 'all'")
        finally:
            conn.close()
    if log is not None:
        log_start = log.stat().st_size
    r = run_fleet("flask-alembic", db.dsn, workers=16, shim=True)
    assert_booted(r, 16)
    assert_db(r)
    ran = {p for pids in r.migration_pids.values() for p in pids}
    assert not ran & set(r.worker_pids), r.describe()
    assert r.migshim_lines() == [], r.describe()
    decisions = r.gate_decisions()
    for pid in r.worker_pids:
        assert decisions.get(pid) == ["at_head"], \
            f"pid {pid}: {decisions.get(pid)}\n{r.describe()}"
    assert not r.gate_lines("lead") and not r.gate_lines("wait"), \
        r.describe()
    assert "Running upgrade" not in r.stderr, r.describe()
    if log is None:
        print("\nserver log not readable or without %d: advisory-lock check skipped")
        return
    with open(log, "rb") as f:
        f.seek(log_start)
        text = f.read().decode("utf-8", "replace")
    mine = [ln for ln in text.splitlines()
            if f"@{db.name} " in ln and "statement:" in ln]
    assert mine, f"log_statement=all logged nothing for {db.name} in {log}"
    locks = [ln for ln in mine if re.search(r"pg_(try_)?advisory", ln)]
    assert not locks, "\n".join(locks[:10])
