"""The start-up gate's rules (src/gate.c, src/lock.c), one scenario per test,
each on a fresh database with its interleaving forced -- never left to luck.

How the interleavings are forced:

* children run tests/integration/gate_workloads/steps.py, a scripted libpq
  client (psycopg2 or psycopg 3) that emits one JSON event per step on
  stdout and waits on / creates barrier files ($GATE_BARRIERS) between
  steps, so the test decides when each child moves on;
* "a peer leading" is played by the test itself: with MIGSHIM_LOCK_KEY=K
  in the child, the test holds pg_advisory_xact_lock(K) in an open
  transaction on its own connection, and ends it (after writing the
  version table, or not) when the scenario says so;
* what the gate did is read from outside: its log lines (exact wording),
  pg_stat_activity (its lock connection is named 'migshim lock pid=P
  host=H'), pg_locks (the advisory lock and its key), the version table,
  and for the "leaves no trace" rules the server log with log_statement =
  all set on the test database.

Covered: at head (one round trip, no extra connection, idle hand-over, a
second connection logs nothing); behind and alone (lead, keep the lock over
a commit short of the target, release at the commit reaching it; xact and
session locks); a waiter (blocked, statements of at most one 250 ms slice,
wakes within 1 s of the peer's commit; xact and session); a leader killed
mid-lead; leader_grace (a peer leads after it; the lapsed leader gives up
and takes the lock again for a late migration); wait_timeout (proceed with
the holder named, fail, the every-10 s holder report); target unknown (no
wait at connect, lock per version-table transaction); a database ahead of
the scripts; psycopg 3 (ctypes) processes racing Alembic's statements, with
and without the shim; threads of one process; two heads and a merge
revision (cross-checked with Alembic's own ScriptDirectory); a configured
version table in a schema named 'we"ird;schema'.

Three gate bugs these tests found are fixed and covered here: lock =
session enforcing leader_grace on a silent leader (idle_session_timeout),
and on_timeout = fail stopping the version-table statement when the wait
happens at a statement (target unknown, or a lapsed leader).

Every wait is bounded (barriers and polls time out, children are killed
with their process group at teardown), so nothing here can hang.

The pytest process never loads the shim; children get LD_PRELOAD and
MIGSHIM_* only as each test says (conftest.child_base_env strips the rest),
and each runs in its own temp working directory (the shim reads
./alembic.ini, ./migrations/alembic.ini, ./pyproject.toml, ./migshim.conf
there).

Run: tests/harness/with-pg.sh /usr/bin/python3 -m pytest -q tests/integration/test_gate.py
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import socket
import subprocess
import textwrap
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional

import pytest

from conftest import PYTHON, child_base_env, require_migshim_lib
import shimbuild
from conftest import ASAN_EXIT_HANG


STEPS = Path(__file__).resolve().parent / "gate_workloads" / "steps.py"
HOSTNAME = socket.gethostname()[:63]  # what the shim puts in application_name

R1, R2, R2B, R3 = "0001aaaa", "0002bbbb", "0002cccc", "0003dddd"

CREATE_VT = ("CREATE TABLE alembic_version (\n"
             "    version_num VARCHAR(32) NOT NULL, \n"
             "    CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)\n)")


def insert_vt(rev):
    return "INSERT INTO alembic_version (version_num) VALUES ('%s')" % rev


# ---------------------------------------------------------------------------
# the gate's log lines

LINE_RE = re.compile(r"^migshim\[(\d+)\]: (\w+): (.*)$")


class Lines:
    """Regexes (fullmatch) for the gate's messages about database `d`."""

    def __init__(self, d):
        D = re.escape('database "%s"' % d)
        S = r"(?P<s>\d+\.\d{3})"
        self.at_head = D + r" is at head \((?P<revs>[^)]*)\); proceeding"
        self.lead = (D + r": leading: this process holds the migration lock "
                     r"\(key (?P<key>-?\d+)\)(?P<after> after waiting)? and migrates "
                     r"from (?P<frm>\S+) to (?P<to>\S+)"
                     r"(?P<again> \(again, for a late migration\))?")
        self.waited_at = (D + r": waited " + S + r" s for the migration lock; "
                          r"database at (?P<revs>\S+); proceeding")
        self.waited_peer = (D + r": waited " + S + r" s; a peer migrated it to "
                            r"(?P<revs>\S+); proceeding")
        self.waited_any = "(?:%s|%s)" % (self.waited_at.replace("?P<", "?P<a_"),
                                          self.waited_peer.replace("?P<", "?P<p_"))
        self.peer_before = (D + r": a peer migrated it to (?P<revs>\S+) before this "
                            r"process got the lock; proceeding")
        self.released = (D + r": migrated to (?P<revs>\S+); migration lock released "
                         r"after " + S + " s")
        self.gave_up = (D + r": no statement on the version table \S+ within leader_grace "
                        r"\((?P<g>[\d.]+) s\); gave the migration lock up\.  If this process "
                        r"migrates, set version_table \(MIGSHIM_VERSION_TABLE\) to the table its "
                        r"migrations use")
        self.peer_lapsed = (D + r": the process that held the migration lock gave it up after "
                            r"leader_grace \((?P<g>[\d.]+) s\) without touching the version table "
                            r"\S+; the database is still at (?P<revs>\S+); proceeding "
                            r"without the gate, the race guard watching\.  If the app migrates, "
                            r"set version_table \(MIGSHIM_VERSION_TABLE\) to the table it uses")
        self.unknown = (D + r": target heads unknown; the migration lock is taken at "
                        r"the first version-table statement")
        self.no_scripts = (r"no alembic\.ini, migrations/alembic\.ini or \[tool\.alembic\] "
                           r"found; target heads unknown \(the lock is taken at the first "
                           r"version-table statement\)")
        self.took = D + r": took the migration lock for this version-table transaction"
        self.xact_released = D + r": version-table transaction ended; migration lock released"
        self.run_failed = (D + r": the migration run failed at (?P<at>\S+), short of the target "
                           r"(?P<to>\S+) \(its transaction ended in an error, then no "
                           r"version-table statement for lead_settle = 1 s\); migration lock "
                           r"released after " + S + " s")
        self.ahead = (D + r" holds revisions the local scripts do not know "
                      r"\((?P<revs>[^)]*)\): a newer deploy migrated it; proceeding")
        holder = (r"backend pid (?P<hpid>\d+) from (?P<hhost>\S+), application_name "
                  r"'(?P<happ>[^']*)', since (?P<hsince>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \S+)")
        self.timeout_proceed = (D + r": waited (?P<n>\d+) s \(wait_timeout\) for the migration "
                                r"lock held by " + holder +
                                r"; proceeding \(on_timeout = proceed\)")
        self.timeout_fail = (D + r": waited (?P<n>\d+) s \(wait_timeout\) for the migration "
                             r"lock held by " + holder + r"; failing the connection "
                             r"\(on_timeout = fail\)")
        self.waiting = (D + r": waiting (?P<n>\d+) s so far for the migration lock held by "
                        + holder)


def match_lines(lines, expected):
    """`lines` [(level, msg)] must be exactly `expected` [(level, regex)], in
    order.  Returns the match objects."""
    assert len(lines) == len(expected), \
        "gate lines:\n  %s\nexpected %d lines:\n  %s" % (
            "\n  ".join("%s: %s" % l for l in lines), len(expected),
            "\n  ".join("%s: %s" % e for e in expected))
    out = []
    for (lvl, msg), (elvl, rx) in zip(lines, expected):
        m = re.fullmatch(rx, msg)
        assert lvl == elvl and m, "line %r\n does not match %s: %r" % (
            "%s: %s" % (lvl, msg), elvl, rx)
        out.append(m)
    return out


# ---------------------------------------------------------------------------
# children

class Child:
    """One steps.py process, stdout/stderr in files (readable while it runs)."""

    def __init__(self, workdir: Path, name: str, program, env: Dict[str, str],
                 preload: bool, cwd: Path):
        self.name = name
        self.dir = workdir
        self.out_path = workdir / ("%s.stdout" % name)
        self.err_path = workdir / ("%s.stderr" % name)
        full_env = child_base_env()
        if preload:
            full_env["LD_PRELOAD"] = shimbuild.preload(require_migshim_lib())
        full_env.update({k: str(v) for k, v in env.items()})
        self.env = full_env
        self.program = program
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(
                [PYTHON, str(STEPS), json.dumps(program)], env=full_env,
                cwd=str(cwd), stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                start_new_session=True)
        self.pid = self.proc.pid
        self.t_spawn = time.time()

    # --- what it printed
    def events(self) -> List[dict]:
        evs = []
        text = self.out_path.read_text("utf-8", "replace")
        for ln in text.splitlines(keepends=True):
            if ln.endswith("\n"):
                try:
                    evs.append(json.loads(ln))
                except ValueError:
                    evs.append({"ev": "garbage", "line": ln})
        return evs

    def find(self, ev, **match) -> List[dict]:
        return [e for e in self.events() if e["ev"] == ev
                and all(e.get(k) == v for k, v in match.items())]

    def one(self, ev, **match) -> dict:
        found = self.find(ev, **match)
        assert len(found) == 1, "%s: %d %r events %r\n%s" % (
            self.name, len(found), ev, match, self.describe())
        return found[0]

    def stderr(self) -> str:
        return self.err_path.read_text("utf-8", "replace")

    def gate(self):
        """[(level, message)] of the shim's lines from this process (with
        MIGSHIM_LOG=debug, without the "(first call)" lines and the version
        line)."""
        out = []
        for ln in self.stderr().splitlines():
            m = LINE_RE.match(ln)
            if m:
                assert int(m.group(1)) == self.pid, "%s: foreign pid in %r" % (self.name, ln)
                if m.group(2) == "debug" and (m.group(3).endswith(" (first call)") or
                                              m.group(3).startswith("libmigshim.so ")):
                    continue  # (the version line, at start-up, is not the gate's)
                out.append((m.group(2), m.group(3)))
            else:
                assert "migshim[" not in ln, "%s: malformed shim line %r" % (self.name, ln)
        return out

    def connect_time(self, name):
        """Seconds the `connect` step for connection `name` took."""
        begin = [e for e in self.events() if e["ev"] == "begin" and e["op"] == "connect"
                 and e["args"][0] == name]
        conn = self.find("connected", name=name)
        assert begin and conn, "%s: no connect of %s\n%s" % (self.name, name, self.describe())
        return conn[0]["t"] - begin[0]["t"]

    def describe(self):
        try:
            out = self.out_path.read_text("utf-8", "replace")
            err = self.stderr()
        except OSError as e:
            out = err = str(e)
        return ("--- %s (pid %d, rc %s) stdout ---\n%s\n--- stderr ---\n%s" %
                (self.name, self.pid, self.proc.poll(), out[-6000:], err[-6000:]))

    # --- waiting
    def wait_event(self, ev, timeout=10.0, **match) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            found = self.find(ev, **match)
            if found:
                return found[0]
            if self.proc.poll() is not None:
                found = self.find(ev, **match)
                if found:
                    return found[0]
                pytest.fail("%s exited before event %r %r\n%s" % (
                    self.name, ev, match, self.describe()), pytrace=False)
            if time.monotonic() > deadline:
                pytest.fail("%s: no event %r %r within %.1f s\n%s" % (
                    self.name, ev, match, timeout, self.describe()), pytrace=False)
            time.sleep(0.005)

    def wait_mark(self, barrier, timeout=10.0) -> dict:
        return self.wait_event("end", timeout, op="mark", args=[barrier])

    def finish(self, timeout=20.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail("%s did not exit within %.0f s\n%s" % (
                self.name, timeout, self.describe()), pytrace=False)

    def kill(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.pid, signal.SIGKILL)  # its own session: pgid == pid
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass


def wait_until(pred, timeout, what, interval=0.005):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            pytest.fail("timed out after %.1f s waiting for %s" % (timeout, what),
                        pytrace=False)
        time.sleep(interval)


def key_of(classid, objid):
    """The int8 advisory key from pg_locks' two oid halves."""
    k = (int(classid) << 32) | int(objid)
    return k - (1 << 64) if k >= (1 << 63) else k


def random_key():
    return random.SystemRandom().randrange(-(1 << 62), 1 << 62)


# ---------------------------------------------------------------------------
# the per-test environment

class Holder:
    """The test playing "a peer leading": a transaction holding the xact
    advisory lock K on the test database."""

    def __init__(self, server, dbname, key, appname="gate-test-holder"):
        import psycopg2
        self.conn = psycopg2.connect(server.dsn(dbname) + " application_name=" + appname)
        self.key = key
        self.appname = appname
        cur = self.conn.cursor()
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (key,))
        cur.execute("SELECT pg_backend_pid(), to_char(xact_start, 'YYYY-MM-DD HH24:MI:SS TZ') "
                    "FROM pg_stat_activity WHERE pid = pg_backend_pid()")
        self.pid, self.since = cur.fetchone()
        self.t_taken = time.time()
        self.open = True

    def migrate_and_commit(self, revs):
        cur = self.conn.cursor()
        cur.execute(CREATE_VT)
        for r in revs:
            cur.execute(insert_vt(r))
        self.conn.commit()
        self.open = False
        return time.time()

    def release(self):
        self.conn.rollback()
        self.open = False
        return time.time()

    def close(self):
        try:
            self.conn.close()
        except Exception:
            pass


class Sampler(threading.Thread):
    """Polls pg_stat_activity for the shim's connections to one database
    from its own connection, until stopped."""

    def __init__(self, server, dbname):
        super().__init__(daemon=True)
        self.conn = server.connect()
        self.dbname = dbname
        self.rows = []
        self.samples = 0
        self.stop_ev = threading.Event()
        self.start()

    def run(self):
        cur = self.conn.cursor()
        while not self.stop_ev.is_set():
            cur.execute("SELECT pid, application_name FROM pg_stat_activity "
                        "WHERE datname = %s AND application_name LIKE 'migshim%%'",
                        (self.dbname,))
            self.rows += cur.fetchall()
            self.samples += 1
            time.sleep(0.003)

    def wait_samples(self, n, timeout=30.0):
        """Until `n` samples were taken (a loaded machine can starve this
        thread: the count must not depend on the scheduler)."""
        deadline = time.monotonic() + timeout
        while self.samples < n and time.monotonic() < deadline:
            time.sleep(0.01)
        assert self.samples >= n, f"sampler: {self.samples} samples in {timeout}s"

    def stop(self):
        self.stop_ev.set()
        self.join(10)
        self.conn.close()
        return self.rows


class GateEnv:
    def __init__(self, pg, db, tmp_path: Path):
        self.pg = pg
        self.db = db
        self.tmp = tmp_path
        self.barriers = tmp_path / "barriers"
        self.barriers.mkdir()
        self.children: List[Child] = []
        self.holders: List[Holder] = []
        self.samplers: List[Sampler] = []
        self.mon = pg.connect()  # the "postgres" database: never logged below
        self.L = Lines(db.name)
        self._admin = None

    # --- children
    def spawn(self, program, env: Optional[Dict[str, str]] = None, preload=True,
              cwd: Optional[Path] = None, name=None) -> Child:
        name = name or "child%d" % (len(self.children) + 1)
        if cwd is None:
            cwd = self.tmp / ("cwd-" + name)
            cwd.mkdir()
        full = dict(self.db.env)
        full["GATE_BARRIERS"] = str(self.barriers)
        full.update(env or {})
        c = Child(self.tmp, name, program, full, preload, cwd)
        self.children.append(c)
        return c

    def touch(self, barrier):
        p = self.barriers / barrier
        p.write_text("%.6f\n" % time.time())

    # --- the test database
    def admin(self):
        if self._admin is None:
            self._admin = self.pg.connect(self.db.name)
        return self._admin

    def sql(self, q, args=None):
        with self.admin().cursor() as cur:
            cur.execute(q, args)
            return cur.fetchall() if cur.description else None

    def write_versions(self, revs, table="alembic_version", schema=None):
        t = '"%s"' % table.replace('"', '""')
        if schema:
            t = '"%s".%s' % (schema.replace('"', '""'), t)
        self.sql("CREATE TABLE %s (version_num varchar(32) NOT NULL PRIMARY KEY)" % t)
        for r in revs:
            self.sql("INSERT INTO %s VALUES (%%s)" % t, (r,))

    def versions(self, table="alembic_version"):
        return sorted(r[0] for r in self.sql("SELECT version_num FROM %s" % table))

    def hold(self, key, appname="gate-test-holder") -> Holder:
        h = Holder(self.pg, self.db.name, key, appname)
        self.holders.append(h)
        return h

    # --- observing it (from the monitor connection, on "postgres")
    def mon_q(self, q, args=None):
        with self.mon.cursor() as cur:
            cur.execute(q, args)
            return cur.fetchall()

    def lock_backends(self, child: Optional[Child] = None):
        """[(pid, application_name, state)] of the shim's connections."""
        like = "migshim%" if child is None else "migshim lock pid=%d %%" % child.pid
        return self.mon_q("SELECT pid, application_name, state FROM pg_stat_activity "
                          "WHERE datname = %s AND application_name LIKE %s",
                          (self.db.name, like))

    def wait_lock_backend(self, child, timeout=10.0):
        rows = wait_until(lambda: self.lock_backends(child), timeout,
                          "the lock connection of %s\n%s" % (child.name, child.describe()))
        assert len(rows) == 1, rows
        assert rows[0][1] in ("migshim lock pid=%d host=%s" % (child.pid, HOSTNAME),
                              "migshim lock pid=%d host=%s migrating" % (child.pid, HOSTNAME)), rows
        return rows[0]

    def waiting_backends(self, child: Child):
        """[(pid, application_name, state)] where `child` waits at the gate:
        its lock connection (lock = session, or a wait at a statement), or
        (lock = xact, at connect) its own new connection running the shim's
        wait statement -- a waiter then opens no connection at all."""
        return self.mon_q(
            "SELECT pid, application_name, state FROM pg_stat_activity WHERE datname = %s "
            "AND (application_name LIKE %s OR (application_name LIKE %s "
            "AND query ~ 'pg_catalog\\.pg_(try_advisory_xact_lock|advisory_xact_lock_shared)\\('))",
            (self.db.name, "migshim lock pid=%d %%" % child.pid, "gate-%%@%d" % child.pid))

    def wait_waiting_backend(self, child, timeout=10.0):
        rows = wait_until(lambda: self.waiting_backends(child), timeout,
                          "%s waiting at the gate\n%s" % (child.name, child.describe()))
        assert len(rows) == 1, rows
        return rows[0]

    def wait_no_lock_backend(self, child=None, timeout=2.0):
        wait_until(lambda: not self.lock_backends(child), timeout,
                   "the shim's lock connection to go away: %r" % (self.lock_backends(child),))

    def advisory_locks(self):
        """[(key, mode, granted, backend pid, application_name)] in the test db."""
        rows = self.mon_q(
            "SELECT l.classid, l.objid, l.mode, l.granted, l.pid, a.application_name "
            "FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.database = "
            "(SELECT oid FROM pg_database WHERE datname = %s) ORDER BY l.pid",
            (self.db.name,))
        return [(key_of(c, o), m, g, p, a) for c, o, m, g, p, a in rows]

    def assert_lock_held_by(self, child, key):
        locks = self.advisory_locks()
        assert len(locks) == 1, locks
        k, mode, granted, pid, app = locks[0]
        assert (k, mode, granted) == (key, "ExclusiveLock", True), locks
        # " migrating" once the leader touched the version table (holder.h, "Lapses"),
        # " run=ended" once a version-table transaction committed short of the
        # target (holder.h, holder_mark_run)
        assert app in ("migshim lock pid=%d host=%s" % (child.pid, HOSTNAME),
                       "migshim lock pid=%d host=%s migrating" % (child.pid, HOSTNAME),
                       "migshim lock pid=%d host=%s migrating run=ended" % (child.pid, HOSTNAME)), \
            locks
        return pid

    def sampler(self) -> Sampler:
        s = Sampler(self.pg, self.db.name)
        self.samplers.append(s)
        return s

    # --- the server log
    def log_path(self) -> Path:
        if not self.pg.pgdir or not (Path(self.pg.pgdir) / "postgresql.log").is_file():
            pytest.fail("server log not found (PGHARNESS_DIR=%r): run under "
                        "tests/harness/with-pg.sh" % self.pg.pgdir, pytrace=False)
        return Path(self.pg.pgdir) / "postgresql.log"

    def log_statements_from_now(self):
        """log_statement = all for new sessions of the test database;
        returns the server log offset to read from."""
        with self.mon.cursor() as cur:
            cur.execute('ALTER DATABASE "%s" SET log_statement = \'all\'' % self.db.name)
        return self.log_path().stat().st_size

    def server_log(self, offset):
        """[(backend pid, level, message)] logged for the test database since
        `offset`; continuation lines, and a DETAIL line (bind parameters),
        are appended to the record they belong to."""
        rx = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+ \S+ \[(\d+)\] "
                        r"(\S*)@(\S*) (\w+):  (.*)$")
        with open(self.log_path(), "rb") as f:
            f.seek(offset)
            text = f.read().decode("utf-8", "replace")
        out, cur_db = [], None
        for ln in text.splitlines():
            m = rx.match(ln)
            if m:
                cur_db = m.group(3)
                if cur_db == self.db.name:
                    pid, lvl, msg = int(m.group(1)), m.group(4), m.group(5)
                    if lvl == "DETAIL" and out and out[-1][0] == pid:
                        out[-1][2] += "\nDETAIL:  " + msg
                    else:
                        out.append([pid, lvl, msg])
            elif re.match(r"^\d{4}-\d\d-\d\d \d\d:", ln):
                cur_db = None
            elif cur_db == self.db.name and out:
                out[-1][2] += "\n" + ln
        return [tuple(r) for r in out]

    def close(self):
        for c in self.children:
            c.kill()
        for s in self.samplers:
            if s.is_alive():
                s.stop()
        for h in self.holders:
            h.close()
        for c in (self._admin, self.mon):
            if c is not None:
                try:
                    c.close()
                except Exception:
                    pass


@pytest.fixture
def gate(pg, db, tmp_path):
    require_migshim_lib()
    env = GateEnv(pg, db, tmp_path)
    try:
        yield env
    finally:
        env.close()


# ---------------------------------------------------------------------------
# Alembic script directories

REV_TEMPLATE = '''\
"""{message}

Revision ID: {rev}
Revises: {down_doc}
Create Date: 2024-01-01 00:00:00.000000

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

# revision identifiers, used by Alembic.
{assignments}
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
'''


def write_scripts(where: Path, revisions):
    """alembic.ini + versions/*.py in `where`.  `revisions` is a list of
    (rev, down) with down None, a string or a tuple; the files alternate
    between Alembic's classic and typed (1.12+) templates."""
    where.mkdir(parents=True, exist_ok=True)
    (where / "alembic.ini").write_text(textwrap.dedent("""\
        [alembic]
        script_location = %(here)s
        sqlalchemy.url = postgresql+psycopg2://

        [loggers]
        keys = root
        [handlers]
        keys =
        [formatters]
        keys =
        [logger_root]
        level = WARN
        handlers =
        """))
    vdir = where / "versions"
    vdir.mkdir(exist_ok=True)
    for i, (rev, down) in enumerate(revisions):
        if i % 2 == 0:
            assignments = "revision = %r\ndown_revision = %r" % (rev, down)
        else:
            assignments = ('revision: str = "%s"\n'
                           'down_revision: Union[str, Sequence[str], None] = %s'
                           % (rev, json.dumps(down) if isinstance(down, str) else repr(down)))
        down_doc = ", ".join(down) if isinstance(down, tuple) else (down or "")
        (vdir / ("%s_rev.py" % rev)).write_text(REV_TEMPLATE.format(
            message="revision " + rev, rev=rev, down_doc=down_doc,
            assignments=assignments))
    return where


def alembic_heads(where: Path):
    """What Alembic itself says the heads of that script directory are."""
    from alembic.script import ScriptDirectory
    return set(ScriptDirectory(str(where)).get_heads())


# ===========================================================================
# 1. at head: one round trip on the app's connection, nothing else

def test_at_head_one_round_trip_no_extra_connection(gate):
    gate.write_versions([R1])
    offset = gate.log_statements_from_now()
    sampler = gate.sampler()
    c = gate.spawn([
        ["connect", "c1"],
        ["mark", "connected"],
        ["wait", "go", 20],
        ["exec", "c1", "SELECT 'app-first-statement'"],
        ["commit", "c1"],
        ["connect", "c2"],
        ["exec", "c2", "SELECT 'app-second-connection'"],
        ["commit", "c2"],
        ["close", "c2"],
        ["close", "c1"],
    ], env={"MIGSHIM_HEADS": R1})
    c.wait_mark("connected")
    conn = c.one("connected", name="c1")
    # handed over idle: no transaction, no snapshot, no statement running
    assert conn["tx"] == "IDLE"
    rows = gate.mon_q("SELECT state, xact_start IS NULL, backend_xid IS NULL, "
                      "backend_xmin IS NULL FROM pg_stat_activity WHERE pid = %s",
                      (conn["backend_pid"],))
    assert rows == [("idle", True, True, True)], rows
    assert c.stderr() == ""  # the gate did not act on it: not a word (rule of silence)
    # watched while the process holds its connection, whatever the load
    sampler.wait_samples(11)
    gate.touch("go")
    assert c.finish() == 0, c.describe()
    assert sampler.stop() == [] and sampler.samples > 10, sampler.rows

    # a second connection of the process: nothing logged either
    assert c.stderr() == ""

    b1 = conn["backend_pid"]
    b2 = c.one("connected", name="c2")["backend_pid"]
    log = gate.server_log(offset)
    assert {pid for pid, _, _ in log} == {b1, b2}, log  # no other connection
    assert not [r for r in log if r[1] in ("ERROR", "FATAL", "PANIC", "WARNING")], log
    assert not [r for r in log if "advisory" in r[2]], log
    stmts1 = [msg for pid, lvl, msg in log if pid == b1 and lvl == "LOG"]
    stmts2 = [msg for pid, lvl, msg in log if pid == b2 and lvl == "LOG"]
    # exactly one statement (one round trip: the version read) before the app's
    assert len(stmts1) == 4, stmts1
    assert re.match(r"(statement|execute <unnamed>): SELECT ", stmts1[0]), stmts1
    assert "alembic_version" in stmts1[0], stmts1
    assert stmts1[1:] == ["statement: BEGIN",
                          "statement: SELECT 'app-first-statement'",
                          "statement: COMMIT"], stmts1
    assert stmts2 == ["statement: BEGIN",
                      "statement: SELECT 'app-second-connection'",
                      "statement: COMMIT"], stmts2


# ===========================================================================
# 2. behind, nobody else: lead, migrate, release at the commit reaching target

@pytest.mark.parametrize("lock", ["xact", "session"])
def test_behind_alone_leads_and_releases_at_target_commit(gate, lock):
    c = gate.spawn([
        ["connect", "c1"],
        ["mark", "connected"], ["wait", "go1", 20],
        # Alembic with transaction_per_migration: 0001 commits first ...
        ["exec", "c1", CREATE_VT],
        ["exec", "c1", "CREATE TABLE widgets (id int)"],
        ["exec", "c1", insert_vt(R1)],
        ["mark", "inserted"], ["wait", "go2", 20],
        ["commit", "c1"],
        ["mark", "committed1"], ["wait", "go3", 20],
        # ... then 0002, the target
        ["exec", "c1", "ALTER TABLE widgets ADD COLUMN name text"],
        ["exec", "c1", "UPDATE alembic_version SET version_num='%s' "
                       "WHERE alembic_version.version_num = '%s'" % (R2, R1)],
        ["mark", "updated"], ["wait", "go4", 20],
        ["commit", "c1"],
        ["mark", "committed2"], ["wait", "go5", 20],
        ["exec", "c1", "SELECT 1"], ["commit", "c1"], ["close", "c1"],
        # the commit at 0001 ends the run unless the next revision follows
        # within lead_settle: this test holds the gap open as long as it likes
    ], env={"MIGSHIM_HEADS": R2, "MIGSHIM_LOCK": lock, "MIGSHIM_LEAD_SETTLE": "120"})
    c.wait_mark("connected")
    (m,) = match_lines(c.gate(), [("info", gate.L.lead)])
    assert (m.group("frm"), m.group("to"), m.group("after"), m.group("again")) == \
        ("(none)", R2, None, None)
    key = int(m.group("key"))
    lock_pid, app, state = gate.wait_lock_backend(c)
    assert state == {"xact": "idle in transaction", "session": "idle"}[lock]
    assert gate.assert_lock_held_by(c, key) == lock_pid

    for step, barrier in (("go1", "inserted"), ("go2", "committed1"), ("go3", "updated")):
        gate.touch(step)
        c.wait_mark(barrier)
        # not at the target yet (uncommitted, or committed at 0001): still held
        assert gate.assert_lock_held_by(c, key) == lock_pid, barrier
        assert len(c.gate()) == 1, c.gate()

    gate.touch("go4")
    c.wait_mark("committed2")
    # released by the time the app's COMMIT returned
    (_, rel) = match_lines(c.gate(), [("info", gate.L.lead), ("info", gate.L.released)])
    assert rel.group("revs") == R2
    assert gate.advisory_locks() == []
    gate.wait_no_lock_backend(c, timeout=1.0)
    gate.touch("go5")
    assert c.finish() == 0, c.describe()
    assert len(c.gate()) == 2, c.gate()
    assert gate.versions() == [R2]
    assert gate.lock_backends() == []


# ===========================================================================
# 3. a waiter: blocked while a peer leads, short statements, wakes at once

@pytest.mark.parametrize("lock", ["xact", "session"])
def test_waiter_waits_in_short_slices_and_proceeds_when_peer_commits(gate, lock):
    key = random_key()
    holder = gate.hold(key)
    offset = gate.log_path().stat().st_size
    c = gate.spawn([
        ["connect", "c1"],
        ["exec", "c1", "SELECT 1"], ["commit", "c1"], ["close", "c1"],
    ], env={"MIGSHIM_HEADS": R1, "MIGSHIM_LOCK_KEY": str(key), "MIGSHIM_LOCK": lock})
    lock_pid, app, _ = gate.wait_waiting_backend(c)
    # xact: on its own connection (no extra one); session: a lock connection
    assert app.startswith({"xact": "gate-c1@", "session": "migshim lock "}[lock]), app

    # sample the waiter for 1.5 s: never past the gate, never long in a statement
    longest, active, queries = 0.0, 0, set()
    granted_to_waiter = []
    t_end = time.monotonic() + 1.5
    while time.monotonic() < t_end:
        rows = gate.mon_q(
            "SELECT state, extract(epoch FROM clock_timestamp() - query_start)::float8, query "
            "FROM pg_stat_activity WHERE pid = %s", (lock_pid,))
        assert len(rows) == 1, "the lock connection went away while waiting"
        state, age, query = rows[0]
        if state == "active":
            active += 1
            longest = max(longest, age)
            queries.add(query)
        granted_to_waiter += [l for l in gate.advisory_locks() if l[3] == lock_pid and l[2]]
        assert not c.find("connected"), c.describe()
        time.sleep(0.01)
    assert c.gate() == [], c.gate()  # no decision yet
    assert c.proc.poll() is None
    assert active >= 3, (active, queries)
    assert longest < 0.3, "a waiter sat %.3f s in one statement: %r" % (longest, queries)
    # both modes wait on the transaction-scoped shared form, its lock_timeout
    # caught inside a PL/pgSQL block
    shared = "pg_advisory_xact_lock_shared(%d)" % key
    assert any(shared in q and "EXCEPTION WHEN lock_not_available" in q
               for q in queries), queries
    assert granted_to_waiter == [], granted_to_waiter
    # the test (the "peer") holds it, nobody else
    assert [(l[0], l[1], l[2], l[3]) for l in gate.advisory_locks() if l[2]] == \
        [(key, "ExclusiveLock", True, holder.pid)]

    t_release = holder.migrate_and_commit([R1])
    ev = c.wait_event("connected", timeout=5)
    assert ev["t"] - t_release < 1.0, "proceeded %.3f s after the release" % (
        ev["t"] - t_release)
    (m,) = match_lines(c.gate(), [("info", gate.L.waited_any)])
    assert (m.group("a_revs") or m.group("p_revs")) == R1
    waited = float(m.group("a_s") or m.group("p_s"))
    assert abs(waited - c.connect_time("c1")) < 0.3, (waited, c.connect_time("c1"))
    gate.wait_no_lock_backend(c, timeout=1.0)
    assert c.finish() == 0, c.describe()
    assert len(c.gate()) == 1
    # ~6 slices timed out, none of them in the server log
    log = gate.server_log(offset)
    assert [r for r in log if r[1] in ("ERROR", "FATAL", "PANIC", "WARNING")] == [], log


@ASAN_EXIT_HANG
@pytest.mark.parametrize("lock", ["xact", "session"])
def test_32_waiters_leave_no_error_in_the_server_log(gate, lock):
    """32 processes (psql, the lightest libpq program) wait 2.5 s for a peer:
    some 300 slices time out, and the server log of the test database gets
    no ERROR, FATAL or WARNING line from them; all wake when the peer
    commits, each with its one "waited" line."""
    n = 32
    key = random_key()
    holder = gate.hold(key)
    offset = gate.log_path().stat().st_size
    env = child_base_env()
    env.update(gate.db.env)
    env.update({"LD_PRELOAD": shimbuild.preload(require_migshim_lib()),
                "MIGSHIM_HEADS": R1, "MIGSHIM_LOCK_KEY": str(key), "MIGSHIM_LOCK": lock})
    cwd = gate.tmp / "psql-cwd"
    cwd.mkdir()
    procs = [subprocess.Popen(["psql", "-X", "-q", "-At", "-c", "SELECT 'served'"], env=env,
                              cwd=str(cwd), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, start_new_session=True)
             for _ in range(n)]
    try:
        # all n are in the lock queue, on the shared form
        wait_until(lambda: len([l for l in gate.advisory_locks()
                                if l[0] == key and l[1] == "ShareLock" and not l[2]]) == n,
                   60, "%d waiters queued on the lock" % n, interval=0.05)
        time.sleep(2.5)  # ~10 slices each
        assert all(p.poll() is None for p in procs)
        holder.migrate_and_commit([R1])
        outs = [p.communicate(timeout=30) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    L = gate.L
    for p, (out, err) in zip(procs, outs):
        assert (p.returncode, out) == (0, "served\n"), err
        lines = [LINE_RE.match(ln) for ln in err.splitlines()]
        assert all(lines) and len(lines) == 1, err
        assert lines[0].group(2) == "info" and re.fullmatch(L.waited_any, lines[0].group(3)), err
    log = gate.server_log(offset)
    bad = [r for r in log if r[1] in ("ERROR", "FATAL", "PANIC", "WARNING")]
    print("server-log ERROR/FATAL/WARNING lines during a %d-waiter wait (lock = %s): %d"
          % (n, lock, len(bad)))
    assert bad == [], bad[:10]


def test_waiter_without_plpgsql_falls_back_to_the_plain_slice(gate):
    """A database without PL/pgSQL: the first slice's DO block is refused,
    and the waiter goes on with the plain statement (whose timed-out slices
    the server logs) and still wakes when the peer commits."""
    gate.sql("DROP EXTENSION plpgsql")
    key = random_key()
    holder = gate.hold(key)
    offset = gate.log_path().stat().st_size
    c = gate.spawn([["connect", "c1"], ["exec", "c1", "SELECT 1"], ["commit", "c1"],
                    ["close", "c1"]],
                   env={"MIGSHIM_HEADS": R1, "MIGSHIM_LOCK_KEY": str(key)})
    gate.wait_waiting_backend(c)
    time.sleep(1.0)
    t_release = holder.migrate_and_commit([R1])
    ev = c.wait_event("connected", timeout=5)
    assert ev["t"] - t_release < 1.0
    assert c.finish() == 0, c.describe()
    match_lines(c.gate(), [("info", gate.L.waited_any)])
    errors = [r[2] for r in gate.server_log(offset) if r[1] == "ERROR"]
    assert errors[0] == 'language "plpgsql" does not exist', errors
    assert set(errors[1:]) == {"canceling statement due to lock timeout"}, errors
    assert 2 <= len(errors) - 1 <= 6, errors


def test_leader_dies_a_waiter_leads_at_once(gate):
    a = gate.spawn([["connect", "a"], ["mark", "a_connected"], ["wait", "a_go", 30]],
                   env={"MIGSHIM_HEADS": R1}, name="A")
    a.wait_mark("a_connected")
    (m,) = match_lines(a.gate(), [("info", gate.L.lead)])
    key = int(m.group("key"))
    b = gate.spawn([
        ["connect", "b"], ["mark", "b_connected"], ["wait", "b_go", 20],
        ["exec", "b", CREATE_VT], ["exec", "b", insert_vt(R1)], ["commit", "b"],
        ["mark", "b_committed"], ["close", "b"],
    ], env={"MIGSHIM_HEADS": R1}, name="B")
    gate.wait_waiting_backend(b)
    time.sleep(0.3)
    assert not b.find("connected") and b.gate() == []
    t_kill = time.time()
    a.kill()  # SIGKILL: the server drops A's lock with its connection
    ev = b.wait_mark("b_connected", timeout=5)
    assert ev["t"] - t_kill < 1.0, ev["t"] - t_kill
    (mb,) = match_lines(b.gate(), [("info", gate.L.lead)])
    assert (int(mb.group("key")), mb.group("after"), mb.group("frm"), mb.group("to")) == \
        (key, " after waiting", "(none)", R1)
    gate.touch("b_go")
    b.wait_mark("b_committed")
    match_lines(b.gate(), [("info", gate.L.lead), ("info", gate.L.released)])
    assert b.finish() == 0, b.describe()
    assert gate.versions() == [R1]
    gate.wait_no_lock_backend(timeout=2.0)


# ===========================================================================
# 4. leader_grace: a leader that never migrates does not stall the fleet



@pytest.mark.parametrize("lock", ["xact", "session"])
def test_leader_grace_lapsed_leader_lets_a_peer_lead(gate, lock):
    # B's wait_timeout bounds the test; B must lead long before it
    env = {"MIGSHIM_HEADS": R1, "MIGSHIM_LOCK": lock, "MIGSHIM_WAIT_TIMEOUT": "4"}
    a = gate.spawn([
        ["connect", "a"], ["mark", "a_connected"],
        ["wait", "a_go", 30],  # "busy" without touching the version table
        ["query", "a", "SELECT version_num FROM alembic_version"],
        ["commit", "a"], ["close", "a"],
    ], env=dict(env, MIGSHIM_LEADER_GRACE="1"), name="A")
    ev_a = a.wait_mark("a_connected")
    (m,) = match_lines(a.gate(), [("info", gate.L.lead)])
    key = int(m.group("key"))
    gate.wait_lock_backend(a)

    b = gate.spawn([
        ["connect", "b"], ["mark", "b_connected"], ["wait", "b_go", 20],
        ["exec", "b", CREATE_VT], ["exec", "b", insert_vt(R1)],
        ["commit", "b"], ["mark", "b_committed"], ["close", "b"],
    ], env=env, name="B")
    ev_b = b.wait_mark("b_connected", timeout=8)
    # B led once A's grace (1 s) was up -- not after B's wait_timeout (300 s)
    assert 0.8 < ev_b["t"] - ev_a["t"] < 3.0, ev_b["t"] - ev_a["t"]
    assert b.connect_time("b") > 0.5
    (mb,) = match_lines(b.gate(), [("info", gate.L.lead)])
    assert (int(mb.group("key")), mb.group("after"), mb.group("frm"), mb.group("to")) == \
        (key, " after waiting", "(none)", R1)
    gate.wait_no_lock_backend(a, 1.0)  # the server ended A's idle lock session
    gate.touch("b_go")
    b.wait_mark("b_committed")
    match_lines(b.gate(), [("info", gate.L.lead), ("info", gate.L.released)])
    assert b.finish() == 0, b.describe()

    # A's first version-table statement, later: it finds B's work done
    gate.touch("a_go")
    assert a.finish() == 0, a.describe()
    assert a.one("rows", name="a")["rows"] == [[R1]]
    # (psycopg2's BEGIN, sent first, is the statement that notices the lapse)
    (_, _, p) = match_lines(a.gate(), [("info", gate.L.lead), ("warn", gate.L.gave_up),
                                       ("info", gate.L.peer_before)])
    assert p.group("revs") == R1
    assert gate.versions() == [R1]
    assert gate.lock_backends() == [] and gate.advisory_locks() == []


def test_leader_grace_lapsed_leader_takes_the_lock_again_for_a_late_migration(gate):
    a = gate.spawn([
        ["connect", "a"], ["mark", "a_connected"],
        ["wait", "a_go", 30],
        ["exec", "a", "SELECT 1"], ["commit", "a"],  # not a version-table statement
        ["mark", "a_select"], ["wait", "a_go2", 30],
        ["exec", "a", CREATE_VT],
        ["mark", "a_created"], ["wait", "a_go3", 30],
        ["exec", "a", insert_vt(R1)], ["commit", "a"],
        ["mark", "a_committed"], ["close", "a"],
    ], env={"MIGSHIM_HEADS": R1, "MIGSHIM_LEADER_GRACE": "1"}, name="A")
    ev = a.wait_mark("a_connected")
    (m,) = match_lines(a.gate(), [("info", gate.L.lead)])
    key = int(m.group("key"))
    first_lock_pid, _, _ = gate.wait_lock_backend(a)
    # the server ends the idle lock session at leader_grace
    wait_until(lambda: not gate.lock_backends(a), 4.0, "the server to end A's lock session")
    assert time.time() - ev["t"] > 0.8
    assert gate.advisory_locks() == []

    gate.touch("a_go")
    a.wait_mark("a_select")
    (_, g) = match_lines(a.gate(), [("info", gate.L.lead), ("warn", gate.L.gave_up)])
    assert g.group("g") == "1"

    gate.touch("a_go2")
    a.wait_mark("a_created")
    (_, _, m2) = match_lines(a.gate(), [("info", gate.L.lead), ("warn", gate.L.gave_up),
                                        ("info", gate.L.lead)])
    assert (int(m2.group("key")), m2.group("frm"), m2.group("to"), m2.group("again")) == \
        (key, "(none)", R1, " (again, for a late migration)")
    second_lock_pid = gate.assert_lock_held_by(a, key)
    assert second_lock_pid != first_lock_pid

    gate.touch("a_go3")
    a.wait_mark("a_committed")
    match_lines(a.gate(), [("info", gate.L.lead), ("warn", gate.L.gave_up),
                           ("info", gate.L.lead), ("info", gate.L.released)])
    assert gate.advisory_locks() == []
    gate.wait_no_lock_backend(a, 1.0)
    assert a.finish() == 0, a.describe()
    assert gate.versions() == [R1]


def test_a_lapse_never_serializes_the_fleet(gate):
    """Three processes behind the target that never touch the version table
    (the app does not migrate, or its table has another name): A leads and
    lapses after leader_grace; B and C, waiting behind it, see the lock
    freed after exactly that long with nothing changed and the holder never
    marked as migrating -- they proceed at once with a warning, instead of
    each leading and lapsing in turn (before: 3 x leader_grace)."""
    grace = 2
    env = {"MIGSHIM_HEADS": R1, "MIGSHIM_LEADER_GRACE": str(grace)}
    steps = lambda n: [["connect", n], ["mark", n + "_connected"], ["wait", n + "_go", 30],
                       ["exec", n, "SELECT 1"], ["commit", n], ["close", n]]
    a = gate.spawn(steps("a"), env=env, name="A")
    ev_a = a.wait_mark("a_connected")
    match_lines(a.gate(), [("info", gate.L.lead)])
    b = gate.spawn(steps("b"), env=env, name="B")
    c = gate.spawn(steps("c"), env=env, name="C")
    ev_b, ev_c = b.wait_mark("b_connected", timeout=15), c.wait_mark("c_connected", timeout=15)
    for w, ev in ((b, ev_b), (c, ev_c)):
        (m,) = match_lines(w.gate(), [("warn", gate.L.peer_lapsed)])
        assert ev["t"] - ev_a["t"] < grace + 3, w.describe()  # not serialized
    assert gate.advisory_locks() == []
    for n, w in (("a", a), ("b", b), ("c", c)):
        gate.touch(n + "_go")
        assert w.finish() == 0, w.describe()


# ===========================================================================
# 5. wait_timeout: proceed with a warning naming the holder, or fail

def test_wait_timeout_proceed_names_the_holder(gate):
    key = random_key()
    holder = gate.hold(key)
    c = gate.spawn([
        ["connect", "c1"], ["query", "c1", "SELECT 42"], ["commit", "c1"], ["close", "c1"],
    ], env={"MIGSHIM_HEADS": R1, "MIGSHIM_LOCK_KEY": str(key),
            "MIGSHIM_WAIT_TIMEOUT": "1"})
    assert c.finish() == 0, c.describe()
    assert 0.95 < c.connect_time("c1") < 2.5, c.connect_time("c1")
    assert c.one("rows", name="c1")["rows"] == [[42]]
    (m,) = match_lines(c.gate(), [("warn", gate.L.timeout_proceed)])
    assert (m.group("n"), int(m.group("hpid")), m.group("hhost"), m.group("happ"),
            m.group("hsince")) == ("1", holder.pid, "local", holder.appname, holder.since)
    gate.wait_no_lock_backend(c, 1.0)
    # the holder was never disturbed
    assert [l[:4] for l in gate.advisory_locks()] == \
        [(key, "ExclusiveLock", True, holder.pid)]


def test_wait_timeout_fail_fails_the_connection(gate):
    key = random_key()
    holder = gate.hold(key)
    c = gate.spawn([
        ["connect", "c1", {"expect_error": True}],
        ["connect", "c2"],  # the app's retry is gated again
    ], env={"MIGSHIM_HEADS": R1, "MIGSHIM_LOCK_KEY": str(key),
            "MIGSHIM_WAIT_TIMEOUT": "1", "MIGSHIM_ON_TIMEOUT": "fail"})
    rc = c.finish()
    assert rc == 3, c.describe()
    errors = c.find("error")
    assert [(e["op"], e["cls"]) for e in errors] == \
        [("connect", "OperationalError"), ("connect", "OperationalError")], errors
    assert not c.find("connected")
    m1, m2 = match_lines(c.gate(), [("error", gate.L.timeout_fail)] * 2)
    for m in (m1, m2):
        assert (m.group("n"), int(m.group("hpid")), m.group("happ")) == \
            ("1", holder.pid, holder.appname)
    assert gate.lock_backends() == []
    assert [l[:4] for l in gate.advisory_locks()] == \
        [(key, "ExclusiveLock", True, holder.pid)]


def test_waiter_reports_the_holder_every_10_s(gate):
    key = random_key()
    holder = gate.hold(key, appname="gate-test-holder")
    c = gate.spawn([["connect", "c1"], ["close", "c1"]],
                   env={"MIGSHIM_HEADS": R1, "MIGSHIM_LOCK_KEY": str(key),
                        "MIGSHIM_WAIT_TIMEOUT": "10.6"})
    assert c.finish(timeout=25) == 0, c.describe()
    mw, mt = match_lines(c.gate(), [("info", gate.L.waiting), ("warn", gate.L.timeout_proceed)])
    for m in (mw, mt):
        assert (int(m.group("hpid")), m.group("hhost"), m.group("happ"), m.group("hsince")) == \
            (holder.pid, "local", "gate-test-holder", holder.since)
    assert mw.group("n") == "10"
    assert mt.group("n") in ("10", "11")
    assert 10.5 < c.connect_time("c1") < 12.0


# ===========================================================================
# 6. target unknown: the lock guards each version-table transaction

def test_target_unknown_locks_each_version_table_transaction(gate):
    key = random_key()
    holder = gate.hold(key)
    c = gate.spawn([
        ["connect", "c1"], ["mark", "connected"], ["wait", "go0", 20],
        ["connect", "c2", {"autocommit": True}],
        ["exec", "c1", "SELECT 1"],  # not a version-table statement: no wait
        ["mark", "before_vt"],
        ["exec", "c1", CREATE_VT],   # waits for the test's lock
        ["mark", "took"], ["wait", "go1", 20],
        # another connection of this process: never waits on its own process
        ["query", "c2", "SELECT count(*) FROM pg_class WHERE relname = 'alembic_version'"],
        ["mark", "c2_done"],
        ["exec", "c1", insert_vt(R1)],
        ["mark", "inserted"], ["wait", "go2", 20],
        ["commit", "c1"],
        ["mark", "committed"], ["wait", "go3", 20],
        ["query", "c1", "SELECT version_num FROM alembic_version"],
        ["mark", "took2"], ["wait", "go4", 20],
        ["commit", "c1"], ["mark", "done"], ["close", "c1"], ["close", "c2"],
        # that transaction only read: the migration is over, the watch ends
        # (a /health endpoint reading the table takes no lock from now on)
        ["wait", "go5", 20], ["connect", "c3"],
        ["query", "c3", "SELECT version_num FROM alembic_version"], ["commit", "c3"],
        ["mark", "after"], ["close", "c3"],
    ], env={"MIGSHIM_LOCK_KEY": str(key)})  # no scripts, no MIGSHIM_HEADS
    c.wait_mark("connected")
    assert c.connect_time("c1") < 0.5  # no wait at connect although the lock is held
    L = gate.L
    assert c.gate() == []  # nothing to say until it acts
    assert gate.lock_backends(c) == []  # no lock connection at connect
    gate.touch("go0")
    c.wait_mark("before_vt")
    lock_pid, _, _ = gate.wait_lock_backend(c)
    time.sleep(0.6)
    assert not c.find("end", op="mark", args=["took"]), c.describe()
    t_release = holder.release()  # the "peer" ends its transaction without migrating
    ev = c.wait_mark("took", timeout=5)
    assert ev["t"] - t_release < 1.0
    match_lines(c.gate(), [("info", L.took)])
    assert gate.assert_lock_held_by(c, key) == lock_pid

    gate.touch("go1")
    c.wait_mark("c2_done", timeout=2)
    assert c.one("rows", name="c2")["rows"] == [[0]]  # c1 has not committed yet
    c.wait_mark("inserted")
    assert gate.assert_lock_held_by(c, key) == lock_pid  # to the end of the transaction

    gate.touch("go2")
    c.wait_mark("committed")
    match_lines(c.gate(), [("info", L.took),
                           ("info", L.xact_released)])
    assert gate.advisory_locks() == []
    gate.wait_no_lock_backend(c, 1.0)

    gate.touch("go3")
    c.wait_mark("took2")
    assert c.one("rows", name="c1")["rows"] == [[R1]]
    gate.assert_lock_held_by(c, key)  # the read's transaction is still open
    gate.touch("go4")
    c.wait_mark("done")
    match_lines(c.gate(), [("info", L.took),
                           ("info", L.xact_released), ("info", L.took),
                           ("info", L.xact_released)])
    assert gate.advisory_locks() == []
    holder = gate.hold(key)  # a peer "migrating": the read must not wait for it
    gate.touch("go5")
    c.wait_mark("after", timeout=5)
    holder.release()
    match_lines(c.gate(), [("info", L.took), ("info", L.xact_released), ("info", L.took),
                           ("info", L.xact_released)])
    assert c.finish() == 0, c.describe()
    gate.wait_no_lock_backend(c, 1.0)


# SQLAlchemy 2.x's has_table through psycopg 3: the table's name is $1, not
# in the text (../shared/todays-releases.md)
HAS_TABLE_20 = (
    "SELECT pg_catalog.pg_class.relname FROM pg_catalog.pg_class JOIN pg_catalog.pg_namespace "
    "ON pg_catalog.pg_namespace.oid = pg_catalog.pg_class.relnamespace WHERE "
    "pg_catalog.pg_class.relname = %s::VARCHAR AND pg_catalog.pg_class.relkind = ANY "
    "(ARRAY[%s::VARCHAR, %s::VARCHAR]) AND pg_catalog.pg_table_is_visible("
    "pg_catalog.pg_class.oid) AND pg_catalog.pg_namespace.nspname != %s::VARCHAR")


@pytest.mark.parametrize("driver", ["psycopg2", "psycopg3"])
def test_target_unknown_takes_the_lock_before_has_table_with_a_parameter(gate, driver):
    """Issue 19 s.3: with the target unknown, 13 of 16 workers on SQLAlchemy
    2.x + psycopg 3 failed with DuplicateTable: its has_table sends the
    table's name as $1, the text does not name it, and the shim took no
    lock before it.  A text parameter equal to the version table's name
    counts as naming it: the probe waits for the lock like the literal form."""
    key = random_key()
    holder = gate.hold(key)
    c = gate.spawn([
        ["connect", "c1", {"driver": driver}], ["mark", "connected"], ["wait", "go0", 20],
        ["queryp", "c1", HAS_TABLE_20, ["alembic_version", "r", "p", "pg_catalog"]],
        ["mark", "took"], ["rollback", "c1"], ["close", "c1"],
    ], env={"MIGSHIM_LOCK_KEY": str(key)})  # no scripts, no MIGSHIM_HEADS
    c.wait_mark("connected")
    gate.touch("go0")
    gate.wait_lock_backend(c)
    time.sleep(0.6)
    assert not c.find("end", op="mark", args=["took"]), c.describe()  # waits for the lock
    t_release = holder.release()
    ev = c.wait_mark("took", timeout=5)
    assert ev["t"] - t_release < 1.0
    assert c.one("rows", name="c1")["rows"] == []
    assert c.finish() == 0, c.describe()  # (its rollback ends the lock's transaction)
    match_lines(c.gate(), [("info", gate.L.took), ("info", gate.L.xact_released)])


def test_target_unknown_wait_timeout_fail_stops_the_statement(gate):
    key = random_key()
    holder = gate.hold(key)
    c = gate.spawn([
        ["connect", "c1"],
        ["try", ["exec", "c1", CREATE_VT]],
        ["try", ["exec", "c1", insert_vt(R1)]],
        ["try", ["commit", "c1"]],
    ], env={"MIGSHIM_LOCK_KEY": str(key), "MIGSHIM_WAIT_TIMEOUT": "1",
            "MIGSHIM_ON_TIMEOUT": "fail"})
    assert c.finish() == 0, c.describe()
    L = gate.L
    try:
        # the peer still holds the lock: nothing of this process may be committed
        assert gate.sql("SELECT to_regclass('alembic_version') IS NULL") == [(True,)], \
            "the version table was created and committed without the lock\n" + c.describe()
        errors = c.find("error")
        assert errors and (errors[0]["op"], errors[0]["args"][1]) == ("exec", CREATE_VT), \
            c.describe()
        match_lines(c.gate(), [("error", L.timeout_fail)])
    finally:
        holder.release()


def test_lapsed_leader_wait_timeout_fail_stops_the_statement(gate):
    key = random_key()
    a = gate.spawn([
        ["connect", "a"], ["mark", "a_connected"], ["wait", "a_go", 30],
        ["try", ["exec", "a", CREATE_VT]],
        ["try", ["exec", "a", insert_vt(R1)]],
        ["try", ["commit", "a"]],
    ], env={"MIGSHIM_HEADS": R1, "MIGSHIM_LOCK_KEY": str(key), "MIGSHIM_LEADER_GRACE": "1",
            "MIGSHIM_WAIT_TIMEOUT": "1", "MIGSHIM_ON_TIMEOUT": "fail"}, name="A")
    a.wait_mark("a_connected")
    match_lines(a.gate(), [("info", gate.L.lead)])
    gate.wait_lock_backend(a)
    wait_until(lambda: not gate.lock_backends(a), 4.0, "the server to end A's lock session")
    holder = gate.hold(key)  # a peer leads now
    gate.touch("a_go")
    assert a.finish() == 0, a.describe()
    try:
        assert gate.sql("SELECT to_regclass('alembic_version') IS NULL") == [(True,)], \
            "the version table was created and committed without the lock\n" + a.describe()
        errors = a.find("error")
        assert errors and (errors[0]["op"], errors[0]["args"][1]) == ("exec", CREATE_VT), \
            a.describe()
        # (psycopg2's BEGIN notices the lapse first)
        m = match_lines(a.gate(), [("info", gate.L.lead), ("warn", gate.L.gave_up),
                                   ("error", gate.L.timeout_fail)])
        assert int(m[2].group("hpid")) == holder.pid
    finally:
        holder.release()


# ===========================================================================
# 7. the database holds a revision the scripts do not know

def test_unknown_revision_in_database_proceeds_at_once_without_lock(gate):
    scripts = write_scripts(gate.tmp / "app", [(R1, None)])
    assert alembic_heads(scripts) == {R1}
    gate.write_versions(["0002zzzz"])
    key = random_key()
    offset = gate.log_statements_from_now()
    holder = gate.hold(key)  # a lock attempt would be seen waiting
    sampler = gate.sampler()
    c = gate.spawn([
        ["connect", "c1"], ["query", "c1", "SELECT 'app'"], ["commit", "c1"], ["close", "c1"],
    ], env={"MIGSHIM_LOCK_KEY": str(key)}, cwd=scripts)
    assert c.finish() == 0, c.describe()
    assert c.connect_time("c1") < 0.5
    (m,) = match_lines(c.gate(), [("warn", gate.L.ahead)])
    assert m.group("revs") == "0002zzzz"
    assert sampler.stop() == [] and sampler.samples > 10
    log = [r for r in gate.server_log(offset) if r[0] != holder.pid]
    app_pid = c.one("connected", name="c1")["backend_pid"]
    assert {r[0] for r in log} == {app_pid}, log
    assert not [r for r in log if "advisory" in r[2] or r[1] in ("ERROR", "FATAL")], log


# ===========================================================================
# 8. psycopg 3 (ctypes): two processes racing Alembic's statements

def _race(gate, preload):
    gate.sql("CREATE TABLE migration_runs (rev text, pid int)")  # no unique key
    kids = []
    for i in (1, 2):
        kids.append(gate.spawn([
            ["import", "psycopg3"],
            ["mark", "ready%d" % i], ["wait", "go", 30],
            ["connect", "c", {"driver": "psycopg3"}],
            ["alembic_upgrade", "c", {"target": R1, "may_commit": "may_commit",
                                      "work_sleep": 0.2}],
            ["close", "c"],
        ], env={"MIGSHIM_HEADS": R1}, preload=preload, name="P%d" % i))
    for i, k in enumerate(kids, 1):
        k.wait_mark("ready%d" % i, timeout=15)
    gate.touch("go")
    return kids


def test_psycopg3_race_one_leads_the_other_waits(gate):
    kids = _race(gate, preload=True)

    def leader_and_waiter():
        leads = [k for k in kids if any(re.fullmatch(gate.L.lead, m) for _, m in k.gate())]
        if len(leads) != 1:
            return None
        other = [k for k in kids if k is not leads[0]][0]
        if not gate.waiting_backends(other) or not leads[0].find("waiting_to_commit"):
            return None
        return leads[0], other
    leader, waiter = wait_until(leader_and_waiter, 10, "one leader, one waiter\n" +
                                "\n".join(k.describe() for k in kids))
    assert not waiter.find("connected"), waiter.describe()  # still at the gate
    assert leader.one("checked")["exists"] is False
    gate.touch("may_commit")
    for k in kids:
        assert k.finish() == 0, k.describe()
    assert leader.find("migrated") and not leader.find("error")
    assert waiter.one("checked")["exists"] is True
    assert waiter.one("current")["revs"] == [R1]
    assert waiter.find("nothing_to_do") and not waiter.find("error")
    ml, _ = match_lines(leader.gate(), [("info", gate.L.lead), ("info", gate.L.released)])
    assert (ml.group("frm"), ml.group("to")) == ("(none)", R1)
    (mw,) = match_lines(waiter.gate(), [("info", gate.L.waited_any)])
    assert (mw.group("a_revs") or mw.group("p_revs")) == R1
    assert gate.sql("SELECT rev, pid FROM migration_runs") == [(R1, leader.pid)]
    assert gate.versions() == [R1]
    assert gate.lock_backends() == [] and gate.advisory_locks() == []


def test_psycopg3_race_without_the_shim_fails(gate):
    """Teeth: the same race without the preload breaks a worker."""
    kids = _race(gate, preload=False)

    def blocked():
        checked = [k.find("checked") for k in kids]
        if not all(checked):
            return None
        assert [c[0]["exists"] for c in checked] == [False, False]
        waiting = gate.mon_q(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock' "
            "AND query LIKE 'CREATE TABLE alembic_version%%'", (gate.db.name,))
        first = [k for k in kids if k.find("waiting_to_commit")]
        return len(waiting) == 1 and len(first) == 1 and first[0]
    first = wait_until(blocked, 10, "both past has_table, one blocked in CREATE TABLE\n" +
                       "\n".join(k.describe() for k in kids))
    second = [k for k in kids if k is not first][0]
    gate.touch("may_commit")
    assert first.finish() == 0, first.describe()
    assert second.finish() == 3, second.describe()
    (err,) = second.find("error")
    assert (err["op"], err["cls"], err["sqlstate"]) == \
        ("alembic_upgrade", "UniqueViolation", "23505"), err
    assert "pg_type_typname_nsp_index" in err["msg"]
    for k in kids:
        assert "migshim" not in k.stderr()
    assert gate.sql("SELECT rev, pid FROM migration_runs") == [(R1, first.pid)]


# ===========================================================================
# 9. threads of one process

def test_threads_share_one_decision_while_a_peer_leads(gate):
    key = random_key()
    holder = gate.hold(key)
    thread = lambda n: [  # noqa: E731
        ["tbarrier", "b", 2], ["mark", "t%d_connecting" % n],
        ["connect", "c%d" % n], ["mark", "t%d_connected" % n],
        ["query", "c%d" % n, "SELECT %d" % n], ["commit", "c%d" % n]]
    c = gate.spawn([["import", "psycopg2"], ["threads", [thread(1), thread(2)]],
                    ["mark", "done"]],
                   env={"MIGSHIM_HEADS": R1, "MIGSHIM_LOCK_KEY": str(key)})
    c.wait_mark("t1_connecting")
    c.wait_mark("t2_connecting")
    gate.wait_waiting_backend(c)

    def app_backends():
        return gate.mon_q("SELECT application_name FROM pg_stat_activity WHERE datname = %s "
                          "AND (application_name LIKE 'gate-c1@%%' "
                          "OR application_name LIKE 'gate-c2@%%')", (gate.db.name,))
    wait_until(lambda: len(app_backends()) == 2, 5, "both threads' connections up")
    t_end, seen = time.monotonic() + 0.6, []
    while time.monotonic() < t_end:
        # one decision, made on one of the two connections; no extra one
        # (a sample may fall on the ROLLBACK that ends a wait slice)
        w = gate.waiting_backends(c)
        assert len(w) <= 1, w
        seen.append(len(w))
        assert gate.lock_backends() == []
        assert not c.find("connected"), c.describe()
        time.sleep(0.01)
    assert sum(seen) >= 0.8 * len(seen), seen
    assert c.gate() == []
    t_release = holder.migrate_and_commit([R1])
    e1 = c.wait_event("connected", name="c1", timeout=5)
    e2 = c.wait_event("connected", name="c2", timeout=5)
    assert max(e1["t"], e2["t"]) - t_release < 1.0
    c.wait_mark("done")
    assert c.finish() == 0, c.describe()
    assert [e["rows"] for e in c.find("rows")] in ([[[1]], [[2]]], [[[2]], [[1]]])
    (m,) = match_lines(c.gate(), [("info", gate.L.waited_any)])  # one decision
    assert (m.group("a_revs") or m.group("p_revs")) == R1
    gate.wait_no_lock_backend(c, 1.0)


def test_threads_a_leading_process_never_waits_on_itself(gate):
    c = gate.spawn([
        ["connect", "c1"], ["mark", "c1_connected"], ["wait", "go", 20],
        ["threads", [[
            ["connect", "c2"], ["mark", "c2_connected"], ["wait", "go2", 20],
            ["exec", "c2", CREATE_VT], ["exec", "c2", insert_vt(R1)], ["commit", "c2"],
            ["mark", "c2_committed"]]]],
        ["close", "c2"], ["close", "c1"],
    ], env={"MIGSHIM_HEADS": R1})
    c.wait_mark("c1_connected")
    (m,) = match_lines(c.gate(), [("info", gate.L.lead)])
    key = int(m.group("key"))
    lock_pid, _, _ = gate.wait_lock_backend(c)
    gate.touch("go")
    c.wait_mark("c2_connected", timeout=5)
    assert c.connect_time("c2") < 0.5  # the lock is this process's own
    assert c.one("connected", name="c2")["tid"] == "T1"
    assert gate.assert_lock_held_by(c, key) == lock_pid
    assert len(gate.lock_backends()) == 1
    gate.touch("go2")
    c.wait_mark("c2_committed")
    match_lines(c.gate(), [("info", gate.L.lead), ("info", gate.L.released)])
    assert gate.advisory_locks() == []
    assert c.finish() == 0, c.describe()
    gate.wait_no_lock_backend(c, 1.0)
    assert gate.versions() == [R1]


# ===========================================================================
# 10. two heads (a branch), then a merge revision

def test_two_heads_need_both_rows_then_merge_revision_is_the_target(gate):
    branch = [(R1, None), (R2, R1), (R2B, R1)]
    two = write_scripts(gate.tmp / "two-heads", branch)
    assert alembic_heads(two) == {R2, R2B}
    gate.write_versions([R2])  # one branch migrated, the other not

    def revs(s):
        return set(s.split(","))

    # one head row of two: behind; the leader brings the other branch
    c1 = gate.spawn([
        ["connect", "c"], ["mark", "c1_connected"],
        ["exec", "c", insert_vt(R2B)], ["commit", "c"], ["close", "c"],
    ], env={}, cwd=two, name="branch-leader")
    assert c1.finish() == 0, c1.describe()
    ml, mr = match_lines(c1.gate(), [("info", gate.L.lead), ("info", gate.L.released)])
    assert ml.group("frm") == R2 and revs(ml.group("to")) == {R2, R2B}
    assert revs(mr.group("revs")) == {R2, R2B}
    assert gate.versions() == [R2, R2B]

    # both rows: at head
    c2 = gate.spawn([["connect", "c"], ["close", "c"]], env={"MIGSHIM_LOG": "debug"}, cwd=two,
                    name="branch-at-head")
    assert c2.finish() == 0, c2.describe()
    (m,) = match_lines(c2.gate(), [("debug", gate.L.at_head)])
    assert revs(m.group("revs")) == {R2, R2B}

    # a merge revision: the target is the merge alone
    merged = write_scripts(gate.tmp / "merged", branch + [(R3, (R2, R2B))])
    assert alembic_heads(merged) == {R3}
    c3 = gate.spawn([
        ["connect", "c"],
        # what Alembic sends for a merge: delete one branch's row, update the other's
        ["exec", "c", "DELETE FROM alembic_version WHERE alembic_version.version_num = '%s'"
                      % R2B],
        ["exec", "c", "UPDATE alembic_version SET version_num='%s' WHERE "
                      "alembic_version.version_num = '%s'" % (R3, R2)],
        ["commit", "c"], ["close", "c"],
    ], env={}, cwd=merged, name="merge-leader")
    assert c3.finish() == 0, c3.describe()
    ml, mr = match_lines(c3.gate(), [("info", gate.L.lead), ("info", gate.L.released)])
    assert revs(ml.group("frm")) == {R2, R2B} and ml.group("to") == R3
    assert mr.group("revs") == R3
    c4 = gate.spawn([["connect", "c"], ["close", "c"]], env={"MIGSHIM_LOG": "debug"},
                    cwd=merged, name="merged-at-head")
    assert c4.finish() == 0, c4.describe()
    (m,) = match_lines(c4.gate(), [("debug", gate.L.at_head)])
    assert m.group("revs") == R3
    assert gate.versions() == [R3]
    assert gate.lock_backends() == [] and gate.advisory_locks() == []


# ===========================================================================
# 11. version_table / version_table_schema, with a hostile schema name

def test_configured_version_table_in_a_schema_needing_quotes(gate):
    schema, table = 'we"ird;schema', "app_version"
    qschema = '"%s"' % schema.replace('"', '""')
    gate.sql("CREATE SCHEMA %s" % qschema)
    # decoys the gate must not read: the default table, and the table on search_path
    gate.write_versions([R1], table="alembic_version")
    gate.write_versions([R1], table=table)
    offset = gate.log_statements_from_now()
    env = {"MIGSHIM_HEADS": R1, "MIGSHIM_VERSION_TABLE": table,
           "MIGSHIM_VERSION_TABLE_SCHEMA": schema}
    c = gate.spawn([
        ["connect", "c"], ["mark", "connected"], ["wait", "go", 20],
        ["exec", "c", "CREATE TABLE %s.%s (version_num VARCHAR(32) NOT NULL, "
                      "CONSTRAINT %s_pkc PRIMARY KEY (version_num))" % (qschema, table, table)],
        ["exec", "c", "INSERT INTO %s.%s (version_num) VALUES ('%s')" % (qschema, table, R1)],
        ["commit", "c"], ["mark", "committed"], ["close", "c"],
    ], env=env, name="leader")
    c.wait_mark("connected")
    (m,) = match_lines(c.gate(), [("info", gate.L.lead)])
    assert m.group("frm") == "(none)" and m.group("to") == R1
    key = int(m.group("key"))
    gate.wait_lock_backend(c)
    gate.assert_lock_held_by(c, key)
    gate.touch("go")
    c.wait_mark("committed")
    match_lines(c.gate(), [("info", gate.L.lead), ("info", gate.L.released)])
    assert c.finish() == 0, c.describe()
    assert gate.advisory_locks() == []

    # the same settings from ./migshim.conf: at head
    cwd = gate.tmp / "conf-cwd"
    cwd.mkdir()
    (cwd / "migshim.conf").write_text(
        'version_table = "%s";\nversion_table_schema = "%s";\nheads = "%s";\n'
        % (table, schema.replace("\\", "\\\\").replace('"', '\\"'), R1))
    c2 = gate.spawn([["connect", "c"], ["query", "c", "SELECT 1"], ["close", "c"]],
                    env={"MIGSHIM_LOG": "debug"}, cwd=cwd, name="from-conf")
    assert c2.finish() == 0, c2.describe()
    (m2,) = match_lines(c2.gate(), [("debug", gate.L.at_head)])
    assert m2.group("revs") == R1

    log = gate.server_log(offset)
    assert not [r for r in log if r[1] in ("ERROR", "FATAL", "WARNING")], log
    # the gate's reads named the table exactly, quoted
    reads = [r[2] for r in log if "version_num AS v" in r[2]]
    assert reads and all('FROM "we""ird;schema"."app_version"' in r for r in reads), reads


# ===========================================================================
# 12. a lead ends when the leader's migration run ends (lead_settle)

@pytest.mark.parametrize("lock", ["xact", "session"])
def test_run_end_a_read_is_none_a_write_cut_short_is(gate, lock):
    """A version-table transaction that only read and committed does not end
    the leader's run (the app may read the version, then migrate in another
    transaction): the lock stays held past lead_settle.  One that wrote and
    was cut short (the connection closed inside it: the server rolls it
    back) does: the lock is released lead_settle later, with one line, and
    nobody has to call libpq for it."""
    gate.write_versions([R1])
    c = gate.spawn([
        ["connect", "c1"], ["mark", "connected"],
        ["query", "c1", "SELECT alembic_version.version_num FROM alembic_version"],
        ["commit", "c1"], ["mark", "read"], ["wait", "go", 20],
        ["exec", "c1", "UPDATE alembic_version SET version_num='%s' "
                       "WHERE alembic_version.version_num = '%s'" % (R2, R1)],
        ["close", "c1"], ["mark", "cut"],
        ["sleep", 4],   # the app lives on and never calls libpq again
    ], env={"MIGSHIM_HEADS": R3, "MIGSHIM_LOCK": lock}, name="leader")
    c.wait_mark("connected")
    (m,) = match_lines(c.gate(), [("info", gate.L.lead)])
    key = int(m.group("key"))
    c.wait_mark("read")
    time.sleep(1.6)   # > lead_settle (1 s)
    gate.assert_lock_held_by(c, key)
    assert len(c.gate()) == 1, c.gate()
    gate.touch("go")
    ev = c.wait_mark("cut")
    wait_until(lambda: gate.advisory_locks() == [], 5.0, "the lock released")
    released_after = time.time() - ev["t"]
    assert 0.9 < released_after < 3.5, released_after
    wait_until(lambda: len(c.gate()) == 2, 2.0, "the release line")  # logged just after
    (_, r) = match_lines(c.gate(), [
        ("info", gate.L.lead),
        ("warn", gate.L.run_failed)])
    assert (r.group("at"), r.group("to")) == (R1, R3)
    assert c.finish() == 0, c.describe()
    assert gate.versions() == [R1]
