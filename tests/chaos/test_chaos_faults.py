"""Chaos, part 2: the server and the network misbehave around a fleet.

Flask-alembic Gunicorn fleets (4 sync workers) under the shim, each fault
forced by the test:

 2. PostgreSQL restarted (pg_ctl restart -m fast / -m immediate) while
    processes wait -- on a dedicated server (tests/harness/pg.sh), since a
    restart cuts every session.  What the demanding user expects: no hang,
    no half-applied or doubly-applied migration, a clear error, and the
    next deploy boots.  The restart kills the app's own connections too
    (a waiter's connection was opened before the restart and is handed
    back after it; the leader's migration connection dies mid-migration),
    so the workers cannot boot on those connections: the fleet must fail
    fast -- Gunicorn halts ("Worker failed to boot", exit 3) within
    RESTART_BOUND s of the restart, every worker's error names the lost
    connection, each waiter's shim logs the loss of its lock connection --
    and the same fleet started again boots with each revision applied once.
 3. The leader's own lock connection terminated (pg_terminate_backend)
    while it migrates: a waiter takes the lock and migrates concurrently;
    the leader's commit lands first and the race guard absorbs the
    waiter's duplicate; everything is logged; all boot, each revision once.
 4. wait_timeout (MIGSHIM_WAIT_TIMEOUT=1.5) while the test holds the
    migration lock (an outside holder, MIGSHIM_LOCK_KEY): on_timeout =
    proceed -> every worker proceeds with a warning naming the holder, they
    race each other without the lock, the guard keeps them alive, each
    revision once; on_timeout = fail -> every worker's connection fails
    after 1.5 s with the shim's one error line naming the holder, the
    fleet halts within bounded time, nothing is migrated, the holder's lock
    is untouched.  (The single-process rules are in
    tests/integration/test_gate.py; these are the fleet-level outcomes.)
 5. max_connections nearly exhausted: a dedicated server with
    max_connections = 20, all but WORKERS + 2 slots held by idle
    connections.  The fleet either boots (each revision once, the guard
    absorbing races of processes that could not open a lock connection) or
    fails with PostgreSQL's "too many clients" in every failed worker's
    error -- within a bound, never hanging.
 6. The database unreachable at start (a port nothing listens on; the
    dedicated server stopped, its Unix socket gone): a psycopg2 connect
    under the shim fails with libpq's own error, the same text as without
    the shim, in about the same time (the difference is asserted < 2 s);
    the process exits normally (no signal); a fleet halts promptly with
    that error.
"""

import os
import re
import shutil
import signal
import statistics
import subprocess
import time

import pytest

from conftest import DbFactory, _start_own_server, run_py
from chaoslib import (CONN_LOST_RE, HEADS, LEAD_LINE_RE, ONCE_EACH,
                      PG_BINDIR_CANDIDATES, REVISIONS, Fleet, Watcher,
                      advisory_holders, assert_fleet_up, lock_backends,
                      lock_conn_of, other_lead_re, pg_ctl, random_key,
                      run_with_faults, wait_until)
from fleet import free_port

WORKERS = 4
RESTART_BOUND = 15.0
HALT_RE = re.compile(r"Reason: Worker failed to boot\.|HaltServer 'Worker failed to boot\.' 3")
APP_FAILED_RE = r"^flask-alembic\[(\d+)\]: migration failed: (.*)$"


@pytest.fixture(scope="module")
def own_pg():
    """A dedicated server for this module (restarted, reconfigured, stopped
    by the tests)."""
    server = _start_own_server()
    try:
        yield server
    finally:
        subprocess.run(["bash", str(Path_pg_sh()), "stop", server.pgdir], timeout=120)
        shutil.rmtree(server.pgdir, ignore_errors=True)


def Path_pg_sh():
    from conftest import PG_SH
    return PG_SH


@pytest.fixture
def own_db(own_pg):
    f = DbFactory(own_pg)
    yield f.create
    try:
        f.drop_all()
    except Exception:
        pass   # the server may be down at the end of a test


def assert_halted(r, d):
    """Gunicorn halted on a worker's boot error.  Its exit status is 3,
    or 1 when the HaltServer is raised again inside halt() (Gunicorn 20.1
    reaps the other failed workers during its own stop)."""
    assert not r.booted and not r.master_alive_at_end, d
    assert r.master_rc in (1, 3) and HALT_RE.search(r.stderr), d


def app_failures(r):
    """{pid: message} of the app's 'migration failed' lines."""
    return {int(m.group(1)): m.group(2)
            for m in re.finditer(APP_FAILED_RE, r.stderr, re.M)}


# ---------------------------------------------------------------------------
# 2. PostgreSQL restarted while processes wait

@pytest.mark.parametrize("mode,holder", [("fast", "test"), ("immediate", "leader")])
def test_restart_while_waiting(own_pg, own_db, migshim_lib, mode, holder):
    """holder = test: the test holds the migration lock, all 4 workers wait
    (4 lock connections seen waiting), restart -m fast.  holder = leader:
    the fleet's leader migrates (each revision sleeping 1 s, its migration
    transaction seen open) while the 3 others wait, restart -m immediate."""
    db = own_db()
    key = random_key()
    w = Watcher(db.dsn)
    if holder == "test":
        w.rows("SELECT pg_advisory_lock(%s)", (key,))
    fl = Fleet("flask-alembic", db.dsn, workers=WORKERS, shim=True,
               shim_env={"MIGSHIM_LOCK_KEY": str(key)},
               env_extra={"MIGRATION_SLEEP": "1.0"}, timeout=60,
               label=f"restart -m {mode} while waiting ({holder} holds the lock)")
    waiters = WORKERS if holder == "test" else WORKERS - 1

    def body(f):
        leader = None
        if holder == "leader":
            leader = int(f.wait_for_line(LEAD_LINE_RE, timeout=30).group(1))
            w.wait_migration_state(leader)
        wait_until(lambda: len(lock_backends(w)) == WORKERS, 30,
                   f"not all {WORKERS} workers in the gate")
        took = pg_ctl(own_pg.pgdir, "-m", mode, "restart")
        t = time.monotonic()
        f.wait()
        return leader, took, time.monotonic() - t

    try:
        r, (leader, took, halt) = run_with_faults(fl, body)
    finally:
        try:
            w.close()
        except Exception:
            pass
    d = r.describe()
    assert_halted(r, d)
    assert halt < RESTART_BOUND, f"halted {halt:.1f}s after the restart\n{d}"
    fails = app_failures(r)
    # every worker failed, each with an error naming the lost connection
    assert sorted(fails) == sorted(r.worker_pids), d
    for pid, msg in fails.items():
        assert CONN_LOST_RE.search(msg), f"{pid}: {msg}\n{d}"
    lost = [p for p, lv, m in r.migshim_lines("warn")
            if "the lock connection failed" in m and "proceeding without the gate" in m]
    expect = [p for p in r.worker_pids if p != leader]
    assert sorted(lost) == sorted(expect) and len(expect) == waiters, d
    # nothing half-applied: the migration transaction died with the server
    w = Watcher(db.dsn)
    try:
        assert w.version() is None, d
        assert w.rows("SELECT to_regclass('migration_runs')")[0] == (None,), d
        w.wait_no_leftovers()
    finally:
        w.close()
    # the next deploy boots
    r2, _ = run_with_faults(Fleet("flask-alembic", db.dsn, workers=WORKERS, shim=True,
                                  label="re-deploy after the restart"),
                            lambda f: f.wait())
    assert_fleet_up(r2, WORKERS)
    assert r2.alembic_version == HEADS and r2.migration_runs == ONCE_EACH, r2.describe()
    print(f"\nrestart -m {mode} ({holder}): pg_ctl took {took:.2f}s; fleet halted "
          f"{halt:.2f}s after it; re-deploy up in {r2.elapsed:.2f}s")


# ---------------------------------------------------------------------------
# 3. the leader's lock connection terminated while it migrates

def test_leader_lock_connection_terminated(make_db, migshim_lib):
    db = make_db()
    w = Watcher(db.dsn)
    fl = Fleet("flask-alembic", db.dsn, workers=WORKERS, shim=True,
               env_extra={"MIGRATION_SLEEP": "1.0"},
               label="leader's lock connection terminated")

    def body(f):
        leader = int(f.wait_for_line(LEAD_LINE_RE, timeout=30).group(1))
        st = w.wait_migration_state(leader)
        own = st[1][0]
        assert w.rows("SELECT pg_terminate_backend(%s)", (own,)) == [(True,)]
        nxt = int(f.wait_for_line(other_lead_re(leader), timeout=10).group(1))
        f.wait()
        w.wait_no_leftovers()
        return leader, nxt, own

    try:
        r, (leader, nxt, own) = run_with_faults(fl, body)
    finally:
        w.close()
    d = r.describe()
    assert r.booted and r.master_alive_at_end and r.workers_failed == 0, d
    assert sorted(r.ready_pids) == sorted(r.worker_pids) and len(r.worker_pids) == WORKERS, d
    assert not r.race_errors(), d
    assert r.alembic_version == HEADS and r.migration_runs == ONCE_EACH, d
    # the first leader's commit landed; the second leader's was absorbed
    assert {rev: r.migration_pids[rev] for rev in REVISIONS} == \
        {rev: [leader] for rev in REVISIONS}, d
    problems = r.migshim_problems()
    # logged: the leader lost its lock connection; the guard mapped the race
    assert [ln for ln in problems if f"migshim[{leader}]" in ln], d
    assert [ln for ln in problems if f"migshim[{nxt}]" in ln], d
    print("\n" + "\n".join(problems))


# ---------------------------------------------------------------------------
# 4. wait_timeout: proceed / fail

TIMEOUT_S = 1.5


@pytest.mark.parametrize("on_timeout", ["proceed", "fail"])
def test_wait_timeout_fleet(make_db, migshim_lib, on_timeout):
    db = make_db()
    key = random_key()
    w = Watcher(db.dsn)
    w.rows("SELECT pg_advisory_lock(%s)", (key,))
    me = w.rows("SELECT pg_backend_pid()")[0][0]
    fl = Fleet("flask-alembic", db.dsn, workers=WORKERS, shim=True,
               shim_env={"MIGSHIM_LOCK_KEY": str(key),
                         "MIGSHIM_WAIT_TIMEOUT": str(TIMEOUT_S),
                         "MIGSHIM_ON_TIMEOUT": on_timeout},
               env_extra={"MIGRATION_SLEEP": "0.3"}, timeout=40,
               label=f"wait_timeout, on_timeout = {on_timeout}")

    def body(f):
        t = time.monotonic()
        f.wait()
        out = time.monotonic() - t
        left = lock_backends(w)
        holders = advisory_holders(w, key)
        return out, left, holders

    try:
        r, (took, left, holders) = run_with_faults(fl, body)
        w.rows("SELECT pg_advisory_unlock(%s)", (key,))
    finally:
        w.close()
    d = r.describe()
    assert holders == [me], f"the outside holder's lock: {holders}\n{d}"
    assert left == [], d
    level, tail = ("warn", "proceeding (on_timeout = proceed)") if on_timeout == "proceed" \
        else ("error", "failing the connection (on_timeout = fail)")
    timed_out = [p for p, lv, m in r.migshim_lines(level)
                 if f"(wait_timeout) for the migration lock held by backend pid {me} " in m
                 and m.endswith(tail)]
    assert sorted(timed_out) == sorted(r.worker_pids) and len(timed_out) == WORKERS, d
    if on_timeout == "proceed":
        assert r.booted and r.master_alive_at_end and r.workers_failed == 0, d
        assert not r.race_errors(), "\n".join(r.race_errors()) + "\n" + d
        assert r.alembic_version == HEADS and r.migration_runs == ONCE_EACH, d
        # nobody led (the lock was never free); everything beyond the
        # timeout warnings is the guard at work
        assert r.gate_lines("lead") == [], d
        others = [ln for ln in r.migshim_problems() if "(wait_timeout)" not in ln]
        assert all("guard" in ln or "race" in ln or "absorb" in ln or "rolled back" in ln
                   for ln in others), "\n".join(others)
    else:
        assert_halted(r, d)
        assert took < TIMEOUT_S + 12, f"{took:.1f}s\n{d}"
        fails = app_failures(r)
        assert sorted(fails) == sorted(r.worker_pids), d
        assert r.alembic_version is None and r.migration_runs == {}, d
    print(f"\non_timeout = {on_timeout}: outcome after {took:.2f}s; "
          + "; ".join(sorted({m.split(': ', 1)[-1][:90] for m in app_failures(r).values()})))


# ---------------------------------------------------------------------------
# 5. max_connections nearly exhausted

MAXCONN = 20


def test_max_connections_nearly_exhausted(own_pg, own_db, migshim_lib):
    import psycopg2
    adm = own_pg.connect()
    with adm.cursor() as cur:
        cur.execute("ALTER SYSTEM SET max_connections = %s", (MAXCONN,))
    adm.close()
    pg_ctl(own_pg.pgdir, "-m", "fast", "restart")
    db = own_db()
    fillers = []
    try:
        c = own_pg.connect()
        with c.cursor() as cur:
            cur.execute("SHOW max_connections")
            assert cur.fetchone()[0] == str(MAXCONN)
            cur.execute("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'")
            used = cur.fetchone()[0]
        c.close()
        free = WORKERS + 2
        for _ in range(MAXCONN - (used - 1) - free):
            fillers.append(psycopg2.connect(own_pg.dsn()))
        fl = Fleet("flask-alembic", db.dsn, workers=WORKERS, shim=True,
                   env_extra={"MIGRATION_SLEEP": "0.3"}, timeout=40,
                   label=f"max_connections={MAXCONN}, {free} free")
        fl.start()
        try:
            fl.wait()
        finally:
            fl.stop()
    finally:
        for f in fillers:
            f.close()
    r = fl.result()
    d = r.describe()
    assert "timeout" not in r.reason, d          # never hangs
    if r.booted:
        assert r.workers_failed == 0 and not r.race_errors(), d
        assert r.alembic_version == HEADS and r.migration_runs == ONCE_EACH, d
        outcome = "booted"
    else:
        assert_halted(r, d)
        fails = app_failures(r)
        assert fails and all("too many clients" in m for m in fails.values()), d
        assert all(n == 1 for n in r.migration_runs.values()), d
        outcome = "failed: " + next(iter(fails.values()))[:100]
    w = Watcher(db.dsn)
    try:
        w.wait_no_leftovers()
    finally:
        w.close()
    print(f"\n{len(fillers)} idle connections held, {free} slots free: {outcome}; "
          f"shim said: {[m[:100] for m in r.migshim_problems()][:4]}")


# ---------------------------------------------------------------------------
# 6. the database unreachable at start

CONNECT = (
    "import sys, time, psycopg2\n"
    "t = time.monotonic()\n"
    "try:\n"
    "    psycopg2.connect(sys.argv[1])\n"
    "except psycopg2.OperationalError as e:\n"
    "    print('%.4f' % (time.monotonic() - t)); print(str(e).strip().replace('\\n', ' | '))\n"
    "    sys.exit(1)\n"
    "print('connected')\n")

REPS = 3


def connect_attempts(dsn, preload):
    times, errs, rcs = [], set(), set()
    for _ in range(REPS):
        res = run_py(CONNECT, args=[dsn], preload=preload, timeout=60,
                     env_extra={"MIGSHIM_LOG": "info", "MIGSHIM_HEADS": "0003cccc"})
        rcs.add(res.rc)
        lines = res.stdout.splitlines()
        assert res.rc == 1 and len(lines) == 2, res
        times.append(float(lines[0]))
        errs.add(lines[1])
        assert "migshim[" not in res.stderr, res.stderr
    return statistics.median(times), errs, rcs


@pytest.mark.parametrize("where", ["wrong port", "server stopped"])
def test_database_unreachable_at_start(own_pg, migshim_lib, where):
    if where == "wrong port":
        dsn = f"host=127.0.0.1 port={free_port()} user=postgres dbname=postgres"
    else:
        pg_ctl(own_pg.pgdir, "-m", "fast", "stop")
        dsn = own_pg.dsn()
    try:
        t_plain, e_plain, _ = connect_attempts(dsn, preload=False)
        t_shim, e_shim, _ = connect_attempts(dsn, preload=True)
        assert e_shim == e_plain and len(e_plain) == 1, (e_plain, e_shim)
        assert t_shim - t_plain < 2.0, (t_plain, t_shim)
        fl = Fleet("flask-alembic", dsn, workers=2, shim=True, timeout=30,
                   label=f"unreachable: {where}")
        fl.start()
        t = time.monotonic()
        try:
            fl.wait()
        finally:
            fl.stop()
        halt = time.monotonic() - t
        r = fl.result(read_db=False)
        d = r.describe()
        assert_halted(r, d)
        assert halt < 15, d
        fails = app_failures(r)
        (err,) = e_plain
        first = err.split(" | ")[0]
        assert fails and all(first in m for m in fails.values()), (first, fails, d)
        assert "Segmentation" not in r.stderr and "core dumped" not in r.stderr, d
        print(f"\n{where}: libpq alone {t_plain * 1000:.1f} ms, under the shim "
              f"{t_shim * 1000:.1f} ms (median of {REPS}); error: {err[:120]}; "
              f"fleet halted in {halt:.2f}s")
    finally:
        if where == "server stopped":
            pg_ctl(own_pg.pgdir, "start")
