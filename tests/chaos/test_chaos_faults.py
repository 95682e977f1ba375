"""Chaos, part 2: the server and the network misbehave around a fleet.

Flask-alembic Gunicorn fleets (4 sync workers) under the shim, each fault
forced by the test:

 2. PostgreSQL restarted (pg_ctl restart -m fast / -m immediate) while
    processes wait -- on a dedicated server (tests/harness/pg.sh), since a
    restart cuts every session.  What the demanding user expects: no hang,
    no half-applied or doubly-applied migration, a clear error, and the
    next deploy boots.  The restart kills the app's own connections too
    (with lock = xact a waiter waits on its own connection, which dies in
    its wait statement; with lock = session its connection was opened
    before the restart and is handed back after it; the leader's migration
    connection dies mid-migration), so the workers cannot boot on those
    connections: the fleet must fail fast -- Gunicorn halts ("Worker failed
    to boot", exit 3) within RESTART_BOUND s of the restart, every worker's
    error names the lost connection, each waiter's shim logs that the
    connection it waited on failed, with libpq's or the server's reason
    ("the connection failed while waiting (...)" for lock = xact, "the lock
    connection failed while waiting (...)" for lock = session) -- and the
    same fleet started again boots with each revision applied once.
 3. The leader's own lock connection terminated (pg_terminate_backend)
    while it migrates: a waiter takes the lock and migrates concurrently;
    the leader's commit lands first and the race guard stands in for the
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
    max_connections = 20, all but a few slots held by idle connections.
    lock = xact with WORKERS + 1 slots free (the workers' own connections
    and the leader's lock connection; waiters open none): the fleet boots
    cleanly, one leader, no shim warning.  With fewer slots, or lock =
    session (a lock connection per waiter) with WORKERS + 2: the fleet
    either boots (each revision once, the guard answering races of
    processes that could not open a lock connection) or fails with
    PostgreSQL's "too many clients" in every failed worker's error --
    within a bound, never hanging.
 6. The database unreachable at start (a port nothing listens on; the
    dedicated server stopped, its Unix socket gone): a psycopg2 connect
    under the shim fails with libpq's own error, the same text as without
    the shim, in about the same time (the difference is asserted < 2 s);
    the process exits normally (no signal); a fleet halts promptly with
    that error.

Regression tests for two shim bugs the chaos work found (fixed on main in
6bcf7f9; they were strict-xfail reproductions in test_chaos_bugs.py):

 7. A migration altering the version table (ACCESS EXCLUSIVE on
    alembic_version) under lock = xact: the lock connection read the
    version table inside its lock transaction and kept ACCESS SHARE on it
    for the whole lead, so the leader's ALTER waited for its own idle lock
    connection -- a deadlock the server cannot see; the fleet never booted.
 8. A lost lock connection logged with an empty reason ("the lock
    connection failed (); proceeding without the gate"): the reason came
    from the result's server fields only, which an error made by libpq
    itself (the server went away) does not have.
"""

import contextlib
import os
import re
import shutil
import signal
import statistics
import subprocess
import threading
import time

import pytest

from conftest import DbFactory, _start_own_server, run_py
from chaoslib import (CONN_LOST_RE, HEADS, LEAD_LINE_RE, ONCE_EACH,
                      PG_BINDIR_CANDIDATES, REVISIONS, Fleet, Watcher,
                      advisory_holders, assert_fleet_up, lock_backends,
                      lock_conn_of, other_lead_re, pg_ctl, random_key,
                      copy_example, migrate, run_with_faults, tagged_app,
                      waiting_pids, wait_until)
from fleet import (EXAMPLES_DIR, PYTHON, RACE_ERROR_RE, clean_env, database_url,
                   db_state, free_port, migshim_lines_in)

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


def alive(pid):
    """pid exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def app_failures(r):
    """{pid: message} of the app's 'migration failed' lines."""
    return {int(m.group(1)): m.group(2)
            for m in re.finditer(APP_FAILED_RE, r.stderr, re.M)}


# ---------------------------------------------------------------------------
# 2. PostgreSQL restarted while processes wait

WAIT_FAILED_RE = re.compile(r"the (lock )?connection failed while waiting \((.*)\); "
                            r"proceeding without the gate$")


@pytest.mark.parametrize("mode,holder,lock", [("fast", "test", "xact"),
                                              ("immediate", "leader", "xact"),
                                              ("fast", "test", "session")])
def test_restart_while_waiting(own_pg, own_db, migshim_lib, tmp_path, mode, holder, lock):
    """holder = test: the test holds the migration lock, all 4 workers wait
    (seen waiting: lock = xact on their own connections, each running the
    shim's wait statement, and no migshim lock connection; lock = session
    on 4 lock connections), restart -m fast.  holder = leader: the fleet's
    leader migrates (each revision sleeping 1 s, its migration transaction
    seen open) while the 3 others wait, restart -m immediate."""
    db = own_db()
    key = random_key()
    w = Watcher(db.dsn)
    if holder == "test":
        w.rows("SELECT pg_advisory_lock(%s)", (key,))
    fl = Fleet("flask-alembic", db.dsn, workers=WORKERS, shim=True,
               app_dir=tagged_app(tmp_path),
               shim_env={"MIGSHIM_LOCK_KEY": str(key), "MIGSHIM_LOCK": lock},
               env_extra={"MIGRATION_SLEEP": "1.0"}, timeout=60,
               label=f"restart -m {mode} while waiting ({holder} holds the lock, "
                     f"lock = {lock})")
    waiters = WORKERS if holder == "test" else WORKERS - 1

    def body(f):
        leader = None
        if holder == "leader":
            leader = int(f.wait_for_line(LEAD_LINE_RE, timeout=30).group(1))
            w.wait_migration_state(leader)
        wait_until(lambda: len(waiting_pids(w)) == WORKERS, 30,
                   f"not all {WORKERS} workers in the gate")
        locks = lock_backends(w)
        if lock == "xact":
            # only a leader has a lock connection
            assert len(locks) == (1 if leader else 0), locks
        else:
            assert len(locks) == WORKERS, locks
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
    # each waiter logged the loss of the connection it waited on, with a
    # reason (the app's own with lock = xact, the lock connection's with
    # lock = session)
    lost = {p: WAIT_FAILED_RE.search(m) for p, lv, m in r.migshim_lines("warn")
            if WAIT_FAILED_RE.search(m)}
    expect = [p for p in r.worker_pids if p != leader]
    assert sorted(lost) == sorted(expect) and len(expect) == waiters, d
    for p, m in lost.items():
        assert bool(m.group(1)) == (lock == "session"), f"{p}: {m.group(0)}\n{d}"
        assert CONN_LOST_RE.search(m.group(2)), f"{p}: {m.group(0)}\n{d}"
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
    print(f"\nrestart -m {mode} ({holder}, lock = {lock}): pg_ctl took {took:.2f}s; fleet halted "
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
    # the first leader's commit landed; the second leader's was answered by the guard
    assert {rev: r.migration_pids[rev] for rev in REVISIONS} == \
        {rev: [leader] for rev in REVISIONS}, d
    problems = r.migshim_problems()
    # logged: the leader lost its lock connection, so it can neither re-read
    # the version table nor release the lock there (the failure of
    # lock_release is logged, not dropped); the guard mapped the race
    mine = [ln for ln in problems if f"migshim[{leader}]" in ln]
    assert any(re.search(r'warn: database "[^"]+": cannot re-read the version table on the lock '
                         r'connection \(.+\); releasing the migration lock', ln) for ln in mine), d
    assert any(re.search(r'warn: database "[^"]+": releasing the migration lock failed; closing '
                         r'the lock connection releases it$', ln) for ln in mine), d
    assert [ln for ln in problems if f"migshim[{nxt}]" in ln], d
    print("\n" + "\n".join(problems))


def sigterm_stopped(r):
    """Workers the shim let go on SIGTERM while they waited (src/waitsig.c)."""
    return [p for p, lv, m in r.migshim_lines("warn")
            if re.search(r"SIGTERM after waiting \d+\.\d{3} s for the migration lock; "
                         r"failing the connection so the app's own handler runs$", m)]


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
        if on_timeout == "fail":
            # Gunicorn halts on the first worker's failure; a worker forked
            # later (imports are slow on a loaded machine) is still in its
            # wait.  Let each one log its own timeout (or die) before
            # run_with_faults SIGKILLs the process group.
            def settled():
                text = f.stderr_text()
                pids = f._scan(text)[0]
                return all(f"migshim[{p}]: error: " in text or not alive(p) for p in pids)
            wait_until(settled, TIMEOUT_S + 5, "every worker timed out or died")
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
    if on_timeout == "fail":
        # Gunicorn halts at the first worker's failure and SIGTERMs the
        # others: a worker still waiting then stops at once (SIGTERM while
        # waiting, issue 13) instead of running out its own wait_timeout
        stopped = sigterm_stopped(r)
        assert timed_out and not set(timed_out) & set(stopped), d
        assert sorted(timed_out + stopped) == sorted(r.worker_pids) \
            and len(r.worker_pids) == WORKERS, d
    else:
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


class PeakSampler(threading.Thread):
    """The most client backends of the fleet's database seen at once, and
    the most 'migshim lock' ones, sampled every 10 ms from an already open
    connection (it holds one of the slots itself)."""

    def __init__(self, conn, dbname):
        super().__init__(daemon=True)
        self.conn, self.dbname = conn, dbname
        self.peak, self.peak_locks = 0, 0
        self.stop_evt = threading.Event()

    def run(self):
        with self.conn.cursor() as cur:
            while not self.stop_evt.is_set():
                cur.execute("SELECT count(*), count(*) FILTER (WHERE application_name"
                            " LIKE 'migshim lock pid=%%') FROM pg_stat_activity"
                            " WHERE datname = %s AND backend_type = 'client backend'",
                            (self.dbname,))
                n, nl = cur.fetchone()
                self.peak, self.peak_locks = max(self.peak, n), max(self.peak_locks, nl)
                time.sleep(0.01)

    def stop(self):
        self.stop_evt.set()
        self.join(5)


def limit_connections(own_pg):
    """max_connections = MAXCONN, restarting the server."""
    adm = own_pg.connect()
    with adm.cursor() as cur:
        cur.execute("ALTER SYSTEM SET max_connections = %s", (MAXCONN,))
    adm.close()
    pg_ctl(own_pg.pgdir, "-m", "fast", "restart")


def fill_slots(own_pg, free, fillers):
    """Append idle connections to `fillers` until exactly `free` slots are
    left (every connection here is a superuser's: all MAXCONN count)."""
    import psycopg2
    c = own_pg.connect()
    with c.cursor() as cur:
        cur.execute("SHOW max_connections")
        assert cur.fetchone()[0] == str(MAXCONN)
        cur.execute("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'")
        used = cur.fetchone()[0]
    c.close()
    for _ in range(MAXCONN - (used - 1) - free):
        fillers.append(psycopg2.connect(own_pg.dsn()))


@pytest.mark.parametrize("lock,free", [("xact", WORKERS + 1), ("xact", WORKERS),
                                       ("session", WORKERS + 2)])
def test_max_connections_nearly_exhausted(own_pg, own_db, migshim_lib, lock, free):
    """lock = xact, WORKERS + 1 slots free (the workers' own connections and
    the leader's lock connection): the fleet must boot cleanly -- waiters
    need no connection of their own, so nobody is short of one: one leader,
    no shim warning, at most one lock connection and WORKERS + 1 backends
    at once.  (Measured on the merged branch: 3/3 booted, peak 5 backends,
    1 lock connection.)  With fewer slots (xact, WORKERS free: a worker's
    own connection or the leader's lock connection finds no slot) and with
    lock = session, whose waiters each open a lock connection (WORKERS + 2
    free: measured peak 6 backends, 3 lock connections, then "too many
    clients"), the fleet either boots or fails with PostgreSQL's "too many
    clients" in every failed worker's error -- or, in a worker that found
    no slot for its lock connection nor later for the race guard's
    verifying one, the app's own race error, unchanged, with both warnings
    logged -- within a bound, never hanging, never a revision applied
    twice."""
    import psycopg2
    limit_connections(own_pg)
    db = own_db()
    fillers = []
    sampler = None
    try:
        sc = psycopg2.connect(own_pg.dsn())
        sc.autocommit = True
        fill_slots(own_pg, free, fillers)
        sampler = PeakSampler(sc, db.name)
        sampler.start()
        fl = Fleet("flask-alembic", db.dsn, workers=WORKERS, shim=True,
                   shim_env={"MIGSHIM_LOCK": lock},
                   env_extra={"MIGRATION_SLEEP": "0.3"}, timeout=40,
                   label=f"max_connections={MAXCONN}, {free} free, lock = {lock}")
        fl.start()
        try:
            fl.wait()
        finally:
            fl.stop()
    finally:
        if sampler:
            sampler.stop()
            sc.close()
        for f in fillers:
            f.close()
    r = fl.result()
    d = r.describe()
    assert "timeout" not in r.reason, d          # never hangs
    peaks = f"peak {sampler.peak} backends, {sampler.peak_locks} lock connections"
    if lock == "xact" and free == WORKERS + 1:
        assert r.booted, d
        assert r.migshim_problems() == [], d
        assert len(r.gate_lines("lead")) == 1, d
        assert sampler.peak_locks == 1 and sampler.peak <= WORKERS + 1, f"{peaks}\n{d}"
    if r.booted:
        assert r.workers_failed == 0 and not r.race_errors(), d
        assert r.alembic_version == HEADS and r.migration_runs == ONCE_EACH, d
        outcome = "booted"
    else:
        assert_halted(r, d)
        fails = app_failures(r)
        # a failure is "too many clients"; a worker still waiting when
        # Gunicorn halted was SIGTERMed and stopped (issue 13) instead.  A
        # worker that found no slot for its lock connection proceeds
        # ungated; if it then loses the race and finds no slot for the
        # guard's verifying connection either, the app's original race
        # error passes through unchanged (nothing proven, nothing answered)
        # and the shim said why, for that pid.
        stopped = set(sigterm_stopped(r))
        unverified = {p for p, _, m in r.migshim_lines("warn")
                      if m.startswith("guard: cannot open a connection to verify the race")
                      and "too many clients" in m}
        ungated = {p for p, _, m in r.migshim_lines("warn")
                   if "cannot open the lock connection" in m and "too many clients" in m}
        too_many = {p: m for p, m in fails.items() if p not in stopped}
        assert too_many, d
        for p, m in too_many.items():
            assert "too many clients" in m or (
                p in unverified and p in ungated and RACE_ERROR_RE.search(m)), d
        assert all(n == 1 for n in r.migration_runs.values()), d
        outcome = "failed: " + next(iter(fails.values()))[:100]
    w = Watcher(db.dsn)
    try:
        w.wait_no_leftovers()
    finally:
        w.close()
    print(f"\nlock = {lock}: {len(fillers)} idle connections held, {free} slots free: "
          f"{outcome}; {peaks} of the fleet's database; "
          f"shim said: {[m[:100] for m in r.migshim_problems()][:4]}")


# ---------------------------------------------------------------------------
# 5b. no connection slot for the shim's own connections, one process
#
# A refused slot ("too many clients") ends when someone disconnects.  A
# waiter short of a slot for its lock connection waits for one while
# another process holds the migration lock (up to wait_timeout, ending
# early if the database reaches the target meanwhile); with nobody holding
# it, waiting could only stall a fleet whose own connections fill the
# server, so it proceeds without the gate.  The race guard waits for a
# slot to verify on, up to race_wait.  Each test leaves exactly one slot,
# which the process's own connection takes; the test's `peer` (connected
# to the fleet's database) holds the migration lock, migrates, or frees a
# slot at forced points.

class Upgrade:
    """`alembic upgrade head` of examples/flask-alembic under the shim
    (log = info), its output read as it comes."""

    def __init__(self, db, lib, env_extra):
        import shimbuild
        env = clean_env()
        env.update({"DATABASE_URL": database_url(db.dsn), "MIGRATION_SLEEP": "0",
                    "LD_PRELOAD": shimbuild.preload(lib), "MIGSHIM_LOG": "info"})
        env.update(env_extra)
        self.p = subprocess.Popen([PYTHON, "-m", "alembic", "-c", "alembic.ini", "upgrade", "head"],
                                  cwd=str(EXAMPLES_DIR / "flask-alembic"), env=env,
                                  stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self.lines: list = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for ln in self.p.stdout:
            self.lines.append(ln.rstrip("\n"))

    def text(self):
        return "\n".join(self.lines)

    def wait_line(self, rx, timeout=30.0):
        wait_until(lambda: re.search(rx, self.text(), re.M), timeout,
                   f"a line matching {rx!r} in:\n{self.text()}")

    def finish(self, timeout=60.0):
        try:
            rc = self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.p.pid, signal.SIGKILL)
            self.p.wait()
            raise AssertionError(f"still running after {timeout} s:\n{self.text()}")
        self.reader.join(5)
        return rc

    def shim(self, level=None):
        """[(level, message)] of its migshim lines."""
        return [(lv, m) for p, lv, m in migshim_lines_in(self.text(), level) if p == self.p.pid]

    def exited_ok(self, rc):
        """(its output, its migshim lines), asserting it exited 0."""
        out = self.text()
        assert rc == 0, out
        return out, self.shim()


def assert_once_by(db, pid, out):
    """The database at head, each revision applied once, all by `pid`."""
    version, runs, pids = db_state(db.dsn)
    assert version == HEADS and runs == ONCE_EACH, out
    assert all(p == [pid] for p in pids.values()), (pids, pid, out)


def offline_sql(db):
    """(the SQL of `alembic upgrade head --sql`, the generating pid)."""
    env = clean_env()
    env.update({"DATABASE_URL": database_url(db.dsn), "MIGRATION_SLEEP": "0"})
    p = subprocess.Popen([PYTHON, "-m", "alembic", "-c", "alembic.ini", "upgrade", "head", "--sql"],
                         cwd=str(EXAMPLES_DIR / "flask-alembic"), env=env,
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True)
    out, _ = p.communicate(timeout=60)
    assert p.returncode == 0 and "CREATE TABLE alembic_version" in out, out
    return out, p.pid


LEADING = re.compile(r"leading: this process holds the migration lock")
NO_SLOT = (r"no connection slot for the lock connection \(.*too many clients already\); "
           r"waiting for one while another process holds the migration lock, "
           r"up to wait_timeout \(%s s\)$")


def hold_lock(db, fillers):
    """A connection to the fleet's database (one of `fillers`) holding the
    migration lock under a fresh key; (it, {MIGSHIM_LOCK_KEY: key})."""
    import psycopg2
    key = random_key()
    peer = psycopg2.connect(db.dsn)
    peer.autocommit = True
    fillers.append(peer)
    with peer.cursor() as cur:
        cur.execute("SELECT pg_advisory_lock(%s)", (key,))
    return peer, {"MIGSHIM_LOCK": "session", "MIGSHIM_LOCK_KEY": str(key)}


@contextlib.contextmanager
def one_slot_lock_held(own_pg, db):
    """max_connections = MAXCONN with one slot left, the migration lock
    held by a connection of the test's (hold_lock): yields (fillers, the
    holder, the process's environment); closes them all at the end."""
    fillers = []
    try:
        peer, env = hold_lock(db, fillers)
        fill_slots(own_pg, 1, fillers)
        yield fillers, peer, env
    finally:
        for f in fillers:
            f.close()


def test_lock_connection_waits_for_a_slot(own_pg, own_db, migshim_lib):
    """One slot, the lock held by the test: the process waits for a slot
    for its lock connection; 0.6 s after it said so a filler closes; the
    process opens its lock connection, waits for the lock, and when the
    test lets it go, leads and migrates -- never ungated."""
    limit_connections(own_pg)
    db = own_db()
    with one_slot_lock_held(own_pg, db) as (fillers, peer, env):
        u = Upgrade(db, migshim_lib, env)
        u.wait_line(NO_SLOT % 300)
        time.sleep(0.6)
        fillers.pop().close()
        u.wait_line(r"a connection slot came free after \d+\.\d+ s; the lock connection is open$")
        with peer.cursor() as cur:
            cur.execute("SELECT pg_advisory_unlock_all()")
        rc = u.finish()
    out, lines = u.exited_ok(rc)
    assert [lv for lv, m in lines if re.search(NO_SLOT % 300, m)] == ["warn"], out
    came = [float(m.group(1)) for lv, t in lines
            for m in [re.search(r"a connection slot came free after (\d+\.\d+) s; "
                                r"the lock connection is open$", t)] if m]
    assert len(came) == 1 and came[0] >= 0.6, out
    assert [lv for lv, t in lines if LEADING.search(t)] == ["info"], out
    assert any(re.search(r"migrated to 0003cccc; migration lock released", t) for _, t in lines), out
    assert not [t for _, t in lines if "without the gate" in t], out
    assert_once_by(db, u.p.pid, out)


def test_slot_wait_ends_when_a_peer_migrated(own_pg, own_db, migshim_lib):
    """One slot: while the process waits for a slot, the peer holding the
    lock runs the whole migration (Alembic's own offline SQL).  The
    process, rereading on its own connection, proceeds without ever opening
    a lock connection, and runs no revision."""
    limit_connections(own_pg)
    db = own_db()
    sql, gen = offline_sql(db)
    with one_slot_lock_held(own_pg, db) as (fillers, peer, env):
        u = Upgrade(db, migshim_lib, env)
        u.wait_line(NO_SLOT % 300)
        with peer.cursor() as cur:
            cur.execute(sql)
        rc = u.finish()
    out, lines = u.exited_ok(rc)
    assert [lv for lv, t in lines if re.search(
        r"waited \d+\.\d{3} s for a connection slot; a peer migrated it to 0003cccc; proceeding$", t)] == ["info"], out
    assert not [t for _, t in lines if LEADING.search(t) or "without the gate" in t], out
    assert "Running upgrade" not in out, out
    assert_once_by(db, gen, out)


def test_slot_wait_bounded_by_wait_timeout(own_pg, own_db, migshim_lib):
    """One slot, none freed, the lock held by the test throughout,
    wait_timeout = 1.5: after it the process proceeds without the gate
    (saying so) and, alone, migrates."""
    limit_connections(own_pg)
    db = own_db()
    with one_slot_lock_held(own_pg, db) as (fillers, peer, env):
        t = time.monotonic()
        u = Upgrade(db, migshim_lib, {**env, "MIGSHIM_WAIT_TIMEOUT": "1.5"})
        rc = u.finish()
        took = time.monotonic() - t
    out, lines = u.exited_ok(rc)
    assert took >= 1.5, (took, out)
    assert [lv for lv, t in lines if re.search(NO_SLOT % 1.5, t)] == ["warn"], out
    assert [lv for lv, t in lines if re.search(
        r"waited 1\.\d s \(wait_timeout\) for a connection slot for the lock connection "
        r"\(.*too many clients already\); proceeding without the gate$", t)] == ["warn"], out
    assert_once_by(db, u.p.pid, out)


def test_guard_waits_for_a_slot_to_verify(own_pg, own_db, migshim_lib):
    """The CI failure of 2026-11-25 forced: one slot and nobody holding the
    migration lock, so the process goes on without the gate (after looking
    for a holder for a second).  A peer (connected first) runs
    the whole migration in one transaction, left open; the process's
    CREATE TABLE alembic_version is seen blocked behind it; the peer
    commits, and the process gets 23505.  The race guard finds no slot to
    verify; 0.8 s later the peer disconnects.  The guard then verifies the
    database at the target and answers: the process exits 0, having
    applied nothing (without the wait, the app got its UniqueViolation)."""
    import psycopg2
    limit_connections(own_pg)
    db = own_db()
    sql, gen = offline_sql(db)
    assert sql.count("COMMIT;") == 1, sql      # transactional DDL: one transaction
    fillers = []
    try:
        peer = psycopg2.connect(db.dsn)
        fill_slots(own_pg, 1, fillers)
        with peer.cursor() as cur:               # psycopg2 opens the transaction
            cur.execute(sql.replace("BEGIN;", "", 1).replace("COMMIT;", ""))
        u = Upgrade(db, migshim_lib, {"MIGSHIM_LOCK": "session"})

        def blocked():
            with peer.cursor() as cur:
                cur.execute("SELECT count(*) FROM pg_locks WHERE NOT granted AND locktype = 'transactionid'")
                return cur.fetchone()[0] == 1
        wait_until(blocked, 30, "the process blocked behind the peer's transaction")
        peer.commit()
        time.sleep(0.8)
        peer.close()
        rc = u.finish()
    finally:
        peer.close()
        for f in fillers:
            f.close()
    out, lines = u.exited_ok(rc)
    assert [lv for lv, t in lines if re.search(r"cannot open the lock connection \(.*too many clients already\); "
                                               r"proceeding without the gate$", t)] == ["warn"], out
    waited = [float(m.group(1)) for _, t in lines
              for m in [re.search(r"^guard: waited (\d+\.\d+) s for a connection slot to verify the race$", t)] if m]
    assert len(waited) == 1 and waited[0] >= 0.7, out
    assert [lv for lv, t in lines if re.search(r"^guard: 23505 on CREATE TABLE in a migration transaction that "
                                               r"started at \(no table\); verified the database at the target "
                                               r"\(0003cccc\)", t)] == ["warn"], out
    assert "Traceback" not in out and "UniqueViolation" not in out, out
    assert_once_by(db, gen, out)


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


# ---------------------------------------------------------------------------
# 7. regression: a migration that alters the version table

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


@pytest.mark.parametrize("mode", ["xact", "session"])
def test_migration_altering_the_version_table(make_db, migshim_lib, tmp_path, mode):
    """Guards against the leader's lock connection holding ACCESS SHARE on
    alembic_version (it read the table inside its xact lock transaction;
    now the read runs in a rolled-back savepoint): a migration that needs
    ACCESS EXCLUSIVE on it -- the common recipe widening version_num with
    op.alter_column to allow longer revision ids; TRUNCATE, DROP and LOCK
    TABLE alike -- must not wait for its own process's lock connection.
    Database at 0003cccc (migrated without the shim), a 0004 revision
    widening alembic_version.version_num; 2 workers: the fleet is up within
    BOUND (12 s), version 0004dddd, 0004 applied once.  On failure the
    message lists who blocks whom (a blocker 'migshim lock pid=<the
    leader>' is the bug)."""
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
        w.wait_no_leftovers()

    try:
        r, _ = run_with_faults(fl, body)
    finally:
        w.close()
    d = r.describe() + "\n--- blocked (pid, app, query, blocker pid, blocker app, " \
        "blocker state) ---\n" + "\n".join(map(repr, blocked))
    assert r.booted, d
    assert r.alembic_version == ["0004dddd"], d
    assert r.migration_runs.get("0004dddd") == 1, d
    assert len(r.gate_lines("lead")) == 1 and r.migshim_problems() == [], d


# ---------------------------------------------------------------------------
# 8. regression: a lost lock connection is logged with its reason

def test_lost_lock_connection_is_logged_with_its_reason(make_db, migshim_lib):
    """Guards against an empty reason in the shim's warning when its lock
    connection is lost ('the lock connection failed while waiting (); ...'):
    an error result made by libpq itself (the server went away) has no
    server fields, so the reason must fall back to PQerrorMessage().  The
    terminated connection must be a lock connection, so this runs with
    lock = session (with lock = xact a waiter waits on its own connection:
    scenario 2 checks that one's reason).  One worker waits for a migration
    lock the test holds; the test terminates the worker's lock connection
    (pg_terminate_backend): the warning names the loss, e.g. 'terminating
    connection due to administrator command' or 'server closed the
    connection unexpectedly'."""
    db = make_db()
    key = random_key()
    w = Watcher(db.dsn)
    w.rows("SELECT pg_advisory_lock(%s)", (key,))
    held = [True]
    fl = Fleet("flask-alembic", db.dsn, workers=1, shim=True,
               shim_env={"MIGSHIM_LOCK_KEY": str(key), "MIGSHIM_LOCK": "session"},
               env_extra={"MIGRATION_SLEEP": "0.05"}, label="lost lock connection")

    def body(f):
        worker = int(f.wait_for_line(r"^fleet: forked pid=(\d+)$", timeout=20).group(1))
        own = wait_until(lambda: lock_conn_of(w, worker), 20, "no lock connection")
        time.sleep(0.3)
        w.rows("SELECT pg_terminate_backend(%s)", (own,))
        m = f.wait_for_line(r"migshim\[%d\]: warn: .*the lock connection failed "
                            r"(?:while waiting )?\((.*)\); proceeding without the gate"
                            % worker, timeout=10)
        w.rows("SELECT pg_advisory_unlock(%s)", (key,))
        held[0] = False
        f.wait()
        return m.group(1)

    try:
        r, reason = run_with_faults(fl, body)
    finally:
        if held[0]:
            w.rows("SELECT pg_advisory_unlock_all()")
        w.close()
    d = r.describe()
    assert reason.strip() != "", d
    assert CONN_LOST_RE.search(reason), f"{reason!r}\n{d}"
    # the worker proceeded without the gate and, alone, migrated
    assert r.booted and r.alembic_version == HEADS and r.migration_runs == ONCE_EACH, d
