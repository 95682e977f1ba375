#!/usr/bin/python3
"""The race guard's differential oracle (issue 11): outcomes, not log lines.

    tests/oracle/oracle.py [--runs N] [--seed S] [--only I] [--log DIR]
                           [--latency K] [--known-bugs]

(`make soak-guard [N=100] [SEED=S] [ONLY=I] [KNOWN_BUGS=1]` runs it inside
tests/harness/with-pg.sh; the short suite in `make check` is
tests/oracle/test_oracle.py, which uses this module.)

What runs
---------
A *migration family* is a directory of Alembic revisions under
tests/oracle/project/versions/ plus the tables that predate Alembic
(FAMILIES below): issue 11's three cases (a seed of an older table, a
genuine CREATE UNIQUE INDEX over duplicate data, a deferred unique
constraint), a non-idempotent UPDATE in a first revision, nextval/setval
and SELECT ... INTO, nested savepoints, multi-statement strings, a writing
CTE, INSERT ... RETURNING, COPY, a data migration that reads then writes,
a branch point (two heads) and a merge.

An *interleaving* is 2-4 processes migrating one database from the same
start, each one of

    plain    tests/oracle/runner.py (psycopg2) or replay.py (psycopg 3),
             without the shim
    cli      `python3 -m alembic upgrade heads`, without the shim
    off      shimmed, MIGSHIM_LOCK=off (the guard alone)
    lead     shimmed, the default gate (lock = xact)
    timeout  shimmed, MIGSHIM_WAIT_TIMEOUT=0.5, on_timeout=proceed: gives
             up waiting for a leader and migrates anyway

A runner shares its connection by one of Alembic's recipes (runner.py
--recipe: SQLAlchemy 2.0 style, 1.4's engine.connect(), or 1.4's
engine.begin(), which puts the later write into the migration's own
transaction).  Two things meet known guard bugs
(tests/oracle/test_oracle_bugs.py) and are drawn only with --known-bugs:
the engine.begin() recipe in a shimmed process, and the "validate" family.

Each interleaving is either *forced* -- advisory-lock barriers at the
revisions' points (oracle_hooks.point), held by the oracle and released
one at a time, each
only once every live process is provably stopped (exited, at its barrier,
or waiting on a lock in pg_locks) -- or *random*: seeded start delays and
pg_sleep at the points.  The shimmed processes read the scripts from the
alembic.ini in their working directory, as an app does.

Every interleaving runs twice on fresh copies of the start database: with
the shim as drawn (the *shim world*), and with every process unshimmed
(the *plain world*, same processes, drivers, barriers and delays).

The oracle (shim world; a breach is a shim bug)
-----------------------------------------------
* dump: the normalized dump of the final database equals the dump of one
  clean single-process run of the same family from the same start;
* false success: a process that exited 0 read the version table at its
  target on its own connection after its upgrade, and the final version
  table is at the target (in the genuine-error family nobody may succeed);
* later writes: each runner/replay process INSERTs its own audit row on
  the same connection after the upgrade and commits: the row is there iff
  the process exited 0 (lost = exited 0 without it);
* failures: every process that failed failed with an error the app makes
  itself in a race -- a race SQLSTATE (23505 42P07 42701 42710 42P06
  42723), a deadlock (40P01), or Alembic's "expected to match one row" --
  never a shim-made one (25006 read-only, 25P02, a lost connection, a hang,
  a crash); in the genuine-error family the set of failed processes equals
  the plain world's (all of them).

Normalization
-------------
The dump is `pg_dump --schema-only` (comments, SET lines and the random
\\restrict key of newer pg_dump releases dropped) plus
every table's rows as text, sorted, the audit table left out (it differs
by design).  Sequences are not transactional: a racer that fails -- with or
without the shim -- may already have advanced a sequence (nextval, a
SERIAL default, setval) before its error.  So sequence values are not
compared, and neither are SERIAL/identity columns (a column whose default
is nextval(...)): the families' data is designed so that no other value
depends on which process drew which number.

Reproducing: run I of seed S is drawn from random.Random("S-I"), so
`--seed S --only I` replays it.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
PROJECT = HERE / "project"
RUNNER = HERE / "runner.py"
REPLAY = HERE / "replay.py"
PYTHON = os.environ.get("E2E_PYTHON") or "/usr/bin/python3"   # tests/e2e/fleet.py
sys.path.insert(0, str(REPO / "tests"))
import shimbuild  # noqa: E402

RACE_STATES = {"23505", "42P07", "42701", "42710", "42P06", "42723"}
# 40001: the shim's stand-in failing a transaction that lost a race when it
# has no original error left to give (an answered version UPDATE that
# matched no row): a serialization failure, like a deadlock a concurrency
# error (the tally counts which processes fail in one world only).
APP_STATES = RACE_STATES | {"40P01", "40001"}
WAIT_TIMEOUT = "0.5"           # the timeout kind's MIGSHIM_WAIT_TIMEOUT
SETTLE_TIMEOUT = 30.0          # a step's connected processes must settle within this
START_TIMEOUT = 90.0           # a process must connect within this (a loaded machine)
PROC_TIMEOUT = 120.0           # and every process finish within this
BARRIER_BASE = 700000

# ---------------------------------------------------------------------------
# migration families


@dataclass
class Family:
    setup: List[str]              # tables older than Alembic
    starts: List[Optional[str]]   # where a run may start (None: empty)
    genuine: bool = False         # the migration fails, every time
    doc: str = ""
    known_bug: str = ""           # meets a known guard bug: drawn only with known_bugs


FAMILIES: Dict[str, Family] = {
    "seed": Family(["CREATE TABLE settings (k text, v text)"], [None, "seed1"],
                   doc="issue 11 case 1: the first revision seeds a table older than Alembic"),
    "deferred": Family(["CREATE TABLE settings (k text UNIQUE DEFERRABLE INITIALLY DEFERRED, "
                        "v text)"], [None, "def0"],
                       doc="issue 11 case 3: the seed violates a deferred unique constraint"),
    "genuine": Family(["CREATE TABLE people (name text)",
                       "INSERT INTO people VALUES ('x'), ('x'), ('y')"], [None, "gen1"],
                      genuine=True,
                      doc="issue 11 case 2: CREATE UNIQUE INDEX over duplicate data"),
    "counter": Family(["CREATE TABLE counters (name text PRIMARY KEY, n int NOT NULL)",
                       "INSERT INTO counters VALUES ('boots', 0)"], [None, "cnt1"],
                      doc="a non-idempotent UPDATE in the first revision"),
    "seq": Family([], [None, "seq0"], doc="nextval/setval, a new sequence, SELECT ... INTO"),
    "savepoint": Family([], [None, "sp0"], doc="nested savepoints (begin_nested)"),
    "multi": Family([], [None, "mul0"], doc="multi-statement strings"),
    "cte": Family(["CREATE TABLE inbox (msg text)",
                   "INSERT INTO inbox VALUES ('hello'), ('world')"], [None, "cte0"],
                  doc="a writing CTE (DELETE ... RETURNING into INSERT)"),
    "returning": Family([], [None, "ret0"], doc="INSERT ... RETURNING, then a write using it"),
    "copy": Family([], [None, "cp0"], doc="COPY ... FROM STDIN"),
    "datamig": Family(["CREATE TABLE accounts (name text PRIMARY KEY, balance int)",
                       "INSERT INTO accounts VALUES ('a', 10), ('b', 20)"], [None, "dm1"],
                      doc="a data migration that reads, then writes what it read"),
    "validate": Family([], [None, "val1"],
                       doc="a revision that checks what an earlier one left (a sanity check)"),
    "branch": Family([], [None, "br0"], doc="a branch point: two heads"),
    "merge": Family([], [None, "mg0", "mga"], doc="two branches and their merge"),
}

AUDIT_TABLE = "oracle_audit"
COMMON_SETUP = ["CREATE TABLE oracle_audit (who text NOT NULL)",
                # the app's own writing function, for runner.py --before function
                "CREATE FUNCTION oracle_record(w text) RETURNS text LANGUAGE sql "
                "AS $$ INSERT INTO oracle_audit (who) VALUES (w) RETURNING who $$"]

# The app's own work in the shared transaction before its migration
# (runner.py / replay.py --before; issue 19): all but "probe" are state a
# rollback destroys, so the guard must never map a race after them.
BEFORE_KINDS = ("function", "setting", "advisory", "temp", "probe")
BEFORE_RECIPES = ("future", "begin")   # the recipes whose migration joins that transaction

INI = """\
# made by tests/oracle/oracle.py for the migration family {family}
[alembic]
script_location = {project}
version_locations = {versions}
version_path_separator = os
prepend_sys_path = {project}

[loggers]
keys = root,alembic

[handlers]
keys = console

[formatters]
keys = generic

[logger_root]
level = WARN
handlers = console

[logger_alembic]
level = INFO
handlers =
qualname = alembic

[handler_console]
class = StreamHandler
args = (sys.stderr,)
level = NOTSET
formatter = generic

[formatter_generic]
format = %(levelname)-5.5s [%(name)s] %(message)s
"""

# ---------------------------------------------------------------------------
# scenarios

KINDS = ("plain", "cli", "off", "lead", "timeout")
SHIMMED = ("off", "lead", "timeout")


@dataclass
class Proc:
    name: str
    kind: str
    driver: str                   # psycopg2 | psycopg3
    delay: float = 0.0            # start delay (random mode; forced: after p0)
    points: Dict[str, dict] = field(default_factory=dict)   # point -> {sleep, barrier}
    recipe: str = "future"        # runner.py --recipe; "begin": replay.py --same-txn
    before: str = ""              # runner.py / replay.py --before (BEFORE_KINDS)

    def label(self):
        pts = ",".join("%s%s" % (p, "|" if c.get("barrier") else "~%.2f" % c["sleep"])
                       for p, c in self.points.items())
        return "%s:%s/%s%s%s%s" % (self.name, self.kind, self.driver,
                                   "+" + self.recipe if self.recipe != "future" else "",
                                   "<" + self.before + ">" if self.before else "",
                                   "[%s]" % pts if pts else "")


@dataclass
class Scenario:
    family: str
    start: Optional[str]
    mode: str                     # forced | random
    procs: List[Proc]
    release: List[int] = field(default_factory=list)   # barrier keys, in order
    tag: str = ""                 # "S-I" or a curated name

    def describe(self):
        return "%s %s from %s, %s: %s%s" % (
            self.tag, self.family, self.start or "empty", self.mode,
            " ".join(p.label() for p in self.procs),
            (" release " + ",".join(str(k - BARRIER_BASE) for k in self.release))
            if self.release else "")

    def barrier_owner(self, key):
        for p in self.procs:
            for c in p.points.values():
                if c.get("barrier") == key:
                    return p
        return None


# How a process shares its connection (runner.py --recipe; replay.py
# --same-txn for "begin").  A recipe that meets a known guard bug goes into
# KNOWN_BUG_RECIPES, drawn only with known_bugs ("begin" was one: the app's
# later write in the migration's transaction, fixed; see
# tests/oracle/test_oracle_bugs.py).
RECIPES = ("future", "legacy", "begin")
KNOWN_BUG_RECIPES: tuple = ()


def draw(seed, i, points_of, known_bugs=False) -> Scenario:
    """Interleaving i of seed `seed`.  points_of(family, start) -> the
    points a clean run passes, in order.  Without known_bugs a shimmed
    process never gets a recipe in KNOWN_BUG_RECIPES (it gets "future")."""
    rng = random.Random("%s-%s" % (seed, i))
    family = rng.choice(sorted(f for f in FAMILIES if known_bugs or not FAMILIES[f].known_bug))
    start = rng.choice(FAMILIES[family].starts)
    pts = points_of(family, start)
    mode = "forced" if rng.random() < 0.6 else "random"
    n = rng.randint(2, 4)
    procs = []
    for j in range(n):
        kind = rng.choices(KINDS, weights=[25, 8, 32, 25, 10])[0]
        driver = "psycopg2" if kind == "cli" else rng.choice(["psycopg2", "psycopg2", "psycopg3"])
        procs.append(Proc("p%d" % j, kind, driver))
    if not any(p.kind in SHIMMED for p in procs):
        procs[rng.randrange(1, n)].kind = rng.choice(SHIMMED)
    if any(p.kind == "timeout" for p in procs) and not any(p.kind == "lead" for p in procs):
        procs[0].kind = "lead"     # someone to time out on
        if procs[0].driver == "psycopg2" and rng.random() < 0.3:
            procs[0].driver = "psycopg3"
    for p in procs:
        w = [60, 20, 20] if p.driver == "psycopg2" else [80, 0, 20]
        p.recipe = rng.choices(RECIPES, weights=w)[0] if p.kind != "cli" else "future"
        if p.recipe in KNOWN_BUG_RECIPES and p.kind in SHIMMED and not known_bugs:
            p.recipe = "future"
    # the app's own work first (issue 19): drawn from a stream of its own,
    # so that a seed's processes, recipes and barriers stay what they were
    rb = random.Random("%s-%s-before" % (seed, i))
    for p in procs:
        if p.kind != "cli" and p.recipe in BEFORE_RECIPES and rb.random() < 0.4:
            p.before = rb.choice(BEFORE_KINDS)
    scn = Scenario(family, start, mode, procs, tag="%s-%s" % (seed, i))
    key = BARRIER_BASE
    if mode == "forced":
        # p0 goes first and stops late in its migration; the others may stop too
        late = pts[len(pts) // 2:] or pts
        key += 1
        procs[0].points[pts[-1] if rng.random() < 0.6 else rng.choice(late)] = {"barrier": key}
        for p in procs[1:]:
            p.delay = round(rng.uniform(0, 0.2), 3)
            if pts and rng.random() < 0.5:
                key += 1
                p.points[rng.choice(pts)] = {"barrier": key}
        scn.release = list(range(BARRIER_BASE + 1, key + 1))
        rng.shuffle(scn.release)
    else:
        for p in procs:
            p.delay = round(rng.uniform(0, 0.6), 3)
            for pt in pts:
                if rng.random() < 0.3:
                    p.points[pt] = {"sleep": round(rng.uniform(0.05, 0.4), 3)}
    return scn


def curated(points_of) -> List[Scenario]:
    """The short suite's interleavings (make check): every family and every
    peer kind at least once, each race forced."""
    def forced(tag, family, start, spec, order=None):
        pts = points_of(family, start)
        procs = []
        key = BARRIER_BASE
        keys = []
        for j, (kind, driver, where) in enumerate(spec):
            p = Proc("p%d" % j, kind, driver, delay=0.0)
            if where is not None:
                key += 1
                keys.append(key)
                p.points[pts[where]] = {"barrier": key}
            procs.append(p)
        release = [keys[k] for k in order] if order else keys
        return Scenario(family, start, "forced", procs, release, tag=tag)

    def before(scn, kind):  # p1 does `kind` of its own work first
        scn.procs[1].before = kind
        return scn

    P2, P3 = "psycopg2", "psycopg3"
    return [
        # issue 11 case 1: an unshimmed upgrade commits first, the shimmed one blocked behind it
        forced("case1", "seed", None, [("plain", P2, -1), ("off", P2, None)]),
        forced("case1-pg3", "seed", "seed1", [("cli", P2, -1), ("off", P3, None)]),
        # issue 11 case 2: genuine error; every process fails, with and without the shim
        forced("case2", "genuine", "gen1", [("lead", P2, None), ("lead", P3, None),
                                            ("off", P2, None)]),
        # issue 11 case 3: deferred unique constraint, the later write on the same connection
        forced("case3", "deferred", "def0", [("plain", P2, -1), ("off", P2, 0), ("off", P3, 1)],
               order=[1, 0, 2]),
        forced("counter", "counter", "cnt1", [("plain", P3, -1), ("off", P2, None)]),
        forced("counter-empty", "counter", None, [("plain", P2, -1), ("off", P2, None)]),
        forced("seq", "seq", "seq0", [("plain", P2, -1), ("off", P2, None), ("off", P3, None)]),
        forced("savepoint", "savepoint", "sp0", [("plain", P2, -1), ("off", P2, None)]),
        forced("savepoint-pg3", "savepoint", "sp0", [("plain", P2, -1), ("off", P3, None)]),
        forced("multi", "multi", "mul0", [("plain", P2, -1), ("off", P2, None)]),
        forced("cte", "cte", "cte0", [("plain", P2, -1), ("off", P2, None)]),
        forced("returning", "returning", "ret0", [("plain", P2, -1), ("off", P3, None)]),
        forced("copy", "copy", "cp0", [("plain", P2, -1), ("off", P3, None)]),
        forced("datamig", "datamig", "dm1", [("plain", P2, -1), ("off", P2, None)]),
        forced("branch", "branch", "br0", [("lead", P2, -1), ("timeout", P2, None),
                                           ("plain", P3, None)]),
        forced("merge", "merge", "mga", [("plain", P2, -1), ("off", P3, None),
                                         ("lead", P2, None)]),
        forced("timeout", "seed", None, [("lead", P3, -1), ("timeout", P2, None),
                                         ("timeout", P3, None)]),
        # issue 19: the app's own work first in the shared transaction; the race is
        # never answered (rolling back would destroy it), a probe first still is
        before(forced("before-write", "seed", None, [("plain", P2, -1), ("off", P2, None)]),
               "function"),
        before(forced("before-write-pg3", "seed", None, [("plain", P2, -1), ("off", P3, None)]),
               "function"),
        before(forced("before-setting-lead", "seed", None, [("plain", P2, -1),
                                                            ("lead", P2, None)]), "setting"),
        before(forced("before-probe", "seed", None, [("plain", P2, -1), ("off", P2, None)]),
               "probe"),
    ]


# ---------------------------------------------------------------------------
# the server


class Server:
    """The PostgreSQL in PGHOST/PGPORT (tests/harness/with-pg.sh)."""

    def __init__(self):
        self.host = os.environ["PGHOST"]
        self.port = os.environ["PGPORT"]
        self.user = os.environ.get("PGUSER") or "postgres"

    def dsn(self, db):
        return "host=%s port=%s user=%s dbname=%s" % (self.host, self.port, self.user, db)

    def url(self, db):
        from urllib.parse import quote, urlencode
        return "postgresql+psycopg2://%s@/%s?%s" % (
            quote(self.user, safe=""), quote(db, safe=""),
            urlencode({"host": self.host, "port": self.port}, safe="/"))

    def connect(self, db, autocommit=True, app="oracle-admin"):
        import psycopg2
        c = psycopg2.connect(self.dsn(db) + " application_name=" + app)
        c.autocommit = autocommit
        return c

    def admin(self, sql):
        c = self.connect(os.environ.get("PGDATABASE") or "postgres")
        try:
            with c.cursor() as cur:
                cur.execute(sql)
        finally:
            c.close()

    def create(self, name, template=None):
        self.admin('CREATE DATABASE "%s"%s' % (name, ' TEMPLATE "%s"' % template
                                                if template else " TEMPLATE template0"))

    def drop(self, name):
        self.admin('DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % name)

    def env(self, db):
        return {"PGHOST": self.host, "PGPORT": self.port, "PGUSER": self.user,
                "PGDATABASE": db, "DATABASE_URL": self.url(db)}


def base_env():
    """os.environ without anything that loads or configures the shim."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("LD_PRELOAD", "LD_AUDIT") and not k.startswith(("MIGSHIM_", "PYTEST_"))}
    env.update({"PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1",
                "PYTHONIOENCODING": "utf-8", "PGCONNECT_TIMEOUT": "15"})
    return env


# ---------------------------------------------------------------------------
# the normalized dump


def dump(server: Server, db: str) -> dict:
    """{"schema": [...pg_dump -s lines], "rows": {table: sorted rows}} plus,
    under "sequences" (not compared), every sequence's last_value."""
    pg_dump = "/usr/lib/postgresql/15/bin/pg_dump"
    if not os.path.exists(pg_dump):
        pg_dump = "pg_dump"
    out = subprocess.run([pg_dump, "--schema-only", "--no-owner", "--no-privileges",
                          "--no-comments", "-d", server.dsn(db)], capture_output=True,
                         text=True, check=True, env=base_env()).stdout
    schema = [ln for ln in out.splitlines()
              if ln.strip() and not ln.startswith(("--", "SET ", "SELECT pg_catalog.set_config",
                                                   "\\restrict ", "\\unrestrict "))]
    c = server.connect(db)
    rows, seqs = {}, {}
    try:
        with c.cursor() as cur:
            cur.execute("SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n "
                        "ON n.oid = c.relnamespace WHERE n.nspname = 'public' "
                        "AND c.relkind IN ('r', 'S') ORDER BY 1")
            for name, kind in cur.fetchall():
                if kind == "S":
                    cur.execute('SELECT last_value, is_called FROM public."%s"' % name)
                    seqs[name] = list(cur.fetchone())
                    continue
                if name == AUDIT_TABLE:
                    continue
                cur.execute(
                    "SELECT a.attname FROM pg_attribute a LEFT JOIN pg_attrdef d "
                    "ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
                    "WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped "
                    "AND a.attidentity = '' "
                    "AND coalesce(pg_get_expr(d.adbin, d.adrelid), '') NOT LIKE 'nextval(%%' "
                    "ORDER BY a.attnum", ('public."%s"' % name,))
                cols = [r[0] for r in cur.fetchall()]
                sel = ", ".join("coalesce(\"%s\"::text, '<null>')" % col for col in cols) or "1"
                cur.execute('SELECT %s FROM public."%s"' % (sel, name))
                rows[name] = sorted(list(r) for r in cur.fetchall())
    finally:
        c.close()
    return {"schema": schema, "rows": rows, "sequences": seqs}


def dump_diff(a: dict, b: dict) -> str:
    """A short description of how two dumps differ ("" if they don't)."""
    out = []
    if a["schema"] != b["schema"]:
        sa, sb = set(a["schema"]), set(b["schema"])
        out.append("schema: only here %s; only in the reference %s" % (
            sorted(sa - sb)[:5], sorted(sb - sa)[:5]))
    for t in sorted(set(a["rows"]) | set(b["rows"])):
        if a["rows"].get(t) != b["rows"].get(t):
            out.append("%s: %s vs reference %s" % (t, a["rows"].get(t), b["rows"].get(t)))
    return "; ".join(out)


# ---------------------------------------------------------------------------
# references: the start database (a template) and one clean run


@dataclass
class Reference:
    family: str
    start: Optional[str]
    template: str
    workdir: Path
    recording: Path
    target: List[str]
    points: List[str]
    ok: bool
    error: Optional[dict]
    dump: dict


class Library:
    """Start databases and clean single-process runs, made once each."""

    def __init__(self, server: Server, workroot: Path):
        self.server = server
        self.root = workroot
        self.refs: Dict[tuple, Reference] = {}
        self.dbs: List[str] = []
        self.prefix = "oracle_%s" % uuid.uuid4().hex[:8]

    def workdir(self, family):
        d = self.root / ("family-" + family)
        if not d.exists():
            d.mkdir(parents=True)
            (d / "alembic.ini").write_text(INI.format(
                family=family, project=PROJECT, versions=PROJECT / "versions" / family))
        return d

    def newdb(self, what, template=None):
        name = "%s_%s_%s" % (self.prefix, what, uuid.uuid4().hex[:6])
        self.server.create(name, template)
        self.dbs.append(name)
        return name

    def drop(self, name):
        self.server.drop(name)
        if name in self.dbs:
            self.dbs.remove(name)

    def close(self):
        for name in list(self.dbs):
            try:
                self.drop(name)
            except Exception as e:  # keep dropping the others
                print("oracle: cannot drop %s: %s" % (name, e), file=sys.stderr)

    def run_plain(self, workdir, db, args, timeout=120):
        env = base_env()
        env.update(self.server.env(db))
        env["PGAPPNAME"] = "oracle-setup"
        r = subprocess.run([PYTHON, str(RUNNER)] + args, cwd=str(workdir), env=env,
                           capture_output=True, text=True, timeout=timeout)
        lines = r.stdout.strip().splitlines()
        return r.returncode, (json.loads(lines[-1]) if lines else None), r.stderr

    def get(self, family, start) -> Reference:
        k = (family, start)
        if k in self.refs:
            return self.refs[k]
        fam = FAMILIES[family]
        wd = self.workdir(family)
        tmpl = self.newdb("tmpl_%s_%s" % (family, start or "empty"))
        c = self.server.connect(tmpl)
        with c.cursor() as cur:
            for s in COMMON_SETUP + fam.setup:
                cur.execute(s)
        c.close()
        if start:
            rc, out, err = self.run_plain(wd, tmpl, ["setup", "--target", start, "--no-audit"])
            if rc != 0:
                raise RuntimeError("setup of %s at %s failed: %s\n%s" % (family, start, out, err))
        db = self.newdb("ref_%s" % family, template=tmpl)
        rec = self.root / ("rec-%s-%s.json" % (family, start or "empty"))
        raw = rec.with_suffix(".raw")
        rc, out, err = self.run_plain(wd, db, ["ref", "--no-audit", "--record", str(raw)])
        if (rc == 0) == fam.genuine or out is None:
            raise RuntimeError("clean run of %s from %s: rc %s %s\n%s" % (
                family, start, rc, out, err))
        steps = json.loads(raw.read_text())
        target = self.heads(wd)
        v0 = []
        if start:
            c = self.server.connect(tmpl)
            with c.cursor() as cur:
                cur.execute("SELECT version_num FROM alembic_version")
                v0 = sorted(r[0] for r in cur.fetchall())
            c.close()
        rec.write_text(json.dumps({"family": family, "start": v0, "target": target,
                                   "steps": steps}, indent=1))
        ref = Reference(family, start, tmpl, wd, rec, target,
                        [s["name"] for s in steps if s["op"] == "point"],
                        rc == 0, out.get("error"), dump(self.server, db))
        self.drop(db)
        self.refs[k] = ref
        return ref

    @staticmethod
    def heads(workdir):
        from alembic.config import Config
        from alembic.script import ScriptDirectory
        cfg = Config(str(workdir / "alembic.ini"))
        return sorted(ScriptDirectory.from_config(cfg).get_heads())

    def points_of(self, family, start):
        return self.get(family, start).points


# ---------------------------------------------------------------------------
# one world of one interleaving


@dataclass
class Outcome:
    proc: Proc
    shimmed: bool
    rc: Optional[int]
    result: Optional[dict]        # runner/replay's JSON line
    seconds: float
    stderr: str
    hung: bool = False
    audit: bool = False           # its audit row is in the database
    before_row: bool = False      # its --before function's row ("NAME:before") is there

    @property
    def ok(self):
        return self.rc == 0

    @property
    def writes(self):
        return self.proc.kind != "cli"

    def error_text(self):
        if self.hung:
            return "hung"
        if self.result and self.result.get("error"):
            e = self.result["error"]
            return "%s %s %s" % (e.get("sqlstate") or e.get("class"), e.get("constraint") or "",
                                 (e.get("message") or "")[:90])
        tail = [ln for ln in self.stderr.strip().splitlines() if ln.strip()]
        return "rc %s: %s" % (self.rc, tail[-1][:120] if tail else "")

    def timed_out(self):
        """The gate's wait ran out (wait_timeout) and it proceeded."""
        return any("(wait_timeout)" in ln for ln in self.stderr.splitlines())

    def before_kept(self) -> bool:
        """The work it did before its migration is still there, as the
        process itself saw it (or, for a write, as the database holds it)."""
        if self.proc.before == "function":
            return self.before_row
        if self.proc.before in ("setting", "advisory", "temp"):
            return bool((self.result or {}).get("before_ok"))
        return True

    def guard_standins(self):
        return sum(1 for ln in self.stderr.splitlines()
                   if "guard:" in ln and "rolled this transaction back" in ln)


@dataclass
class World:
    shim: bool
    outcomes: List[Outcome]
    dump: dict
    unsettled: int
    db: str


def _psycopg2_codes():
    import psycopg2.errorcodes as ec
    import psycopg2.errors as er
    out = {}
    for k, code in vars(ec).items():
        if k.isupper() and isinstance(code, str) and len(code) == 5:
            try:
                out[er.lookup(code).__name__] = code
            except KeyError:
                pass
    return out


def cli_result(rc, stderr):
    """The alembic command prints no JSON: its error from the traceback."""
    import re
    if rc == 0:
        return {"ok": True, "error": None}
    err = {"class": None, "sqlstate": None, "constraint": None, "message": ""}
    for ln in stderr.splitlines():
        m = re.match(r"^sqlalchemy\.exc\.\w+: \(psycopg2\.errors\.(\w+)\) (.*)$", ln)
        if m:
            err.update({"class": m.group(1), "message": m.group(2),
                        "sqlstate": _psycopg2_codes().get(m.group(1))})
        m = re.match(r"^(?:alembic\.util\.exc\.CommandError: |\s*FAILED: |"
                     r"ERROR \[alembic\.util\.messaging\] )(.*)$", ln)
        if m:
            err.update({"class": "CommandError", "message": m.group(1)})
    return {"ok": False, "error": err if err["class"] else None}


def proc_argv(p: Proc, ref: Reference):
    if p.kind == "cli":
        return [PYTHON, "-m", "alembic", "-c", "alembic.ini", "upgrade", "heads"]
    before = ["--before", p.before] if p.before else []
    if p.driver == "psycopg3":
        return [PYTHON, str(REPLAY), p.name, str(ref.recording)] + (
            ["--same-txn"] if p.recipe == "begin" else []) + before
    return [PYTHON, str(RUNNER), p.name, "--recipe", p.recipe] + before


def proc_env(p: Proc, shim: bool, server: Server, db: str):
    env = base_env()
    env.update(server.env(db))
    env["PGAPPNAME"] = "oracle-" + p.name
    env["ORACLE_POINTS"] = json.dumps(p.points)
    if shim and p.kind in SHIMMED:
        env["LD_PRELOAD"] = shimbuild.preload(shimbuild.lib_path())
        env["MIGSHIM_LOG"] = "info"
        if p.kind == "off":
            env["MIGSHIM_LOCK"] = "off"
        elif p.kind == "timeout":
            env["MIGSHIM_WAIT_TIMEOUT"] = WAIT_TIMEOUT
            env["MIGSHIM_ON_TIMEOUT"] = "proceed"
    return env


class Running:
    def __init__(self, p: Proc, argv, env, cwd, logdir: Path):
        self.p = p
        self.out = logdir / (p.name + ".out")
        self.err = logdir / (p.name + ".err")
        self.t0 = time.monotonic()
        with open(self.out, "wb") as o, open(self.err, "wb") as e:
            self.proc = subprocess.Popen(argv, env=env, cwd=str(cwd), stdin=subprocess.DEVNULL,
                                         stdout=o, stderr=e, start_new_session=True)
        self.t1 = None
        self.hung = False

    def poll(self):
        rc = self.proc.poll()
        if rc is not None and self.t1 is None:
            self.t1 = time.monotonic()
        return rc

    def kill(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(10)
            self.hung = True
            self.t1 = time.monotonic()


def lock_state(cur):
    """{process name: [(waiting on advisory key | None, waiting on another lock)]}"""
    cur.execute(
        "SELECT substr(a.application_name, 8), "
        "  (SELECT (l.classid::bigint << 32) | l.objid::bigint FROM pg_locks l "
        "    WHERE l.pid = a.pid AND NOT l.granted AND l.locktype = 'advisory' LIMIT 1), "
        "  EXISTS (SELECT 1 FROM pg_locks l WHERE l.pid = a.pid AND NOT l.granted "
        "          AND l.locktype <> 'advisory') "
        "FROM pg_stat_activity a WHERE a.datname = current_database() "
        "AND a.application_name LIKE 'oracle-p%'")
    out: Dict[str, list] = {}
    for name, adv, other in cur.fetchall():
        out.setdefault(name, []).append((adv, other))
    return out


def settle(cur, running: List[Running], shim: bool) -> bool:
    """Until every live process is stopped: exited, at one of its own
    barriers, waiting on a lock behind another backend, or (not the
    timeout kind, whose wait must run out first) waiting for the gate's
    lock.  Two polls in a row must agree.  False after SETTLE_TIMEOUT
    (counted from when every live process has connected, at most
    START_TIMEOUT after the call)."""
    t0 = time.monotonic()
    deadline = t0 + SETTLE_TIMEOUT
    agreed = 0
    while time.monotonic() < deadline:
        state = lock_state(cur)
        ok = True
        starting = [r for r in running if r.poll() is None and r.p.name not in state]
        if starting and time.monotonic() < t0 + START_TIMEOUT:
            deadline = max(deadline, time.monotonic() + SETTLE_TIMEOUT)
        for r in running:
            if r.poll() is not None:
                continue
            mine = {c["barrier"] for c in r.p.points.values() if c.get("barrier")}
            stopped = False
            for adv, other in state.get(r.p.name, []):
                if other or (adv is not None and adv in mine):
                    stopped = True
                elif adv is not None and not (shim and r.p.kind == "timeout"):
                    stopped = True
            if not stopped:
                ok = False
                break
        agreed = agreed + 1 if ok else 0
        if agreed >= 2:
            return True
        time.sleep(0.03)
    return False


def run_world(server: Server, lib: Library, scn: Scenario, shim: bool, logdir: Path) -> World:
    ref = lib.get(scn.family, scn.start)
    db = lib.newdb("run", template=ref.template)
    logdir.mkdir(parents=True, exist_ok=True)
    admin = server.connect(db, app="oracle-admin")
    cur = admin.cursor()
    keys = sorted({c["barrier"] for p in scn.procs for c in p.points.values()
                   if c.get("barrier")})
    for k in keys:
        cur.execute("SELECT pg_advisory_lock(%s)", (k,))
    running: List[Running] = []
    unsettled = 0

    def start(p):
        running.append(Running(p, proc_argv(p, ref), proc_env(p, shim, server, db),
                               ref.workdir, logdir))

    try:
        if scn.mode == "forced":
            start(scn.procs[0])
            unsettled += not settle(cur, running, shim)
            t0 = time.monotonic()
            for p in sorted(scn.procs[1:], key=lambda p: p.delay):
                time.sleep(max(0.0, p.delay - (time.monotonic() - t0)))
                start(p)
            unsettled += not settle(cur, running, shim)
            for k in scn.release:
                cur.execute("SELECT pg_advisory_unlock(%s)", (k,))
                unsettled += not settle(cur, running, shim)
        else:
            t0 = time.monotonic()
            for p in sorted(scn.procs, key=lambda p: p.delay):
                time.sleep(max(0.0, p.delay - (time.monotonic() - t0)))
                start(p)
        deadline = time.monotonic() + PROC_TIMEOUT
        while [r for r in running if r.poll() is None]:  # poll every one: exit times
            if time.monotonic() > deadline:
                for r in running:
                    r.kill()
                break
            time.sleep(0.02)
    finally:
        for r in running:
            r.kill()
        cur.execute("SELECT pg_advisory_unlock_all()")
        admin.close()
    c = server.connect(db)
    with c.cursor() as cur:
        cur.execute("SELECT who FROM oracle_audit")
        audit = [r[0] for r in cur.fetchall()]
    c.close()
    outcomes = []
    for r in running:
        lines = r.out.read_text("utf-8", "replace").strip().splitlines()
        result = None
        if r.p.kind == "cli" and not r.hung:
            result = cli_result(r.proc.returncode, r.err.read_text("utf-8", "replace"))
        elif lines:
            try:
                result = json.loads(lines[-1])
            except ValueError:
                result = None
        o = Outcome(r.p, shim and r.p.kind in SHIMMED, None if r.hung else r.proc.returncode,
                    result, (r.t1 or time.monotonic()) - r.t0,
                    r.err.read_text("utf-8", "replace"), hung=r.hung,
                    audit=audit.count(r.p.name) > 0,
                    before_row=audit.count(r.p.name + ":before") > 0)
        if audit.count(r.p.name) > 1:
            o.stderr += "\noracle: audit row %d times\n" % audit.count(r.p.name)
        outcomes.append(o)
    outcomes.sort(key=lambda o: o.proc.name)
    d = dump(server, db)
    lib.drop(db)
    return World(shim, outcomes, d, unsettled, db)


# ---------------------------------------------------------------------------
# the verdict


def app_error(o: Outcome) -> bool:
    """The failure is one the app makes itself in a race (or the genuine
    error): never one the shim made."""
    # runner/replay exit 1 on the app's error; the alembic command 1 on a
    # database error, 255 on its CommandError
    codes = (1, 255) if o.proc.kind == "cli" else (1,)
    if o.hung or o.rc not in codes or not o.result or not o.result.get("error"):
        return False
    e = o.result["error"]
    if e.get("sqlstate") in APP_STATES:
        return True
    return e.get("class") == "CommandError" and "expected to match one row" in (
        e.get("message") or "")


@dataclass
class Verdict:
    scn: Scenario
    shim: World
    plain: World
    problems: List[str] = field(default_factory=list)
    false_successes: int = 0
    dump_mismatch: int = 0
    lost_writes: int = 0
    lost_before: int = 0
    shim_errors: int = 0
    genuine_sets_differ: int = 0
    notes: List[str] = field(default_factory=list)

    @property
    def ok(self):
        return not self.problems

    def report(self):
        lines = [self.scn.describe()]
        for w in (self.shim, self.plain):
            lines.append("  %s world%s:" % ("shim" if w.shim else "plain",
                                           " (%d steps unsettled)" % w.unsettled
                                           if w.unsettled else ""))
            for o in w.outcomes:
                lines.append("    %-40s %s %5.2fs %s%s" % (
                    o.proc.label()[:40], "ok  " if o.ok else "FAIL", o.seconds,
                    "" if o.ok else o.error_text(),
                    " [stand-in]" if o.guard_standins() else ""))
        lines += ["  PROBLEM: " + p for p in self.problems]
        lines += ["  note: " + n for n in self.notes]
        return "\n".join(lines)


def judge(scn: Scenario, ref: Reference, shim: World, plain: World) -> Verdict:
    v = Verdict(scn, shim, plain)
    final = sorted(r[0] for r in shim.dump["rows"].get("alembic_version", []))
    if dump_diff(shim.dump, ref.dump):
        v.dump_mismatch += 1
        v.problems.append("dump differs from the clean run: " + dump_diff(shim.dump, ref.dump))
    for o in shim.outcomes:
        who = "%s (%s)" % (o.proc.label(), "shimmed" if o.shimmed else "unshimmed")
        if o.ok:
            seen = sorted((o.result or {}).get("versions") or []) if o.writes else ref.target
            if FAMILIES[scn.family].genuine or seen != ref.target or final != ref.target:
                v.false_successes += 1
                v.problems.append("%s exited 0 but the version table is %s (its own read: %s), "
                                  "target %s" % (who, final, seen, ref.target))
            if o.writes and not o.audit:
                v.lost_writes += 1
                v.problems.append("%s exited 0 but its later write is not in the database" % who)
            if not o.before_kept():
                v.lost_before += 1
                v.problems.append("%s exited 0 but the work it did before its migration (%s) "
                                  "is gone" % (who, o.proc.before))
        else:
            if o.writes and o.audit:
                v.lost_writes += 1
                v.problems.append("%s failed but its later write is in the database" % who)
            if o.before_row:
                v.lost_before += 1
                v.problems.append("%s failed but its earlier write is in the database" % who)
            twin = next((q for q in plain.outcomes if q.proc.name == o.proc.name), None)
            if not app_error(o) and twin and not twin.ok and twin.error_text() == o.error_text():
                # not shim-made: the same process fails the same way without the shim
                # (a random interleaving of the "validate" family can do this)
                v.notes.append("%s failed with %s, as it does without the shim"
                               % (who, o.error_text()))
            elif not app_error(o):
                v.shim_errors += 1
                v.problems.append("%s failed with an error the app does not make in a race: %s"
                                  % (who, o.error_text()))
    if FAMILIES[scn.family].genuine:
        fs = sorted(o.proc.name for o in shim.outcomes if not o.ok)
        fp = sorted(o.proc.name for o in plain.outcomes if not o.ok)
        if fs != fp:
            v.genuine_sets_differ += 1
            v.problems.append("genuine error: failed with the shim %s, without %s" % (fs, fp))
    # the plain world is the baseline: reported, never the shim's fault
    if dump_diff(plain.dump, ref.dump):
        v.notes.append("plain world's dump differs from the clean run: "
                       + dump_diff(plain.dump, ref.dump))
    for o in plain.outcomes:
        if not o.ok and not app_error(o):
            v.notes.append("plain world: %s failed with %s" % (o.proc.label(), o.error_text()))
    return v


class Tally:
    def __init__(self, seed=None):
        self.seed = seed
        self.verdicts: List[Verdict] = []
        self.latency: Optional[dict] = None
        self.elapsed = 0.0            # main() sets it; else since the first verdict
        self.t0 = None

    def add(self, v: Verdict):
        if self.t0 is None:
            self.t0 = time.monotonic()
        self.verdicts.append(v)

    def table(self) -> str:
        vs = self.verdicts
        n = len(vs)
        procs = sum(len(v.shim.outcomes) for v in vs)
        fail_s = sum(1 for v in vs for o in v.shim.outcomes if not o.ok)
        fail_p = sum(1 for v in vs for o in v.plain.outcomes if not o.ok)
        standins = sum(o.guard_standins() for v in vs for o in v.shim.outcomes)
        saved = sum(1 for v in vs for a, b in zip(v.shim.outcomes, v.plain.outcomes)
                    if a.ok and not b.ok)
        # the same process, the same barriers or delays: in a random
        # interleaving another process may win the race in the other world
        lost = [(v.scn.mode, a.error_text()) for v in vs
                for a, b in zip(v.shim.outcomes, v.plain.outcomes) if b.ok and not a.ok]
        rows = [
            ("interleavings run", "%d (%d forced, %d random; %d processes per world)" % (
                n, sum(v.scn.mode == "forced" for v in vs),
                sum(v.scn.mode == "random" for v in vs), procs)),
            ("false successes", sum(v.false_successes for v in vs)),
            ("dump mismatches", sum(v.dump_mismatch for v in vs)),
            ("lost later writes", sum(v.lost_writes for v in vs)),
            ("lost earlier work (app's own, before its migration)",
             "%d (%d processes did some: %s)" % (
                 sum(v.lost_before for v in vs),
                 sum(1 for v in vs for o in v.shim.outcomes if o.proc.before),
                 ", ".join("%s %d" % (k, sum(1 for v in vs for o in v.shim.outcomes
                                             if o.proc.before == k))
                           for k in BEFORE_KINDS))),
            ("shim-made errors", sum(v.shim_errors for v in vs)),
            ("genuine-error failure sets differing", sum(v.genuine_sets_differ for v in vs)),
            ("failures with shim / without", "%d / %d (of %d each)" % (fail_s, fail_p, procs)),
            ("  failed without, succeeded with", saved),
            ("  succeeded without, failed with", "%d (%d forced, %d random)" % (
                len(lost), sum(m == "forced" for m, _ in lost),
                sum(m == "random" for m, _ in lost))),
            ("guard stand-ins (races answered)", standins),
            ("shimmed peers whose wait timed out", sum(o.timed_out() for v in vs
                                                        for o in v.shim.outcomes)),
            ("steps that did not settle", sum(v.shim.unsettled + v.plain.unsettled
                                               for v in vs)),
        ]
        if self.latency:
            L = self.latency
            rows.append(("genuine-error latency, shim leading",
                         "median %.3f s (%s)" % (L["shim_median"], " ".join(
                             "%.2f" % x for x in L["shim"]))))
            rows.append(("genuine-error latency, no shim",
                         "median %.3f s (%s)" % (L["plain_median"], " ".join(
                             "%.2f" % x for x in L["plain"]))))
        w = max(len(r[0]) for r in rows)
        out = ["guard oracle%s: %d interleavings, %.0f s" % (
            " seed %s" % self.seed if self.seed is not None else "", n,
            self.elapsed or (time.monotonic() - self.t0 if self.t0 else 0.0))]
        out += ["  %-*s  %s" % (w, k, val) for k, val in rows]
        fams: Dict[str, list] = {}
        for v in vs:
            f = fams.setdefault(v.scn.family, [0, 0, 0, 0])
            f[0] += 1
            f[1] += sum(o.guard_standins() for o in v.shim.outcomes)
            f[2] += sum(1 for o in v.shim.outcomes if not o.ok)
            f[3] += sum(1 for o in v.plain.outcomes if not o.ok)
        out.append("  per family: runs, stand-ins, failures with / without shim")
        for f, (a, b, c, d) in sorted(fams.items()):
            out.append("    %-10s %4d %4d %4d / %d" % (f, a, b, c, d))
        return "\n".join(out)

    def breaches(self):
        return [v for v in self.verdicts if not v.ok]


# The short suite's tally (tests/oracle/test_oracle.py; printed by
# tests/oracle/conftest.py at the end of the pytest run).
SESSION = Tally()


def run_interleaving(server, lib, scn: Scenario, logroot: Path) -> Verdict:
    ref = lib.get(scn.family, scn.start)
    d = logroot / scn.tag
    shim = run_world(server, lib, scn, True, d / "shim")
    plain = run_world(server, lib, scn, False, d / "plain")
    v = judge(scn, ref, shim, plain)
    if v.ok:
        shutil.rmtree(d, ignore_errors=True)
    else:
        (d / "verdict.txt").write_text(v.report() + "\n")
    return v


def measure_latency(server, lib, k) -> dict:
    """issue 11 case 2: one process leads (lock = xact, race_wait at its
    default 30 s) through CREATE UNIQUE INDEX over duplicate data; start to
    exit, with the shim and without, alternated."""
    ref = lib.get("genuine", "gen1")
    res = {"shim": [], "plain": []}
    for i in range(k):
        for shim in (True, False):
            p = Proc("p0", "lead", "psycopg2")
            db = lib.newdb("lat", template=ref.template)
            env = proc_env(p, shim, server, db)
            t0 = time.monotonic()
            r = subprocess.run(proc_argv(p, ref), env=env, cwd=str(ref.workdir),
                               capture_output=True, text=True, timeout=120)
            took = time.monotonic() - t0
            lib.drop(db)
            out = json.loads(r.stdout.strip().splitlines()[-1])
            if r.returncode != 1 or (out.get("error") or {}).get("sqlstate") != "23505":
                raise RuntimeError("latency run: expected 23505, got rc %s %s\n%s" % (
                    r.returncode, out, r.stderr))
            if shim and "leading" not in r.stderr:
                raise RuntimeError("latency run: the shimmed process did not lead\n" + r.stderr)
            res["shim" if shim else "plain"].append(took)
    res["shim_median"] = statistics.median(res["shim"])
    res["plain_median"] = statistics.median(res["plain"])
    return res


# ---------------------------------------------------------------------------
# the command


def main(argv=None):
    ap = argparse.ArgumentParser(description="the race guard's differential oracle")
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--seed", default=None)
    ap.add_argument("--only", type=int, default=None)
    ap.add_argument("--latency", type=int, default=5, help="genuine-error latency runs")
    ap.add_argument("--log", default=str(REPO / "build" / "soak-guard"))
    ap.add_argument("--known-bugs", action="store_true",
                    help="also draw what meets a known guard bug (test_oracle_bugs.py)")
    a = ap.parse_args(argv)
    seed = a.seed if a.seed is not None else str(random.SystemRandom().randrange(10 ** 6))
    print("soak-guard: seed %s (replay: make soak-guard SEED=%s [ONLY=I])" % (seed, seed),
          flush=True)
    if not shimbuild.lib_path().is_file():
        print("soak-guard: %s not built" % shimbuild.lib_path(), file=sys.stderr)
        return 2
    server = Server()
    logroot = Path(a.log) / ("seed-%s" % seed)
    logroot.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="oracle."))
    lib = Library(server, work)
    tally = Tally(seed)
    t0 = time.monotonic()
    try:
        which = [a.only] if a.only is not None else range(a.runs)
        for i in which:
            scn = draw(seed, i, lib.points_of, a.known_bugs)
            v = run_interleaving(server, lib, scn, logroot)
            tally.add(v)
            mark = "ok" if v.ok else "BREACH"
            print("[%3d] %-6s %s" % (i, mark, scn.describe()), flush=True)
            if not v.ok:
                print(v.report(), flush=True)
        if a.latency:
            tally.latency = measure_latency(server, lib, a.latency)
    finally:
        lib.close()
        shutil.rmtree(work, ignore_errors=True)
    tally.elapsed = time.monotonic() - t0
    print()
    print(tally.table())
    if tally.breaches():
        print("soak-guard: %d interleavings breached the oracle; logs under %s" % (
            len(tally.breaches()), logroot))
        return 1
    print("soak-guard: every interleaving met the oracle")
    return 0


if __name__ == "__main__":
    sys.exit(main())
