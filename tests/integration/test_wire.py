"""The wire layer, phase 1 (issue 22): drivers that speak the PostgreSQL
protocol themselves are recognised and followed, and nothing they do changes.

Every test here preloads the library (shimbuild.lib_path()).

* test_driver_transparent -- asyncpg (asyncio and uvloop) and pg8000 over a
  Unix socket and TCP (tests/integration/wire_workloads/): transactions,
  rollbacks, errors, COPY in and out, prepared statements, notices,
  LISTEN/NOTIFY, a 300 kB value, a pool of 6 connecting at once.  The
  JSON each prints is the same with and without the preload; with
  MIGSHIM_LOG=debug every connection is recognised on its transport and,
  once the gate let it pass at its first statement (target unknown), not
  followed from there on (the rest goes straight to libc); none is lost;
  at the default level the preload prints nothing.
* test_disabled_sees_nothing -- MIGSHIM_DISABLE=1: same JSON, not a line.
* test_tls_socket_hands_over -- ssl on: the SSLRequest is recognised, the
  server's 'S' ends the socket's following with its debug line (the
  plaintext is followed above the TLS layer: test_wire_gate's tls cases);
  same JSON.
* test_other_sockets_never_marked -- in one process: an HTTP request on a
  connected TCP socket, a socketpair, asyncio's signal wakeup socket
  written from a signal handler, and one asyncpg connection; only the
  last is followed.
* test_libpq_not_followed -- psycopg2 and psycopg 3 (libpq) in the same
  process as an asyncpg connection: the libpq layer sees libpq's
  connections, the wire layer only asyncpg's.
* test_fork -- a child forked with a pg8000 connection open follows none
  of its parent's, and follows its own; the parent follows its own to the
  end.
* test_libpq_fleet_not_followed -- an existing libpq fleet at debug: the
  gate as ever, not one wire line.
* test_every_call_raw_protocol -- the protocol by hand through sendmsg,
  recv(MSG_PEEK), read, readv, write, send, recv, recv_into, on a leading
  connection (followed to its end); dup2 onto a followed fd, dup() of one.
* test_first_write_from_a_signal_handler -- a C program whose first I/O is
  a write() from a signal handler, while another thread holds the dynamic
  loader's lock (tests/integration/c/sigwrite_helper.c): the libc table is
  resolved in the constructor, so the handler never calls dlsym (a lazy
  table hangs there).
* test_wire_false_follows_nothing -- `wire = false` (MIGSHIM_WIRE=false) at
  debug: asyncpg's results the same, each connection said not followed, none
  followed.
"""

import json
import re
import sys
import textwrap
from pathlib import Path

import pytest

import shimbuild
from conftest import migshim_lines, migshim_problems, run_py

HERE = Path(__file__).resolve().parent
WORKLOADS = HERE / "wire_workloads"
sys.path.insert(0, str(HERE.parent / "e2e"))

WIRE_LIB = shimbuild.lib_path()


@pytest.fixture(autouse=True)
def wire_library(monkeypatch):
    """Preload the library: run_py and run_fleet take it from MIGSHIM_LIB in
    the test process (tests/shimbuild.py)."""
    if not WIRE_LIB.is_file():
        pytest.fail(f"the library is not built: {WIRE_LIB} (make all)", pytrace=False)
    monkeypatch.setenv("MIGSHIM_LIB", str(WIRE_LIB))
    return WIRE_LIB


FOLLOWED_RE = re.compile(r"migshim\[(\d+)\]: debug: wire: PostgreSQL connection on fd (\d+) "
                         r"\((unix|tcp)\), followed")
END_RE = re.compile(r"migshim\[(\d+)\]: debug: wire: fd (\d+) \((unix|tcp)\): "
                    r"(?:closed|Terminate sent), followed to the end")
# a connection the gate decided for (here: target unknown, it lets it pass) is
# not followed from then on: its fd goes back to the fast path
UNFOLLOWED_RE = re.compile(r"migshim\[(\d+)\]: debug: wire: fd (\d+) \((unix|tcp)\): "
                           r"([^;]*); not followed from here on \((\d+) messages written")
TROUBLE_RE = re.compile(r"wire: fd \d+: (lost|no longer)")


def followed(stderr):
    return [(int(p), int(fd), t) for p, fd, t in FOLLOWED_RE.findall(stderr)]


def ended(stderr):
    return [(int(p), int(fd), t) for p, fd, t in END_RE.findall(stderr)]


def unfollowed(stderr):
    """[(pid, fd, transport, why, messages written when unfollowed)]"""
    return [(int(p), int(fd), t, why, int(n)) for p, fd, t, why, n in
            UNFOLLOWED_RE.findall(stderr)]


def check_followed_to_the_end(stderr, transport, at_least, decided=0):
    """Each connection recognised on `transport` ends, in order per fd --
    at its end (Terminate, close) or, at least `decided` of them, once the
    gate decided for it at its first statement (not followed from there
    on: the rest of its traffic, and its close, are not seen); none is
    lost."""
    f, e, u = followed(stderr), ended(stderr), unfollowed(stderr)
    assert len(f) >= at_least, f"{len(f)} connections followed:\n{stderr[-3000:]}"
    assert all(t == transport for _, _, t in f), stderr[-3000:]
    assert sorted(f) == sorted(e + [(p, fd, t) for p, fd, t, _, _ in u]), \
        f"followed {f}\nended {e}\nunfollowed {u}\n{stderr[-3000:]}"
    assert len(u) >= decided, f"unfollowed {u}\n{stderr[-3000:]}"
    # unfollowed at the first statement (a handful of messages: the
    # start-up, asyncpg's Parse/Bind/Execute/Sync), never later
    assert all(why == "the gate let it pass" and n <= 8 for _, _, _, why, n in u), u
    assert not TROUBLE_RE.search(stderr), stderr[-3000:]
    assert migshim_problems(stderr) == []


CASES = [
    ("asyncpg_ops.py", ["unix", "asyncio"], "unix"),
    ("asyncpg_ops.py", ["tcp", "asyncio"], "tcp"),
    ("asyncpg_ops.py", ["unix", "uvloop"], "unix"),
    ("asyncpg_ops.py", ["tcp", "uvloop"], "tcp"),
    ("pg8000_ops.py", ["unix"], "unix"),
    ("pg8000_ops.py", ["tcp"], "tcp"),
]


def asyncpg_same_as_plain(make_db, extra):
    """asyncpg's operations over a Unix socket, once without the preload and
    once with it and `extra` in the environment, each on a fresh database:
    the results are the same.  Returns the preloaded run."""
    out = []
    for preload, env in ((False, {}), (True, extra)):
        db = make_db()
        r = run_py(WORKLOADS / "asyncpg_ops.py", env_extra={**db.env, **env}, preload=preload,
                   args=["unix", "asyncio"], timeout=120)
        assert r.rc == 0, r.stderr[-3000:]
        out.append(r)
    assert json.loads(out[1].stdout) == json.loads(out[0].stdout)
    return out[1]


@pytest.mark.parametrize("script,args,transport", CASES,
                         ids=["-".join([s.split("_")[0]] + a) for s, a, _ in CASES])
def test_driver_transparent(make_db, script, args, transport):
    runs = {}
    for mode, preload, extra in (("plain", False, {}),
                                 ("debug", True, {"MIGSHIM_LOG": "debug"}),
                                 ("default", True, {})):
        db = make_db()
        r = run_py(WORKLOADS / script, env_extra={**db.env, **extra}, preload=preload,
                   args=args, timeout=120)
        assert r.rc == 0, f"{mode}: rc {r.rc}\n{r.stderr[-3000:]}"
        runs[mode] = r
    want = json.loads(runs["plain"].stdout)
    for mode in ("debug", "default"):
        assert json.loads(runs[mode].stdout) == want, mode
    # asyncpg: one connection, then a pool of at least 3; pg8000: one.  The
    # gate lets each pass at its first statement (target unknown), and it is
    # not followed from then on: the workload's transactions, errors, COPY,
    # LISTEN/NOTIFY and big value go straight to libc, with the same JSON
    n = 4 if script.startswith("asyncpg") else 1
    check_followed_to_the_end(runs["debug"].stderr, transport, n, decided=n)
    assert migshim_lines(runs["default"].stderr) == [], "the app can tell"


def test_disabled_sees_nothing(make_db):
    """MIGSHIM_DISABLE: the wire layer follows nothing and says nothing,
    even at debug; the app's results are the same."""
    r = asyncpg_same_as_plain(make_db, {"MIGSHIM_DISABLE": "1", "MIGSHIM_LOG": "debug"})
    assert migshim_lines(r.stderr) == []


def test_tls_socket_hands_over(make_db, pg):
    from topo import tls_on
    with tls_on(pg, "migshim-wire-ssl."):
        out = {}
        for mode, preload in (("plain", False), ("debug", True)):
            db = make_db()
            r = run_py(WORKLOADS / "asyncpg_ops.py",
                       env_extra={**db.env, "MIGSHIM_LOG": "debug"}, preload=preload,
                       args=["tcp", "asyncio", "ssl"], timeout=120)
            assert r.rc == 0, r.stderr[-3000:]
            out[mode] = r
    assert json.loads(out["debug"].stdout) == json.loads(out["plain"].stdout)
    err = out["debug"].stderr
    f = followed(err)
    tls = re.findall(r"wire: fd (\d+): the server accepted SSLRequest: TLS; followed above the TLS "
                     r"layer \(SSL_write_ex/SSL_read_ex\)", err)
    assert len(f) >= 4 and len(tls) == len(f), err[-3000:]
    assert all("(SSLRequest first)" in ln for ln in migshim_lines(err)
               if "PostgreSQL connection on fd" in ln)
    assert ended(err) == [] and not TROUBLE_RE.search(err), err[-3000:]
    assert migshim_problems(err) == []


OTHERS = textwrap.dedent("""
    import asyncio, http.server, os, signal, socket, threading, urllib.request
    import asyncpg

    srv = http.server.HTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    body = urllib.request.urlopen(f"http://127.0.0.1:{srv.server_port}/").read()
    a, b = socket.socketpair()
    a.send(b"\\0\\0\\0\\x08\\x04\\xd2\\x16\\x2f")  # an SSLRequest, but not a connected socket
    assert b.recv(8)
    print("sockets", os.getpid(), srv.fileno(), a.fileno(), b.fileno(), flush=True)

    async def main():
        loop = asyncio.get_running_loop()
        got = loop.create_future()
        loop.add_signal_handler(signal.SIGUSR1, lambda: got.set_result(True))
        os.kill(os.getpid(), signal.SIGUSR1)  # the C handler writes to the wakeup socket
        await asyncio.wait_for(got, 10)
        c = await asyncpg.connect(host=os.environ["PGHOST"], port=os.environ["PGPORT"])
        print("pg", await c.fetchval("SELECT 1"), flush=True)
        await c.close()
    asyncio.run(main())
    srv.shutdown()
    """)


def test_other_sockets_never_marked(db):
    r = run_py(OTHERS, env_extra={**db.env, "MIGSHIM_LOG": "debug"}, preload=True, timeout=60)
    assert r.rc == 0, r.stderr[-3000:]
    assert "pg 1" in r.stdout
    wire = [ln for ln in migshim_lines(r.stderr) if ": wire: " in ln]
    # exactly the asyncpg connection: recognised, then ended
    assert len(wire) == 2, wire
    check_followed_to_the_end(r.stderr, "unix", 1)
    assert len(followed(r.stderr)) == 1


LIBPQ = textwrap.dedent("""
    import asyncio, os
    import asyncpg, psycopg, psycopg2

    c2 = psycopg2.connect("")
    with c2.cursor() as cur:
        cur.execute("SELECT 1")
    c3 = psycopg.connect("")
    c3.execute("SELECT 1")

    async def main():
        c = await asyncpg.connect(host=os.environ["PGHOST"], port=os.environ["PGPORT"])
        await c.fetchval("SELECT 1")
        await c.close()
    asyncio.run(main())
    with c2.cursor() as cur:
        cur.execute("SELECT 2")
    c3.execute("SELECT 2")
    c2.close()
    c3.close()
    print("ok")
    """)


def test_libpq_not_followed(db):
    r = run_py(LIBPQ, env_extra={**db.env, "MIGSHIM_LOG": "debug"}, preload=True, timeout=60)
    assert r.rc == 0, r.stderr[-3000:]
    # the libpq layer saw psycopg2's and psycopg 3's connections ...
    assert re.search(r"debug: PQconnectdb -> libpq", r.stderr), r.stderr[-3000:]
    assert re.search(r"debug: PQconnectStart -> libpq", r.stderr), r.stderr[-3000:]
    # ... and the wire layer only asyncpg's
    assert len(followed(r.stderr)) == 1, r.stderr[-3000:]
    check_followed_to_the_end(r.stderr, "unix", 1)


FORK = textwrap.dedent("""
    import os, pg8000
    kw = dict(user=os.environ["PGUSER"], database=os.environ["PGDATABASE"],
              unix_sock=f"{os.environ['PGHOST']}/.s.PGSQL.{os.environ['PGPORT']}")
    c = pg8000.connect(**kw)
    cur = c.cursor(); cur.execute("SELECT 1"); cur.fetchall(); c.commit()
    pid = os.fork()
    if pid == 0:
        d = pg8000.connect(**kw)
        k = d.cursor(); k.execute("SELECT 2"); k.fetchall(); d.commit(); d.close()
        os._exit(0)
    _, st = os.waitpid(pid, 0)
    cur.execute("SELECT 3"); cur.fetchall(); c.commit(); c.close()
    print("child", pid, st)
    """)


def test_fork(db):
    r = run_py(FORK, env_extra={**db.env, "MIGSHIM_LOG": "debug"}, preload=True, timeout=60)
    assert r.rc == 0, r.stderr[-3000:]
    child = int(r.stdout.split()[1])
    f = followed(r.stderr)
    pids = sorted(p for p, _, _ in f)
    assert len(f) == 2 and child in pids and len(set(pids)) == 2, r.stderr[-3000:]
    check_followed_to_the_end(r.stderr, "unix", 2)


def test_libpq_fleet_not_followed(db):
    """An existing libpq fleet (examples/flask-alembic, 4 Gunicorn workers,
    psycopg2) at debug: the gate works as ever (one leader, each revision
    once) and the wire layer follows none of its connections -- the app's
    or the shim's own lock connections."""
    from fleet import run_fleet
    r = run_fleet("flask-alembic", db.dsn, workers=4, shim=True,
                  env_extra={"MIGSHIM_LOG": "debug"})
    assert r.booted, r.reason + "\n" + r.stderr[-3000:]
    assert r.migration_runs and all(n == 1 for n in r.migration_runs.values()), r.migration_runs
    assert "leading" in r.stderr, r.stderr[-3000:]
    assert followed(r.stderr) == [] and ": wire: " not in r.stderr, r.stderr[-3000:]


RAW = textwrap.dedent(r"""
    # The protocol by hand over every interposed call, against the real server.
    import ctypes, os, socket, struct
    path = f"{os.environ['PGHOST']}/.s.PGSQL.{os.environ['PGPORT']}"
    libc = ctypes.CDLL(None, use_errno=True)

    def startup():
        body = b"user\0" + os.environ["PGUSER"].encode() + b"\0database\0" \
            + os.environ["PGDATABASE"].encode() + b"\0\0"
        return struct.pack("!II", 8 + len(body), 196608) + body

    def msg(t, body=b""):
        return t + struct.pack("!I", 4 + len(body)) + body

    def until_rfq(read):
        buf = b""
        while True:
            buf += read()
            off, types = 0, []
            while len(buf) - off >= 5:
                n = struct.unpack("!I", buf[off + 1:off + 5])[0]
                if len(buf) - off < 1 + n:
                    break
                types.append(buf[off:off + 1])
                off += 1 + n
            if types and types[-1] == b"Z" and off == len(buf):
                return buf[-1:]

    def connect():
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(path)
        m = startup()
        s.sendmsg([m[:3], m[3:9], m[9:]])               # gathered, cut inside the header
        assert s.recv(1, socket.MSG_PEEK) == b"R"       # peeked: not consumed, not fed
        return s

    # 1: read/readv/write/send/recv/recv_into, ended by Terminate
    s = connect()
    fd = s.fileno()
    until_rfq(lambda: os.read(fd, 7))                   # read, 7 bytes at a time
    os.write(fd, msg(b"Q", b"SELECT 1\0"))
    a, b = bytearray(3), bytearray(100)
    def readv():
        n = os.readv(fd, [a, b])
        return bytes((a + b)[:n])
    until_rfq(readv)
    s.send(msg(b"Q", b"BEGIN\0"))
    st = until_rfq(lambda: s.recv(5))
    assert st == b"T", st
    s.sendall(msg(b"Q", b"COMMIT\0"))
    buf = bytearray(64)
    until_rfq(lambda: bytes(buf[:s.recv_into(buf)]))
    s.sendall(msg(b"X"))
    s.close()

    # 2: dup2 onto the fd ends it ("closed")
    s = connect()
    until_rfq(lambda: s.recv(4096))
    r, w = os.pipe()
    os.dup2(r, s.fileno())
    os.close(r), os.close(w)
    s.close()

    # 3: dup() of the fd: its stream is shared, not followed any more
    s = connect()
    until_rfq(lambda: s.recv(4096))
    d = libc.dup(s.fileno())
    assert d >= 0
    s.sendall(msg(b"Q", b"SELECT 2\0"))
    until_rfq(lambda: s.recv(4096))
    os.close(d)
    s.close()
    print("ok")
    """)


def test_every_call_raw_protocol(db):
    """The protocol written by hand through sendmsg (the start-up cut inside
    its header), recv with MSG_PEEK, read, readv, write, send, recv,
    recv_into: followed to the Terminate; dup2 onto a followed fd ends it;
    dup() of one loses it (its stream is shared).  The target is set and
    the database behind it, so that the first connection leads (and stays
    followed: its lock is never released) and every call meets the parser;
    a connection the gate lets pass is not followed after its first
    statement (test_driver_transparent)."""
    r = run_py(RAW, env_extra={**db.env, "MIGSHIM_LOG": "debug", "MIGSHIM_HEADS": "r1"},
               preload=True, timeout=60)
    assert r.rc == 0 and "ok" in r.stdout, r.stderr[-3000:]
    f = followed(r.stderr)
    assert len(f) == 3, r.stderr[-3000:]
    wire = [ln.split(": wire: ", 1)[1] for ln in migshim_lines(r.stderr) if ": wire: " in ln]
    assert re.fullmatch(r"fd \d+ \(unix\): Terminate sent, followed to the end \(5 messages "
                        r"written, \d+ read, last status I\)", wire[1]), wire
    assert re.fullmatch(r"fd \d+ \(unix\): closed, followed to the end .*last status I\)",
                        wire[3]), wire
    assert re.fullmatch(r"fd \d+: lost: the fd was duplicated \(dup\): its stream is shared; "
                        r"not followed any more", wire[5]), wire
    assert len(wire) == 6, wire


def test_first_write_from_a_signal_handler():
    """The process's first interposed call is a write() from a SIGUSR1
    handler while another thread is inside dlopen (the loader's lock held
    by a constructor that waits for that write).  With the libc table
    resolved in the library's constructor the handler goes straight to
    libc; resolved lazily it would call dlsym there and hang (SIGALRM after
    20 s)."""
    tests_b = shimbuild.build_dir() / "tests"
    helper, mod = tests_b / "sigwrite_helper", tests_b / "libsigwrite_mod.so"
    if not helper.is_file() or not mod.is_file():
        pytest.fail(f"{helper} or {mod} not built (make tests)", pytrace=False)
    import subprocess
    from conftest import child_base_env
    for preload in (None, WIRE_LIB):
        env = child_base_env()
        if preload:
            env["LD_PRELOAD"] = shimbuild.preload(preload)
        p = subprocess.run([str(helper), str(mod)], env=env, capture_output=True, text=True,
                           timeout=60)
        assert (p.returncode, p.stdout) == (0, "ok\n"), \
            f"LD_PRELOAD={preload}: rc {p.returncode} (-14: hung until SIGALRM)\n{p.stderr[-2000:]}"


def test_wire_false_follows_nothing(make_db):
    """`wire = false`: the escape hatch.  asyncpg at debug gives the same
    results; every connection's start-up is said not followed, and none is
    followed (with the default, each is: test_driver_transparent)."""
    r = asyncpg_same_as_plain(make_db, {"MIGSHIM_LOG": "debug", "MIGSHIM_WIRE": "false"})
    lines = [ln for ln in migshim_lines(r.stderr) if ": wire: " in ln]
    off = [ln for ln in lines if "a PostgreSQL start-up, not followed (wire = false)" in ln]
    assert len(off) >= 6 and len(off) == len(lines), lines  # a pool of 6, and more
