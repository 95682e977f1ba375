"""Chaos, part 1: the leader SIGKILLed at each point of its lead.

A Gunicorn fleet of the flask-alembic example (4 sync workers, under
LD_PRELOAD=build/libmigshim.so) on a fresh database; one process is
SIGKILLed at a point forced by the test (never by timing luck):

 (a) before taking the lock -- the test holds the migration lock itself
     (MIGSHIM_LOCK_KEY=K in the fleet, pg_advisory_lock(K) on the test's
     connection), so every worker finds the database behind and sits in
     the gate's wait loop; the first worker the test sees waiting is
     killed there, then the test releases the lock.  Where a waiter waits
     depends on the mode: lock = xact on its own app connection (a
     tag_app() copy names it 'chaos-app pid=N'; the test picks the first
     one running the shim's wait statement, and asserts that no worker has
     opened a migshim lock connection at all), lock = session on its
     'migshim lock pid=N' connection.  Either way the killed waiter leaves
     nothing behind: its backend (the app connection, resp. the lock
     connection) is seen gone within a wait slice, no other backend of it
     remains.  It never logged `leading`; another worker leads.
 (b) holding the lock, before migrating -- a copy of the app whose env.py
     blocks right after its first connection (the gated one) while a hold
     file exists and says "chaos: connected pid=N".  The leader's lead line,
     then its "connected" line, with its lock connection holding the
     advisory lock and nothing of the migration written (no
     migration_runs, no alembic_version): killed; the hold file removed.
 (c) mid-migration -- each revision sleeps 0.5 s in the one migration
     transaction; the kill lands 0 / 0.3 / 0.6 / 0.9 / 1.2 s (cycling
     over the repetitions) after the server shows the leader's migration
     transaction open with its lock connection holding the lock
     (Watcher.wait_migration_state), i.e. in different revisions.
 (d) after its migration committed, before it released the lock -- the
     database starts at 0001aaaa and carries a deferred constraint trigger
     on alembic_version that holds the COMMIT of the leader's migration
     until the test releases an advisory lock of its own; meanwhile the
     test SIGSTOPs the leader (blocked in libpq awaiting the COMMIT's
     result), lets the server complete the commit, checks alembic_version
     at head with the leader's lock connection still holding the migration
     lock, and SIGKILLs the stopped process: it never ran an instruction
     after its commit.  Both lock modes, because the release differs:
     lock = xact holds the advisory lock in an open transaction on the
     shim's own lock connection -- not the migration's transaction, so the
     migration's commit does not release it; the release is the ROLLBACK of
     that lock transaction, after a re-read of the version table.  lock =
     session holds a session lock, released by pg_advisory_unlock() after
     the same re-read.  Killed in between, the server drops the lock with
     the connection; nobody may migrate again.

Each run asserts the fleet (booted: the master alive, every worker ready,
the killed one replaced by Gunicorn, no race error in any output, no
migshim warning or error) and the database (alembic_version at head, each
revision's upgrade() committed exactly once -- migration_runs -- and by
whom; no advisory lock, no migshim connection, no backend of the killed
process and no open transaction left once the fleet is up).

Repetitions: CHAOS_REPEAT per kill point (2 in `make check`, 20 in `make
chaos`); (a)-(c) alternate lock = xact / session over the repetitions,
(d) runs CHAOS_REPEAT times in each mode.  A fresh database each run.
"""

import os
import signal
import time

import pytest

from chaoslib import (HEADS, LEAD_LINE_RE, ONCE_EACH, REPEAT, REVISIONS,
                      Fleet, Watcher, advisory_holders, app_backends_of,
                      assert_fleet_up, copy_example, decisions_of, lock_backends,
                      lock_conn_of, migrate, other_lead_re, random_key,
                      release_lines, run_with_faults, tagged_app,
                      waiting_app_backends, wait_until)

WORKERS = 4
MODES = ["xact", "session"]
C_SLEEP = 0.5
C_DELAYS = [0.0, 0.3, 0.6, 0.9, 1.2]


def mode_of(i):
    return MODES[i % 2]


def fleet_for(db, label, lock_mode, sleep=0.1, app_dir=None, shim_env=None,
              env_extra=None):
    se = {"MIGSHIM_LOCK": lock_mode}
    se.update(shim_env or {})
    ee = {"MIGRATION_SLEEP": str(sleep)}
    ee.update(env_extra or {})
    return Fleet("flask-alembic", db.dsn, workers=WORKERS, shim=True,
                 shim_env=se, env_extra=ee, app_dir=app_dir, label=label)


def check_after_kill(r, victim, nxt, runs_by):
    """The common end state: fleet up with the victim replaced, each
    revision once, run by `runs_by` ({rev: pid}), every live worker decided
    once (nxt led, the others waited or found the database at head)."""
    d = r.describe()
    assert_fleet_up(r, WORKERS, killed=[victim])
    assert r.alembic_version == HEADS, d
    assert r.migration_runs == ONCE_EACH, d
    assert {rev: r.migration_pids[rev] for rev in REVISIONS} == \
        {rev: [p] for rev, p in runs_by.items()}, d
    live = [p for p in r.worker_pids if p != victim]
    kinds = decisions_of(r, live)
    for p, k in kinds.items():
        if p == nxt:
            assert k == "lead", f"{p}: {k}\n{d}"
        else:
            assert k in ("wait", "at_head", "found_head"), f"{p}: {k}\n{d}"


def redone_by_next_leader(fl, w, body):
    """Run `body` (it kills the leader; returns (leader, next leader)) and
    assert that the killed leader left nothing: exactly two leaders, the
    next one migrating from scratch, every revision once by it, its one
    release at the heads."""
    try:
        r, (leader, nxt) = run_with_faults(fl, body)
    finally:
        w.close()
    d = r.describe()
    leads = dict(r.gate_lines("lead"))
    assert sorted(leads) == sorted([leader, nxt]), d
    assert "from (none) to 0003cccc" in leads[nxt], leads[nxt]
    check_after_kill(r, leader, nxt, {rev: nxt for rev in REVISIONS})
    assert release_lines(r) == [(nxt, "0003cccc")], d


# ---------------------------------------------------------------------------
# (a) before taking the lock

@pytest.mark.parametrize("i", range(REPEAT))
def test_a_killed_before_taking_the_lock(make_db, migshim_lib, tmp_path, i):
    mode = mode_of(i)
    db = make_db()
    key = random_key()
    w = Watcher(db.dsn)
    w.rows("SELECT pg_advisory_lock(%s)", (key,))
    me = w.rows("SELECT pg_backend_pid()")[0][0]
    held = [True]
    fl = fleet_for(db, f"(a) {mode} {i + 1}/{REPEAT}", mode, app_dir=tagged_app(tmp_path),
                   shim_env={"MIGSHIM_LOCK_KEY": str(key)})

    def body(f):
        if mode == "xact":
            # the first worker seen waiting on its own connection
            victim, victim_backend = sorted(wait_until(
                lambda: waiting_app_backends(w), 30,
                "no worker reached the wait loop").items())[0]
            # a waiter opens no connection of its own (nobody leads yet)
            assert lock_backends(w) == [], lock_backends(w)
        else:
            victim_app = wait_until(lambda: lock_backends(w), 30,
                                    "no worker reached the wait loop")[0][1]
            victim = int(victim_app.split()[2].split("=")[1])
            victim_backend = lock_conn_of(w, victim)
        assert advisory_holders(w, key) == [me]
        f.kill_worker(victim)
        # its backend goes once its current 250 ms slice ends, and nothing
        # else of it stays (xact: it never had a second connection; session:
        # its idle app connection goes too, the server may take a moment)
        wait_until(lambda: victim_backend not in [a[0] for a in w.activity()],
                   5, f"backend {victim_backend} of killed {victim} still there")
        wait_until(lambda: app_backends_of(w, victim) == [] and lock_conn_of(w, victim) is None,
                   5, f"a backend of killed {victim} still there: "
                      f"{app_backends_of(w, victim)} {lock_backends(w)}")
        assert advisory_holders(w, key) == [me]
        w.rows("SELECT pg_advisory_unlock(%s)", (key,))
        held[0] = False
        m = f.wait_for_line(LEAD_LINE_RE, timeout=30)
        f.wait()
        w.wait_no_leftovers(gone_pids=(victim_backend,))
        return victim, int(m.group(1))

    try:
        r, (victim, nxt) = run_with_faults(fl, body)
    finally:
        if held[0]:
            w.rows("SELECT pg_advisory_unlock_all()")
        w.close()
    d = r.describe()
    assert victim not in [p for p, _ in r.gate_lines("lead")], d
    assert [p for p, _ in r.gate_lines("lead")] == [nxt], d
    check_after_kill(r, victim, nxt, {rev: nxt for rev in REVISIONS})
    assert release_lines(r) == [(nxt, "0003cccc")], d


# ---------------------------------------------------------------------------
# (b) holding the lock, before migrating

HOLD_SNIPPET = (
    "    with connectable.connect() as connection:\n"
    "        _hold = os.environ.get('CHAOS_HOLD_FILE')\n"
    "        if _hold:\n"
    "            import sys as _sys, time as _time\n"
    "            _sys.stderr.write('chaos: connected pid=%d\\n' % os.getpid())\n"
    "            _sys.stderr.flush()\n"
    "            while os.path.exists(_hold):\n"
    "                _time.sleep(0.01)\n")


def make_hold_app(tmp_path):
    app = copy_example(tmp_path, "flask-alembic-hold")
    env = app / "migrations" / "env.py"
    src = env.read_text()
    old = "    with connectable.connect() as connection:\n"
    assert src.count(old) == 1, "examples/flask-alembic/migrations/env.py " \
        "changed: update make_hold_app()"
    env.write_text(src.replace(old, HOLD_SNIPPET))
    return app


@pytest.mark.parametrize("i", range(REPEAT))
def test_b_killed_holding_the_lock_before_migrating(make_db, migshim_lib, tmp_path, i):
    mode = mode_of(i)
    db = make_db()
    app = make_hold_app(tmp_path)
    hold = tmp_path / "hold"
    hold.write_text("")
    w = Watcher(db.dsn)
    fl = fleet_for(db, f"(b) {mode} {i + 1}/{REPEAT}", mode, app_dir=app,
                   env_extra={"CHAOS_HOLD_FILE": str(hold)})

    def body(f):
        leader = int(f.wait_for_line(LEAD_LINE_RE, timeout=30).group(1))
        f.wait_for_line(r"^chaos: connected pid=%d$" % leader, timeout=10)
        backend = lock_conn_of(w, leader)
        assert backend is not None and advisory_holders(w) == [backend], \
            (leader, backend, advisory_holders(w), lock_backends(w))
        # nothing of the migration written yet
        assert w.rows("SELECT to_regclass('migration_runs'),"
                      " to_regclass('alembic_version')")[0] == (None, None)
        f.kill_worker(leader)
        hold.unlink()
        nxt = int(f.wait_for_line(other_lead_re(leader), timeout=30).group(1))
        f.wait()
        w.wait_no_leftovers(gone_pids=(backend,))
        return leader, nxt

    redone_by_next_leader(fl, w, body)


# ---------------------------------------------------------------------------
# (c) mid-migration

@pytest.mark.parametrize("i", range(REPEAT))
def test_c_killed_mid_migration(make_db, migshim_lib, i):
    mode = mode_of(i)
    delay = C_DELAYS[i % len(C_DELAYS)]
    db = make_db()
    w = Watcher(db.dsn)
    fl = fleet_for(db, f"(c) {mode} +{delay}s {i + 1}/{REPEAT}", mode, sleep=C_SLEEP)

    def body(f):
        leader = int(f.wait_for_line(LEAD_LINE_RE, timeout=30).group(1))
        w.wait_migration_state(leader)
        time.sleep(delay)
        st = w.wait_migration_state(leader, timeout=1.0)   # still open: kill now
        f.kill_worker(leader)
        nxt = int(f.wait_for_line(other_lead_re(leader), timeout=30).group(1))
        f.wait()
        w.wait_no_leftovers(gone_pids=(st[0][0], st[1][0]))
        return leader, nxt

    # the killed transaction rolled back: the next leader starts from scratch
    redone_by_next_leader(fl, w, body)


# ---------------------------------------------------------------------------
# (d) after the migration's commit, before the release

def commit_holder_sql(key):
    """A deferred constraint trigger on alembic_version: at COMMIT, a
    transaction that updated it waits for advisory lock `key` (shared),
    which the test holds exclusively."""
    return [
        "CREATE FUNCTION chaos_hold_commit() RETURNS trigger LANGUAGE plpgsql AS $$"
        " BEGIN PERFORM pg_advisory_lock_shared(%d);"
        " PERFORM pg_advisory_unlock_shared(%d); RETURN NULL; END $$" % (key, key),
        "CREATE CONSTRAINT TRIGGER chaos_hold_commit AFTER UPDATE ON alembic_version"
        " DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION chaos_hold_commit()",
    ]


def waits_for_advisory(w, key):
    """The backends waiting for the advisory lock `key`."""
    return [r[0] for r in w.rows(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory'"
        " AND NOT granted AND ((classid::bigint << 32) | objid::bigint) = %s", (key,))]


def proc_state(pid):
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("i", range(REPEAT))
def test_d_killed_after_commit_before_release(make_db, migshim_lib, mode, i):
    """How (d) is forced: the database starts at 0001aaaa (the alembic CLI,
    without the shim) and gets a deferred constraint trigger on
    alembic_version that makes the COMMIT of a transaction that updated it
    wait for an advisory lock the test holds (a key other than the
    migration lock's).  The leader's migration reaches its COMMIT and waits
    there (seen in pg_locks); the test SIGSTOPs the leader process (blocked
    in libpq, waiting for the COMMIT's result), releases its lock so the
    server completes the commit, sees alembic_version at head and the
    migration backend out of its transaction while the leader's lock
    connection still holds the migration lock -- the process never got to
    run a single instruction after its commit -- and SIGKILLs it."""
    db = make_db()
    migrate("flask-alembic", db.dsn, "0001aaaa")
    w = Watcher(db.dsn)
    hold_key = random_key()
    for sql in commit_holder_sql(hold_key):
        w.conn.cursor().execute(sql)
    w.rows("SELECT pg_advisory_lock(%s)", (hold_key,))
    held = [True]
    fl = fleet_for(db, f"(d) {mode} {i + 1}/{REPEAT}", mode)

    def body(f):
        leader = int(f.wait_for_line(LEAD_LINE_RE, timeout=30).group(1))
        w.wait_migration_state(leader)
        own = lock_conn_of(w, leader)
        # only the leader's migration can wait for hold_key (its COMMIT runs
        # the trigger): that backend is the migration's, whatever else a
        # waiter's connection showed when the migration state was sampled
        [mig] = wait_until(lambda: waits_for_advisory(w, hold_key), 15,
                           "the leader's migration never reached its COMMIT")
        f.kill_worker(leader, signal.SIGSTOP)
        wait_until(lambda: proc_state(leader) == "T", 5, f"{leader} not stopped")
        w.rows("SELECT pg_advisory_unlock(%s)", (hold_key,))
        held[0] = False
        # committed by the server while the process is stopped
        wait_until(lambda: w.version() == HEADS, 10, "the commit never completed")
        wait_until(lambda: [a for a in w.activity() if a[0] == mig and not a[3]], 5,
                   "the migration backend still in its transaction")
        assert advisory_holders(w) == [own], (own, advisory_holders(w))
        assert proc_state(leader) == "T"
        os.kill(leader, signal.SIGKILL)
        f.wait()
        w.wait_no_leftovers(gone_pids=(own, mig))
        return leader

    try:
        r, leader = run_with_faults(fl, body)
    finally:
        if held[0]:
            w.rows("SELECT pg_advisory_unlock_all()")
        w.close()
    d = r.describe()
    # nobody migrated again: the only lead line is the killed leader's, and
    # it died before it could log its release
    assert [p for p, _ in r.gate_lines("lead")] == [leader], d
    assert release_lines(r) == [], d
    assert_fleet_up(r, WORKERS, killed=[leader])
    assert r.alembic_version == HEADS, d
    assert r.migration_runs == ONCE_EACH, d
    assert r.migration_pids["0002bbbb"] == [leader], d
    assert r.migration_pids["0003cccc"] == [leader], d
    live = [p for p in r.worker_pids if p != leader]
    kinds = decisions_of(r, live)
    assert all(k in ("wait", "at_head", "found_head") for k in kinds.values()), \
        f"{kinds}\n{d}"
