"""SIGTERM, SIGINT and SIGQUIT while the gate waits (src/waitsig.c, issue 13).

A waiting process gives control back to the app within one wait slice of
the signal: its connection attempt fails, the shim logs one line saying
why, and the app's own disposition runs -- a handler once, SIG_DFL its
default action, SIG_IGN nothing at all (the wait goes on).  Before, during
a lead and after, the dispositions are exactly the app's (handler, flags,
mask), read back by the program itself.

"A peer leading" is the test holding pg_advisory_xact_lock(K) with
MIGSHIM_LOCK_KEY=K in the child (as in test_gate.py).

Run: tests/harness/with-pg.sh /usr/bin/python3 -m pytest -q tests/integration/test_signals.py
"""

from __future__ import annotations

import os
import random
import re
import resource
import signal
import subprocess
import time

import psycopg2
import pytest

from conftest import PYTHON, child_base_env, require_migshim_lib
import shimbuild
from conftest import ASAN_EXIT_HANG


R1 = "0001aaaa"
LINE_RE = re.compile(r"^migshim\[(\d+)\]: (\w+): (.*)$")


def helper():
    p = shimbuild.build_dir() / "tests" / "sig_helper"
    if not p.is_file():
        pytest.fail(f"{p} not built (make tests)", pytrace=False)
    return p


def key():
    return random.SystemRandom().randrange(-(1 << 62), 1 << 62)


class Holder:
    def __init__(self, db, k):
        self.conn = psycopg2.connect(db.dsn)
        self.conn.cursor().execute("SELECT pg_advisory_xact_lock(%s)", (k,))

    def commit_at(self, rev):
        cur = self.conn.cursor()
        cur.execute("CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY)")
        cur.execute("INSERT INTO alembic_version VALUES (%s)", (rev,))
        self.conn.commit()

    def close(self):
        self.conn.close()


def no_core():
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def start(argv, db, k, tmp_path, extra=None):
    env = child_base_env()
    env.update(db.env)
    env.update({"LD_PRELOAD": shimbuild.preload(require_migshim_lib()),
                "MIGSHIM_HEADS": R1, "MIGSHIM_LOCK_KEY": str(k)})
    env.update(extra or {})
    return subprocess.Popen(argv, env=env, cwd=str(tmp_path), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=no_core)


def waiting(db, pid_of_backend_app, timeout=20.0):
    """Until the child's connection is in the lock queue."""
    conn = psycopg2.connect(db.dsn)
    conn.autocommit = True
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            cur = conn.cursor()
            cur.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                        "AND NOT granted")
            if cur.fetchone()[0] >= 1:
                return
            time.sleep(0.02)
        pytest.fail("the child never queued on the lock", pytrace=False)
    finally:
        conn.close()


def parse(out):
    d = {}
    for ln in out.splitlines():
        head, _, rest = ln.partition(" ")
        for kv in rest.split():
            k, _, v = kv.partition("=")
            d[(head, k)] = v
    return d


def shim_lines(err):
    return [(m.group(2), m.group(3)) for m in map(LINE_RE.match, err.splitlines()) if m]


def kill_all(p):
    if p.poll() is None:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()


@ASAN_EXIT_HANG
def test_sigterm_handler_runs_within_a_slice_dispositions_restored(db, tmp_path):
    k = key()
    h = Holder(db, k)
    p = start([str(helper()), db.dsn], db, k, tmp_path)
    try:
        waiting(db, p.pid)
        time.sleep(0.6)  # a few slices into the wait
        t_kill = time.time()
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=10)
    finally:
        kill_all(p)
        h.close()
    d = parse(out)
    assert p.returncode == 0, (out, err)
    assert d[("connected", "status")] != "0", out  # the connection failed
    assert d[("handler", "n")] == "1", out          # the app's own handler, once
    delay = float(d[("handler", "t")]) - t_kill
    assert 0 <= delay < 1.0, f"handler ran {delay:.3f} s after SIGTERM"
    assert float(d[("connected", "t")]) - t_kill < 1.0
    for s in ("SIGTERM", "SIGINT", "SIGQUIT"):
        assert d[("same", s)] == "yes", out
    (line,) = shim_lines(err)
    assert line[0] == "warn" and re.fullmatch(
        r'database "%s": SIGTERM after waiting \d+\.\d{3} s for the migration lock; failing the '
        r"connection so the app's own handler runs" % re.escape(db.name), line[1]), err
    print(f"\nSIGTERM -> app handler: {delay * 1000:.0f} ms")


@ASAN_EXIT_HANG
def test_sigint_ignored_by_the_app_does_not_end_the_wait(db, tmp_path):
    k = key()
    h = Holder(db, k)
    p = start([str(helper()), db.dsn], db, k, tmp_path)
    try:
        waiting(db, p.pid)
        p.send_signal(signal.SIGINT)  # the app set SIG_IGN
        time.sleep(1.0)
        assert p.poll() is None  # still waiting
        h.commit_at(R1)
        out, err = p.communicate(timeout=10)
    finally:
        kill_all(p)
        h.close()
    d = parse(out)
    assert d[("connected", "status")] == "0", (out, err)
    assert d[("handler", "n")] == "0"
    for s in ("SIGTERM", "SIGINT", "SIGQUIT"):
        assert d[("same", s)] == "yes", out
    assert [lv for lv, _ in shim_lines(err)] == ["info"], err  # "waited ...; proceeding"


def test_sigquit_default_action_kills_within_a_slice(db, tmp_path):
    k = key()
    h = Holder(db, k)
    p = start([str(helper()), db.dsn], db, k, tmp_path)
    try:
        waiting(db, p.pid)
        t_kill = time.monotonic()
        p.send_signal(signal.SIGQUIT)
        p.wait(timeout=10)
        took = time.monotonic() - t_kill
        err = p.stderr.read()
    finally:
        kill_all(p)
        h.close()
    assert p.returncode == -signal.SIGQUIT, (p.returncode, err)
    assert took < 1.0, took
    (line,) = shim_lines(err)
    assert "SIGQUIT after waiting" in line[1], err


@ASAN_EXIT_HANG
def test_leader_keeps_the_apps_dispositions(db, tmp_path):
    """Nobody holds the lock: the helper leads; its dispositions are its own
    from the start (the shim installs nothing outside a wait)."""
    p = start([str(helper()), db.dsn], db, key(), tmp_path)
    out, err = p.communicate(timeout=30)
    d = parse(out)
    assert d[("connected", "status")] == "0", (out, err)
    assert d[("leading_dispositions", "same")] == "yes", out
    assert "leading:" in err


PY_APP = r'''
import os, signal, sys, time
import psycopg2
got = []
def on_term(sig, frame):
    got.append(time.time())
    print("handler %.6f" % got[-1], flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
print("ready", flush=True)
try:
    psycopg2.connect(os.environ["WORKLOAD_DSN"])
    print("connected", flush=True)
except psycopg2.OperationalError as e:
    print("connect failed", flush=True)
time.sleep(30)
'''


def test_python_handler_runs_and_the_process_exits(db, tmp_path):
    """psycopg2: Python's C-level handler only sets a flag; the Python
    handler runs at the next bytecode boundary, after connect() raised."""
    k = key()
    h = Holder(db, k)
    p = start([PYTHON, "-c", PY_APP], db, k, tmp_path)
    try:
        assert p.stdout.readline() == "ready\n"
        waiting(db, p.pid)
        time.sleep(0.3)
        t_kill = time.time()
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=10)
        took = time.time() - t_kill
        out, err = p.communicate()
    finally:
        kill_all(p)
        h.close()
    assert p.returncode == 0, (out, err)
    assert took < 1.0, took
    # the handler ran (at the first bytecode boundary after connect() raised),
    # and the app never got a connection
    lines = out.splitlines()
    assert lines[0].startswith("handler ") and "connected" not in lines, out
    assert len(shim_lines(err)) == 1, err
    print(f"\npsycopg2 waiter: exited {took * 1000:.0f} ms after SIGTERM")
