"""End to end, with faults: Gunicorn fleets of the flask-alembic example
under LD_PRELOAD=build/libmigshim.so when the migration does not go the easy
way.

* the leader is SIGKILLed while its migration transaction is open (x5, a
  fresh database each time, killed at a different point of the migration
  each time): Gunicorn replaces the worker, a waiter takes over and
  migrates, each revision is committed exactly once, and nothing of the gate
  (advisory lock, migshim lock connection) is left behind;
* a revision that runs CREATE INDEX CONCURRENTLY in an autocommit block
  while 7 workers wait: the CIC completes (a waiter sitting inside one long
  statement would deadlock it), the index is valid, the fleet boots in
  bounded time;
* env.py with transaction_per_migration=True (a commit after every
  revision): the lock is released only when the version table reaches
  head, never at an intermediate commit; and the leader SIGKILLed after its
  first revision committed: the next leader migrates the rest.

The app variants (a fourth revision, a patched env.py) are copies of
examples/flask-alembic in a temp dir; examples/ is not modified.

Run: tests/harness/with-pg.sh /usr/bin/python3 -m pytest -q tests/e2e
     (this file alone: ... -m pytest -q tests/e2e/test_gate_faults.py -s
      prints timings)
"""

import re
import shutil
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fleet import (EXAMPLES_DIR, LEAD_LINE_RE, Fleet,  # noqa: E402
                   FleetResult, migrate)

HEADS = ["0003cccc"]
REVISIONS = ["0001aaaa", "0002bbbb", "0003cccc"]
ONCE_EACH = {rev: 1 for rev in REVISIONS}
WORKERS = 8

# Leader SIGKILLed mid-migration: this many runs, each on a fresh database.
# Each revision sleeps KILL_SLEEP s inside the (single) migration
# transaction; run i kills the leader KILL_DELAYS[i] s after its migration
# transaction was seen open, so the kill lands in different revisions.
KILL_SLEEP = 1.0
KILL_DELAYS = [0.0, 0.5, 1.1, 1.7, 2.3]
KILL_REPEATS = len(KILL_DELAYS)     # 5

CIC_BOUND = 30.0
WATCHER_APP = "migshim-e2e-watcher"   # the test's own connections     # seconds from start to every worker ready

RELEASE_RE = re.compile(r"\bmigrated to (\S+); migration lock released\b")
# The migration's own statements (not SQLAlchemy's connect-time queries).
MIGRATION_SQL_RE = re.compile(
    r"pg_sleep|migration_runs|alembic_version|CREATE TABLE|ALTER TABLE"
    r"|CREATE INDEX|INSERT INTO users", re.I)
# the shim's wait statement, sent on a waiter's own connection (lock = xact)
SHIM_WAIT_RE = re.compile(r"pg_catalog\.pg_advisory\w*_lock_shared")


# ---------------------------------------------------------------------------
# the database, seen from outside the fleet (the test's own psycopg2,
# without the shim)

class Watcher:
    """One autocommit connection to the fleet's database."""

    def __init__(self, dsn):
        import psycopg2
        self.conn = psycopg2.connect(dsn, application_name=WATCHER_APP)
        self.conn.autocommit = True

    def close(self):
        self.conn.close()

    def rows(self, sql, args=()):
        with self.conn.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchall()

    def activity(self):
        """[(pid, application_name, state, in_xact, query)] of the other
        backends of this database."""
        return self.rows(
            "SELECT pid, coalesce(application_name, ''), coalesce(state, ''),"
            " xact_start IS NOT NULL, left(coalesce(query, ''), 300)"
            " FROM pg_stat_activity"
            " WHERE datname = current_database()"
            " AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
            " AND application_name <> %s", (WATCHER_APP,))

    def advisory_locks(self):
        """[(backend pid, mode, granted)] of the advisory locks in this
        database."""
        return self.rows(
            "SELECT pid, mode, granted FROM pg_locks"
            " WHERE locktype = 'advisory' AND database ="
            " (SELECT oid FROM pg_database WHERE datname = current_database())")

    def version(self):
        if not self.rows("SELECT to_regclass('alembic_version')")[0][0]:
            return None
        return sorted(r[0] for r in
                      self.rows("SELECT version_num FROM alembic_version"))

    def migration_state(self, leader):
        """The leader's open migration transaction, as the server shows it:
        (migration backend row, lock connection row, advisory lock rows) or
        None when it is not (yet) visible.

        Only the leader may run the migration, so the migration backend is
        the one client backend without a migshim application_name that is
        in a transaction running a migration statement (not the shim's wait
        statement of a waiter); the leader's own
        lock connection is named 'migshim lock pid=<leader> ...'."""
        act = self.activity()
        mig = [a for a in act
               if not a[1].startswith("migshim")
               and a[3] and a[2] in ("active", "idle in transaction")
               and MIGRATION_SQL_RE.search(a[4])
               and not SHIM_WAIT_RE.search(a[4])]
        own = [a for a in act if a[1].startswith(f"migshim lock pid={leader} ")]
        if len(mig) != 1 or len(own) != 1:
            return None
        locks = [lk for lk in self.advisory_locks()
                 if lk[0] == own[0][0] and lk[2]
                 and lk[1] == "ExclusiveLock"]
        if not locks:
            return None
        return mig[0], own[0], locks

    def wait_migration_state(self, leader, timeout=15.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = self.migration_state(leader)
            if st:
                return st
            time.sleep(0.02)
        raise AssertionError(
            f"leader {leader}: no open migration transaction seen within "
            f"{timeout}s; activity: {self.activity()}; "
            f"advisory locks: {self.advisory_locks()}")

    def leftovers(self, gone_pids=()):
        """What the gate may not leave behind once the fleet is up."""
        act = self.activity()
        return {
            "advisory locks": self.advisory_locks(),
            "migshim backends": [a for a in act if a[1].startswith("migshim")],
            "backends of the killed leader": [a for a in act
                                              if a[0] in gone_pids],
            "open transactions": [a for a in act if a[3]
                                  and not a[4].startswith("SELECT version_num")],
        }

    def wait_no_leftovers(self, gone_pids=(), timeout=10.0):
        deadline = time.monotonic() + timeout
        while True:
            left = self.leftovers(gone_pids)
            if not any(left.values()):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"left behind after boot: {left}")
            time.sleep(0.05)


class VersionSampler(threading.Thread):
    """Polls alembic_version every `interval` s; .seen: the distinct
    states in the order they were first seen."""

    def __init__(self, dsn, interval=0.02):
        super().__init__(daemon=True)
        self.dsn, self.interval = dsn, interval
        self.seen = []
        self.stop_evt = threading.Event()
        self.error = None

    def run(self):
        try:
            w = Watcher(self.dsn)
            try:
                while not self.stop_evt.is_set():
                    v = w.version()
                    v = tuple(v) if v is not None else None
                    if not self.seen or self.seen[-1] != v:
                        if v not in self.seen:
                            self.seen.append(v)
                    time.sleep(self.interval)
            finally:
                w.close()
        except Exception as e:   # reported by the test
            self.error = e

    def wait_for(self, state, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if state in self.seen:
                return
            time.sleep(0.01)
        raise AssertionError(f"alembic_version never {state}: {self.seen}")

    def stop(self):
        self.stop_evt.set()
        self.join(5)


# ---------------------------------------------------------------------------
# app variants: copies of examples/flask-alembic

def copy_example(tmp_path, name):
    dst = Path(tmp_path) / name
    shutil.copytree(EXAMPLES_DIR / "flask-alembic", dst,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dst


CIC_REVISION = '''"""index users.name concurrently (CREATE INDEX CONCURRENTLY)

Revision ID: 0004dddd
Revises: 0003cccc
Create Date: 2024-01-01 00:00:04

"""
import os

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0004dddd'
down_revision = '0003cccc'
branch_labels = None
depends_on = None

SLEEP = float(os.environ.get("MIGRATION_SLEEP", "0.2"))


def witness(phase) -> None:
    """How many other processes wait for this migration right now: their
    migshim lock connections (lock = session) or their own connections
    running the shim's wait statement (lock = xact)."""
    op.execute(sa.text(
        "INSERT INTO cic_witness (phase, waiters) "
        "SELECT :phase, count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() "
        "AND pid <> pg_backend_pid() "
        "AND ((application_name LIKE 'migshim lock pid=%' "
        "      AND application_name NOT LIKE :mine) "
        "     OR query LIKE '%pg_catalog.pg_advisory%lock_shared%')")
        .bindparams(phase=phase, mine="migshim lock pid=%d %%" % os.getpid()))


def upgrade() -> None:
    op.execute(
        sa.text("INSERT INTO migration_runs (revision, pid) VALUES (:rev, :pid)")
        .bindparams(rev=revision, pid=os.getpid()))
    op.create_table(
        "cic_witness",
        sa.Column("phase", sa.Text(), nullable=False),
        sa.Column("waiters", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True),
                  server_default=sa.text("clock_timestamp()")),
    )
    # some rows, so that the index build is not instantaneous
    op.execute("INSERT INTO users (name) "
               "SELECT 'user ' || g FROM generate_series(1, 200000) g")
    op.execute(sa.text("SELECT pg_sleep(:s)").bindparams(s=SLEEP))
    # commits the transaction above (version table still at 0003cccc),
    # then runs in autocommit: CIC cannot run inside a transaction block
    with op.get_context().autocommit_block():
        witness("before")
        op.create_index("ix_users_name_cic", "users", ["name"],
                        postgresql_concurrently=True)
        witness("after")


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index("ix_users_name_cic", table_name="users",
                      postgresql_concurrently=True)
    op.drop_table("cic_witness")
'''


def make_cic_app(tmp_path):
    app = copy_example(tmp_path, "flask-alembic-cic")
    (app / "migrations" / "versions" / "0004dddd_index_users_name_cic.py") \
        .write_text(CIC_REVISION)
    return app


def make_tpm_app(tmp_path):
    """env.py with context.configure(..., transaction_per_migration=True)."""
    app = copy_example(tmp_path, "flask-alembic-tpm")
    env = app / "migrations" / "env.py"
    src = env.read_text()
    old = ("        context.configure(\n"
           "            connection=connection, target_metadata=target_metadata\n"
           "        )\n")
    assert src.count(old) == 1, "examples/flask-alembic/migrations/env.py " \
        "changed: update make_tpm_app()"
    env.write_text(src.replace(old, (
        "        context.configure(\n"
        "            connection=connection, target_metadata=target_metadata,\n"
        "            transaction_per_migration=True,\n"
        "        )\n")))
    return app


# ---------------------------------------------------------------------------
# assertions

def assert_fleet_up(r: FleetResult, n: int, killed=()):
    """Booted with n ready workers; the killed ones replaced."""
    d = r.describe()
    assert r.booted, d
    assert r.master_alive_at_end, d
    assert r.workers_failed == 0, d
    assert sorted(r.killed_pids) == sorted(killed), d
    live = [p for p in r.worker_pids if p not in killed]
    assert len(live) == n, f"live workers {live}\n{d}"
    assert len(r.worker_pids) == n + len(killed), d   # Gunicorn respawned
    assert set(live) <= set(r.ready_pids), d
    assert not set(killed) & set(r.ready_pids), d
    assert not r.race_errors(), "\n".join(r.race_errors()[:10]) + "\n" + d
    assert not r.migshim_problems(), "\n".join(r.migshim_problems()) + \
        "\n" + d


def decisions_of(r: FleetResult, pids):
    dec = r.gate_decisions()
    for pid in pids:
        assert len(dec.get(pid, [])) == 1, \
            f"pid {pid} decisions: {dec.get(pid)}\n{r.describe()}"
    return {p: dec[p][0] for p in pids}


def release_lines(r: FleetResult):
    return [(p, RELEASE_RE.search(m).group(1))
            for p, _, m in r.migshim_lines("info") if RELEASE_RE.search(m)]


def run_with_faults(fleet: Fleet, body):
    """start the fleet, body(fleet) (injects the fault, waits), stop it,
    return (result, what body returned).  On an error in body the fleet's
    output so far is added to the message."""
    fleet.start()
    try:
        try:
            out = body(fleet)
        except (AssertionError, TimeoutError) as e:
            raise AssertionError(
                f"{e}\n--- fleet stderr so far (last 60 lines) ---\n"
                + "\n".join(fleet.stderr_text().splitlines()[-60:])) from e
    finally:
        fleet.stop()
    return fleet.result(), out


# ---------------------------------------------------------------------------
# 1. the leader SIGKILLed mid-migration

def test_leader_sigkilled_mid_migration_repeated(make_db, migshim_lib):
    """8 sync workers, empty database, each revision sleeping 1 s in the one
    migration transaction; the worker that logs `leading` is SIGKILLed
    while the server shows its migration transaction open (its backend
    active or idle in transaction, its lock connection holding the advisory
    lock).  5 runs, a fresh database each, the kill 0 / 0.5 / 1.1 / 1.7 /
    2.3 s after the transaction was first seen.

    Each time: Gunicorn respawns the worker and the fleet boots; the next
    leader's `leading` line appears (a different pid) and it migrates from
    (none) (the killed transaction rolled back); the version table is at
    head; each revision was committed exactly once, by the new leader; one
    `migrated to 0003cccc` release line; and once the fleet is up there is
    no advisory lock, no migshim backend, no backend of the killed leader
    and no open transaction left in the database."""
    report = []
    for i, delay in enumerate(KILL_DELAYS):
        db = make_db()
        w = Watcher(db.dsn)
        fl = Fleet("flask-alembic", db.dsn, workers=WORKERS, shim=True,
                   env_extra={"MIGRATION_SLEEP": str(KILL_SLEEP)},
                   label=f"kill run {i + 1}/{KILL_REPEATS}")

        def body(f):
            m = f.wait_for_line(LEAD_LINE_RE, timeout=30)
            leader = int(m.group(1))
            t_lead = time.monotonic()
            w.wait_migration_state(leader)
            time.sleep(delay)
            # still open (a peer's connect-time version read may hide it
            # for a moment: look again for up to 1 s), then kill at once
            st = w.wait_migration_state(leader, timeout=1.0)
            f.kill_worker(leader)
            t_kill = time.monotonic()
            nxt = f.wait_for_line(
                r"migshim\[(?!%d\])(\d+)\]: info: .*\bleading\b" % leader,
                timeout=30)
            f.wait()
            t_up = time.monotonic()
            # while the fleet still runs: nothing of the gate left
            w.wait_no_leftovers(gone_pids=(st[0][0], st[1][0]))
            return dict(leader=leader, next_leader=int(nxt.group(1)),
                        next_line=nxt.group(0), killed_in=st[0],
                        lead_to_kill=t_kill - t_lead,
                        kill_to_up=t_up - t_kill)

        try:
            r, out = run_with_faults(fl, body)
        finally:
            w.close()
        leader, nxt = out["leader"], out["next_leader"]
        d = r.describe()
        assert_fleet_up(r, WORKERS, killed=[leader])
        assert r.alembic_version == HEADS, d
        assert r.migration_runs == ONCE_EACH, d
        for rev in REVISIONS:
            assert r.migration_pids[rev] == [nxt], \
                f"{rev} run by {r.migration_pids[rev]}, next leader {nxt}\n{d}"
        leads = r.gate_lines("lead")
        assert sorted(p for p, _ in leads) == sorted([leader, nxt]), \
            f"lead lines {leads}\n{d}"
        (nxt_msg,) = [m for p, m in leads if p == nxt]
        assert "from (none) to 0003cccc" in nxt_msg, nxt_msg
        live = [p for p in r.worker_pids if p != leader]
        kinds = decisions_of(r, live)
        assert kinds[nxt] == "lead", d
        for p, k in kinds.items():
            if p != nxt:
                assert k in ("wait", "at_head", "found_head"), f"{p}: {k}\n{d}"
        assert release_lines(r) == [(nxt, "0003cccc")], d
        report.append(
            f"run {i + 1}: killed {leader} {out['lead_to_kill']:.2f}s after "
            f"its lead line (backend {out['killed_in'][2]}: "
            f"{out['killed_in'][4][:60]!r}); next leader {nxt}; "
            f"up {out['kill_to_up']:.2f}s after the kill, "
            f"{r.elapsed:.2f}s after start")
    print("\n" + "\n".join(report))


# ---------------------------------------------------------------------------
# 2. CREATE INDEX CONCURRENTLY while the others wait

@pytest.mark.parametrize("lock_mode", ["xact", "session"])
def test_create_index_concurrently_while_others_wait(make_db, migshim_lib,
                                                     tmp_path, lock_mode):
    """A fourth revision (0004dddd, in a copy of the example) fills users
    with 200k rows, then in an autocommit block runs CREATE INDEX
    CONCURRENTLY.  Database at 0003cccc, 8 workers: one leads, the 7 others
    wait through the CIC (counted from inside the leader right before and
    right after it), the CIC completes, the index is valid, 0004dddd ran
    once, and the whole fleet is up in < 30 s.  With the default lock mode
    (xact) and with lock = session.

    Gunicorn's worker timeout is raised to 60 s so that a stalled CIC shows
    as this test's 30 s bound being missed, with the server's view of who
    waits for whom (pg_stat_activity, pg_locks) in the message, rather than
    as workers killed by Gunicorn."""
    app = make_cic_app(tmp_path)
    db = make_db()
    migrate("flask-alembic", db.dsn, "0003cccc", app_dir=app)
    fl = Fleet("flask-alembic", db.dsn, workers=WORKERS, shim=True,
               shim_env={"MIGSHIM_LOCK": lock_mode},
               app_dir=app, env_extra={"MIGRATION_SLEEP": "1.0"},
               timeout=CIC_BOUND, gunicorn_timeout=60,
               label=f"cic lock={lock_mode}")
    stalled = []

    def body(f):
        f.wait()
        if not f.res.booted:          # look before the fleet is stopped
            w = Watcher(db.dsn)
            try:
                stalled.append(w.rows(
                    "SELECT pid, application_name, state, backend_xmin,"
                    " wait_event_type, wait_event, left(query, 90)"
                    " FROM pg_stat_activity WHERE datname = current_database()"
                    " AND pid <> pg_backend_pid()"
                    " AND (state <> 'idle' OR wait_event_type = 'Lock')"
                    " ORDER BY application_name, pid"))
                stalled.append(w.rows(
                    "SELECT pid, locktype, mode, granted, virtualxid"
                    " FROM pg_locks WHERE locktype = 'virtualxid'"
                    " AND (NOT granted OR virtualxid IN (SELECT virtualxid"
                    "  FROM pg_locks WHERE locktype = 'virtualxid'"
                    "  AND NOT granted))"))
            finally:
                w.close()

    r, _ = run_with_faults(fl, body)
    d = r.describe()
    if stalled:
        d += ("\n--- backends when the bound passed (pid, application_name,"
              " state, backend_xmin, wait, query) ---\n"
              + "\n".join(map(repr, stalled[0]))
              + "\n--- the virtualxid waits (pid, type, mode, granted,"
              " vxid) ---\n" + "\n".join(map(repr, stalled[1])))
    assert r.booted, d
    assert_fleet_up(r, WORKERS)
    assert r.elapsed < CIC_BOUND, d
    assert r.alembic_version == ["0004dddd"], d
    assert r.migration_runs == dict(ONCE_EACH, **{"0004dddd": 1}), d
    (leader,) = [p for p, _ in r.gate_lines("lead")] or [None]
    assert leader in r.worker_pids, d
    assert r.migration_pids["0004dddd"] == [leader], d
    kinds = decisions_of(r, r.worker_pids)
    others = {p: k for p, k in kinds.items() if p != leader}
    assert all(k == "wait" for k in others.values()), f"{others}\n{d}"
    assert release_lines(r) == [(leader, "0004dddd")], d
    w = Watcher(db.dsn)
    try:
        idx = w.rows("SELECT i.indisvalid, i.indisready FROM pg_index i "
                     "JOIN pg_class c ON c.oid = i.indexrelid "
                     "WHERE c.relname = 'ix_users_name_cic'")
        wit = dict(w.rows("SELECT phase, waiters FROM cic_witness"))
        took = w.rows("SELECT extract(epoch FROM max(at) - min(at)) "
                      "FROM cic_witness")[0][0]
    finally:
        w.close()
    assert idx == [(True, True)], f"pg_index: {idx}\n{d}"
    assert set(wit) == {"before", "after"}, wit
    assert wit["before"] >= 1 and wit["after"] >= 1, \
        f"no waiter around the CIC: {wit}\n{d}"
    print(f"\nCIC fleet (lock={lock_mode}) up in {r.elapsed:.2f}s; CIC took {float(took):.3f}s "
          f"with {wit['before']} waiting before / {wit['after']} after")


# ---------------------------------------------------------------------------
# 3. transaction_per_migration: a commit after every revision

def test_transaction_per_migration_lock_held_to_head(make_db, migshim_lib,
                                                     tmp_path):
    """env.py with transaction_per_migration=True, empty database, 8
    workers, each revision sleeping 0.5 s: the version table passes through
    0001aaaa and 0002bbbb (seen committed from outside), yet no waiter
    proceeds before 0003cccc and the leader releases the lock exactly once,
    `migrated to 0003cccc`; each revision once, by the leader."""
    app = make_tpm_app(tmp_path)
    db = make_db()
    sampler = VersionSampler(db.dsn)
    sampler.start()
    fl = Fleet("flask-alembic", db.dsn, workers=WORKERS, shim=True,
               app_dir=app, env_extra={"MIGRATION_SLEEP": "0.5"},
               label="transaction_per_migration")
    try:
        r, _ = run_with_faults(fl, lambda f: f.wait())
    finally:
        sampler.stop()
    d = r.describe()
    assert sampler.error is None, sampler.error
    assert_fleet_up(r, WORKERS)
    assert r.alembic_version == HEADS, d
    assert r.migration_runs == ONCE_EACH, d
    seen = [s for s in sampler.seen if s is not None]
    assert ("0001aaaa",) in seen or ("0002bbbb",) in seen, \
        f"no intermediate commit seen (transaction_per_migration?): {seen}"
    (leader,) = [p for p, _ in r.gate_lines("lead")] or [None]
    assert leader in r.worker_pids, d
    for rev in REVISIONS:
        assert r.migration_pids[rev] == [leader], d
    kinds = decisions_of(r, r.worker_pids)
    assert all(k in ("wait", "at_head", "found_head")
               for p, k in kinds.items() if p != leader), f"{kinds}\n{d}"
    for p, m in r.gate_lines("wait") + r.gate_lines("found_head"):
        assert "0003cccc" in m and "0001aaaa" not in m \
            and "0002bbbb" not in m, f"{p} proceeded at {m}\n{d}"
    assert release_lines(r) == [(leader, "0003cccc")], d
    print(f"\ntransaction_per_migration fleet up in {r.elapsed:.2f}s; "
          f"version table went through {seen}")


def test_transaction_per_migration_leader_killed_after_first_commit(
        make_db, migshim_lib, tmp_path):
    """The same env.py; the leader is SIGKILLed once 0001aaaa is committed,
    inside 0002bbbb's transaction: it leaves the database part-way.  The
    next leader migrates from 0001aaaa; 0001aaaa was run once (by the
    killed leader), 0002bbbb and 0003cccc once (by the new one); one
    release line, `migrated to 0003cccc`, by the new leader."""
    app = make_tpm_app(tmp_path)
    db = make_db()
    sampler = VersionSampler(db.dsn)
    sampler.start()
    w = Watcher(db.dsn)
    fl = Fleet("flask-alembic", db.dsn, workers=WORKERS, shim=True,
               app_dir=app, env_extra={"MIGRATION_SLEEP": "1.0"},
               label="transaction_per_migration, leader killed")

    def body(f):
        leader = int(f.wait_for_line(LEAD_LINE_RE, timeout=30).group(1))
        sampler.wait_for(("0001aaaa",), timeout=20)
        st = w.wait_migration_state(leader, timeout=5)
        assert w.version() == ["0001aaaa"], w.version()
        f.kill_worker(leader)
        t_kill = time.monotonic()
        nxt = f.wait_for_line(
            r"migshim\[(?!%d\])(\d+)\]: info: .*\bleading\b" % leader,
            timeout=30)
        f.wait()
        up = time.monotonic() - t_kill
        w.wait_no_leftovers(gone_pids=(st[0][0], st[1][0]))
        return leader, int(nxt.group(1)), st, up

    try:
        r, (leader, nxt, st, up) = run_with_faults(fl, body)
    finally:
        sampler.stop()
        w.close()
    d = r.describe()
    assert_fleet_up(r, WORKERS, killed=[leader])
    assert r.alembic_version == HEADS, d
    assert r.migration_runs == ONCE_EACH, d
    assert r.migration_pids == {"0001aaaa": [leader], "0002bbbb": [nxt],
                                "0003cccc": [nxt]}, d
    leads = dict(r.gate_lines("lead"))
    assert sorted(leads) == sorted([leader, nxt]), d
    assert "from 0001aaaa to 0003cccc" in leads[nxt], leads[nxt]
    live = [p for p in r.worker_pids if p != leader]
    kinds = decisions_of(r, live)
    assert all(k in ("wait", "at_head", "found_head")
               for p, k in kinds.items() if p != nxt), f"{kinds}\n{d}"
    assert release_lines(r) == [(nxt, "0003cccc")], d
    print(f"\nkilled {leader} in {st[0][4][:50]!r} at 0001aaaa; next leader "
          f"{nxt}; up {up:.2f}s after the kill; version table went through "
          f"{[s for s in sampler.seen if s]}")
