"""Real fleets of drivers that bypass libpq (issue 22): asyncpg and pg8000,
each run twice, without the preload and with the library
build/libmigshim.so (shimbuild.lib_path()), against a real server.

The apps (tests/e2e/wire_app/, their scripts in migrations/: wire0001 the enum
type plan_tier and accounts, wire0002 the enum type account_status and plans,
wire0003 the plans' rows (data, no unique key) and pg_sleep(2)):

* asgi_app.py: FastAPI; every worker runs `alembic upgrade head` in its
  start-up event through Alembic's async env.py (postgresql+asyncpg://,
  NullPool) on its own event loop; a 5 ms ticker records the loop's gaps
  while the worker migrates (or waits for the leader);
* pg8000_app.py: WSGI; every worker sends Alembic's statement sequence itself
  through pg8000 1.10.6 at import (SQLAlchemy 1.4 refuses pg8000 < 1.16.6).

Every worker meets the others at a start line (WIRE_BARRIER_DIR) just before
its first statement, so the race is forced, not hoped for.  8 workers each.

The scenarios (each server with each transport and each start once; both
drivers over both transports):

    asyncpg-gunicorn-unix-empty   gunicorn -k uvicorn.workers.UvicornWorker (uvloop), Unix socket, empty
    asyncpg-gunicorn-tcp-behind   the same over TCP, database at wire0001 (1 of 3)
    asyncpg-uvicorn-tcp-empty     uvicorn --workers 8 --loop asyncio, TCP, empty
    asyncpg-uvicorn-unix-behind   the same over a Unix socket, at wire0001
    pg8000-gunicorn-unix-empty    gunicorn sync workers, pg8000, Unix socket, empty
    pg8000-gunicorn-tcp-behind    the same over TCP, at wire0001
    asyncpg-gunicorn-tls-empty    UvicornWorker, TCP with ssl=require, empty
    asyncpg-uvicorn-prefer-behind uvicorn, TCP with asyncpg's default sslmode (prefer: TLS,
                                  the server has ssl on), at wire0001
    pg8000-gunicorn-tls-empty     gunicorn sync, pg8000 with ssl=True, empty

The TLS scenarios run with the server's ssl = on (a fresh self-signed
certificate) and check, preloaded, that the leader's line names its
connection ", TLS)": gated above the TLS layer (wiressl.h).

The oracle, preloaded (MIGSHIM_LOG=info): every worker ready (its app line,
GET /ready 200, alive, Gunicorn forked exactly 8), no worker failed, no race
error and no migshim warning or error in the output, exactly one "leading"
line (tests/e2e/fleet.py's GATE_PATTERNS) and the leader ran every revision
it migrated, alembic_version at wire0003, each revision once in
migration_runs, each plan exactly once.  asyncpg: the longest event-loop
stall while a worker waits for the leader, over the fleet, < 1000 ms (the
goal is 20 ms per wait slice), and its own part < 150 ms: the stall less the
time the loop's thread waited for a CPU within it (wait_stall_own_ms: the
thread's run_delay in /proc/thread-self/schedstat, asgi_app.py).  A
worker's wait is its longest database operation (asgi_app.py marks each
with SQLAlchemy's events), counted when it lasted 1 s or more, its stall the
longest gap that began within it (a gap already going on when it began is
the app's work before it) (the leader's migration sleeps 2 s); at least one
worker other than the leader must have waited so.  The longest stall over the whole
migration, the app's own CPU work included (Alembic in 8 workers on 2 cores),
is printed, not bounded.

Without the preload the same fleet must show the race (the teeth): a worker
failed with the race's own errors, the fleet did not come up, or a revision
or row is there twice.  Time to ready (or to the failure) and the stalls of
both runs are printed, and tabled at the end of the module.

Measured 2026-12-07 (2-core VM shared with other sessions; -k plain, 32 s):
every plain fleet raced, 7 of 8 workers failed on
pg_type_typname_nsp_index (from empty on alembic_version's row type, from
behind on CREATE TYPE account_status), Gunicorn halted, uvicorn's parent kept
serving with 1 worker; outcome after 2.8-8.5 s; loop stall over the
migration 44-180 ms, within the wait 6-15 ms.  A stand-in gate in a
throw-away copy of the app (an advisory lock taken in the migration
transaction, "leading"/"waited" lines written by the app) passed the oracle
in all six fleets, ready in 2.8-6.7 s, 8-18 ms stall while waiting
(160-215 ms over the migration); blocking 2.5 s in the loop there instead
gave 2510 ms and failed the bound.

Measured with the wire gate (phase 2a, 2026-12-07, the same machine): all
six preloaded fleets passed the oracle, ready in 2.7-4.1 s (the plain fleets'
outcome came at 2.7-4.2 s), one leader each; the longest loop stall of a
waiter within its wait was 82-101 ms over the fleet (the goal is 20 ms per
slice; test_wire_gate.py's lone asyncio app measures 6-12 ms: here 8 workers
and the leader's Alembic share 2 cores).  That figure was the app's, not the
wait's (2026-12-07, an instrumented copy of asgi_app.py, the four asyncpg
fleets 3 times): the gap it counted began 33-158 ms before the wait's
operation did (create_async_engine and SQLAlchemy's connect, 8 workers leaving
the start line together) and ended 0-40 ms into it; the gaps from 100 ms after
the wait began to 50 ms before it ended were 6-26 ms, and a waiter's process,
its gate thread included, used 1.7-2.6 % of a core over the 2.2 s wait (no
busy loop on the held socket).  Counting only the gaps that begin within the
wait (asgi_app.py since): 14-36 ms over 8 asyncpg fleets (two runs of the
file); what exceeds 20 ms lies at the ends of the connect (its handshake, and
7 waiters resuming together into SQLAlchemy's dialect set-up), not in the
waiting slices.  The preloaded half alone:

    MIGSHIM_BUILD_DIR=$PWD/build tests/harness/with-pg.sh \\
        /usr/bin/python3 -m pytest -q -p no:cacheprovider tests/e2e/test_wire_fleet.py -k preloaded

(-k plain: the unpreloaded half.)

Over TLS (2026-12-07, the same machine, one run): each plain fleet raced (7
of 8 failed on pg_type_typname_nsp_index); preloaded, each was ready with one
leader: asyncpg ssl=require under gunicorn in 3.7 s, asyncpg's default
(prefer) under uvicorn in 4.5 s, pg8000 in 2.8 s; the longest waiter's stall
within its wait 18.4 and 18.2 ms (the wait is driven by the server's replies
through the app's own SSL_read_ex calls: no thread speaks on the socket).

Measured 2026-12-08 (this 2-core VM, a `make check` of main running all
along): -k "preloaded and asyncpg" 4 times and -k preloaded once, 30 asyncpg
fleets, all passed, in each 8 workers whose longest operation lasted 1 s or
more.  The ticker now reads its thread's run_delay at each tick, and each
gap splits into the time the loop's thread waited for a CPU and its own.
The longest stall within the wait over a fleet was 18.5-80.4 ms in the 20
plaintext fleets and 15.8-37.5 ms in the 10 TLS ones; its own part
5.8-12.2 ms in plaintext (17 of the 20 at most 6.7 ms) and 5.9-22.1 ms over
TLS.  Per worker the own stall's median was 5.7 ms (plaintext, 160 workers)
and 6.0 ms (TLS, 80): its floor is the ticker's 5 ms sleep (a gap is the
time between two wake-ups); the gap with a worker's longest own stall spent
at most 5.0 ms on a CPU.  In plaintext the 20-80 ms stalls are the thread
waiting for a CPU, which no gate can avoid: no gap within a wait had more
than 12.2 ms of its own, and nothing in it was shown to be the shim's (the
12.2 ms, 0.0 ms on a CPU, came once and its cause was not found).  Over TLS
the app's thread waits in its SSL_read_ex for the gate thread to take the
server's reply and give it the next statement (wiressl.c's pump, a
condition variable), so the gate thread's wait for a CPU counts as the
loop's own.  A throw-away copy of the app that also read the other threads'
schedstat at each tick (the six fleets twice) showed it: the two TLS gaps
with more than 8 ms of own stall (17.9 and 16.0 ms, 0.9 ms on a CPU each,
33-40 ms into the connect) each held 14.0-16.7 ms of run_delay of a thread
that is not a Python thread and started within the gap, the gate thread;
the one plaintext gap over 8 ms (8.8 ms) spent 4.6 ms on a CPU and held no
other thread's run_delay.  A throw-away copy that blocked the loop's thread
250 ms in its connection's first statement (time.sleep in asyncio's socket
transport's write; uvicorn --loop asyncio, TCP from empty and Unix from
behind) gave 250.5-253.3 ms of own stall in 7 of the 8 workers of each fleet
(the eighth 5.3-5.4 ms) and failed the 150 ms bound, the 1000 ms one
passing.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fleet import (GUNICORN_CONF, PYTHON, RACE_ERROR_RE, FleetResult,  # noqa: E402
                   _alive, clean_env, db_state, free_port, migshim_lines_in,
                   migshim_problems_in)
import shimbuild  # noqa: E402  (tests/shimbuild.py: fleet.py puts tests/ on the path)

APP_DIR = Path(__file__).resolve().parent / "wire_app"
WORKERS = 8
REVISIONS = ["wire0001", "wire0002", "wire0003"]
HEADS = ["wire0003"]
PLANS = ["Free", "Pro", "Team"]
BOOT_TIMEOUT = 150.0      # start -> every worker accounted for (2-core machine, 8 interpreters)
FAILURE_SETTLE = 10.0     # after a failure, how long the others get to show how they fared
# The goal is 20 ms per slice.  What the bound must catch is a wait that
# blocks the loop (the leader's migration sleeps 2 s: a blocking wait gave
# 2510 ms); a gated fleet measured 97-158 ms on a busy 2-core CI machine
# while the gap going on when the wait began was counted (the app's own
# start-up work, asgi_app.py), 9-46 ms without it (2026-12-07).
STALL_BOUND_MS = 1000.0
# Its own part (less the loop thread's wait for a CPU): 5.8-22.1 ms over the
# fleet, 30 asyncpg fleets on a busy 2-core VM (2026-12-08); a loop blocked
# for one 250 ms slice gave 250.5-253.3 ms.  150 ms: about 7 times the most
# measured, 100 ms under one blocked slice.
OWN_STALL_BOUND_MS = 150.0
WAITED_S = 1.0            # a database operation this long is a wait (the leader sleeps 2 s)

READY_RE = re.compile(r"^wire-app\[(\d+)\]: ready((?: \w+=[\d.]+)+)$", re.M)
FAILED_RE = re.compile(r"^wire-app\[(\d+)\]: migration failed: (?:stall_ms=([\d.]+) )?(.*)$",
                       re.M)
FORKED_RE = re.compile(r"^fleet: forked pid=(\d+)$", re.M)
# the race's shapes: fleet.py's, and a deadlock between two creators
RACE_RE = re.compile(RACE_ERROR_RE.pattern + r"|deadlock detected")


@dataclass(frozen=True)
class Scenario:
    name: str
    driver: str       # asyncpg | pg8000
    server: str       # gunicorn-uvicorn | uvicorn | gunicorn-sync
    transport: str    # unix | tcp | tls (TCP, ssl=require; pg8000 ssl=True) | prefer (TCP,
                      # asyncpg's default sslmode: TLS, the server having ssl on)
    start: str        # empty | behind (at wire0001)


SCENARIOS = [
    Scenario("asyncpg-gunicorn-unix-empty", "asyncpg", "gunicorn-uvicorn", "unix", "empty"),
    Scenario("asyncpg-gunicorn-tcp-behind", "asyncpg", "gunicorn-uvicorn", "tcp", "behind"),
    Scenario("asyncpg-uvicorn-tcp-empty", "asyncpg", "uvicorn", "tcp", "empty"),
    Scenario("asyncpg-uvicorn-unix-behind", "asyncpg", "uvicorn", "unix", "behind"),
    Scenario("pg8000-gunicorn-unix-empty", "pg8000", "gunicorn-sync", "unix", "empty"),
    Scenario("pg8000-gunicorn-tcp-behind", "pg8000", "gunicorn-sync", "tcp", "behind"),
    Scenario("asyncpg-gunicorn-tls-empty", "asyncpg", "gunicorn-uvicorn", "tls", "empty"),
    Scenario("asyncpg-uvicorn-prefer-behind", "asyncpg", "uvicorn", "prefer", "behind"),
    Scenario("pg8000-gunicorn-tls-empty", "pg8000", "gunicorn-sync", "tls", "empty"),
]
TLS_TRANSPORTS = ("tls", "prefer")  # the server runs with ssl = on for these


# ---------------------------------------------------------------------------
# the database

def dsn_parts(dsn: str) -> Dict[str, str]:
    return dict(kv.split("=", 1) for kv in dsn.split())


def asyncpg_url(dsn: str, transport: str) -> str:
    """postgresql+asyncpg:// URL of a libpq conninfo, over `transport`."""
    p = dsn_parts(dsn)
    user = urllib.parse.quote(p.get("user", "postgres"), safe="")
    db = urllib.parse.quote(p["dbname"], safe="")
    if transport in ("tcp", "prefer"):  # (prefer: asyncpg's default sslmode)
        return f"postgresql+asyncpg://{user}@127.0.0.1:{p['port']}/{db}"
    if transport == "tls":
        return f"postgresql+asyncpg://{user}@127.0.0.1:{p['port']}/{db}?ssl=require"
    q = urllib.parse.urlencode({"host": p["host"], "port": p["port"]}, safe="/")
    return f"postgresql+asyncpg://{user}@/{db}?{q}"


def migrate_to(dsn: str, transport: str, target: str) -> None:
    """`alembic upgrade <target>` through the async env.py, without any preload."""
    env = clean_env()
    env["DATABASE_URL"] = asyncpg_url(dsn, transport)
    res = subprocess.run([PYTHON, "-m", "alembic", "-c", "alembic.ini", "upgrade", target],
                         cwd=str(APP_DIR), env=env, stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         timeout=120)
    assert res.returncode == 0, f"alembic upgrade {target}:\n{res.stdout}"


def plan_counts(dsn: str) -> Optional[Dict[str, int]]:
    import psycopg2
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT to_regclass('plans')")
            if cur.fetchone()[0] is None:
                return None
            cur.execute("SELECT name, count(*) FROM plans GROUP BY name")
            return dict(cur.fetchall())
    finally:
        conn.close()


# ---------------------------------------------------------------------------
# the fleet

@dataclass
class WireResult:
    scenario: Scenario
    preload: bool
    outcome: str = ""                  # up | failed | master exited (rc N) | timeout
    elapsed: Optional[float] = None    # start -> every worker ready and /ready 200
    settled: float = 0.0               # start -> the outcome was known
    master_alive: bool = False
    forked: List[int] = field(default_factory=list)    # Gunicorn's workers
    ready: Dict[int, Dict[str, float]] = field(default_factory=dict)  # pid -> its figures
    failed: Dict[int, str] = field(default_factory=dict)               # pid -> error
    dead: List[int] = field(default_factory=list)      # ready, but gone at the end
    text: str = ""
    version: Optional[List[str]] = None
    runs: Dict[str, int] = field(default_factory=dict)
    run_pids: Dict[str, List[int]] = field(default_factory=dict)
    plans: Optional[Dict[str, int]] = None

    @property
    def label(self) -> str:
        return f"{self.scenario.name} {'preloaded' if self.preload else 'plain'}"

    def stalls(self, key: str = "stall_ms") -> List[float]:
        """asyncpg: each ready worker's longest event-loop gap (ms) over its
        migration (stall_ms), or within its longest database operation, where
        it waited for the leader (wait_stall_ms)."""
        return [f[key] for f in self.ready.values() if key in f]

    def waiters(self, key: str = "wait_stall_ms") -> Dict[int, float]:
        """asyncpg: {pid: the longest event-loop gap (ms) while it waited}
        for each ready worker whose longest database operation lasted
        WAITED_S or more (a wait for the leader; the leader's own pg_sleep);
        key wait_stall_own_ms: the longest such gap less the time the loop's
        thread waited for a CPU within it."""
        return {p: f[key] for p, f in self.ready.items()
                if f.get("db_s", 0.0) >= WAITED_S and key in f}

    def race_errors(self) -> List[str]:
        return [ln for ln in self.text.splitlines()
                if RACE_RE.search(ln) and not ln.startswith((" ", "\t"))]

    def failure_shapes(self) -> Dict[str, int]:
        """{'23505 pg_type_typname_nsp_index (alembic_version)': workers, ...}
        of the failed workers' errors."""
        out: Dict[str, int] = {}
        for msg in self.failed.values():
            code = re.search(r"\b(23505|42P07|42710|42701|40P01)\b", msg) or \
                re.search(r"(UniqueViolation|DuplicateTable|DuplicateObject|DuplicateColumn"
                          r"|Deadlock)", msg)
            what = re.search(r'constraint "(\w+)"', msg)
            key = re.search(r"Key \(typname, typnamespace\)=\((\w+),", msg)
            shape = " ".join(x for x in (code and code.group(1), what and what.group(1),
                                         key and f"({key.group(1)})") if x) or msg[:80]
            out[shape] = out.get(shape, 0) + 1
        return out

    def duplicates(self) -> List[str]:
        out = [f"{rev} ran {n} times" for rev, n in sorted(self.runs.items()) if n > 1]
        out += [f"plan {name!r} {n} times" for name, n in sorted((self.plans or {}).items())
                if n > 1]
        return out

    def gate(self) -> FleetResult:
        """fleet.py's reading of the gate's lines (one place for the wording)."""
        workers = self.forked or sorted(set(self.ready) | set(self.failed))
        return FleetResult(label=self.label, example="wire_app", workers=WORKERS,
                           worker_class=self.scenario.server, preload=False, shim=self.preload,
                           stderr=self.text, worker_pids=list(workers))

    def summary(self) -> str:
        el = f"{self.elapsed:.2f} s" if self.elapsed is not None else "-"
        st, wst, own = self.stalls(), self.stalls("wait_stall_ms"), \
            self.stalls("wait_stall_own_ms")
        return (f"{self.label}: {self.outcome}; ready {len(self.ready)}/{WORKERS}, "
                f"failed {len(self.failed)}; time to ready {el} (outcome at "
                f"{self.settled:.2f} s); loop stall max "
                + (f"{max(st):.1f} ms (while waiting {max(wst):.1f} ms"
                   + (f", its own {max(own):.1f} ms" if own else "") + ")" if st else "-")
                + f"; version {self.version}; runs {self.runs}; plans {self.plans}")

    def describe(self) -> str:
        keep = [ln for ln in self.text.splitlines()
                if ln.startswith(("wire-app[", "migshim[", "fleet:"))
                or "Error" in ln or "Reason" in ln]
        return (self.summary() + "\nfailed: " + repr(self.failed) + "\n--- lines ---\n"
                + "\n".join(keep[-120:]) + "\n--- tail ---\n"
                + "\n".join(self.text.splitlines()[-40:]))


class WireFleet:
    """One fleet of the scenario's server and app, 8 workers, its output in a
    temp file, in its own session (killed as a group at the end)."""

    def __init__(self, sc: Scenario, dsn: str, preload: bool, workers: int = WORKERS):
        self.sc, self.dsn, self.preload, self.workers = sc, dsn, preload, workers
        self.tmp = tempfile.mkdtemp(prefix="migshim-wirefleet.")
        self.barrier = os.path.join(self.tmp, "barrier")
        os.mkdir(self.barrier)
        self.log = os.path.join(self.tmp, "out")
        self.port = free_port()
        self.proc: Optional[subprocess.Popen] = None
        self.res = WireResult(scenario=sc, preload=preload)

    def env(self) -> Dict[str, str]:
        env = clean_env()
        env.update({
            "DATABASE_URL": asyncpg_url(self.dsn, self.sc.transport),
            "WIRE_DSN": self.dsn, "WIRE_TRANSPORT": self.sc.transport,
            "RUN_DB_MIGRATIONS_ON_STARTUP": "true",
            "WIRE_BARRIER_DIR": self.barrier, "WIRE_BARRIER_N": str(self.workers),
        })
        if self.preload:
            lib = shimbuild.lib_path()
            if not lib.is_file():
                pytest.fail(f"the library is not built: {lib} (make all)", pytrace=False)
            env["LD_PRELOAD"] = shimbuild.preload(lib)
            env["MIGSHIM_LOG"] = "info"
        return env

    def argv(self) -> List[str]:
        if self.sc.server == "uvicorn":
            return [PYTHON, "-m", "uvicorn", "asgi_app:app", "--workers", str(self.workers),
                    "--host", "127.0.0.1", "--port", str(self.port), "--loop", "asyncio"]
        worker, app = (("uvicorn.workers.UvicornWorker", "asgi_app:app")
                       if self.sc.server == "gunicorn-uvicorn" else ("sync", "pg8000_app:app"))
        return [PYTHON, "-m", "gunicorn", "-c", str(GUNICORN_CONF),
                "--bind", f"127.0.0.1:{self.port}", "--workers", str(self.workers),
                "--worker-class", worker, "--graceful-timeout", "5", "--timeout", "120", app]

    def start(self) -> "WireFleet":
        with open(self.log, "ab") as out:
            self.t0 = time.monotonic()
            self.proc = subprocess.Popen(self.argv(), cwd=str(APP_DIR), env=self.env(),
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                         start_new_session=True)
        return self

    def text(self) -> str:
        with open(self.log, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def scan(self, text: str):
        ready = {int(p): {k: float(v) for k, v in re.findall(r"(\w+)=([\d.]+)", figs)}
                 for p, figs in READY_RE.findall(text)}
        failed = {int(p): msg for p, _, msg in FAILED_RE.findall(text)}
        forked = sorted({int(p) for p in FORKED_RE.findall(text)})
        return ready, failed, forked

    def probe_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/ready", timeout=3) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def wait(self) -> WireResult:
        r, failed_at = self.res, None
        while True:
            now = time.monotonic()
            ready, failed, _ = self.scan(self.text())
            rc = self.proc.poll()
            if rc is not None:
                r.outcome = f"master exited (rc {rc})"
                break
            if failed:
                failed_at = failed_at or now
                if len(ready) + len(failed) >= self.workers or now - failed_at > FAILURE_SETTLE:
                    r.outcome = "failed"
                    break
            elif len(ready) >= self.workers and self.probe_ready():
                r.elapsed = time.monotonic() - self.t0
                r.outcome = "up"
                break
            if now - self.t0 > BOOT_TIMEOUT:
                r.outcome = f"timeout after {BOOT_TIMEOUT:.0f} s"
                break
            time.sleep(0.1)
        r.settled = time.monotonic() - self.t0
        time.sleep(0.5)      # a late death shows now
        ready, _, _ = self.scan(self.text())
        r.dead = sorted(p for p in ready if not _alive(p))
        r.master_alive = self.proc.poll() is None
        return r

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)    # stray workers
        except (ProcessLookupError, PermissionError):
            pass

    def result(self) -> WireResult:
        r = self.res
        r.text = self.text()
        r.ready, r.failed, r.forked = self.scan(r.text)
        r.version, r.runs, r.run_pids = db_state(self.dsn)
        r.plans = plan_counts(self.dsn)
        return r

    def discard(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def run_wire_fleet(sc: Scenario, dsn: str, preload: bool) -> WireResult:
    f = WireFleet(sc, dsn, preload)
    try:
        f.start()
        f.wait()
    finally:
        f.stop()
    try:
        return f.result()
    finally:
        f.discard()


# ---------------------------------------------------------------------------
# the verdicts

def assert_oracle(r: WireResult) -> int:
    """The preloaded fleet: everything the oracle asks.  Returns the leader."""
    desc = r.describe()
    assert r.outcome == "up", desc
    assert r.master_alive and not r.dead, desc
    assert not r.failed, desc
    assert len(r.ready) == WORKERS, desc
    if r.scenario.server.startswith("gunicorn"):
        assert sorted(r.ready) == r.forked, desc      # no worker died and was replaced
    assert not r.race_errors(), "\n".join(r.race_errors()[:10]) + "\n" + desc
    assert not migshim_problems_in(r.text), "\n".join(migshim_problems_in(r.text)) + "\n" + desc
    assert r.version == HEADS, desc
    assert r.runs == {rev: 1 for rev in REVISIONS}, desc
    assert r.plans == {name: 1 for name in PLANS}, desc
    g = r.gate()
    leads = g.gate_lines("lead")
    assert len(leads) == 1, f"leading lines: {leads}\n{desc}"
    leader = leads[0][0]
    assert leader in r.ready, f"leader {leader} is not a worker\n{desc}"
    migrated = REVISIONS if r.scenario.start == "empty" else REVISIONS[1:]
    for rev in migrated:
        assert r.run_pids.get(rev) == [leader], f"{rev} run by {r.run_pids.get(rev)}\n{desc}"
    for pid, kinds in g.gate_decisions().items():
        if pid != leader:
            assert "lead" not in kinds, f"pid {pid}: {kinds}\n{desc}"
    return leader


def assert_raced(r: WireResult) -> None:
    """The plain fleet shows the race it claims to fix (the teeth)."""
    desc = r.describe()
    assert not migshim_lines_in(r.text), "a shim line in the plain run\n" + desc
    broke = r.outcome != "up" or r.failed or r.dead
    assert broke or r.duplicates(), "the plain fleet did not race\n" + desc
    if broke:    # the race, not any failure: the race's own errors
        assert r.race_errors(), "failed, but not with the race's errors\n" + desc


TABLE: Dict[str, Dict[bool, WireResult]] = {}


@pytest.fixture(scope="module", autouse=True)
def fleet_table(request):
    """Time to ready and stalls, without and with the preload, at the end of the module."""
    yield
    if not TABLE:
        return
    tr = request.config.pluginmanager.get_plugin("terminalreporter")
    cm = request.config.pluginmanager.get_plugin("capturemanager")
    if tr is None or cm is None:
        return
    with cm.global_and_fixture_disabled():    # past the capture: always shown
        write_table(tr)


def write_table(tr) -> None:
    tr.write_line("")
    tr.write_sep("=", "wire fleets: without / with build/libmigshim.so")
    tr.write_line(f"{'scenario':30} {'plain':44} {'preloaded':44}")
    tr.write_line("(stall: the longest event-loop gap over the migration / within the wait"
                  " / its own within the wait, less the loop thread's wait for a CPU)")

    def cell(r: Optional[WireResult]) -> str:
        if r is None:
            return "-"
        t = f"ready in {r.elapsed:.1f} s" if r.elapsed is not None else \
            f"{r.outcome[:14]} at {r.settled:.1f} s"
        st, wst, own = r.stalls(), r.stalls("wait_stall_ms"), r.stalls("wait_stall_own_ms")
        return (f"{t}, {len(r.failed)} failed"
                + (f", {len(r.duplicates())} dup" if r.duplicates() else "")
                + (f", stall {max(st):.0f}/{max(wst):.0f}"
                   + (f"/{max(own):.0f}" if own else "") + " ms" if st else ""))

    for sc in SCENARIOS:
        row = TABLE.get(sc.name)
        if row:
            tr.write_line(f"{sc.name:30} {cell(row.get(False)):44} {cell(row.get(True)):44}")


# ---------------------------------------------------------------------------

CASES = [(sc, preload) for sc in SCENARIOS for preload in (False, True)]


@pytest.mark.parametrize("sc,preload", CASES,
                         ids=[f"{sc.name}-{'preloaded' if p else 'plain'}" for sc, p in CASES])
def test_wire_fleet(make_db, sc: Scenario, preload: bool, request):
    if sc.transport in TLS_TRANSPORTS:
        request.getfixturevalue("tls_server")
    db = make_db()
    if sc.start == "behind":
        migrate_to(db.dsn, sc.transport, "wire0001")
    r = run_wire_fleet(sc, db.dsn, preload)
    TABLE.setdefault(sc.name, {})[preload] = r
    print("\n" + r.summary())
    if not preload:
        assert_raced(r)
        print(f"  plain: {len(r.failed)} worker(s) failed: {r.failure_shapes()}"
              + (f"; duplicates: {r.duplicates()}" if r.duplicates() else ""))
        return
    leader = assert_oracle(r)
    print(f"  preloaded: leader {leader}")
    if sc.transport in TLS_TRANSPORTS:  # gated above the TLS layer, its socket named
        leads = [ln for ln in r.text.splitlines() if "leading: this process holds" in ln]
        assert leads and all(ln.endswith(", TLS)") for ln in leads), r.describe()
    if sc.driver == "asyncpg":
        stalls, waited, own = r.stalls(), r.waiters(), r.waiters("wait_stall_own_ms")
        assert len(stalls) == WORKERS, r.describe()
        assert set(waited) - {leader}, f"no worker but the leader waited {WAITED_S} s\n" \
            + r.describe()
        assert set(own) == set(waited), r.describe()
        print(f"  event-loop stall, longest over the fleet: {max(waited.values()):.1f} ms "
              f"while waiting ({len(waited)} workers; bound {STALL_BOUND_MS:.0f} ms, goal 20 ms "
              f"per slice), of it the loop thread's own (not waiting for a CPU) "
              f"{max(own.values()):.1f} ms (bound {OWN_STALL_BOUND_MS:.0f} ms), "
              f"{max(stalls):.1f} ms over the whole migration")
        print("  per waiter, wait/own/own on a CPU ms: " + ", ".join(
            f"{p} {f['wait_stall_ms']:.1f}/{f['wait_stall_own_ms']:.1f}"
            f"/{f.get('wait_stall_own_cpu_ms', 0.0):.1f}"
            for p, f in sorted(r.ready.items()) if p in waited))
        assert max(waited.values()) < STALL_BOUND_MS, r.describe()
        assert max(own.values()) < OWN_STALL_BOUND_MS, r.describe()


def test_scenarios_cover_what_issue_22_asks():
    """Each server with each plaintext transport and each start; both
    drivers on both plaintext transports and over TLS; asyncpg's default
    sslmode (prefer) too."""
    asy = [s for s in SCENARIOS if s.driver == "asyncpg"]
    for server in ("gunicorn-uvicorn", "uvicorn"):
        mine = [s for s in asy if s.server == server]
        assert {s.transport for s in mine} >= {"unix", "tcp"}
        assert {s.start for s in mine} == {"empty", "behind"}
    assert {s.transport for s in asy} == {"unix", "tcp", "tls", "prefer"}
    pg8 = [s for s in SCENARIOS if s.driver == "pg8000"]
    assert {s.transport for s in pg8} == {"unix", "tcp", "tls"}


@pytest.fixture
def tls_server(pg):
    """The harness server with ssl = on (topo's tls_on)."""
    from topo import tls_on
    with tls_on(pg, "migshim-wirefleet-ssl.") as cert:
        yield cert
