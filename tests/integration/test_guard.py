"""The race guard's rules (include/guard.h, src/guard.c), each scenario with
its interleaving forced -- never left to luck.

How a race is forced:

* the test process (no preload) plays the peer: on its own connection it
  opens a transaction that does what a racing `alembic upgrade` does
  (creates the version table, inserts the row, moves the version, runs the
  revisions' DDL) and holds it open;
* the child -- tests/integration/guard_workloads/client.py, or a real
  `alembic upgrade head` -- runs with LD_PRELOAD, MIGSHIM_LOCK=off (no gate
  lock: the guard alone), MIGSHIM_HEADS=<target> and MIGSHIM_LOG=info, in
  an empty temp working directory, and sends the statements Alembic 1.8
  sends (../shared/alembic-statements.md);
* the test waits until the child's backend is provably blocked behind the
  peer (pg_stat_activity.wait_event_type = 'Lock', a lock with granted =
  false in pg_locks, and the peer's pid in pg_blocking_pids()), and on the
  statement the scenario names; only then does the peer commit.

Every libpq path is covered: psycopg2 sync (PQexec), psycopg2 green
(gevent + psycogreen: PQsendQuery + PQgetResult through a wait callback),
psycopg2 async_=1 (PQsendQuery + PQgetResult, polled), psycopg 3 with
Debian's ctypes backend (PQsendQuery(Params) through dlsym).

What is checked: what the app sees for every statement (statusmessage,
rowcount, rows, transaction status), the database afterwards (rule 1: the
child's later work is committed; rule 2: exactly what the peer committed,
compared with a snapshot the peer took of its own transaction just before
it committed), the guard's log lines word for word, and for the negative
cases that the error reaches the app byte for byte as it does without the
preload (the same scenario run twice, on two fresh databases).

A child that stops making progress while its backend sits idle (the server
has nothing more to say, so the client waits for an answer that will never
come) is reported as hung after a few seconds instead of waiting for the
overall timeout.

Run: tests/harness/with-pg.sh /usr/bin/python3 -m pytest -q tests/integration/test_guard.py
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import pytest

from conftest import PYTHON, REPO_ROOT, child_base_env, require_migshim_lib
import shimbuild

CLIENT = Path(__file__).resolve().parent / "guard_workloads" / "client.py"
ALEMBIC_GREEN = Path(__file__).resolve().parent / "guard_workloads" / "alembic_green.py"
EXAMPLE = REPO_ROOT / "examples" / "flask-alembic"

CHILD_APP = "guard-test-child"
PEER_APP = "guard-test-peer"

BLOCK_TIMEOUT = 30.0    # the child must block behind the peer within this
CHILD_TIMEOUT = 60.0    # and finish within this after the peer commits
STALL = 3.0             # no output for this long, backend idle: hung
RACE_WAIT = "1"         # MIGSHIM_RACE_WAIT for the negative cases

# ---------------------------------------------------------------------------
# What Alembic 1.8 + SQLAlchemy 1.4 send for the example app's three
# revisions (examples/flask-alembic; ../shared/alembic-statements.md).

HAS_VT = ("select relname from pg_class c join pg_namespace n on "
          "n.oid=c.relnamespace where pg_catalog.pg_table_is_visible(c.oid) "
          "and relname='alembic_version'")
CREATE_VT = ("CREATE TABLE alembic_version (\n"
             "    version_num VARCHAR(32) NOT NULL, \n"
             "    CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)\n)")
READ_VT = "SELECT alembic_version.version_num \nFROM alembic_version"
CREATE_RUNS = ("CREATE TABLE migration_runs (\n    revision TEXT NOT NULL, \n"
               "    pid INTEGER, \n    at TIMESTAMP WITH TIME ZONE DEFAULT now()\n)")
CREATE_USERS = ("CREATE TABLE users (\n    id SERIAL NOT NULL, \n"
                "    name VARCHAR(50) NOT NULL, \n    PRIMARY KEY (id)\n)")
CREATE_POSTS = ("CREATE TABLE posts (\n    id SERIAL NOT NULL, \n"
                "    user_id INTEGER NOT NULL, \n    body TEXT NOT NULL, \n"
                "    PRIMARY KEY (id), \n"
                "    FOREIGN KEY(user_id) REFERENCES users (id)\n)")
ADD_EMAIL = "ALTER TABLE users ADD COLUMN email VARCHAR(100)"


def record_run(rev):
    """The revision's audit row; pg_backend_pid() tells whose write it is."""
    return ("INSERT INTO migration_runs (revision, pid) VALUES ('%s', "
            "pg_backend_pid())" % rev)


def insert_vt(rev):
    return ("INSERT INTO alembic_version (version_num) VALUES ('%s') "
            "RETURNING alembic_version.version_num" % rev)


def update_vt(frm, to):
    return ("UPDATE alembic_version SET version_num='%s' WHERE "
            "alembic_version.version_num = '%s'" % (to, frm))


R1, R2, R3 = "0001aaaa", "0002bbbb", "0003cccc"

REV1 = [CREATE_RUNS, record_run(R1), CREATE_USERS, insert_vt(R1)]
REV2 = [record_run(R2), CREATE_POSTS, update_vt(R1, R2)]
REV3 = [record_run(R3), ADD_EMAIL, update_vt(R2, R3)]

# The committed state "at 0001aaaa" (what revision 1 leaves).
AT_R1 = [CREATE_VT, CREATE_RUNS,
         "INSERT INTO migration_runs (revision, pid) VALUES ('0001aaaa', 0)",
         CREATE_USERS, "INSERT INTO alembic_version (version_num) VALUES ('0001aaaa')"]

# ---------------------------------------------------------------------------
# The guard's log lines (src/guard.c), word for word.


def line_map(state, what, start, seen):
    """The one mapping line: `state` (SQLSTATE, or "UPDATE 0") on `what`
    (a command tag) in a transaction that started at `start`."""
    return ("warn", "guard: %s on %s in a migration transaction that started at %s; "
            "verified the database at the target (%s); rolled this transaction back and "
            "answering the rest of it up to COMMIT/ROLLBACK" % (state, what, start, seen))


def line_end(verb="COMMIT"):
    return ("info", "guard: %s answered; this process's migration transaction was rolled "
            "back and the peer's migration stands" % verb)


LINE_END = line_end()


def line_give_up(stmt, done=False, orig=True):
    return ("warn", 'guard: "%s" cannot be answered in place of the rolled-back transaction%s; '
            "%s" % (stmt[:50], " (its migration is over)" if done else "",
                    "the original error passes through" if orig else
                    "the transaction fails now (40001: no original error is left to give)"))


def line_doom(state, what, waited, seen):
    return ("warn", "guard: %s on %s: waited %s s (race_wait) for a peer to reach the target; "
            "version table at %s; the error passes through" % (state, what, waited, seen))


SHIM_LINE_RE = re.compile(r"^migshim\[(\d+)\]: (\w+): (.*)$")

# ---------------------------------------------------------------------------
# drivers

DRIVERS = ["psycopg2", "psycopg2-green", "psycopg2-async", "psycopg3"]

def absorbing_drivers():
    """DRIVERS (the green path once hung here: guard_send() answered an
    absorbed statement without sending anything, and psycopg2's green
    execution waited for the socket to become readable)."""
    return list(DRIVERS)


# ---------------------------------------------------------------------------
# the child


class Child:
    """A child process (stdout/stderr in files, readable while it runs)."""

    def __init__(self, argv, env, cwd: Path, workdir: Path, name: str):
        self.name = name
        self.out_path = workdir / (name + ".stdout")
        self.err_path = workdir / (name + ".stderr")
        self.argv = argv
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(
                argv, env=env, cwd=str(cwd), stdin=subprocess.DEVNULL,
                stdout=out, stderr=err, start_new_session=True)
        self.pid = self.proc.pid
        self.hung = False

    def stdout(self) -> str:
        return self.out_path.read_text("utf-8", "replace")

    def stderr(self) -> str:
        return self.err_path.read_text("utf-8", "replace")

    def records(self) -> List[dict]:
        out = []
        for ln in self.stdout().splitlines():
            try:
                out.append(json.loads(ln))
            except ValueError:
                out.append({"op": "garbage", "line": ln})
        return out

    def shim_lines(self):
        """[(level, message)] of the shim's lines; all from this pid."""
        out = []
        for ln in self.stderr().splitlines():
            m = SHIM_LINE_RE.match(ln)
            if m:
                assert int(m.group(1)) == self.pid, \
                    "foreign pid in %r\n%s" % (ln, self.describe())
                out.append((m.group(2), m.group(3)))
            else:
                assert "migshim[" not in ln, "malformed shim line %r" % ln
        return out

    def guard_lines(self):
        return [(lv, msg) for lv, msg in self.shim_lines()
                if msg.startswith("guard:")]

    def describe(self) -> str:
        return ("--- %s (pid %d, rc %s%s) stdout ---\n%s\n--- stderr ---\n%s" % (
            self.name, self.pid, self.proc.poll(), ", HUNG" if self.hung else "",
            self.stdout()[-6000:], self.stderr()[-6000:]))

    def progress(self) -> int:
        try:
            return self.out_path.stat().st_size + self.err_path.stat().st_size
        except OSError:
            return 0

    def kill(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass


# ---------------------------------------------------------------------------
# one race


@dataclass
class Race:
    """The outcome of one forced race."""
    child: Child
    rc: Optional[int]
    peer_pid: int
    blocked_query: str
    peer_snapshot: dict           # the peer's view just before it committed
    after: dict                   # the database after the child finished
    late_pid: int = 0             # the late peer's backend, if any
    records: List[dict] = field(default_factory=list)

    def steps(self):
        """The child's step records (client.py), without connected/done."""
        return [r for r in self.records if "i" in r]

    def describe(self):
        return ("blocked on: %r\n" % self.blocked_query) + self.child.describe()


class Guard:
    """Per-test helper: fresh databases, the peer, children."""

    def __init__(self, pg, make_db, tmp_path: Path):
        self.pg = pg
        self.make_db = make_db
        self.tmp = tmp_path
        self.children: List[Child] = []
        self.conns = []
        self.n = 0

    def close(self):
        for c in self.children:
            c.kill()
        for conn in self.conns:
            try:
                conn.close()
            except Exception:
                pass

    def connect(self, db, appname="guard-test-admin", autocommit=True):
        import psycopg2
        conn = psycopg2.connect(db.dsn + " application_name=" + appname)
        conn.autocommit = autocommit
        self.conns.append(conn)
        return conn

    # --- children
    def child_env(self, db, preload, heads, shim_env=None, extra=None):
        env = child_base_env()
        env.update(db.env)
        env["PGAPPNAME"] = CHILD_APP
        if preload:
            env["LD_PRELOAD"] = shimbuild.preload(require_migshim_lib())
            env.update({"MIGSHIM_LOCK": "off", "MIGSHIM_HEADS": heads,
                        "MIGSHIM_LOG": "info"})
            env.update(shim_env or {})
        env.update(extra or {})
        return env

    def spawn(self, argv, env, cwd=None) -> Child:
        self.n += 1
        name = "child%d" % self.n
        if cwd is None:
            cwd = self.tmp / ("cwd-" + name)
            cwd.mkdir()
        c = Child(argv, env, cwd, self.tmp, name)
        self.children.append(c)
        return c

    # --- watching the child
    def wait_blocked(self, mon, child: Child, peer_pid: int, on: str) -> str:
        """Until the child's backend waits on a lock the peer holds, in the
        statement starting with `on`.  Returns that statement."""
        deadline = time.monotonic() + BLOCK_TIMEOUT
        with mon.cursor() as cur:
            while True:
                cur.execute(
                    "SELECT a.query FROM pg_stat_activity a "
                    "WHERE a.application_name = %s AND a.datname = current_database() "
                    "  AND a.wait_event_type = 'Lock' "
                    "  AND %s = ANY (pg_blocking_pids(a.pid)) "
                    "  AND EXISTS (SELECT 1 FROM pg_locks l "
                    "              WHERE l.pid = a.pid AND NOT l.granted)",
                    (CHILD_APP, peer_pid))
                rows = cur.fetchall()
                last = rows[0][0] if rows else None
                # a catalog read may wait a moment on the peer too (seen on
                # Alembic's has_table query): keep looking for `on`
                if rows and " ".join(last.split()).startswith(" ".join(on.split())):
                    return last
                if child.proc.poll() is not None:
                    pytest.fail("the child exited before blocking behind the peer\n"
                                + child.describe(), pytrace=False)
                if time.monotonic() > deadline:
                    child.kill()
                    pytest.fail("the child did not block behind the peer within "
                                "%.0f s\n%s" % (BLOCK_TIMEOUT, child.describe()),
                                pytrace=False)
                time.sleep(0.01)

    def wait_records(self, child: Child, n: int) -> str:
        """Until the child has emitted `n` step records."""
        deadline = time.monotonic() + BLOCK_TIMEOUT
        while len([r for r in child.records() if "i" in r]) < n:
            if child.proc.poll() is not None or time.monotonic() > deadline:
                child.kill()
                pytest.fail("the child did not reach its barrier\n" + child.describe(),
                            pytrace=False)
            time.sleep(0.005)
        return "(barrier after %d steps)" % n

    def finish(self, mon, child: Child) -> Optional[int]:
        """Wait for the child; a child without progress for STALL seconds
        while its backend is idle (waiting for the client) is hung."""
        deadline = time.monotonic() + CHILD_TIMEOUT
        last, since = child.progress(), time.monotonic()
        with mon.cursor() as cur:
            while True:
                rc = child.proc.poll()
                if rc is not None:
                    return rc
                now = time.monotonic()
                p = child.progress()
                if p != last:
                    last, since = p, now
                elif now - since > STALL:
                    cur.execute("SELECT state FROM pg_stat_activity "
                                "WHERE application_name = %s "
                                "AND datname = current_database()", (CHILD_APP,))
                    states = [r[0] for r in cur.fetchall()]
                    if states and all(s.startswith("idle") for s in states):
                        child.hung = True
                        child.kill()
                        return None
                if now > deadline:
                    child.kill()
                    pytest.fail("the child did not finish within %.0f s\n%s" % (
                        CHILD_TIMEOUT, child.describe()), pytrace=False)
                time.sleep(0.05)

    # --- a race
    def race(self, *, argv, heads, setup: Sequence[str] = (),
             peer: Sequence[str] = (), blocked_on: Optional[str] = None,
             barrier_after: int = 0, db=None,
             preload=True, shim_env=None, extra_env=None, cwd=None,
             late_peer: Sequence[str] = (), late_delay: float = 0.0) -> Race:
        """Commit `setup`; the peer runs `peer` in an open transaction; the
        child runs `argv`; once the child is blocked behind the peer on
        `blocked_on`, the peer commits (and `late_peer`, if given, commits
        on another connection `late_delay` seconds later).

        Without `blocked_on`: the child (client.py) stops at a ["wait_file"]
        step; once it has emitted `barrier_after` step records the peer
        commits, and only then is the child let go."""
        db = db or self.make_db()
        admin = self.connect(db)
        with admin.cursor() as cur:
            for s in setup:
                cur.execute(s)
        peer_conn = self.connect(db, PEER_APP, autocommit=False)
        with peer_conn.cursor() as cur:
            cur.execute("SELECT pg_backend_pid()")
            peer_pid = cur.fetchone()[0]
            for s in peer:
                cur.execute(s)
        late_conn = None
        late_pid = 0
        if late_peer:
            late_conn = self.connect(db, PEER_APP + "-late", autocommit=False)
            with late_conn.cursor() as cur:
                cur.execute("SELECT pg_backend_pid()")
                late_pid = cur.fetchone()[0]
        barrier = self.tmp / ("barrier%d" % (self.n + 1))
        env = self.child_env(db, preload, heads, shim_env, extra_env)
        env["GUARD_BARRIER"] = str(barrier)
        child = self.spawn(argv, env, cwd=cwd)
        mon = self.connect(db, "guard-test-monitor")
        if blocked_on is not None:
            q = self.wait_blocked(mon, child, peer_pid, blocked_on)
        else:
            q = self.wait_records(child, barrier_after)
        snap = snapshot(peer_conn)
        peer_conn.commit()
        barrier.write_text("go\n")
        t_commit = time.monotonic()
        if late_peer:
            with late_conn.cursor() as cur:
                for s in late_peer:
                    cur.execute(s)
            time.sleep(max(0.0, late_delay - (time.monotonic() - t_commit)))
            snap = snapshot(late_conn)
            late_conn.commit()
        rc = self.finish(mon, child)
        after = snapshot(admin)
        r = Race(child=child, rc=rc, peer_pid=peer_pid, blocked_query=q,
                 peer_snapshot=snap, after=after, late_pid=late_pid)
        if argv[1:2] == [str(CLIENT)]:
            r.records = child.records()
        return r


def client_argv(driver, steps, autocommit=False):
    return [PYTHON, str(CLIENT), driver,
            json.dumps({"autocommit": autocommit, "steps": steps})]


def sql(*stmts):
    return [["sql", s] for s in stmts]


def snapshot(conn) -> dict:
    """Every table of the public schema with its columns and rows (as text,
    sorted; migration_runs' timestamp left out), every sequence's state,
    plus every relation's name and kind.  Read through `conn` (inside its transaction, if any)."""
    with conn.cursor() as cur:
        cur.execute("SELECT c.relname, c.relkind FROM pg_class c "
                    "JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE n.nspname = 'public' ORDER BY 1")
        rels = [list(r) for r in cur.fetchall()]
        out = {"relations": rels, "tables": {}, "sequences": {}}
        for name, kind in rels:
            if kind == "S":
                cur.execute('SELECT last_value, is_called FROM public."%s"' % name)
                out["sequences"][name] = list(cur.fetchone())
            if kind != "r":
                continue
            cur.execute("SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass "
                        "AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
                        ('public."%s"' % name,))
            cols = [r[0] for r in cur.fetchall()]
            keep = [c for c in cols if c != "at"]
            cur.execute('SELECT %s FROM public."%s"' % (
                ", ".join("coalesce(\"%s\"::text, '<null>')" % c for c in keep), name))
            out["tables"][name] = {"columns": cols,
                                   "rows": sorted(list(r) for r in cur.fetchall())}
    return out


@pytest.fixture
def guard(pg, make_db, tmp_path):
    g = Guard(pg, make_db, tmp_path)
    yield g
    g.close()


# ---------------------------------------------------------------------------
# assertions


def ok(rec, tag, rowcount, rows=None, tx="INTRANS"):
    """One step record of client.py: success with this tag/rowcount/rows."""
    assert rec.get("ok") is True, rec
    got = (rec.get("statusmessage"), rec.get("rowcount"), rec.get("rows"), rec.get("tx"))
    assert got == (tag, rowcount, rows, tx), "step %s (%s): got %r, expected %r" % (
        rec.get("i"), rec.get("sql"), got, (tag, rowcount, rows, tx))


def assert_completed(r: Race):
    """The child ran every step and exited 0."""
    assert not r.child.hung, "the child hung (backend idle, no progress for " \
        "%.0f s)\n%s" % (STALL, r.describe())
    assert r.rc == 0, r.describe()
    assert r.records and r.records[-1] == {"op": "done"}, r.describe()


def assert_no_problems_but(r: Race, expected_guard_lines):
    """The guard's lines are exactly these; no other warning or error."""
    assert r.child.guard_lines() == expected_guard_lines, \
        "guard lines:\n  %s\nexpected:\n  %s\n%s" % (
            "\n  ".join(map(repr, r.child.guard_lines())),
            "\n  ".join(map(repr, expected_guard_lines)), r.describe())
    others = [(lv, m) for lv, m in r.child.shim_lines()
              if lv in ("warn", "error") and not m.startswith("guard:")]
    assert not others, r.describe()


def sql_steps(r: Race):
    """The records of the child's SQL statements, in order."""
    return [s for s in r.steps() if s["op"] == "sql"]


def statuses(r: Race):
    """The transaction status at each ["status"] step."""
    return [s["tx"] for s in r.steps() if s["op"] == "status"]


def assert_txn_steps(r: Race, driver, end="commit"):
    """begin and commit/rollback succeeded; psycopg2-async sends them as
    statements and sees their tags, the others' begin is implicit."""
    b = [s for s in r.steps() if s["op"] == "begin"]
    e = [s for s in r.steps() if s["op"] == end]
    assert len(b) == 1 and len(e) == 1, r.describe()
    if driver == "psycopg2-async":
        ok(b[0], "BEGIN", -1)
        ok(e[0], end.upper(), -1, tx="IDLE")
    else:
        assert (b[0]["ok"], b[0]["tx"]) == (True, "IDLE"), b
        assert (e[0]["ok"], e[0]["tx"]) == (True, "IDLE"), e


def with_pids(state: dict, pids: Dict[int, str]) -> dict:
    """`state` with backend pids in migration_runs replaced by names."""
    s = json.loads(json.dumps(state))
    t = s["tables"].get("migration_runs")
    if t:
        i = [c for c in t["columns"] if c != "at"].index("pid")
        for row in t["rows"]:
            row[i] = pids.get(int(row[i]), row[i]) if row[i].isdigit() else row[i]
        t["rows"].sort()
    return s


# ---------------------------------------------------------------------------
# Running a real `alembic upgrade head` (the example app's scripts)


def alembic_env(db):
    from urllib.parse import quote, urlencode
    p = dict(part.split("=", 1) for part in db.dsn.split())
    url = "postgresql+psycopg2://%s@/%s?%s" % (
        quote(p["user"], safe=""), quote(p["dbname"], safe=""),
        urlencode({"host": p["host"], "port": p["port"]}, safe="/"))
    return {"DATABASE_URL": url, "MIGRATION_SLEEP": "0"}


def example_copy(tmp_path: Path) -> Path:
    d = tmp_path / "app"
    shutil.copytree(EXAMPLE, d, ignore=shutil.ignore_patterns("__pycache__"))
    return d


def alembic_argv(driver):
    if driver == "psycopg2-green":
        return [PYTHON, str(ALEMBIC_GREEN), "-c", "alembic.ini", "upgrade", "head"]
    return [PYTHON, "-m", "alembic", "-c", "alembic.ini", "upgrade", "head"]


def upgrades_run(r: Race):
    """[(from, to)] of Alembic's "Running upgrade" lines."""
    return re.findall(r"Running upgrade (\S*) -> (\w+)", r.child.stderr())


# ---------------------------------------------------------------------------
# The rule (include/guard.h): a race in one of Alembic's migration
# transactions, the database proven at the target -> the transaction is
# rolled back and a read-only transaction stands in for the rest of it.


def full_upgrade_steps(end="commit"):
    """`alembic upgrade head` from an empty database, all three revisions
    in one transaction (the stock env.py), then a read of the version."""
    return ([["begin"]] + sql(HAS_VT, HAS_VT, CREATE_VT, *REV1, *REV2, *REV3, READ_VT)
            + [["status"], [end], ["status"]])


def differential(guard, driver, *, heads, steps, setup=(), peer=(), blocked_on=None,
                 barrier_after=0, shim_env=None, late_peer=(), late_delay=0.0):
    """The same forced race with the preload and without it (two fresh
    databases).  Returns (shim, plain); asserts the databases ended the
    same -- schema and every row, the peer's rows named "peer"."""
    races = []
    for preload in (True, False):
        r = guard.race(argv=client_argv(driver, steps), heads=heads, setup=setup, peer=peer,
                       blocked_on=blocked_on, barrier_after=barrier_after, preload=preload,
                       shim_env=shim_env, late_peer=late_peer, late_delay=late_delay)
        assert_completed(r)
        races.append(r)
    shim, plain = races
    assert with_pids(shim.after, {shim.peer_pid: "peer", shim.late_pid: "late"}) == \
        with_pids(plain.after, {plain.peer_pid: "peer", plain.late_pid: "late"}), \
        (shim.describe(), plain.describe())
    assert not plain.child.shim_lines()
    return shim, plain


@pytest.mark.parametrize("driver", DRIVERS)
def test_full_upgrade_from_empty_rolled_back_and_stood_in(guard, driver):
    """The peer runs the whole upgrade (three revisions, one transaction)
    and commits while the child's CREATE TABLE alembic_version waits
    behind it: 23505 in a transaction that showed no version table, and
    the database is at the target.  The child's transaction is rolled back;
    the rest up to COMMIT is answered -- DDL, the plain INSERTs and the
    version writes with the tags they get migrating alone, the read for
    real -- and the database holds exactly what the peer committed, as it
    does without the shim (where the child fails)."""
    shim, plain = differential(guard, driver, heads=R3, steps=full_upgrade_steps(),
                               peer=[CREATE_VT, *REV1, *REV2, *REV3],
                               blocked_on="CREATE TABLE alembic_version")
    q = sql_steps(shim)
    ok(q[0], "SELECT 0", 0, [])
    ok(q[1], "SELECT 0", 0, [])
    ok(q[2], "CREATE TABLE", -1)             # the race: 23505, answered
    ok(q[3], "CREATE TABLE", -1)
    ok(q[4], "INSERT 0 1", 1)
    ok(q[5], "CREATE TABLE", -1)
    assert q[6]["sql"].startswith("INSERT INTO alembic_version"), q[6]
    assert (q[6]["ok"], q[6]["statusmessage"], q[6]["tx"]) == (True, "INSERT 0 1", "INTRANS"), \
        q[6]                                 # its RETURNING row: see the test below
    ok(q[7], "INSERT 0 1", 1)
    ok(q[8], "CREATE TABLE", -1)
    ok(q[9], "UPDATE 1", 1)
    ok(q[10], "INSERT 0 1", 1)
    ok(q[11], "ALTER TABLE", -1)
    ok(q[12], "UPDATE 1", 1)
    ok(q[13], "SELECT 1", 1, [[R3]])         # a read: for real, the peer's version
    assert statuses(shim) == ["INTRANS", "IDLE"]
    assert_txn_steps(shim, driver)
    assert_no_problems_but(shim, [line_map("23505", "CREATE TABLE", "(no table)", R3),
                                  LINE_END])
    assert shim.after == shim.peer_snapshot
    assert with_pids(shim.after, {shim.peer_pid: "peer"})["tables"]["migration_runs"]["rows"] \
        == [[R1, "peer"], [R2, "peer"], [R3, "peer"]]
    e = first_error(plain)                   # without the shim: the same race fails
    assert (e["sql"][:28], e["error"]["pgcode"]) == ("CREATE TABLE alembic_version", "23505")


@pytest.mark.parametrize("driver", DRIVERS)
def test_has_table_then_the_peer_commits_then_the_first_revision_races(guard, driver):
    """Alembic's first has_table sees no version table; the peer's whole
    upgrade commits before the second (SQLAlchemy's checkfirst), which then
    sees it: Alembic skips CREATE TABLE alembic_version and its first
    revision's CREATE TABLE fails with 42P07.  The empty has_table answer is
    where the transaction started: mapped (a fleet of 16 with lock = off
    met this about once in 20 runs)."""
    steps = ([["begin"]] + sql(HAS_VT) + [["wait_file"]]
             + sql(HAS_VT, *REV1, *REV2, *REV3, READ_VT) + [["commit"], ["status"]])
    shim, plain = differential(guard, driver, heads=R3, steps=steps,
                               peer=[CREATE_VT, *REV1, *REV2, *REV3], barrier_after=2)
    q = sql_steps(shim)
    ok(q[0], "SELECT 0", 0, [])
    ok(q[1], "SELECT 1", 1, [["alembic_version"]])
    ok(q[2], "CREATE TABLE", -1)             # 42P07: mapped
    ok(q[-1], "SELECT 1", 1, [[R3]])
    assert statuses(shim) == ["IDLE"]
    assert_no_problems_but(shim, [line_map("42P07", "CREATE TABLE", "(no table)", R3), LINE_END])
    assert shim.after == shim.peer_snapshot
    assert first_error(plain)["error"]["pgcode"] == "42P07"


@pytest.mark.parametrize("driver", ["psycopg2", "psycopg3"])
def test_stood_in_insert_returning_gives_its_row(guard, driver):
    """Revision 1's version INSERT ... RETURNING, answered in place of the
    rolled-back transaction: tag, rowcount and RETURNING row."""
    r = guard.race(argv=client_argv(driver, full_upgrade_steps()), heads=R3,
                   peer=[CREATE_VT, *REV1, *REV2, *REV3],
                   blocked_on="CREATE TABLE alembic_version")
    assert_completed(r)
    q = sql_steps(r)
    assert q[6]["sql"].startswith("INSERT INTO alembic_version"), q[6]
    ok(q[6], "INSERT 0 1", 1, [[R1]])


@pytest.mark.parametrize("driver", DRIVERS)
def test_23505_on_a_revisions_ddl_from_an_intermediate_revision(guard, driver):
    """The database is at 0001aaaa.  The peer runs revisions 2 and 3; the
    child has already written (its migration_runs row) when its CREATE
    TABLE posts waits behind the peer's and fails with 23505: rolled back
    (its earlier write included) and stood in for."""
    steps = ([["begin"]] + sql(READ_VT, *REV2, *REV3, READ_VT)
             + [["status"], ["commit"], ["status"]])
    shim, plain = differential(guard, driver, heads=R3, steps=steps, setup=AT_R1,
                               peer=[*REV2, *REV3], blocked_on="CREATE TABLE posts")
    q = sql_steps(shim)
    ok(q[0], "SELECT 1", 1, [[R1]])
    ok(q[1], "INSERT 0 1", 1)                # real, then rolled back
    ok(q[2], "CREATE TABLE", -1)             # 23505: mapped
    ok(q[3], "UPDATE 1", 1)
    ok(q[4], "INSERT 0 1", 1)
    ok(q[5], "ALTER TABLE", -1)
    ok(q[6], "UPDATE 1", 1)
    ok(q[7], "SELECT 1", 1, [[R3]])
    assert statuses(shim) == ["INTRANS", "IDLE"]
    assert_txn_steps(shim, driver)
    assert_no_problems_but(shim, [line_map("23505", "CREATE TABLE", R1, R3), LINE_END])
    assert shim.after == shim.peer_snapshot  # no write of the child's survived
    assert with_pids(shim.after, {shim.peer_pid: "peer"})["tables"]["migration_runs"]["rows"] \
        == [[R1, "0"], [R2, "peer"], [R3, "peer"]]


@pytest.mark.parametrize("driver", ["psycopg2", "psycopg2-green", "psycopg3"])
def test_42701_duplicate_column(guard, driver):
    """The database is at 0002bbbb.  The peer runs revision 3 (ADD COLUMN
    email); the child's ALTER TABLE users waits on the peer's lock and then
    fails with 42701 (column already exists): mapped."""
    setup = AT_R1 + [CREATE_POSTS, update_vt(R1, R2)]
    steps = ([["begin"]] + sql(READ_VT, *REV3, READ_VT) + [["status"], ["commit"], ["status"]])
    shim, plain = differential(guard, driver, heads=R3, steps=steps, setup=setup,
                               peer=REV3, blocked_on="ALTER TABLE users")
    q = sql_steps(shim)
    ok(q[0], "SELECT 1", 1, [[R2]])
    ok(q[1], "INSERT 0 1", 1)
    ok(q[2], "ALTER TABLE", -1)              # 42701: mapped
    ok(q[3], "UPDATE 1", 1)
    ok(q[4], "SELECT 1", 1, [[R3]])
    assert_no_problems_but(shim, [line_map("42701", "ALTER TABLE", R2, R3), LINE_END])
    assert shim.after == shim.peer_snapshot


@pytest.mark.parametrize("driver", ["psycopg2", "psycopg2-async", "psycopg3"])
def test_rollback_ends_the_stand_in(guard, driver):
    """The app may end the stood-in transaction with ROLLBACK: answered as
    ROLLBACK, logged, and the database is the peer's."""
    r = guard.race(argv=client_argv(driver, full_upgrade_steps(end="rollback")), heads=R3,
                   peer=[CREATE_VT, *REV1, *REV2, *REV3],
                   blocked_on="CREATE TABLE alembic_version")
    assert_completed(r)
    assert [x["ok"] for x in r.steps()] == [True] * len(r.steps()), r.describe()
    assert statuses(r) == ["INTRANS", "IDLE"]
    assert_txn_steps(r, driver, end="rollback")
    assert_no_problems_but(r, [line_map("23505", "CREATE TABLE", "(no table)", R3),
                               line_end("ROLLBACK")])
    assert r.after == r.peer_snapshot


@pytest.mark.parametrize("driver", DRIVERS)
def test_after_the_answered_commit_the_connection_is_an_ordinary_one(guard, driver):
    """After the answered COMMIT the app goes on using its connection (as a
    web app does after migrating at start-up; Alembic's "sharing a
    connection" recipe): its next transactions run for real and every
    write of theirs is committed -- nothing is answered by the shim."""
    steps = (full_upgrade_steps() + [["begin"]]
             + sql("INSERT INTO users (name, email) VALUES ('after', 'a@example.org') "
                   "RETURNING name, email", READ_VT)
             + [["commit"], ["status"], ["begin"]]
             + sql("INSERT INTO users (name) VALUES ('later')") + [["commit"]])
    r = guard.race(argv=client_argv(driver, steps), heads=R3,
                   peer=[CREATE_VT, *REV1, *REV2, *REV3],
                   blocked_on="CREATE TABLE alembic_version")
    assert_completed(r)
    q = sql_steps(r)
    ok(q[14], "INSERT 0 1", 1, [["after", "a@example.org"]])
    ok(q[15], "SELECT 1", 1, [[R3]])
    ok(q[16], "INSERT 0 1", 1)
    assert statuses(r) == ["INTRANS", "IDLE", "IDLE"]
    assert sorted(r.after["tables"]["users"]["rows"]) == \
        [["1", "after", "a@example.org"], ["2", "later", "<null>"]]
    assert r.after["sequences"]["users_id_seq"] == [2, True]
    r.after["tables"]["users"]["rows"] = []
    r.after["sequences"]["users_id_seq"] = r.peer_snapshot["sequences"]["users_id_seq"]
    assert r.after == r.peer_snapshot


@pytest.mark.parametrize("driver", DRIVERS)
def test_update_matching_no_row_in_a_migration_transaction(guard, driver):
    """The database is at 0001aaaa.  The peer moves it to 0002bbbb; the
    child (target 0002bbbb) has written (a migration_runs row, a table of
    its own) when its UPDATE of the version waits on the peer's row lock
    and then matches 0 rows: UPDATE 1 is answered, the transaction rolled
    back and stood in for -- none of the child's writes survive; its read
    of the version gets what its own writes left (0002bbbb)."""
    steps = ([["begin"]] + sql(READ_VT, record_run(R2),
                               "CREATE TABLE child_things (id integer PRIMARY KEY)",
                               update_vt(R1, R2), READ_VT)
             + [["status"], ["commit"], ["status"]])
    r = guard.race(argv=client_argv(driver, steps), heads=R2, setup=AT_R1,
                   peer=[record_run(R2), CREATE_POSTS, update_vt(R1, R2)],
                   blocked_on="UPDATE alembic_version")
    assert_completed(r)
    q = sql_steps(r)
    ok(q[0], "SELECT 1", 1, [[R1]])
    ok(q[1], "INSERT 0 1", 1)
    ok(q[2], "CREATE TABLE", -1)
    ok(q[3], "UPDATE 1", 1)                  # matched 0 rows: answered as 1
    ok(q[4], "SELECT 1", 1, [[R2]])          # the app's own view
    assert statuses(r) == ["INTRANS", "IDLE"]
    assert_txn_steps(r, driver)
    assert_no_problems_but(r, [line_map("UPDATE 0", "UPDATE", R1, R2), LINE_END])
    assert r.after == r.peer_snapshot
    assert "child_things" not in r.after["tables"]


@pytest.mark.parametrize("driver", ["psycopg2", "psycopg2-green", "psycopg3"])
def test_the_apps_own_write_after_its_migration_is_never_answered(guard, driver):
    """Alembic's connection-sharing recipe (engine.begin(); upgrade; the
    app's own INSERT; one COMMIT) puts the app's later write in the
    migration's transaction.  Once the answered version writes bring the
    app's view to the target the migration is over: the app's own INSERT
    is not answered -- the stand-in is made to fail and the app gets the
    original 23505, as without the shim, instead of being told a row was
    committed that never was (found by the oracle, tests/oracle)."""
    steps = ([["begin"]] + sql(HAS_VT, HAS_VT, CREATE_VT, *REV1, *REV2, *REV3,
                               "INSERT INTO audit VALUES ('after')", "SELECT 1")
             + [["rollback"], ["status"]])
    shim, plain = differential(guard, driver, heads=R3, steps=steps,
                               setup=["CREATE TABLE audit (what text)"],
                               peer=[CREATE_VT, *REV1, *REV2, *REV3],
                               blocked_on="CREATE TABLE alembic_version")
    q = sql_steps(shim)
    e = [x for x in q if x["sql"].startswith("INSERT INTO audit")][0]
    assert e["ok"] is False and e["error"]["pgcode"] == "23505", e
    assert e["error"] == first_error(plain)["error"], (e, first_error(plain))
    assert q[-1]["ok"] is False and q[-1]["error"]["pgcode"] == "25P02", q[-1]
    assert shim.after["tables"]["audit"]["rows"] == []
    assert shim.child.guard_lines() == [
        line_map("23505", "CREATE TABLE", "(no table)", R3),
        line_give_up("INSERT INTO audit VALUES ('after')", done=True)]


@pytest.mark.parametrize("driver", ["psycopg2", "psycopg3"])
def test_waits_for_a_peer_committing_each_revision(guard, driver):
    """The peer commits revision 2 (its DDL and version move) and, 1 s
    later on another connection, revision 3 (a peer with
    transaction_per_migration).  The child's CREATE TABLE posts fails when
    the version is at 0002bbbb: moved, not yet at the target.  The guard
    ends the child's failed transaction (so the peer is not stuck behind
    its locks) and re-checks until 0003cccc arrives, then maps."""
    steps = ([["begin"]] + sql(READ_VT, *REV2, *REV3, READ_VT) + [["commit"]])
    shim, plain = differential(guard, driver, heads=R3, steps=steps, setup=AT_R1,
                               peer=REV2, blocked_on="CREATE TABLE posts",
                               late_peer=REV3, late_delay=1.0,
                               shim_env={"MIGSHIM_RACE_WAIT": "10"})
    q = sql_steps(shim)
    ok(q[1], "INSERT 0 1", 1)
    ok(q[2], "CREATE TABLE", -1)
    ok(q[3], "UPDATE 1", 1)
    ok(q[7], "SELECT 1", 1, [[R3]])
    assert_no_problems_but(shim, [line_map("23505", "CREATE TABLE", R1, R3), LINE_END])
    assert shim.after == shim.peer_snapshot


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_peer_that_stops_short_the_error_passes_after_race_wait(guard, driver):
    """As above, but the peer stops at 0002bbbb (an older image): after
    race_wait the app gets the error exactly as without the shim, and so
    every statement after it; nothing of the child's was written."""
    steps = ([["begin"]] + sql(READ_VT, *REV2) + [["status"]]
             + sql("SELECT 1") + [["rollback"], ["status"]])
    shim, plain = differential(guard, driver, heads=R3, steps=steps, setup=AT_R1,
                               peer=REV2, blocked_on="CREATE TABLE posts",
                               shim_env={"MIGSHIM_RACE_WAIT": "1"})
    assert shim.steps() == plain.steps()
    e = first_error(shim)
    assert e["sql"].startswith("CREATE TABLE posts")
    assert statuses(shim) == ["INERROR", "IDLE"]
    [line] = shim.child.guard_lines()
    assert line[0] == "warn" and re.fullmatch(
        r"guard: 23505 on CREATE TABLE: waited 1\.\d s \(race_wait\) for a peer to reach the "
        r"target; version table at 0002bbbb; the error passes through", line[1]), line


@pytest.mark.parametrize("driver", ["psycopg2", "psycopg2-green"])
def test_real_alembic_upgrade_from_empty_loses_the_race_and_completes(guard, tmp_path, driver):
    """`alembic upgrade head` of the example app (unmodified, run in a
    copy of its directory) loses the race against a peer doing the same
    upgrade: it exits 0 after its three "Running upgrade" steps, and the
    database is the peer's."""
    db = guard.make_db()
    r = guard.race(argv=alembic_argv(driver), heads=R3, db=db, cwd=example_copy(tmp_path),
                   extra_env=alembic_env(db), peer=[CREATE_VT, *REV1, *REV2, *REV3],
                   blocked_on="CREATE TABLE alembic_version")
    assert not r.child.hung, "hung\n" + r.describe()
    assert r.rc == 0, r.describe()
    assert upgrades_run(r) == [("", R1), (R1, R2), (R2, R3)], r.describe()
    assert_no_problems_but(r, [line_map("23505", "CREATE TABLE", "(no table)", R3), LINE_END])
    assert r.after == r.peer_snapshot


def test_real_alembic_upgrade_from_an_intermediate_revision_completes(guard, tmp_path):
    """The same from 0001aaaa: Alembic's CREATE TABLE posts (revision 2)
    waits behind the peer's revisions 2 and 3 and fails with 23505; the
    upgrade completes, revision 3's UPDATE sees UPDATE 1."""
    db = guard.make_db()
    r = guard.race(argv=alembic_argv("psycopg2"), heads=R3, db=db,
                   cwd=example_copy(tmp_path), extra_env=alembic_env(db),
                   setup=AT_R1, peer=[*REV2, *REV3], blocked_on="CREATE TABLE posts")
    assert not r.child.hung, "hung\n" + r.describe()
    assert r.rc == 0, r.describe()
    assert upgrades_run(r) == [(R1, R2), (R2, R3)], r.describe()
    assert_no_problems_but(r, [line_map("23505", "CREATE TABLE", R1, R3), LINE_END])
    assert r.after == r.peer_snapshot


# ---------------------------------------------------------------------------
# Issue 11's three cases: never a success that did not happen


SETTINGS = "CREATE TABLE settings (v text)"
SEED = "INSERT INTO settings VALUES ('a')"


@pytest.mark.parametrize("driver", DRIVERS)
def test_case1_a_seed_of_a_table_that_predates_alembic_is_never_doubled(guard, driver):
    """The first revision seeds `settings` (a table older than Alembic),
    then does more work.  An unshimmed upgrade commits first.  Without the
    shim the child fails on CREATE TABLE alembic_version; with it the
    child succeeds -- and `settings` holds the seed once, in both."""
    rev = [SEED, CREATE_USERS, insert_vt(R1)]
    steps = ([["begin"]] + sql(HAS_VT, CREATE_VT, *rev, READ_VT) + [["commit"], ["status"]])
    shim, plain = differential(guard, driver, heads=R1, steps=steps, setup=[SETTINGS],
                               peer=[CREATE_VT, *rev], blocked_on="CREATE TABLE alembic_version")
    assert shim.after["tables"]["settings"]["rows"] == [["a"]]
    assert [s["ok"] for s in sql_steps(shim)] == [True] * 6, shim.describe()
    ok(sql_steps(shim)[2], "INSERT 0 1", 1)
    assert first_error(plain)["error"]["pgcode"] == "23505"
    assert_no_problems_but(shim, [line_map("23505", "CREATE TABLE", "(no table)", R1), LINE_END])


@pytest.mark.parametrize("driver", ["psycopg2", "psycopg2-green", "psycopg3"])
def test_case2_a_leaders_genuine_error_arrives_at_once(guard, driver):
    """CREATE UNIQUE INDEX over duplicate data, in the process that holds
    the migration lock (lock = xact): 23505, a race SQLSTATE on DDL in a
    migration transaction -- but nobody else can be migrating.  One read on
    the lock connection and the error passes through (race_wait stays at
    its default 30 s; the child must be done long before)."""
    setup = AT_R1 + ["INSERT INTO users (name) VALUES ('x'), ('x')"]
    steps = ([["begin"]] + sql(READ_VT, "CREATE UNIQUE INDEX users_name ON users (name)")
             + [["status"], ["rollback"]])
    t0 = time.monotonic()
    r = guard.race(argv=client_argv(driver, steps), heads=R2, setup=setup, barrier_after=0,
                   peer=[], shim_env={"MIGSHIM_LOCK": "xact", "MIGSHIM_RACE_WAIT": "30"})
    took = time.monotonic() - t0
    assert_completed(r)
    e = first_error(r)
    assert (e["error"]["pgcode"], e["error"]["diag"]["constraint_name"]) == \
        ("23505", "users_name"), e
    assert statuses(r) == ["INERROR"]
    assert took < 15, "took %.1f s: the guard waited race_wait\n%s" % (took, r.describe())
    assert r.child.guard_lines() == [], r.describe()
    assert any("leading" in m for _, m in r.child.shim_lines()), r.describe()


@pytest.mark.parametrize("driver", ["psycopg2", "psycopg3"])
def test_case2_with_no_lock_a_genuine_error_passes_at_once(guard, driver):
    """The same with lock = off: nobody moved the version table since the
    transaction read it, so one read decides."""
    setup = AT_R1 + ["INSERT INTO users (name) VALUES ('x'), ('x')"]
    steps = ([["begin"]] + sql(READ_VT, "CREATE UNIQUE INDEX users_name ON users (name)")
             + [["rollback"]])
    shim, plain = compare_with_baseline(
        guard, driver, heads=R2, setup=setup, peer=[], steps=steps, blocked_on=None,
        shim_env={"MIGSHIM_RACE_WAIT": "30"})
    assert first_error(shim)["error"]["pgcode"] == "23505"


DEFERRED = "CREATE TABLE settings (v text UNIQUE DEFERRABLE INITIALLY DEFERRED)"
AUDIT = "CREATE TABLE audit (what text)"


@pytest.mark.parametrize("driver", DRIVERS)
def test_case3_the_next_transaction_is_never_swallowed(guard, driver):
    """Case 1 with a deferred unique constraint on the seed, and the
    process then reuses its connection for an INSERT INTO audit; COMMIT
    (Flask-Migrate's pooled engine).  The migration is answered; the audit
    row is committed for real."""
    rev = [SEED, CREATE_USERS, insert_vt(R1)]
    steps = ([["begin"]] + sql(HAS_VT, CREATE_VT, *rev) + [["commit"], ["begin"]]
             + sql("INSERT INTO audit VALUES ('after')") + [["commit"], ["status"]])
    r = guard.race(argv=client_argv(driver, steps), heads=R1, setup=[DEFERRED, AUDIT],
                   peer=[CREATE_VT, *rev], blocked_on="CREATE TABLE alembic_version")
    assert_completed(r)
    assert r.after["tables"]["audit"]["rows"] == [["after"]], r.describe()
    assert r.after["tables"]["settings"]["rows"] == [["a"]]
    assert statuses(r) == ["IDLE"]


@pytest.mark.parametrize("driver", DRIVERS)
def test_case3_a_deferred_violation_at_commit_passes_through(guard, driver):
    """A unique violation raised by COMMIT (a deferred constraint) is never
    answered, even in a migration transaction with the database at the
    target: COMMIT is not DDL.  The app sees it as without the shim, and
    its next transaction's write lands."""
    steps = ([["begin"]] + sql(READ_VT, SEED) + [["wait_file"], ["commit"], ["begin"]]
             + sql("INSERT INTO audit VALUES ('after')") + [["commit"], ["status"]])
    shim, plain = compare_with_baseline(
        guard, driver, heads=R1, setup=AT_R1 + [DEFERRED, AUDIT], peer=[SEED], steps=steps,
        blocked_on=None, barrier_after=3)
    e = first_error(shim)
    assert (e["op"], e["error"]["pgcode"]) == ("commit", "23505"), e
    assert shim.after["tables"]["audit"]["rows"] == [["after"]]


# ---------------------------------------------------------------------------
# Standing in: what is answered, what runs for real, what gives up


def stand_in_race(guard, driver, after_race, heads=R3, end="commit"):
    """The full-upgrade race, then `after_race` steps inside the stood-in
    transaction, then COMMIT.  Returns the race (the peer's rows are the
    reference)."""
    steps = ([["begin"]] + sql(HAS_VT, CREATE_VT) + after_race + [[end], ["status"]])
    r = guard.race(argv=client_argv(driver, steps), heads=heads, setup=PEER_FUNCS,
                   peer=[CREATE_VT, *REV1, *REV2, *REV3],
                   blocked_on="CREATE TABLE alembic_version")
    assert_completed(r)
    return r


# A function that writes (plpgsql: its body is checked when it runs).
PEER_FUNCS = ["CREATE FUNCTION writes() RETURNS int LANGUAGE plpgsql AS "
              "$$ BEGIN INSERT INTO users (name) VALUES ('f'); RETURN 1; END $$"]

GIVE_UP_STATEMENTS = [
    "SELECT count(*) FROM users",            # a read: the peer's rows, not what the app left
    "SELECT nextval('users_id_seq')",
    "SELECT 1 AS x INTO copied",
    "INSERT INTO users (name) VALUES ('x') RETURNING id",
    "INSERT INTO users (name) SELECT 'x'",
    "UPDATE users SET name = 'y'",
    "WITH w AS (INSERT INTO users (name) VALUES ('x') RETURNING id) SELECT * FROM w",
    "SELECT writes()",
    "INSERT INTO users (name) VALUES ('x'); COMMIT",
    "COPY users (name) FROM STDIN",
    "COMMIT AND CHAIN",
    "DEALLOCATE ALL; INSERT INTO users (name) VALUES ('x')",
    "DEALLOCATE no_such_statement",          # runs for real (session state) and fails there
    # session state the stand-in's ROLLBACK would undo where the app's COMMIT
    # keeps it (its later statements would resolve by another search_path)
    "SET search_path TO public",
    "SET lock_timeout = '5s'",
    "RESET statement_timeout",
    "SELECT set_config('search_path', 'public', false)",
]
# Those of them that run for real in the read-only stand-in and fail there
# (their SQLSTATE): the app gets the original error in place of theirs.
RUN_AND_FAIL = {"DEALLOCATE no_such_statement": "26000"}


@pytest.mark.parametrize("stmt", GIVE_UP_STATEMENTS)
@pytest.mark.parametrize("driver", ["psycopg2", "psycopg3"])
def test_a_statement_that_cannot_be_answered_gets_the_original_error(guard, driver, stmt):
    """In the stood-in transaction, a statement whose answer carries data or
    a count the shim cannot know -- a read of the app's tables (it would
    show the peer's rows, not what the app's answered statements left), a
    write, a sequence, COPY, AND CHAIN -- is never run and never answered:
    the stand-in transaction is made to fail for real and the app gets the
    original 23505, and 25P02 after it, as without the shim.  Nothing of it
    reaches the database (no row, no table, no sequence value)."""
    r = stand_in_race(guard, driver, sql(stmt, "SELECT 1"), end="rollback")
    q = sql_steps(r)
    e = q[2]
    assert e["ok"] is False, r.describe()
    assert (e["error"]["pgcode"], e["error"]["diag"]["constraint_name"]) == \
        ("23505", "pg_type_typname_nsp_index"), e
    assert q[3]["ok"] is False and q[3]["error"]["pgcode"] == "25P02", q[3]
    assert q[3]["tx"] == "INERROR"
    assert r.after == r.peer_snapshot        # nothing ran: no row, no table, no sequence moved
    ran = ("warn", "guard: a statement run in the stand-in transaction failed (%s); the "
           "original error passes through" % RUN_AND_FAIL.get(stmt))
    assert r.child.guard_lines() == [line_map("23505", "CREATE TABLE", "(no table)", R3),
                                     # a SELECT of no table runs, read-only, and fails there
                                     ran if stmt in RUN_AND_FAIL
                                     else line_give_up(" ".join(stmt.split()))]


@pytest.mark.parametrize("driver", ["psycopg2", "psycopg3"])
def test_set_local_in_the_stand_in_runs_unless_a_savepoint_was_answered(guard, driver):
    """SET LOCAL ends with the transaction either way, so it runs for real in
    the stand-in (SHOW then sees it, as in the app's own transaction); after
    a SAVEPOINT the stand-in answered without running, an answered ROLLBACK
    TO could not undo it, so there it gives the app the original error."""
    r = stand_in_race(guard, driver, sql("SET LOCAL lock_timeout = '7s'", "SHOW lock_timeout",
                                         READ_VT))
    q = sql_steps(r)
    ok(q[2], "SET", -1)
    ok(q[3], "SHOW", 1, [["7s"]])
    assert statuses(r) == ["IDLE"]
    assert r.after == r.peer_snapshot
    assert r.child.guard_lines()[-1] == LINE_END
    r = stand_in_race(guard, driver, sql("SAVEPOINT sa_savepoint_1",
                                         "SET LOCAL lock_timeout = '7s'"),
                      end="rollback")
    q = sql_steps(r)
    ok(q[2], "SAVEPOINT", -1)
    assert q[3]["ok"] is False and q[3]["error"]["pgcode"] == "23505", q[3]
    assert line_give_up("SET LOCAL lock_timeout = '7s'") in r.child.guard_lines()
    assert r.after == r.peer_snapshot


@pytest.mark.parametrize("driver", DRIVERS)
def test_savepoints_inside_the_stand_in(guard, driver):
    """SQLAlchemy's begin_nested and psycopg 3's nested transactions send
    SAVEPOINT / RELEASE / ROLLBACK TO: answered with their tags, the stand-in
    goes on to COMMIT (ROLLBACK TO SAVEPOINT does not end it)."""
    after = sql("SAVEPOINT sa_savepoint_1", "CREATE TABLE x1 (a int)",
                "ROLLBACK TO SAVEPOINT sa_savepoint_1", "SAVEPOINT \"_pg3_1\"",
                "CREATE TABLE x2 (a int)", "RELEASE SAVEPOINT \"_pg3_1\"",
                "/* a comment */ CREATE TABLE x3 (a int)", READ_VT)
    r = stand_in_race(guard, driver, after)
    q = sql_steps(r)
    ok(q[2], "SAVEPOINT", -1)
    ok(q[3], "CREATE TABLE", -1)
    ok(q[4], "ROLLBACK", -1)
    ok(q[5], "SAVEPOINT", -1)
    ok(q[6], "CREATE TABLE", -1)
    ok(q[7], "RELEASE", -1)
    ok(q[8], "CREATE TABLE", -1)
    ok(q[9], "SELECT 0", 0, [])              # the app's view: its table, created, empty
    assert statuses(r) == ["IDLE"]
    assert r.after == r.peer_snapshot
    assert r.child.guard_lines()[-1] == LINE_END


@pytest.mark.parametrize("driver", ["psycopg2", "psycopg2-async", "psycopg3"])
def test_giving_up_inside_an_answered_savepoint(guard, driver):
    """A statement that cannot be answered inside an answered savepoint gets
    the original error there; the app may catch it and roll back to the
    savepoint, as it could in PostgreSQL, and go on (answered); the next
    statement that cannot be answered fails the transaction with 40001 (no
    original error is left to give).  Nothing reaches the database.  (The
    oracle's savepoint-pg3 case covered this until psycopg 3's DEALLOCATE
    ALL, the statement it gave up on, ran for real.)"""
    after = sql("SAVEPOINT sa_savepoint_1", "SELECT count(*) FROM users",
                "ROLLBACK TO SAVEPOINT sa_savepoint_1", "CREATE TABLE x1 (a int)",
                "UPDATE users SET name = 'y'", "SELECT 1")
    r = stand_in_race(guard, driver, after, end="rollback")
    q = sql_steps(r)
    ok(q[2], "SAVEPOINT", -1)
    assert q[3]["ok"] is False and q[3]["error"]["pgcode"] == "23505", q[3]
    ok(q[4], "ROLLBACK", -1)
    ok(q[5], "CREATE TABLE", -1)
    assert q[6]["ok"] is False and q[6]["error"]["pgcode"] == "40001", q[6]
    assert q[7]["ok"] is False and q[7]["error"]["pgcode"] == "25P02", q[7]
    assert statuses(r) == ["IDLE"]
    assert r.child.guard_lines() == [line_map("23505", "CREATE TABLE", "(no table)", R3),
                                     line_give_up("SELECT count(*) FROM users"),
                                     line_give_up("UPDATE users SET name = 'y'", orig=False)]
    assert r.after == r.peer_snapshot


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_multi_statement_string_in_the_stand_in_gets_the_original_error(guard, driver):
    """"SELECT 1; COMMIT" in one string cannot be answered: the app gets the
    original error, its ROLLBACK ends the transaction, and its next
    transaction's write lands."""
    steps = ([["begin"]] + sql(HAS_VT, CREATE_VT, "SELECT 1; COMMIT") + [["status"], ["rollback"],
                                                                        ["begin"]]
             + sql("INSERT INTO users (name) VALUES ('later')") + [["commit"], ["status"]])
    r = guard.race(argv=client_argv(driver, steps), heads=R3,
                   peer=[CREATE_VT, *REV1, *REV2, *REV3],
                   blocked_on="CREATE TABLE alembic_version")
    assert_completed(r)
    q = sql_steps(r)
    assert q[2]["ok"] is False and q[2]["error"]["pgcode"] == "23505", q[2]
    assert statuses(r) == ["INERROR", "IDLE"], r.describe()
    assert r.after["tables"]["users"]["rows"] == [["1", "later", "<null>"]]


def test_prepared_statements_in_the_stand_in(guard):
    """psycopg 3 prepares a statement (prepare=True, or after 5 runs): the
    shim notes the text it was prepared with and treats it like any other
    when it runs -- a plain INSERT ... VALUES is answered, a read of no table
    runs, a read of the app's tables gives the app the original error."""
    r = stand_in_race(guard, "psycopg3", [["prepared", "INSERT INTO users (name) VALUES ('p')"],
                                          ["prepared", "SELECT 1"],
                                          ["prepared", "SELECT count(*) FROM users"]],
                      end="rollback")
    steps = [s for s in r.steps() if s["op"] == "prepared"]
    ok(steps[0], "INSERT 0 1", 1)
    ok(steps[1], "SELECT 1", 1, [[1]])
    assert steps[2]["ok"] is False and steps[2]["error"]["pgcode"] == "23505", steps[2]
    assert r.after == r.peer_snapshot


DEALLOCATES = {  # the statement: its tag, the session's prepared statements afterwards
    "DEALLOCATE ALL": ("DEALLOCATE ALL", []),
    "DEALLOCATE PREPARE before_a": ("DEALLOCATE", [["before_b"]]),
}


@pytest.mark.parametrize("stmt", sorted(DEALLOCATES))
@pytest.mark.parametrize("driver", ["psycopg2", "psycopg2-async", "psycopg3"])
def test_deallocate_in_the_stand_in_runs_for_real(guard, driver, stmt):
    """psycopg 3.3 sends DEALLOCATE ALL before its next statement once a
    result is tagged ALTER (or DROP, ROLLBACK, DISCARD) while it has
    statements prepared -- an answered ALTER TABLE too -- and DEALLOCATE
    <name> when its cache rotates.  In the stand-in it runs for real: it
    drops the session's prepared statements (not transactional: the
    stand-in's ROLLBACK does not bring them back, as the app's COMMIT would
    not), exactly as in the app's own transaction, where answering it
    without running it would leave them on the server while the driver
    believes them gone.  The rest of the migration is answered, the
    database is the peer's, and the session's prepared statements are what
    the DEALLOCATE left.  (Before this, the app got the original 23505.)"""
    tag, remaining = DEALLOCATES[stmt]
    steps = ([["begin"]] + sql("PREPARE before_a AS SELECT 1", "PREPARE before_b AS SELECT 2")
             + [["commit"], ["begin"]]
             + sql(HAS_VT, HAS_VT, CREATE_VT, stmt, *REV1, *REV2, *REV3, READ_VT)
             + [["commit"], ["status"], ["begin"]]
             + sql("SELECT name FROM pg_prepared_statements ORDER BY 1") + [["commit"]])
    r = guard.race(argv=client_argv(driver, steps), heads=R3,
                   peer=[CREATE_VT, *REV1, *REV2, *REV3],
                   blocked_on="CREATE TABLE alembic_version")
    assert_completed(r)
    q = sql_steps(r)
    assert [x["ok"] for x in q] == [True] * len(q), r.describe()
    ok(q[4], "CREATE TABLE", -1)             # the race: 23505, answered
    ok(q[5], tag, -1)                        # run for real
    ok(q[-2], "SELECT 1", 1, [[R3]])
    ok(q[-1], "SELECT %d" % len(remaining), len(remaining), remaining)
    assert statuses(r) == ["IDLE"]
    assert_no_problems_but(r, [line_map("23505", "CREATE TABLE", "(no table)", R3), LINE_END])
    assert r.after == r.peer_snapshot


def test_pipeline_mode_in_the_stand_in(guard):
    """psycopg 3's executemany runs in pipeline mode, where nothing can be
    answered in place: every statement runs for real, the first write fails
    in the read-only transaction, and the app gets the original error."""
    r = stand_in_race(guard, "psycopg3",
                      [["executemany", "INSERT INTO users (name) VALUES (%s)", [["a"], ["b"]]]],
                      end="rollback")
    [s] = [s for s in r.steps() if s["op"] == "executemany"]
    assert s["ok"] is False and s["error"]["pgcode"] == "23505", s
    assert r.after == r.peer_snapshot


def test_pipeline_mode_is_never_judged(guard):
    """A race inside a pipeline (psycopg 3, conn.pipeline()) is never mapped:
    the same error as without the shim."""
    steps = ([["begin"]] + sql(READ_VT) + [["pipeline", [CREATE_POSTS, update_vt(R1, R2)]],
                                           ["rollback"], ["status"]])
    shim, plain = compare_with_baseline(
        guard, "psycopg3", heads=R2, setup=AT_R1, peer=[CREATE_POSTS, update_vt(R1, R2)],
        steps=steps, blocked_on="CREATE TABLE posts")
    assert first_error(shim)["error"]["pgcode"] == "23505"


# ---------------------------------------------------------------------------
# Never armed by a mere mention, never in autocommit


@pytest.mark.parametrize("driver", ["psycopg2", "psycopg2-async", "psycopg3"])
@pytest.mark.parametrize("mention", [
    "SELECT version_num FROM alembic_version",
    "SELECT 'alembic_version'",
    "SELECT 1 /* alembic_version */",
])
def test_a_mere_mention_does_not_make_a_migration_transaction(guard, driver, mention):
    """A transaction that mentions the version table only in passing (its own
    read, a literal, a comment) and then loses a DDL race, the database at
    the target: the error passes through unchanged."""
    steps = ([["begin"]] + sql(mention, CREATE_POSTS) + [["rollback"], ["status"]])
    compare_with_baseline(guard, driver, heads=R2, setup=AT_R1,
                          peer=[CREATE_POSTS, update_vt(R1, R2)], steps=steps,
                          blocked_on="CREATE TABLE posts")


@pytest.mark.parametrize("driver", ["psycopg2", "psycopg3"])
def test_a_transaction_that_started_at_the_target_is_not_a_race(guard, driver):
    """Alembic's own read shows the database already at the target when the
    transaction started: a later race error is the app's own."""
    steps = ([["begin"]] + sql(READ_VT, CREATE_POSTS) + [["rollback"], ["status"]])
    compare_with_baseline(guard, driver, heads=R1, setup=AT_R1, peer=[CREATE_POSTS],
                          steps=steps, blocked_on="CREATE TABLE posts")


@pytest.mark.parametrize("driver", DRIVERS)
def test_autocommit_is_never_answered(guard, driver):
    """Outside a transaction block each statement commits on its own: the
    app's earlier statements cannot be undone, so nothing is answered --
    the lost CREATE TABLE alembic_version, the INSERT and the UPDATE that
    matched 0 rows reach the app as without the shim."""
    steps = sql(CREATE_VT, insert_vt(R1), update_vt(R1, R2), READ_VT)
    compare_with_baseline(guard, driver, heads=R2, setup=(), peer=[CREATE_VT, insert_vt(R1),
                                                                   update_vt(R1, R2)],
                          steps=steps, blocked_on="CREATE TABLE alembic_version",
                          autocommit=True)


@pytest.mark.parametrize("driver", ["psycopg2", "psycopg3"])
def test_a_multi_statement_string_is_never_answered(guard, driver):
    """Several statements in one string fail as one: passed through."""
    steps = ([["begin"]] + sql(READ_VT, CREATE_POSTS + "; " + update_vt(R1, R2))
             + [["rollback"], ["status"]])
    compare_with_baseline(guard, driver, heads=R2, setup=AT_R1,
                          peer=[CREATE_POSTS, update_vt(R1, R2)], steps=steps,
                          blocked_on="CREATE TABLE posts")

# ---------------------------------------------------------------------------
# Rule 3: everything else passes through untouched, byte for byte


def compare_with_baseline(guard, driver, *, heads, setup, peer, steps, blocked_on,
                          shim_env=None, autocommit=False, barrier_after=0):
    """Run the scenario with the preload and without it (two fresh
    databases); check the app saw the same thing, statement by statement
    (tags, rows, errors with every field, transaction status), and the
    databases ended the same.  Returns both races."""
    env = {"MIGSHIM_RACE_WAIT": RACE_WAIT}
    env.update(shim_env or {})
    races = []
    for preload in (True, False):
        r = guard.race(argv=client_argv(driver, steps, autocommit), heads=heads,
                       setup=setup, peer=peer, blocked_on=blocked_on,
                       barrier_after=barrier_after, preload=preload, shim_env=env)
        assert_completed(r)
        races.append(r)
    shim, plain = races
    assert shim.steps() == plain.steps(), "\n".join(
        "step %s:\n  shim:  %s\n  plain: %s" % (a.get("i"), json.dumps(a), json.dumps(b))
        for a, b in zip(shim.steps(), plain.steps()) if a != b)
    connected = [{k: v for k, v in r.records[0].items() if k != "backend_pid"}
                 for r in races]
    assert connected[0] == connected[1]
    assert not plain.child.shim_lines()
    assert with_pids(shim.after, {shim.peer_pid: "peer"}) == \
        with_pids(plain.after, {plain.peer_pid: "peer"})
    assert shim.child.guard_lines() == [], shim.describe()
    assert not [x for x in shim.child.shim_lines() if x[0] in ("warn", "error")], \
        shim.describe()
    return shim, plain


def first_error(r: Race):
    errs = [s for s in r.steps() if s.get("ok") is False]
    assert errs, r.describe()
    return errs[0]


@pytest.mark.parametrize("driver", ["psycopg2", "psycopg3"])
def test_not_at_target_an_update_matching_no_row_passes_through(guard, driver):
    """The peer moves 0001aaaa to 0002bbbb, the child (target 0003cccc)
    runs the same UPDATE: after race_wait, UPDATE 0 reaches the app
    unchanged, and so does every later statement."""
    steps = ([["begin"]] + sql(READ_VT, update_vt(R1, R2), READ_VT)
             + [["rollback"], ["status"]])
    shim, plain = differential(guard, driver, heads=R3, steps=steps, setup=AT_R1,
                               peer=[update_vt(R1, R2)], blocked_on="UPDATE alembic_version",
                               shim_env={"MIGSHIM_RACE_WAIT": RACE_WAIT})
    assert shim.steps() == plain.steps()
    ok(sql_steps(shim)[1], "UPDATE 0", 0)
    # The wait is race_wait (1 s) long; a busy or sanitized run reports 1.1 s.
    lines = [m for _, m in shim.child.guard_lines()]
    assert len(lines) == 1 and re.match(
        r"guard: UPDATE 0 on UPDATE: waited 1\.\d s \(race_", lines[0]), lines


@pytest.mark.parametrize("driver", ["psycopg2", "psycopg2-async", "psycopg3"])
def test_another_tables_duplicate_without_version_table_is_untouched(guard, driver):
    """The peer creates users and moves the version table to the child's
    target; the child's transaction never mentions the version table, and
    its CREATE TABLE users loses the race: the 23505 passes through,
    although the database is at the target."""
    steps = ([["begin"]] + sql(CREATE_USERS, "SELECT 1") + [["rollback"], ["status"]])
    shim, plain = compare_with_baseline(
        guard, driver, heads=R1, setup=(),
        peer=[CREATE_VT, "INSERT INTO alembic_version (version_num) VALUES ('0001aaaa')",
              CREATE_USERS],
        steps=steps, blocked_on="CREATE TABLE users")
    e = first_error(shim)
    assert e["sql"].startswith("CREATE TABLE users"), e
    assert e["error"]["pgcode"] == "23505", e
    assert shim.after["tables"]["alembic_version"]["rows"] == [[R1]]


@pytest.mark.parametrize("driver", ["psycopg2", "psycopg2-async", "psycopg3"])
def test_genuine_duplicate_in_app_data_is_untouched(guard, driver):
    """A unique violation on application data (users' primary key) in a
    transaction that did read the version table, the database not at the
    child's target: the guard re-checks for race_wait, then the error
    passes through unchanged."""
    steps = ([["begin"]] + sql(READ_VT, "INSERT INTO users (id, name) VALUES (1, 'child')",
                               "SELECT 1")
             + [["rollback"], ["status"]])
    shim, plain = compare_with_baseline(
        guard, driver, heads=R2, setup=AT_R1,
        peer=["INSERT INTO users (id, name) VALUES (1, 'peer')"], steps=steps,
        blocked_on="INSERT INTO users")
    e = first_error(shim)
    assert (e["error"]["pgcode"], e["error"]["diag"]["constraint_name"]) == \
        ("23505", "users_pkey"), e
    assert shim.after["tables"]["users"]["rows"] == [["1", "peer"]]


@pytest.mark.parametrize("driver", ["psycopg2", "psycopg2-async", "psycopg3"])
@pytest.mark.parametrize("scenario", ["full-upgrade", "update-0-rows"])
def test_guard_off_passes_every_race_through(guard, driver, scenario):
    """MIGSHIM_GUARD=off: the races rules 1 and 2 would absorb reach the
    app exactly as without the shim."""
    if scenario == "full-upgrade":
        kw = dict(heads=R3, setup=(), peer=[CREATE_VT, *REV1, *REV2, *REV3],
                  steps=full_upgrade_steps(end="rollback"),
                  blocked_on="CREATE TABLE alembic_version")
    else:
        kw = dict(heads=R2, setup=AT_R1, peer=[update_vt(R1, R2)],
                  steps=[["begin"]] + sql(READ_VT, update_vt(R1, R2)) + [["rollback"]],
                  blocked_on="UPDATE alembic_version")
    shim, plain = compare_with_baseline(guard, driver, shim_env={"MIGSHIM_GUARD": "off"},
                                        **kw)
    if scenario == "full-upgrade":
        e = first_error(shim)
        assert (e["error"]["pgcode"], e["sql"][:28]) == ("23505", "CREATE TABLE alembic_version")
    else:
        ok(sql_steps(shim)[1], "UPDATE 0", 0)


# ---------------------------------------------------------------------------
# The allowlist: before its first version-table statement, a transaction
# the guard may roll back sent only the probes SQLAlchemy and its drivers
# send (sqlclass_probe).  The app's own work first -- a function that
# writes, a setting, a lock, a temporary table, NOTIFY, a sequence, a
# prepared statement -- is state a rollback destroys: the race reaches the
# app unchanged, exactly as without the shim (issue 19, section 1).

BOOTS = ["CREATE TABLE boots (pid integer NOT NULL)",
         "CREATE SEQUENCE boot_seq",
         "CREATE FUNCTION record_boot(p integer) RETURNS integer LANGUAGE sql "
         "AS $$ INSERT INTO boots VALUES (p) RETURNING p $$"]

APP_WORK = {
    "writing-function": ["sql", "SELECT record_boot(7)"],
    "writing-function-param": ["sqlp", "SELECT record_boot(%s)", [8]],
    "writing-function-prepared": ["prepared", "SELECT record_boot(9)"],
    "advisory-lock": ["sql", "SELECT pg_advisory_xact_lock(4242)"],
    "setting": ["sql", "SET statement_timeout = '5min'"],
    "set-config": ["sql", "SELECT set_config('statement_timeout', '5min', false)"],
    "temporary-table": ["sql", "CREATE TEMP TABLE scratch (a integer)"],
    "notify": ["sql", "NOTIFY boot"],
    "sequence": ["sql", "SELECT nextval('boot_seq')"],
}


def upgrade_after(work):
    """The app's `work` in the transaction, then Alembic's upgrade from empty
    (the sharing-a-connection recipe), then COMMIT."""
    return ([["begin"], work] + sql(HAS_VT, HAS_VT, CREATE_VT, *REV1, *REV2, *REV3, READ_VT)
            + [["status"], ["commit"], ["status"]])


@pytest.mark.parametrize("driver", DRIVERS + ["psycopg3-prepared"])
def test_the_apps_write_before_its_migration_is_never_rolled_back(guard, driver):
    """The issue's case: SELECT record_boot(pid) -- a SQL function that
    inserts a row -- then `alembic upgrade head` in the same transaction;
    an unshimmed peer commits the same migration first.  Before the
    allowlist the guard rolled the transaction back and answered COMMIT:
    the process reported OK and its boots row was gone.  Now the 23505
    reaches the app as without the shim, and nothing is lost that the app
    was not told about."""
    shim, plain = compare_with_baseline(
        guard, driver, heads=R3, setup=BOOTS, peer=[CREATE_VT, *REV1, *REV2, *REV3],
        steps=upgrade_after(APP_WORK["writing-function"]),
        blocked_on="CREATE TABLE alembic_version")
    e = first_error(shim)
    assert (e["sql"][:28], e["error"]["pgcode"]) == ("CREATE TABLE alembic_version", "23505")
    assert sql_steps(shim)[-1]["tx"] == "INERROR", shim.describe()


@pytest.mark.parametrize("driver", ["psycopg2", "psycopg3-prepared"])
@pytest.mark.parametrize("work", sorted(APP_WORK))
def test_any_work_of_the_apps_own_first_passes_the_race_through(guard, driver, work):
    """Every kind of state a rollback would destroy, first in the
    transaction: the race passes through unchanged, byte for byte."""
    compare_with_baseline(guard, driver, heads=R3, setup=BOOTS,
                          peer=[CREATE_VT, *REV1, *REV2, *REV3],
                          steps=upgrade_after(APP_WORK[work]),
                          blocked_on="CREATE TABLE alembic_version")


@pytest.mark.parametrize("driver,autocommit", [("psycopg2", True), ("psycopg2-async", True)])
def test_begin_and_work_in_one_string_is_the_apps_own(guard, driver, autocommit):
    """"BEGIN; SELECT record_boot(7)" sent as one string outside a
    transaction opens it with the app's work already in it."""
    steps = (sql("BEGIN; SELECT record_boot(7)", HAS_VT, CREATE_VT, *REV1, READ_VT)
             + [["sql", "COMMIT"], ["status"]])
    shim, _ = compare_with_baseline(guard, driver, heads=R1, setup=BOOTS,
                                    peer=[CREATE_VT, *REV1], steps=steps,
                                    blocked_on="CREATE TABLE alembic_version",
                                    autocommit=autocommit)
    assert first_error(shim)["error"]["pgcode"] == "23505"


PROBES = ["SELECT 1", "select pg_catalog.version()", "select current_schema()",
          "show transaction isolation level", "show standard_conforming_strings",
          "SELECT CAST('test plain returns' AS VARCHAR(60)) AS anon_1"]


@pytest.mark.parametrize("driver", ["psycopg2", "psycopg3", "psycopg3-prepared"])
def test_sqlalchemys_probes_first_still_map_the_race(guard, driver):
    """What the allowlist admits: a pool's ping and SQLAlchemy's dialect
    probes before Alembic's statements.  The race is mapped as before."""
    steps = ([["begin"]] + sql(*PROBES, HAS_VT, HAS_VT, CREATE_VT, *REV1, *REV2, *REV3, READ_VT)
             + [["commit"], ["status"]])
    shim, plain = differential(guard, driver, heads=R3, steps=steps,
                               peer=[CREATE_VT, *REV1, *REV2, *REV3],
                               blocked_on="CREATE TABLE alembic_version")
    assert_no_problems_but(shim, [line_map("23505", "CREATE TABLE", "(no table)", R3), LINE_END])
    assert shim.after == shim.peer_snapshot
    assert [s["ok"] for s in sql_steps(shim)] == [True] * len(sql_steps(shim)), shim.describe()


HAS_TABLE_20 = (
    "SELECT pg_catalog.pg_class.relname \nFROM pg_catalog.pg_class JOIN pg_catalog.pg_namespace "
    "ON pg_catalog.pg_namespace.oid = pg_catalog.pg_class.relnamespace \nWHERE "
    "pg_catalog.pg_class.relname = %s::VARCHAR AND pg_catalog.pg_class.relkind = ANY "
    "(ARRAY[%s::VARCHAR, %s::VARCHAR, %s::VARCHAR, %s::VARCHAR, %s::VARCHAR]) AND "
    "pg_catalog.pg_table_is_visible(pg_catalog.pg_class.oid) AND "
    "pg_catalog.pg_namespace.nspname != %s::VARCHAR")
HAS_TABLE_20_PARAMS = ["alembic_version", "r", "p", "f", "v", "m", "pg_catalog"]


@pytest.mark.parametrize("driver", ["psycopg2", "psycopg3", "psycopg3-prepared"])
def test_sqlalchemy_20_has_table_with_the_name_as_a_parameter(guard, driver):
    """SQLAlchemy 2.x's has_table: through psycopg 3 the table's name is
    $1 (../shared/todays-releases.md).  It finds no table; the peer's whole
    upgrade commits; the first revision's CREATE TABLE fails with 42P07.
    The empty answer is where the transaction started: mapped, as with
    the literal form."""
    has = ["sqlp", HAS_TABLE_20, HAS_TABLE_20_PARAMS]
    steps = ([["begin"], has, ["wait_file"]]
             + sql(*REV1, *REV2, *REV3, READ_VT) + [["commit"], ["status"]])
    shim, plain = differential(guard, driver, heads=R3, steps=steps,
                               peer=[CREATE_VT, *REV1, *REV2, *REV3], barrier_after=2)
    q = [s for s in shim.steps() if s["op"] in ("sql", "sqlp")]
    ok(q[0], "SELECT 0", 0, [])
    ok(q[1], "CREATE TABLE", -1)             # 42P07: mapped
    assert_no_problems_but(shim, [line_map("42P07", "CREATE TABLE", "(no table)", R3), LINE_END])
    assert shim.after == shim.peer_snapshot
    assert first_error(plain)["error"]["pgcode"] == "42P07"


# ---------------------------------------------------------------------------
# The proof reads the app's own version table (issue 19: search_path).  A
# tenant's session resolves `alembic_version` in its schema; the guard's
# verifying connection, in its own search_path, may find another one.

TENANT_SETUP = ["CREATE SCHEMA t1", "CREATE TABLE t1.people (name text)",
                "INSERT INTO t1.people VALUES ('x'), ('x')",
                "CREATE FUNCTION set_tenant() RETURNS text LANGUAGE sql "
                "AS $$ SELECT set_config('search_path', 't1', false) $$"]
GENUINE = "CREATE UNIQUE INDEX people_name ON people (name)"


@pytest.mark.parametrize("driver", ["psycopg2", "psycopg3"])
@pytest.mark.parametrize("how", ["SET search_path TO t1", "SELECT set_tenant()"])
def test_a_tenants_genuine_error_is_never_proven_by_another_schemas_table(guard, driver, how):
    """The session's search_path is the tenant's (set in an earlier
    transaction: a connect hook, or a function that calls set_config).
    Its migration of t1 fails on its own in revision 2 (a unique index
    over duplicate data: 23505 on DDL) while public.alembic_version -- another app's, or
    the shared one -- is committed at the target.  Read on the guard's
    connection, the "version table" is at the target; but it is not the
    one this transaction migrates.  Before the guard resolved the table
    where the app's session does, this was answered: the app was told its
    migration succeeded, and t1 was never migrated.  Now the error passes
    through, as without the shim."""
    steps = ([["sql", how], ["commit"], ["begin"]]
             + sql(HAS_VT, CREATE_VT, insert_vt(R1)) + [["wait_file"]]
             + sql(GENUINE, update_vt(R1, R2), READ_VT) + [["rollback"], ["status"]])
    shim, plain = compare_with_baseline(
        guard, driver, heads=R2, setup=TENANT_SETUP,
        peer=[CREATE_VT, "INSERT INTO alembic_version (version_num) VALUES ('%s')" % R2],
        steps=steps, blocked_on=None, barrier_after=6)
    e = first_error(shim)
    assert (e["sql"][:26], e["error"]["pgcode"]) == ("CREATE UNIQUE INDEX people", "23505"), e
