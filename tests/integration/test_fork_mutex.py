"""fork() while another thread is inside the gate (issue 12).

The gate holds its mutex while a leader's commit is checked on the lock
connection (one round trip).  A thread that forks at that moment used to
hand the child a locked mutex: the child hung forever at its first
connection.  The shim now holds every mutex of its own across fork()
(pthread_atfork), so the fork waits for the round trip and the child is
free.

The interleaving is forced: the leader's version UPDATE is made, the test
queues an ACCESS EXCLUSIVE lock on the version table behind it, the leader
commits -- the test's lock is granted first, so the gate's read on the lock
connection now waits, with the gate's mutex held -- and only when that read
is seen waiting (pg_stat_activity) does the main thread fork.  The test
lets the table go one second later.  The child must connect, query and
exit 0; without the fork handlers it hangs (the test then fails on its
timeout).  The table is held 2.5 s: the gate's read must wait it out (the
hand-over's 1 s lock_timeout once stayed in force for the whole lock
transaction, and the read failed).

Run: tests/harness/with-pg.sh /usr/bin/python3 -m pytest -q tests/integration/test_fork_mutex.py
"""

import os
import subprocess
import textwrap
import threading
import time

import psycopg2

from conftest import PYTHON, child_base_env, require_migshim_lib
import shimbuild

SCRIPT = textwrap.dedent('''
    import os, sys, threading, time
    import psycopg2
    dsn, barrier = sys.argv[1], sys.argv[2]

    def wait_file(name):
        while not os.path.exists(os.path.join(barrier, name)):
            time.sleep(0.005)

    def leader():
        conn = psycopg2.connect(dsn)          # behind the target: leads
        cur = conn.cursor()
        cur.execute("SELECT alembic_version.version_num FROM alembic_version")
        cur.execute("UPDATE alembic_version SET version_num='r1' "
                    "WHERE alembic_version.version_num = 'r0'")
        open(os.path.join(barrier, "updated"), "w").close()
        wait_file("commit")
        conn.commit()                          # the gate's check waits here
        print("leader committed", flush=True)

    t = threading.Thread(target=leader)
    t.start()
    wait_file("fork")
    pid = os.fork()
    if pid == 0:
        c = psycopg2.connect(dsn)
        c.cursor().execute("SELECT 1")
        print("child connected", flush=True)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    t.join()
    print("child status", status, flush=True)
    sys.exit(0 if status == 0 else 1)
''')


def wait_for(cur, sql, args, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        cur.execute(sql, args)
        if cur.fetchone()[0]:
            return True
        time.sleep(0.01)
    return False


def test_fork_while_the_gate_checks_a_commit(make_db, tmp_path):
    db = make_db()
    admin = psycopg2.connect(db.dsn)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute("CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY)")
        cur.execute("INSERT INTO alembic_version VALUES ('r0')")
    env = child_base_env()
    env.update(db.env)
    env.update({"LD_PRELOAD": shimbuild.preload(require_migshim_lib()),
                "MIGSHIM_HEADS": "r1", "MIGSHIM_LOG": "info"})
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    script = tmp_path / "forker.py"
    script.write_text(SCRIPT)
    with open(tmp_path / "out", "wb") as out:
        proc = subprocess.Popen([PYTHON, str(script), db.dsn, str(barrier)], env=env,
                                cwd=str(tmp_path), stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    locker = psycopg2.connect(db.dsn)
    try:
        deadline = time.monotonic() + 30
        while not (barrier / "updated").exists():
            assert proc.poll() is None, (tmp_path / "out").read_text()
            assert time.monotonic() < deadline, "the leader never updated"
            time.sleep(0.01)
        # queue an ACCESS EXCLUSIVE lock behind the leader's UPDATE
        locker_pid = locker.get_backend_pid()
        t = threading.Thread(target=lambda: locker.cursor().execute(
            "LOCK TABLE alembic_version IN ACCESS EXCLUSIVE MODE"))
        t.start()
        with admin.cursor() as cur:
            assert wait_for(cur, "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE pid = %s "
                            "AND NOT granted)", (locker_pid,)), "the lock never queued"
            (barrier / "commit").touch()
            t.join(20)
            assert not t.is_alive(), "the test's lock was never granted"
            # the gate's read on the lock connection now waits behind it
            assert wait_for(cur, "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE "
                            "application_name LIKE 'migshim lock%%' AND wait_event_type = "
                            "'Lock')", ()), "the gate's read did not wait\n" + \
                (tmp_path / "out").read_text()
        (barrier / "fork").touch()
        # the fork waits (or, unfixed, the child hangs); longer than the
        # hand-over's 1 s lock_timeout, which must not outlive the hand-over
        time.sleep(2.5)
        locker.rollback()
        try:
            rc = proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
            raise AssertionError("hung: the child inherited a locked mutex\n"
                                 + (tmp_path / "out").read_text())
        out = (tmp_path / "out").read_text()
        assert rc == 0, out
        assert "child connected" in out and "child status 0" in out, out
        # the gate's read waited out the test's lock (no lock_timeout left
        # over from the hand-over) and released at the commit
        assert "migrated to r1; migration lock released" in out, out
        assert "cannot re-read" not in out, out
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
        locker.close()
        admin.close()
