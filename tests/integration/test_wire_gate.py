"""The wire gate (issue 22, phase 2a): asyncpg and pg8000 connections over
plaintext are gated through the same advisory lock as libpq's, on their own
connection.  Every test preloads the library (shimbuild.lib_path()).

Forced interleavings, no sleep-and-hope: the lock key is set
(MIGSHIM_LOCK_KEY), and a test waits until it sees, in pg_locks, what it
waits for (the leader's backend holding the key, a waiter's request not
granted) before it lets the next step happen (barrier files the client
polls: tests/integration/wire_workloads/gate_client.py).

* test_lead_then_wait -- pg8000 (blocking), asyncpg on asyncio and on
  uvloop, over a Unix socket and TCP: with the version table behind, the
  first client leads: the session advisory lock is held by ITS OWN backend
  (pg_locks), a second client waits (its lock request seen not granted in
  pg_locks), and proceeds once the leader committed the target; the
  leader's next statement after that transaction finds its lock released
  (the shim's unlock went first, pg_locks from the app's own query); the exact
  log lines of both; the waiter's results are those of a run without the
  preload (the shim's replies never reach the app), SHOW lock_timeout is
  the server's default after the wait, no ERROR in the server log; for
  asyncpg the event loop's longest stall while it waited (a 5 ms ticker
  task in the app) stays under 200 ms, and is printed.
* test_lead_then_wait_password -- the same story logged in with a password, as a
  role whose pg_hba.conf line requires it over TCP (tests/e2e/topo.password_role),
  over TCP and TLS: asyncpg (asyncio, uvloop) with scram-sha-256, pg8000 1.10.6 with
  md5 (it has no SCRAM); at MIGSHIM_LOG=debug nothing of the password in any output.
  test_pg8000_scram_refused_alike: pg8000's refusal of SCRAM, the same preloaded.
* test_workload_same_while_leading -- the phase-1 workloads
  (wire_workloads/asyncpg_ops.py, pg8000_ops.py: transactions, errors,
  COPY, notices, LISTEN/NOTIFY, pools) with a target the database is
  behind: the first connection leads and holds the lock through the whole
  workload; the JSON is the same as without the preload.
* test_close_while_held -- an asyncpg connection closed by the app while
  the gate holds it waiting (asyncio: a close the shim sees; uvloop: a raw
  close system call it does not): no crash, the gate stops, new fds (a
  socketpair, a file, a fresh connection) work.
* test_wait_timeout -- wait_timeout with on_timeout = proceed and fail.
* test_pool_waits_once -- an asyncpg pool of 3 meets the lock at once: one
  connection decides and says so, the others wait for its decision.
* test_sigterm_during_an_inline_wait -- pg8000 waiting inside its write:
  SIGTERM ends the wait within a slice and the default action runs.
* test_workload_same_once_decided -- the phase-1 workloads on a database
  at the target, at debug: each connection is not followed after its
  first statement (at head; the pool's: decided already in this process),
  one line each, and the JSON is the same as without the preload.
* test_one_decision_libpq_leads, test_one_decision_wire_leads -- one
  process reaching one database through psycopg2 (libpq) and through
  asyncpg or pg8000 (wire_workloads/mixed_client.py) decides once: while
  its libpq gate leads (the lock on its lock connection, pg_locks), its
  wire connection's first statement passes at once with the line saying
  so, no wait, no lock of its own; while its wire connection leads (the
  lock on that backend), its libpq connection passes at once, and the
  wire leader's release is unchanged.  Without the shared decision each
  waits for its own process's lock until wait_timeout.
* test_leader_followed_until_released -- at debug: the leader stays
  followed through its statements and its migration's transaction, and is
  unfollowed only after the release's line (pg8000: a NOTIFY the release's
  exchange kept for the app is delivered first, then it is unfollowed);
  the waiter is unfollowed once it proceeds; results as without the
  preload.
"""

import json
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg2
import pytest

import shimbuild
from conftest import PYTHON, child_base_env, migshim_lines, run_py

HERE = Path(__file__).resolve().parent
WORKLOADS = HERE / "wire_workloads"
CLIENT = WORKLOADS / "gate_client.py"
WIRE_LIB = shimbuild.lib_path()
TARGET = "r1"
LINE_RE = re.compile(r"^migshim\[(\d+)\]: (\w+): (.*)$")


@pytest.fixture(autouse=True)
def wire_library(monkeypatch):
    if not WIRE_LIB.is_file():
        pytest.fail(f"the library is not built: {WIRE_LIB} (make all)", pytrace=False)
    monkeypatch.setenv("MIGSHIM_LIB", str(WIRE_LIB))
    return WIRE_LIB


class Client:
    """One gate_client.py process; stdout/stderr in files, read while it runs."""

    def __init__(self, tmp: Path, name: str, args, env, preload=True, script=CLIENT):
        self.name = name
        self.out = tmp / f"{name}.out"
        self.err = tmp / f"{name}.err"
        full = child_base_env()
        if preload:
            full["LD_PRELOAD"] = shimbuild.preload(WIRE_LIB)
        full.update({k: str(v) for k, v in env.items()})
        with open(self.out, "wb") as o, open(self.err, "wb") as e:
            self.proc = subprocess.Popen([PYTHON, str(script)] + list(args), env=full,
                                         stdin=subprocess.DEVNULL, stdout=o, stderr=e,
                                         start_new_session=True)
        self.pid = self.proc.pid

    def events(self, ev=None):
        out = []
        for ln in self.out.read_text("utf-8", "replace").splitlines():
            try:
                rec = json.loads(ln)
            except ValueError:
                continue
            if ev is None or rec.get("ev") == ev:
                out.append(rec)
        return out

    def wait_event(self, ev, timeout=30.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            found = self.events(ev)
            if found:
                return found[0]
            if self.proc.poll() is not None:
                found = self.events(ev)
                if found:
                    return found[0]
                break
            time.sleep(0.01)
        pytest.fail(f"{self.name}: no {ev!r} event\n{self.describe()}", pytrace=False)

    def stderr(self):
        return self.err.read_text("utf-8", "replace")

    def wait_line(self, pattern, timeout=30.0):
        rx = re.compile(pattern)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if rx.search(self.stderr()):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.01)
        pytest.fail(f"{self.name}: no line {pattern!r}\n{self.describe()}", pytrace=False)

    def finish(self, timeout=60.0):
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, 9)
            self.proc.wait()
            pytest.fail(f"{self.name}: timed out\n{self.describe()}", pytrace=False)
        assert rc == 0, f"{self.name}: rc {rc}\n{self.describe()}"

    def lines(self):
        """[(level, message)] of the shim's lines, all from this process."""
        out = []
        for ln in self.stderr().splitlines():
            m = LINE_RE.match(ln)
            if m:
                assert int(m.group(1)) == self.pid, ln
                out.append((m.group(2), m.group(3)))
            else:
                assert "migshim[" not in ln, ln
        return out

    def describe(self):
        return (f"--- {self.name} stdout ---\n{self.out.read_text('utf-8', 'replace')[-3000:]}"
                f"\n--- stderr ---\n{self.stderr()[-3000:]}")

    def kill(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 9)
            self.proc.wait()


@pytest.fixture
def clients():
    made = []
    yield made
    for c in made:
        c.kill()


def unique_key():
    return 1_000_000 + uuid.uuid4().int % 1_000_000_000


def advisory(mon, key):
    """[(pid, granted, mode)] of the advisory locks on `key` (a bigint key
    below 2^32: classid 0, objid the key, objsubid 1)."""
    with mon.cursor() as cur:
        cur.execute("SELECT pid, granted, mode FROM pg_catalog.pg_locks WHERE locktype = "
                    "'advisory' AND classid = 0 AND objid = %s AND objsubid = 1", (key,))
        return cur.fetchall()


def until(what, pred, timeout=30.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.005)
    pytest.fail(f"never: {what}", pytrace=False)


def server_log_size(pg):
    p = Path(pg.pgdir or "") / "postgresql.log"
    return p, (p.stat().st_size if p.is_file() else None)


def server_errors(path, offset, dbname):
    if offset is None:
        return []
    with open(path, "rb") as f:
        f.seek(offset)
        text = f.read().decode("utf-8", "replace")
    return [ln for ln in text.splitlines()
            if f"@{dbname} " in ln and re.search(r" (ERROR|FATAL|PANIC|WARNING):", ln)
            and "division by zero" not in ln]  # (the app's own SELECT 1/0)


CASES = [
    ("pg8000", "unix", "-"),
    ("pg8000", "tcp", "-"),
    ("pg8000", "tls", "-"),
    ("asyncpg", "unix", "asyncio"),
    ("asyncpg", "tcp", "asyncio"),
    ("asyncpg", "tls", "asyncio"),
    ("asyncpg", "unix", "uvloop"),
    ("asyncpg", "tcp", "uvloop"),
    ("asyncpg", "tls", "uvloop"),
]
WHERE = r"\(asyncpg/pg8000 connection on fd \d+, {t}\)"


def where_re(driver, transport):
    """The connection's name in the gate's lines: over TLS, its socket is
    the one its ClientHello went out on (asyncpg's memory BIOs name none)."""
    return WHERE.format(t="TLS" if transport == "tls" else transport)


@pytest.fixture
def tls_server(pg):
    """The harness server with ssl = on (tests/e2e/topo's tls_on)."""
    sys.path.insert(0, str(HERE.parent / "e2e"))
    from topo import tls_on
    with tls_on(pg, "migshim-wiregate-ssl.") as cert:
        yield cert


def backend_ssl(mon, pid):
    with mon.cursor() as cur:
        cur.execute("SELECT ssl FROM pg_catalog.pg_stat_ssl WHERE pid = %s", (pid,))
        row = cur.fetchone()
        return row[0] if row else None


@pytest.mark.parametrize("driver,transport,loop", CASES, ids=["-".join(c) for c in CASES])
def test_lead_then_wait(make_db, pg, tmp_path, clients, driver, transport, loop, request):
    if transport == "tls":
        request.getfixturevalue("tls_server")
    lead_then_wait(make_db(), pg, tmp_path, clients, driver, transport, loop)


def backend_login(mon, pid):
    with mon.cursor() as cur:
        cur.execute("SELECT usename, host(client_addr) FROM pg_catalog.pg_stat_activity "
                    "WHERE pid = %s", (pid,))
        return cur.fetchone()


def lead_then_wait(db, pg, tmp_path, clients, driver, transport, loop, env_extra=None,
                   login=None):
    """test_lead_then_wait's story on `db`: A leads (the lock on its own backend), B waits,
    then proceeds; the exact lines (at info and above: env_extra may ask for debug); B's
    results as without the preload.  login: (user, client address) every client backend
    must show in pg_stat_activity.  Returns the clients A, B and the plain run."""
    key = unique_key()
    bar = tmp_path / "bar"
    bar.mkdir()
    env = {**db.env, "MIGSHIM_HEADS": TARGET, "MIGSHIM_LOCK_KEY": key,
           "GATE_BARRIERS": bar, "TARGET_REV": TARGET, **(env_extra or {})}
    logpath, offset = server_log_size(pg)
    mon = psycopg2.connect(db.dsn)
    mon.autocommit = True
    try:
        a = Client(tmp_path, "A", [driver, transport, loop, "lead"], env)
        clients.append(a)
        first_a = a.wait_event("first")
        # the leader's own backend holds the session lock, exclusively
        assert advisory(mon, key) == [(first_a["pid"], True, "ExclusiveLock")]
        assert backend_ssl(mon, first_a["pid"]) is (transport == "tls")
        if login is not None:
            assert backend_login(mon, first_a["pid"]) == login

        b = Client(tmp_path, "B", [driver, transport, loop, "plain"], env)
        clients.append(b)
        b.wait_line(r"the migration lock is held by .*; waiting")
        waiting = until("B's lock request not granted",
                        lambda: [r for r in advisory(mon, key) if not r[1]])
        assert all(r[0] != first_a["pid"] for r in waiting)
        if login is not None:
            assert [backend_login(mon, r[0]) for r in waiting] == [login], waiting
        if driver == "asyncpg":
            time.sleep(2.0)  # a wait of 2 s at least: the app's ticker measures its loop meanwhile
        assert not b.events("first"), "B went on while the lock was held"

        (bar / "commit").touch()
        a.wait_event("committed")
        # the leader's next statement after its transaction released the lock
        assert a.wait_event("after")["own_locks"] == 0
        first_b = b.wait_event("first")
        assert first_b["pid"] != first_a["pid"]
        (bar / "close").touch()
        a.finish()
        b.finish()
        assert advisory(mon, key) == []
    finally:
        mon.close()

    where = where_re(driver, transport)
    la = [(lv, m) for lv, m in a.lines() if lv != "debug"]
    lb = [(lv, m) for lv, m in b.lines() if lv != "debug"]
    assert [lv for lv, _ in la] == ["info", "info"], la
    assert re.fullmatch(
        rf'database "{db.name}": leading: this process holds the migration lock \(key {key}\) '
        rf"and migrates from \(none\) to {TARGET} {where}", la[0][1]), la
    assert re.fullmatch(rf'database "{db.name}": migrated to {TARGET}; migration lock released '
                        rf"after \d+\.\d{{3}} s {where}", la[1][1]), la
    assert [lv for lv, _ in lb] == ["info", "info"], lb
    assert re.fullmatch(rf'database "{db.name}": the migration lock is held by backend pid '
                        rf"{first_a['pid']} .*; waiting {where}", lb[0][1]), lb
    assert re.fullmatch(rf'database "{db.name}": waited \d+\.\d{{3}} s for the migration lock; '
                        rf"database at {TARGET}; proceeding {where}", lb[1][1]), lb

    # the app's results: as without the preload (nothing of the shim's reached it)
    plain = Client(tmp_path, "plain", [driver, transport, loop, "plain"], env, preload=False)
    clients.append(plain)
    plain.finish()
    rb = b.events("results")[0]["results"]
    assert rb == plain.events("results")[0]["results"]
    assert rb[1]["rows"] == [["0"]] and rb[4]["rows"] == [[0]], rb  # lock_timeout; nothing waiting
    assert server_errors(logpath, offset, db.name) == []

    if driver == "asyncpg":
        stall = b.events("stall")[0]["max_ms"]
        waited = float(re.search(r"waited (\d+\.\d+) s", lb[1][1]).group(1))
        print(f"\n{driver}/{loop}/{transport}: waited {waited:.3f} s; the waiting app's longest "
              f"event-loop stall {stall} ms (the leader's {a.events('stall')[0]['max_ms']} ms)")
        assert waited >= 2.0, lb
        assert stall < 200, b.describe()
    return a, b, plain



def topo():
    """tests/e2e/topo: the server_settings/hba/password-role helpers."""
    if str(HERE.parent / "e2e") not in sys.path:
        sys.path.insert(0, str(HERE.parent / "e2e"))
    import topo as t
    return t


# pg8000 1.10.6 (Debian 12's) answers AuthenticationSASL (10) with "Authentication method 10
# not recognized by pg8000." (SCRAM came in pg8000 1.11): its password cases use md5
# (test_pg8000_scram_refused_alike checks that refusal is the same with the preload).
PASSWORD_CASES = [
    ("pg8000", "tcp", "-", "md5"),
    ("pg8000", "tls", "-", "md5"),
    ("asyncpg", "tcp", "asyncio", "scram-sha-256"),
    ("asyncpg", "tls", "asyncio", "scram-sha-256"),
    ("asyncpg", "tcp", "uvloop", "scram-sha-256"),
    ("asyncpg", "tls", "uvloop", "scram-sha-256"),
]


@pytest.mark.parametrize("driver,transport,loop,method", PASSWORD_CASES,
                         ids=["-".join(c) for c in PASSWORD_CASES])
def test_lead_then_wait_password(make_db, pg, tmp_path, clients, driver, transport, loop,
                                 method, request):
    """test_lead_then_wait's story, the clients logging in with a password (scram-sha-256;
    md5 for pg8000 1.10.6) as a role whose pg_hba.conf line requires it over TCP, the
    database owned by that role, at MIGSHIM_LOG=debug: the gate runs after the password
    exchange (the lock on the leader's own backend, the waiter waits and proceeds), the
    exact lines, the results as without the preload, and nothing of the password in any
    output of the preloaded processes."""
    if transport == "tls":
        request.getfixturevalue("tls_server")
    db = make_db()
    with topo().password_role(pg, method) as (role, password, marker):
        # the rule holds: without the password, no connection as the role over TCP
        with pytest.raises(psycopg2.OperationalError, match="password"):
            psycopg2.connect(host="127.0.0.1", port=pg.port, user=role, dbname=db.name,
                             connect_timeout=5).close()
        topo().query(pg, f'ALTER DATABASE "{db.name}" OWNER TO "{role}"')
        env = {"PGUSER": role, "PGPASSWORD": password, "MIGSHIM_LOG": "debug"}
        a, b, plain = lead_then_wait(db, pg, tmp_path, clients, driver, transport, loop,
                                     env_extra=env, login=(role, "127.0.0.1"))
        for c in (a, b):
            assert any(lv == "debug" for lv, _ in c.lines()), c.describe()
            out = c.stderr() + c.out.read_text("utf-8", "replace")
            for secret in (marker, password):
                assert secret not in out, f"{c.name}: the password in its output\n" \
                    f"{c.describe()}"
        assert plain.events("results")


@pytest.mark.parametrize("transport", ["tcp", "tls"])
def test_pg8000_scram_refused_alike(make_db, pg, tmp_path, clients, transport, request):
    """pg8000 1.10.6 cannot log in with scram-sha-256 (it knows no AuthenticationSASL):
    with the preload its error is the same as without, nothing of the password in the
    output; the shim followed the connection and said nothing but debug lines (no statement
    came: no gate)."""
    if transport == "tls":
        request.getfixturevalue("tls_server")
    db = make_db()
    with topo().password_role(pg, "scram-sha-256") as (role, password, marker):
        env = {**db.env, "PGUSER": role, "PGPASSWORD": password, "MIGSHIM_LOG": "debug"}
        out = {}
        for name, preload in (("plain", False), ("preloaded", True)):
            c = Client(tmp_path, name, ["pg8000", transport, "-", "plain"], env,
                       preload=preload)
            clients.append(c)
            assert c.proc.wait(timeout=60) != 0, c.describe()
            err = c.stderr()
            assert marker not in err + c.out.read_text("utf-8", "replace"), c.describe()
            out[name] = [ln for ln in err.splitlines() if ln and "migshim[" not in ln][-1]
            assert out[name] == ("pg8000.core.InterfaceError: Authentication method 10 not "
                                 "recognized by pg8000."), c.describe()
        assert out["preloaded"] == out["plain"]
        lines = c.lines()  # (the preloaded one's)
        assert {lv for lv, _ in lines} == {"debug"}, lines
        assert any(m.startswith("wire: PostgreSQL connection on fd 3 (tcp), followed")
                   for _, m in lines), lines

WORKLOAD_CASES = [
    ("asyncpg_ops.py", ["unix", "asyncio"]),
    ("asyncpg_ops.py", ["tcp", "uvloop"]),
    ("asyncpg_ops.py", ["tcp", "asyncio", "ssl"]),
    ("asyncpg_ops.py", ["tcp", "uvloop", "ssl"]),
    ("pg8000_ops.py", ["tcp"]),
    ("pg8000_ops.py", ["tcp", "ssl"]),
]


@pytest.mark.parametrize("script,args", WORKLOAD_CASES,
                         ids=["-".join([s.split("_")[0]] + a) for s, a in WORKLOAD_CASES])
def test_workload_same_while_leading(make_db, script, args, request):
    if "ssl" in args:
        request.getfixturevalue("tls_server")
    out = {}
    for mode, preload in (("plain", False), ("gated", True)):
        db = make_db()
        r = run_py(WORKLOADS / script, preload=preload, args=args, timeout=120,
                   env_extra={**db.env, "MIGSHIM_HEADS": TARGET})
        assert r.rc == 0, f"{mode}: rc {r.rc}\n{r.stderr[-3000:]}"
        out[mode] = r
    assert json.loads(out["gated"].stdout) == json.loads(out["plain"].stdout)
    lines = migshim_lines(out["gated"].stderr)
    assert len(lines) == 1 and ": info: " in lines[0] and "leading: this process holds" in lines[0], \
        out["gated"].stderr[-3000:]


@pytest.mark.parametrize("loop,transport", [("asyncio", "unix"), ("uvloop", "unix"),
                                            ("asyncio", "tls"), ("uvloop", "tls")])
def test_close_while_held(make_db, tmp_path, clients, loop, transport, request):
    if transport == "tls":
        request.getfixturevalue("tls_server")
    db = make_db()
    key = unique_key()
    bar = tmp_path / "bar"
    bar.mkdir()
    env = {**db.env, "MIGSHIM_HEADS": TARGET, "MIGSHIM_LOCK_KEY": key,
           "GATE_BARRIERS": bar, "MIGSHIM_LOG": "debug"}
    peer = psycopg2.connect(db.dsn)
    peer.autocommit = True
    try:
        with peer.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s)", (key,))
        c = Client(tmp_path, "C", ["asyncpg", transport, loop, "close"], env)
        clients.append(c)
        c.wait_line(r"the migration lock is held by .*; waiting")
        until("C's lock request not granted",
              lambda: [r for r in advisory(peer, key) if not r[1]])
        (bar / "close").touch()
        c.wait_event("after_close")
        # the gate let go of its connection: no request of C's is left
        until("C's backend gone", lambda: all(r[1] for r in advisory(peer, key)))
        with peer.cursor() as cur:
            cur.execute("SELECT pg_advisory_unlock(%s)", (key,))
        c.finish()
    finally:
        peer.close()
    closing = c.events("closing")[0]
    assert closing["done"] is False, "the first statement answered while the lock was held"
    assert c.events("after_close")[0] == {"ev": "after_close", "socketpair": "ping",
                                          "file": "data"}
    assert c.events("fresh")[0]["value"] == 42
    err = c.stderr()
    assert "closed by the app while the gate held it; the gate stopped" in err, err[-3000:]
    assert not re.search(r"migshim\[\d+\]: (warn|error)", err), err[-3000:]


@pytest.mark.parametrize("driver,loop,transport", [("pg8000", "-", "unix"),
                                                   ("asyncpg", "asyncio", "unix"),
                                                   ("pg8000", "-", "tls"),
                                                   ("asyncpg", "uvloop", "tls")])
@pytest.mark.parametrize("on_timeout", ["proceed", "fail"])
def test_wait_timeout(make_db, tmp_path, clients, driver, loop, transport, on_timeout, request):
    """wait_timeout bounds the wait: on_timeout = proceed goes on ungated
    (the app's statement answered, the warn line of the libpq gate); fail
    fails the app's connection (the app sees it lost, its held bytes never
    sent)."""
    if transport == "tls":
        request.getfixturevalue("tls_server")
    db = make_db()
    key = unique_key()
    env = {**db.env, "MIGSHIM_HEADS": TARGET, "MIGSHIM_LOCK_KEY": key,
           "MIGSHIM_WAIT_TIMEOUT": "1", "MIGSHIM_ON_TIMEOUT": on_timeout,
           "GATE_BARRIERS": tmp_path}
    peer = psycopg2.connect(db.dsn)
    peer.autocommit = True
    try:
        with peer.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s)", (key,))
        c = Client(tmp_path, "C", [driver, transport, loop, "plain"], env)
        clients.append(c)
        if on_timeout == "proceed":
            c.finish()
        else:
            rc = c.proc.wait(timeout=60)
            assert rc != 0, c.describe()
        assert [r for r in advisory(peer, key) if r[0] != peer.get_backend_pid()] == []
    finally:
        peer.close()
    where = where_re(driver, transport)
    lines = c.lines()
    assert lines[0][0] == "info" and "; waiting (" in lines[0][1], lines
    assert len(lines) == 2, lines
    if on_timeout == "proceed":
        assert lines[1][0] == "warn", lines
        assert re.fullmatch(rf'database "{db.name}": waited 1 s \(wait_timeout\) for the migration '
                            rf"lock held by backend pid \d+ .*; proceeding \(on_timeout = "
                            rf"proceed\) {where}", lines[1][1]), lines
        assert c.events("first")
    else:
        assert lines[1][0] == "error", lines
        assert re.fullmatch(rf'database "{db.name}": waited 1 s \(wait_timeout\) for the migration '
                            rf"lock held by backend pid \d+ .*; failing the connection "
                            rf"\(on_timeout = fail\) {where}", lines[1][1]), lines
        assert not c.events("first")


def test_sigterm_during_an_inline_wait(make_db, tmp_path, clients):
    """pg8000 waits inside its own write (a blocking socket): SIGTERM still
    ends the wait within a slice, the connection is failed and the signal
    handed back: the default action ends the process, with the libpq
    gate's line."""
    db = make_db()
    key = unique_key()
    env = {**db.env, "MIGSHIM_HEADS": TARGET, "MIGSHIM_LOCK_KEY": key,
           "GATE_BARRIERS": tmp_path}
    peer = psycopg2.connect(db.dsn)
    peer.autocommit = True
    try:
        with peer.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s)", (key,))
        c = Client(tmp_path, "C", ["pg8000", "tcp", "-", "plain"], env)
        clients.append(c)
        c.wait_line(r"the migration lock is held by .*; waiting")
        until("C's lock request not granted",
              lambda: [r for r in advisory(peer, key) if not r[1]])
        t0 = time.monotonic()
        c.proc.send_signal(15)
        rc = c.proc.wait(timeout=10)
        took = time.monotonic() - t0
        until("C's backend gone",
              lambda: [r for r in advisory(peer, key) if r[0] != peer.get_backend_pid()] == [])
    finally:
        peer.close()
    assert rc == -15, c.describe()
    assert took < 2.0, took
    lines = c.lines()
    assert len(lines) == 2 and lines[1][0] == "warn", lines
    assert re.fullmatch(rf'database "{db.name}": SIGTERM after waiting \d+\.\d{{3}} s for the '
                        rf"migration lock; failing the connection so the app's own handler runs "
                        rf"{WHERE.format(t='tcp')}", lines[1][1]), lines
    assert not c.events("first")


@pytest.mark.parametrize("loop,transport", [("asyncio", "tcp"), ("uvloop", "tcp"),
                                            ("asyncio", "tls"), ("uvloop", "tls")])
def test_pool_waits_once(make_db, tmp_path, clients, loop, transport, request):
    """An asyncpg pool's three connections meet the lock at once: one
    decides (and says so), the other two wait for its decision in their
    gate threads, then pass; the event loop keeps running meanwhile (over
    TLS the waiting ones wait in server-side sleeps: nothing else would wake
    the loop to move their gate's statements)."""
    if transport == "tls":
        request.getfixturevalue("tls_server")
    db = make_db()
    key = unique_key()
    env = {**db.env, "MIGSHIM_HEADS": TARGET, "MIGSHIM_LOCK_KEY": key, "GATE_BARRIERS": tmp_path}
    peer = psycopg2.connect(db.dsn)
    peer.autocommit = True
    try:
        with peer.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s)", (key,))
        c = Client(tmp_path, "C", ["asyncpg", transport, loop, "pool"], env)
        clients.append(c)
        c.wait_line(r"the migration lock is held by .*; waiting")
        until("a lock request not granted", lambda: [r for r in advisory(peer, key) if not r[1]])
        assert not c.events("pool")
        with peer.cursor() as cur:
            cur.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY); "
                        "INSERT INTO alembic_version VALUES (%s)", (TARGET,))
            cur.execute("SELECT pg_advisory_unlock(%s)", (key,))
        c.finish()
    finally:
        peer.close()
    assert c.events("pool")[0]["values"] == [0, 1, 2]
    lines = c.lines()
    assert [lv for lv, _ in lines] == ["info", "info"], lines
    assert "; waiting (" in lines[0][1] and "database at r1; proceeding (" in lines[1][1], lines
    assert c.events("stall")[0]["max_ms"] < 200


# --- not followed once decided (the steady state: the fd back on the fast path) ---------

FOLLOWED_RE = re.compile(r"^wire: PostgreSQL connection on fd (\d+) \((unix|tcp)\), followed")
UNFOLLOWED_RE = re.compile(r"^wire: fd (\d+) \((unix|tcp)\): ([^;]*); not followed from here on "
                           r"\((\d+) messages written, (\d+) read, last status (.)\)$")
ENDED_RE = re.compile(r"^wire: fd (\d+) \((unix|tcp)\): (closed|Terminate sent), followed to the end")


def wire_story(lines):
    """The wire layer's debug lines of one process, in order: [(kind, fd, ...)]"""
    out = []
    for _, msg in lines:
        if m := FOLLOWED_RE.match(msg):
            out.append(("followed", int(m.group(1))))
        elif m := UNFOLLOWED_RE.match(msg):
            out.append(("unfollowed", int(m.group(1)), m.group(3), int(m.group(4))))
        elif m := ENDED_RE.match(msg):
            out.append(("ended", int(m.group(1))))
    return out


def at_target(db):
    with psycopg2.connect(db.dsn) as c, c.cursor() as cur:
        cur.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY); "
                    "INSERT INTO alembic_version VALUES (%s)", (TARGET,))
    c.close()


@pytest.mark.parametrize("script,args", WORKLOAD_CASES,
                         ids=["-".join([s.split("_")[0]] + a) for s, a in WORKLOAD_CASES])
def test_workload_same_once_decided(make_db, script, args, request):
    """The phase-1 workloads (transactions, errors, COPY, notices,
    LISTEN/NOTIFY, a 300 kB value; asyncpg's pool) on a database at the
    target: the first connection's gate finds it at head and lets it pass,
    the pool's connections pass as decided already in this process; each
    is not followed after its first statement (its debug line, with the few
    messages followed until then), its close is not seen, and the JSON is
    the same as without the preload."""
    if "ssl" in args:
        request.getfixturevalue("tls_server")
    out = {}
    for mode, preload in (("plain", False), ("gated", True)):
        db = make_db()
        at_target(db)
        r = run_py(WORKLOADS / script, preload=preload, args=args, timeout=120,
                   env_extra={**db.env, "MIGSHIM_HEADS": TARGET, "MIGSHIM_LOG": "debug"})
        assert r.rc == 0, f"{mode}: rc {r.rc}\n{r.stderr[-3000:]}"
        out[mode] = r
    assert json.loads(out["gated"].stdout) == json.loads(out["plain"].stdout)
    err = out["gated"].stderr
    lines = [(m.group(2), m.group(3)) for m in map(LINE_RE.match, err.splitlines()) if m]
    assert not [m for lv, m in lines if lv in ("warn", "error")], err[-3000:]
    if "ssl" in args:
        # over TLS: followed from the StartupMessage in SSL_write_ex (the
        # socket named by its ClientHello), not followed once decided
        tls = [re.search(r"connection on fd (\d+), TLS: a PostgreSQL connection over TLS", m)
               for _, m in lines]
        fds = sorted(int(m.group(1)) for m in tls if m)
        passed = sorted(int(m.group(1)) for m in (
            re.search(r"connection on fd (\d+), TLS: (the gate let it pass|the gate decided, "
                      r"its kept bytes delivered); not followed from here on", m)
            for _, m in lines) if m)
        n = 4 if script.startswith("asyncpg") else 1
        assert len(fds) >= n and passed == fds, err[-3000:]
        assert any("is at head (r1); proceeding" in m for _, m in lines), err[-3000:]
        if script.startswith("asyncpg"):
            assert any("decided already in this process; passing" in m for _, m in lines), \
                err[-3000:]
        return
    story = wire_story(lines)
    fds = [s[1] for s in story if s[0] == "followed"]
    gone = [s for s in story if s[0] == "unfollowed"]
    ended = [s[1] for s in story if s[0] == "ended"]
    n = 4 if script.startswith("asyncpg") else 1
    # each connection that ran a statement (all of them here, but maybe a pool
    # connection asyncpg opened and never used: that one is followed to its
    # close) is unfollowed once, at its first statement
    assert len(fds) >= n and len(gone) >= n, err[-3000:]
    assert sorted([s[1] for s in gone] + ended) == sorted(fds), err[-3000:]
    assert all(s[2] == "the gate let it pass" and s[3] <= 8 for s in gone), gone
    assert any("is at head (r1); proceeding" in m for _, m in lines), err[-3000:]
    if script.startswith("asyncpg"):  # the pool's connections: the process decided already
        assert any("decided already in this process; passing" in m for _, m in lines), err[-3000:]
    assert not re.search(r"wire: fd \d+: (lost|no longer)", err), err[-3000:]


LEAD_CASES = [
    ("pg8000", "unix", "-", "lead_notify"),
    ("asyncpg", "tcp", "uvloop", "lead"),
    ("asyncpg", "unix", "asyncio", "lead"),
]


@pytest.mark.parametrize("driver,transport,loop,role", LEAD_CASES,
                         ids=["-".join(c) for c in LEAD_CASES])
def test_leader_followed_until_released(make_db, tmp_path, clients, driver, transport, loop,
                                        role):
    """At debug: the leading connection stays followed through its
    statements and its migration's transaction, until the shim released its
    lock at the next idle statement; then it is not followed (one line,
    after the release's).  The waiter is not followed once it proceeds.
    pg8000 (lead_notify): a NOTIFY the leader LISTENs to reaches its socket
    before that statement, so the release's exchange meets it and keeps it
    for the app: the connection is not followed only once the app has read
    it, and the driver has the notification."""
    db = make_db()
    key = unique_key()
    bar = tmp_path / "bar"
    bar.mkdir()
    env = {**db.env, "MIGSHIM_HEADS": TARGET, "MIGSHIM_LOCK_KEY": key,
           "GATE_BARRIERS": bar, "TARGET_REV": TARGET, "MIGSHIM_LOG": "debug"}
    mon = psycopg2.connect(db.dsn)
    mon.autocommit = True
    try:
        a = Client(tmp_path, "A", [driver, transport, loop, role], env)
        clients.append(a)
        a.wait_event("results")
        b = Client(tmp_path, "B", [driver, transport, loop, "plain"], env)
        clients.append(b)
        b.wait_line(r"the migration lock is held by .*; waiting")
        # leading, through its statements: still followed
        assert not [s for s in wire_story(a.lines()) if s[0] != "followed"], a.describe()
        (bar / "commit").touch()
        a.wait_event("committed")
        if role == "lead_notify":
            with mon.cursor() as cur:
                cur.execute("NOTIFY ch")
            time.sleep(0.5)  # (the server sends it to the idle leader's socket at once)
            (bar / "notified").touch()
        after = a.wait_event("after")
        assert after["own_locks"] == 0
        b.wait_event("first")
        (bar / "close").touch()
        a.finish()
        b.finish()
    finally:
        mon.close()

    la, lb = a.lines(), b.lines()
    sa = wire_story(la)
    fd = sa[0][1]
    released = [i for i, (_, m) in enumerate(la) if "migration lock released after" in m]
    assert len(released) == 1, la
    gone = [(i, ln) for i, ln in enumerate(la) if UNFOLLOWED_RE.match(ln[1])]
    assert len(gone) == 1 and gone[0][0] > released[0], la
    m = UNFOLLOWED_RE.match(gone[0][1][1])
    assert int(m.group(1)) == fd
    # followed through the results (8 statements), the transaction and the
    # statement that released: many more than a first statement's messages
    assert int(m.group(4)) >= 12, la
    if role == "lead_notify":
        assert m.group(3) == "the gate decided, its kept bytes delivered", la
        assert after["notifications"] == ["ch"], after
    else:
        assert m.group(3) == "its migration lock released", la
    assert [s[0] for s in sa] == ["followed", "unfollowed"], sa  # (its close: not seen)

    sb = wire_story(lb)
    assert [s[0] for s in sb] == ["followed", "unfollowed"], lb
    assert sb[1][2] == "the gate let it pass" and sb[1][3] <= 8, lb
    proceeding = [i for i, (_, m) in enumerate(lb) if "; proceeding" in m]
    unf = [i for i, (_, m) in enumerate(lb) if UNFOLLOWED_RE.match(m)]
    assert proceeding and unf[0] > proceeding[0], lb

    plain = Client(tmp_path, "plain", [driver, transport, loop, "plain"], env, preload=False)
    clients.append(plain)
    plain.finish()
    assert b.events("results")[0]["results"] == plain.events("results")[0]["results"]
    assert a.events("results")[0]["results"] == plain.events("results")[0]["results"]


# --- one decision per process and database, across the libpq and wire layers ----------

MIXED = WORKLOADS / "mixed_client.py"
MIXED_CASES = [("asyncpg", "tcp"), ("pg8000", "unix")]


def mixed_env(db, key, tmp_path):
    # wait_timeout well above the "at once" bound: without the shared
    # decision the second layer waits for its own process's lock that long
    return {**db.env, "MIGSHIM_HEADS": TARGET, "MIGSHIM_LOCK_KEY": key, "GATE_BARRIERS": tmp_path,
            "MIGSHIM_LOG": "debug", "MIGSHIM_WAIT_TIMEOUT": "6", "MIGSHIM_LEADER_GRACE": "60"}


@pytest.mark.parametrize("driver,transport", MIXED_CASES, ids=["-".join(c) for c in MIXED_CASES])
def test_one_decision_libpq_leads(make_db, tmp_path, clients, driver, transport):
    """psycopg2 first: the libpq gate finds the database behind and leads
    (the lock on its own lock connection); then the same process's
    asyncpg/pg8000 connection runs its first statement: it passes at once
    (its line says why), its backend takes and waits for no lock."""
    db = make_db()
    key = unique_key()
    mon = psycopg2.connect(db.dsn)
    mon.autocommit = True
    try:
        c = Client(tmp_path, "M", [driver, transport, "libpq_first"], mixed_env(db, key, tmp_path),
                   script=MIXED)
        clients.append(c)
        libpq = c.wait_event("libpq")
        held = until("the lock held", lambda: [r for r in advisory(mon, key) if r[1]])
        wire = c.wait_event("wire")
        locks = advisory(mon, key)
        assert locks == held and len(held) == 1, locks  # nothing of the wire backend's
        assert held[0][0] not in (libpq["pid"], wire["pid"])  # the libpq gate's lock connection
        assert wire["ms"] < 2000, wire
        (tmp_path / "commit").touch()
        c.finish()
    finally:
        mon.close()
    lines = c.lines()
    msgs = [m for _, m in lines]
    passing = (rf'database "{db.name}": this process leads its migration \(its libpq lock '
               rf'connection holds the lock\); passing ' + where_re(driver, transport))
    assert [m for m in msgs if re.fullmatch(passing, m)], c.describe()
    assert not [m for m in msgs if "; waiting (" in m or "waited" in m], c.describe()
    assert not [m for lv, m in lines if lv in ("warn", "error")], c.describe()
    assert [m for m in msgs if re.fullmatch(rf'database "{db.name}": leading: .*', m)], \
        c.describe()


@pytest.mark.parametrize("driver,transport", MIXED_CASES, ids=["-".join(c) for c in MIXED_CASES])
def test_one_decision_wire_leads(make_db, tmp_path, clients, driver, transport):
    """asyncpg/pg8000 first: the wire gate leads (the lock on its own
    backend); then the same process's psycopg2 connection passes at once,
    with no lock connection of the libpq gate; the wire leader releases
    after its commit as ever."""
    db = make_db()
    key = unique_key()
    mon = psycopg2.connect(db.dsn)
    mon.autocommit = True
    try:
        c = Client(tmp_path, "M", [driver, transport, "wire_first"], mixed_env(db, key, tmp_path),
                   script=MIXED)
        clients.append(c)
        wire = c.wait_event("wire")
        libpq = c.wait_event("libpq")
        locks = advisory(mon, key)
        assert locks == [(wire["pid"], True, "ExclusiveLock")], locks
        assert libpq["ms"] < 2000, libpq
        (tmp_path / "commit").touch()
        after = c.wait_event("after")
        assert after["pid"] == wire["pid"]
        c.finish()
        assert advisory(mon, key) == []
    finally:
        mon.close()
    lines = c.lines()
    msgs = [m for _, m in lines]
    where = where_re(driver, transport)
    assert [m for m in msgs if re.fullmatch(rf'database "{db.name}": leading: .* ' + where, m)], \
        c.describe()
    assert [m for m in msgs if re.fullmatch(
        rf'database "{db.name}": migrated to r1; migration lock released after [0-9.]+ s ' + where,
        m)], c.describe()
    assert not [m for m in msgs if "; waiting (" in m or "waited" in m], c.describe()
    assert not [m for lv, m in lines if lv in ("warn", "error")], c.describe()


# --- the same database name on two servers ----------------------------------------------

TWO_SERVERS = r"""
import asyncio, json, os, sys
import asyncpg

async def main():
    out = []
    for host, port in ((os.environ["H1"], os.environ["P1"]), (os.environ["H2"], os.environ["P2"])):
        c = await asyncpg.connect(host=host, port=int(port), user="postgres",
                                  database=os.environ["DB"], ssl=False)
        out.append(await c.fetchval(
            "SELECT count(*) FROM pg_catalog.pg_locks WHERE locktype = 'advisory' "
            "AND pid = pg_backend_pid()"))
        await c.close()
    print(json.dumps(out))

asyncio.run(main())
"""


@pytest.fixture
def second_server():
    """Another throw-away server (tests/harness/pg.sh), stopped afterwards."""
    from conftest import PG_SH, _start_own_server
    srv = _start_own_server()
    try:
        yield srv
    finally:
        subprocess.run(["bash", str(PG_SH), "stop", srv.pgdir], timeout=60)


def test_same_name_on_two_servers(make_db, pg, second_server, tmp_path):
    """A process that reaches a database of the same name on two servers
    decides for each: at the target on the first (it passes), behind on the
    second (it leads there, its lock on its own backend).  Keyed by the name
    alone, the second passed as "decided already in this process" with no
    lock (found by asyncpg's and pg8000's own suites' set-up, make
    driver-suites)."""
    db = make_db()
    at_target(db)
    two = psycopg2.connect(host=second_server.host, port=second_server.port, user="postgres",
                           dbname="postgres")
    two.autocommit = True
    with two.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{db.name}"')
    two.close()
    script = tmp_path / "two.py"
    script.write_text(TWO_SERVERS)
    env = child_base_env()
    env.update({"LD_PRELOAD": shimbuild.preload(WIRE_LIB), "MIGSHIM_HEADS": TARGET,
                "MIGSHIM_LOG": "debug", "DB": db.name, "H1": pg.host, "P1": str(pg.port),
                "H2": second_server.host, "P2": str(second_server.port)})
    r = subprocess.run([PYTHON, str(script)], env=env, stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout) == [0, 1], r.stderr[-3000:]  # the lock: on the second only
    lines = migshim_lines(r.stderr)
    assert any(f'database "{db.name}" is at head ({TARGET}); proceeding' in ln for ln in lines), \
        r.stderr[-3000:]
    leads = [ln for ln in lines if "leading: this process holds the migration lock" in ln]
    assert len(leads) == 1 and f'database "{db.name}"' in leads[0], r.stderr[-3000:]
    assert not any("decided already in this process" in ln for ln in lines), r.stderr[-3000:]


# --- TLS the shim cannot see ---------------------------------------------------------------

RAW_TLS = r"""
import os, socket, struct, sys
if sys.argv[1] == "with-ssl":
    import ssl  # (loads the shared libssl)
maps = open("/proc/self/maps").read()
for _ in range(2):
    s = socket.create_connection(("127.0.0.1", int(os.environ["PGPORT"])))
    s.sendall(struct.pack("!II", 8, 80877103))            # SSLRequest
    assert s.recv(1) == b"S"
    hello = bytes([22, 3, 1, 0, 60, 1, 0, 0, 56, 3, 3]) + os.urandom(32) + bytes(22)
    s.sendall(hello)                                      # (a ClientHello's first bytes)
    s.close()
    print("libssl" if "libssl.so" in maps else "none")
"""


@pytest.mark.parametrize("mode", ["no-ssl", "with-ssl"])
def test_tls_unseen_said_once(pg, tls_server, tmp_path, mode):
    """A PostgreSQL connection negotiates TLS in a process with no shared
    libssl loaded (as where OpenSSL is linked into the interpreter: its
    _ssl's calls never reach the shim): one warn line says its TLS
    connections are not gated -- once, for two connections.  With the
    shared libssl loaded, no warning: the socket hands over to the TLS
    layer's wrappers (debug)."""
    script = tmp_path / "raw.py"
    script.write_text(RAW_TLS)
    env = child_base_env()
    env.update({"LD_PRELOAD": shimbuild.preload(WIRE_LIB), "MIGSHIM_HEADS": TARGET,
                "MIGSHIM_LOG": "debug", "PGPORT": str(pg.port)})
    r = subprocess.run([PYTHON, str(script), mode], env=env, stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.split() == (["none", "none"] if mode == "no-ssl" else ["libssl", "libssl"])
    lines = migshim_lines(r.stderr)
    warns = [ln for ln in lines if ": warn: " in ln]
    handed = [ln for ln in lines if "followed above the TLS layer" in ln]
    if mode == "no-ssl":
        assert len(warns) == 1 and "no shared libssl with SSL_write_ex is loaded" in warns[0] \
            and "not gated" in warns[0], r.stderr[-3000:]
        assert handed == [] and len([ln for ln in lines if "cannot be seen; not gated" in ln]) == 1
    else:
        assert warns == [] and len(handed) == 2, r.stderr[-3000:]
