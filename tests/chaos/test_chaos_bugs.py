"""Shim bugs found by the chaos work: minimal reproductions.

Each test states the correct behaviour and is marked
xfail(strict=True) while the bug is there: it shows as `x` (expected
failure) in the run; once src/ is fixed it XPASSes, which strict turns into
a FAILURE -- remove the mark then.  Nothing here works around the bug.

BUG 1 -- lock = xact: the lock connection keeps an AccessShareLock on the
  version table for the whole lead.  In xact mode the wait loop reads the
  version table (query_to_xml) inside the lock transaction
  (BEGIN; pg_try_advisory_xact_lock), so once the table exists the lock
  connection holds ACCESS SHARE on it until the release.  A migration of
  the leader that needs ACCESS EXCLUSIVE on alembic_version -- the common
  recipe `op.alter_column("alembic_version", "version_num",
  type_=sa.String(64))` to allow longer revision ids, or TRUNCATE/DROP/
  LOCK TABLE -- waits for its own process's lock connection, which is idle
  in transaction and waits for the migration to commit: a deadlock the
  server cannot see.  The leader hangs until Gunicorn's worker timeout
  kills it; the next leader does the same; the fleet never boots.
  lock = session is not affected (its reads run outside a transaction).

BUG 2 -- an empty reason in "the lock connection failed (); proceeding
  without the gate".  lock.c's run() takes the reason from
  PQresultErrorField(PG_DIAG_MESSAGE_PRIMARY) only; an error result made by
  libpq itself (the server went away: a restart, pg_terminate_backend)
  has no fields, so the reason is empty.  lock_read_versions() falls back
  to PQerrorMessage(); run() does not.
"""

import re
import signal
import time

import pytest

from chaoslib import (Fleet, Watcher, copy_example, lock_conn_of, migrate,
                      random_key, run_with_faults, wait_until)

WIDEN_REVISION = '''"""widen alembic_version.version_num (longer revision ids)

Revision ID: 0004dddd
Revises: 0003cccc
"""
from alembic import op
import sqlalchemy as sa

revision = '0004dddd'
down_revision = '0003cccc'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(sa.text("INSERT INTO migration_runs (revision, pid) "
                       "VALUES ('0004dddd', pg_backend_pid())"))
    op.alter_column("alembic_version", "version_num",
                    type_=sa.String(64), existing_type=sa.String(32),
                    existing_nullable=False)


def downgrade() -> None:
    op.alter_column("alembic_version", "version_num",
                    type_=sa.String(32), existing_type=sa.String(64),
                    existing_nullable=False)
'''

BOUND = 12.0     # seconds: a 2-worker fleet is up in ~2 s when the gate is right


@pytest.mark.parametrize("mode", [
    pytest.param("xact", marks=pytest.mark.xfail(
        strict=True, reason="BUG 1: xact lock connection holds ACCESS SHARE on "
        "alembic_version; a migration altering it self-deadlocks")),
    "session",
])
def test_bug1_migration_altering_the_version_table(make_db, migshim_lib, tmp_path, mode):
    """Database at 0003cccc (migrated without the shim), a 0004 revision
    that widens alembic_version.version_num; 2 workers.  Correct: the fleet
    is up within BOUND (12 s), version 0004dddd, 0004 applied once.  With lock =
    xact the leader's ALTER TABLE waits for its own lock connection (shown
    in the failure message: the blocking backend is 'migshim lock pid=<the
    leader>')."""
    app = copy_example(tmp_path, "flask-alembic-widen")
    (app / "migrations" / "versions" / "0004dddd_widen_version_num.py") \
        .write_text(WIDEN_REVISION)
    db = make_db()
    migrate("flask-alembic", db.dsn, "0003cccc", app_dir=app)
    w = Watcher(db.dsn)
    blocked = []
    fl = Fleet("flask-alembic", db.dsn, workers=2, shim=True, app_dir=app,
               shim_env={"MIGSHIM_LOCK": mode}, timeout=BOUND,
               gunicorn_timeout=60, label=f"widen version_num lock={mode}")

    def body(f):
        f.wait()
        if not f.res.booted:
            blocked.extend(w.rows(
                "SELECT a.pid, a.application_name, left(a.query, 60),"
                " b.pid, b.application_name, b.state"
                " FROM pg_stat_activity a"
                " CROSS JOIN LATERAL unnest(pg_blocking_pids(a.pid)) AS bp(pid)"
                " JOIN pg_stat_activity b ON b.pid = bp.pid"
                " WHERE a.datname = current_database()"))

    try:
        r, _ = run_with_faults(fl, body)
    finally:
        w.close()
    d = r.describe() + "\n--- blocked (pid, app, query, blocker pid, blocker app, " \
        "blocker state) ---\n" + "\n".join(map(repr, blocked))
    assert r.booted, d
    assert r.alembic_version == ["0004dddd"], d
    assert r.migration_runs.get("0004dddd") == 1, d


@pytest.mark.xfail(strict=True, reason="BUG 2: lock.c run() loses libpq's own "
                   "error text: 'the lock connection failed ()'")
def test_bug2_lost_lock_connection_is_logged_with_its_reason(make_db, migshim_lib):
    """One worker waits for a migration lock the test holds; the test
    terminates the worker's lock connection (pg_terminate_backend).  The
    shim logs 'the lock connection failed (<reason>); proceeding without
    the gate'.  Correct: <reason> is not empty (libpq says e.g.
    'server closed the connection unexpectedly' or the server's
    'terminating connection due to administrator command')."""
    db = make_db()
    key = random_key()
    w = Watcher(db.dsn)
    w.rows("SELECT pg_advisory_lock(%s)", (key,))
    fl = Fleet("flask-alembic", db.dsn, workers=1, shim=True,
               shim_env={"MIGSHIM_LOCK_KEY": str(key)},
               env_extra={"MIGRATION_SLEEP": "0.05"}, label="bug2")

    def body(f):
        worker = int(f.wait_for_line(r"^fleet: forked pid=(\d+)$", timeout=20).group(1))
        own = wait_until(lambda: lock_conn_of(w, worker), 20, "no lock connection")
        time.sleep(0.3)
        w.rows("SELECT pg_terminate_backend(%s)", (own,))
        m = f.wait_for_line(r"migshim\[%d\]: warn: .*the lock connection failed "
                            r"\((.*)\); proceeding without the gate" % worker, timeout=10)
        w.rows("SELECT pg_advisory_unlock(%s)", (key,))
        f.wait()
        return m.group(1)

    try:
        r, reason = run_with_faults(fl, body)
    finally:
        w.close()
    assert reason.strip() != "", r.describe()
