"""Run a Gunicorn fleet of an example app and report how its start-up went.

Reusable from pytest (tests/e2e/test_gate_fleet.py) and from the demo
(examples/demo/demo.py); it needs nothing from pytest.

    from fleet import Fleet, run_fleet
    r = run_fleet("flask-alembic", dsn, workers=16, shim=True)
    r.booted, r.master_alive_at_end, r.workers_failed, r.elapsed
    r.alembic_version            # ['0003cccc'] (None: no such table)
    r.migration_runs             # {'0001aaaa': 1, ...} rows per revision
    r.gate_decisions()           # {pid: ['lead'|'wait'|'at_head', ...]}

    # fault injection: watch the output as it arrives, kill a worker
    f = Fleet("flask-alembic", dsn, workers=8, shim=True).start()
    m = f.wait_for_line(LEAD_LINE_RE, timeout=20)   # as soon as it is logged
    f.kill_worker(int(m.group(1)))   # SIGKILL; not counted as a failure
    f.wait(); f.stop(); r = f.result()

    # an app directory other than examples/<example> (a patched copy)
    run_fleet("flask-alembic", dsn, app_dir="/tmp/copy", shim=True)

A fleet is `/usr/bin/python3 -m gunicorn app:app` started in the example's
directory, bound to 127.0.0.1 on a free port, with DATABASE_URL pointing at
the given database and RUN_DB_MIGRATIONS_ON_STARTUP=true, so that every
worker (or the master, with --preload) runs `upgrade head` as it imports the
app.  With shim=True it also gets LD_PRELOAD=build/libmigshim.so (behind
the sanitizer runtimes for a SANITIZE= build: tests/shimbuild.py) and
MIGSHIM_LOG=info.

Readiness: the fleet is up when the master is alive, N workers were forked,
all of them finished importing the app (post_worker_init, see
fleet_gunicorn_conf.py), none of them died, and GET /ready answered 200.
It failed when the master exited first (Gunicorn halts on "Worker failed to
boot"), or when the timeout passed.  Either way the master is then stopped
(SIGTERM, SIGKILL after a grace period, then the rest of its process group)
and the database state is read back.

Command line (a quick look at one fleet):
    tests/e2e/fleet.py [--shim] [--workers N] [-k gevent] [--preload]
                       [--example flask-migrate] DSN
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
if str(REPO_ROOT / "tests") not in sys.path:
    sys.path.insert(0, str(REPO_ROOT / "tests"))
import shimbuild  # noqa: E402  (tests/shimbuild.py)
EXAMPLES_DIR = REPO_ROOT / "examples"
GUNICORN_CONF = Path(__file__).resolve().parent / "fleet_gunicorn_conf.py"
# The Python that runs the apps (Gunicorn, alembic, manage.py): Debian's by
# default; E2E_PYTHON switches the drivers to another stack, e.g.
# tests/today's venvs (make check-today).  E2E_DRIVER=psycopg makes
# database_url() name psycopg 3 (postgresql+psycopg://) instead of psycopg2.
# (Not MIGSHIM_*: the shim refuses a MIGSHIM_ variable it does not know.)
PYTHON = os.environ.get("E2E_PYTHON") or "/usr/bin/python3"
DRIVER = os.environ.get("E2E_DRIVER") or "psycopg2"

DEFAULT_TIMEOUT = 60.0      # seconds until every worker must be ready
STOP_GRACE = 10.0           # SIGTERM -> SIGKILL
FAILURE_SETTLE = 8.0        # after a worker failed: wait this long for the master to halt
                            # (it gives the other workers graceful_timeout=5 s)

# ---------------------------------------------------------------------------
# What the gate logs.  One place for the wording: the gate logs one line per
# decision at info level, "migshim[PID]: info: <message>" (src/gate.c).
# Each pattern is searched in <message>; the first kind that matches wins
# (order matters).  Lines matching none (e.g. "migrated to ...; migration
# lock released", "waiting N s so far ...") are not decisions.
#
#   lead        this process took the lock and runs the migrations:
#                 database "d": leading: this process holds the migration lock (key K) and
#                 migrates from (none) to 0003cccc
#   wait        it waited for the leader until the database reached the
#               target heads (its own upgrade then finds nothing to do):
#                 database "d": waited 0.257 s for the migration lock; database at 0003cccc; proceeding
#                 database "d": waited 0.4 s; a peer migrated it to 0003cccc; proceeding
#   found_head  it found the database behind, then got the lock without
#               waiting and found it at head (a leader had just finished):
#                 database "d" is at 0003cccc (head); proceeding
#   at_head     the database was at the target heads at the first look:
#               no lock taken.  The gate did not act on the process, so at
#               the default level it says nothing at all (the rule of
#               silence); with MIGSHIM_LOG=debug:
#                 database "d" is at head (0003cccc); proceeding
#               gate_decisions() counts a worker that logged no line at
#               info level or above as at_head.
GATE_PATTERNS = [
    ("wait", re.compile(r"\bwaited\b")),
    ("lead", re.compile(r"\bleading\b")),
    ("at_head", re.compile(r"\bis at head\b")),
    ("found_head", re.compile(r"\bbefore this process got the lock\b")),
]
GATE_KINDS = tuple(k for k, _ in GATE_PATTERNS)

MIGSHIM_LINE_RE = re.compile(r"migshim\[(\d+)\]: (\w+): (.*)$")


def migshim_lines_in(text: str, level: Optional[str] = None):
    """[(pid, level, message)] of every migshim line of `text` (of `level` only, if given)."""
    out = []
    for ln in text.splitlines():
        m = MIGSHIM_LINE_RE.search(ln)
        if m and (level is None or m.group(2) == level):
            out.append((int(m.group(1)), m.group(2), m.group(3)))
    return out


def migshim_problems_in(text: str) -> List[str]:
    """The migshim error and warning lines of `text`, as printed."""
    return [f"migshim[{p}]: {lv}: {msg}" for p, lv, msg in migshim_lines_in(text)
            if lv in ("error", "warn", "warning")]

# The shapes the unguarded race takes (see ../shared/alembic-statements.md).
RACE_ERROR_RE = re.compile(
    r"UniqueViolation|DuplicateTable|DuplicateObject|DuplicateColumn"
    r"|already exists|duplicate key value"
    r"|expected to match one row when updating")

# Gunicorn's log format: "[date] [PID] [LEVEL] message"
GUNICORN_LINE_RE = re.compile(r"^\[[^\]]+\] \[(\d+)\] \[(\w+)\] (.*)$")
FLEET_LINE_RE = re.compile(r"^fleet: ([\w-]+) pid=(\d+)(?: stopping=([01]))?$")
APP_FAILED_RE = re.compile(r"^[\w-]+\[(\d+)\]: migration failed: ")
# A gate "lead" line, with the leader's pid in group 1.
LEAD_LINE_RE = re.compile(r"migshim\[(\d+)\]: info: .*\bleading\b")


# ---------------------------------------------------------------------------
# databases

def parse_dsn(dsn: str) -> Dict[str, str]:
    """'host=/tmp/x port=5432 user=postgres dbname=d' -> dict (no quoting)."""
    out = {}
    for part in dsn.split():
        k, _, v = part.partition("=")
        out[k] = v
    return out


def database_url(dsn: str) -> str:
    """The SQLAlchemy URL (psycopg2, or DRIVER) for a libpq key=value conninfo."""
    p = parse_dsn(dsn)
    user = urllib.parse.quote(p.get("user", "postgres"), safe="")
    db = urllib.parse.quote(p["dbname"], safe="")
    query = {}
    if "host" in p:
        query["host"] = p["host"]
    if "port" in p:
        query["port"] = p["port"]
    q = urllib.parse.urlencode(query, safe="/")
    return f"postgresql+{DRIVER}://{user}@/{db}" + (f"?{q}" if q else "")


def db_state(dsn: str):
    """(alembic_version rows sorted, or None when there is no such table;
    {revision: rows in migration_runs}; {revision: [pid, ...]} -- the pids
    of the processes that ran each revision's upgrade())."""
    import psycopg2
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT to_regclass('alembic_version'), "
                        "to_regclass('migration_runs')")
            has_version, has_runs = cur.fetchone()
            version = None
            if has_version:
                cur.execute("SELECT version_num FROM alembic_version")
                version = sorted(r[0] for r in cur.fetchall())
            runs, pids = {}, {}
            if has_runs:
                cur.execute("SELECT revision, pid FROM migration_runs "
                            "ORDER BY revision, at")
                for rev, pid in cur.fetchall():
                    runs[rev] = runs.get(rev, 0) + 1
                    pids.setdefault(rev, []).append(pid)
            return version, runs, pids
    finally:
        conn.close()


def migrate(example: str, dsn: str, target: str = "head",
            timeout: float = 120.0, app_dir=None) -> str:
    """`alembic upgrade <target>` in the example's directory (or app_dir),
    without the shim (to pre-migrate a database).  Only for examples with
    an alembic.ini at the top (flask-alembic).  Returns the output; raises
    on failure."""
    cwd = Path(app_dir) if app_dir is not None else EXAMPLES_DIR / example
    env = clean_env()
    env["DATABASE_URL"] = database_url(dsn)
    res = subprocess.run(
        [PYTHON, "-m", "alembic", "-c", "alembic.ini", "upgrade", target],
        cwd=str(cwd), env=env, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        timeout=timeout)
    if res.returncode != 0:
        raise RuntimeError(f"alembic upgrade {target} failed "
                           f"(rc={res.returncode}):\n{res.stdout}")
    return res.stdout


# ---------------------------------------------------------------------------
# processes

def shim_path() -> Path:
    """<build dir>/libmigshim.so of this checkout, or $MIGSHIM_LIB
    (tests/shimbuild.py)."""
    return shimbuild.lib_path()


def clean_env() -> Dict[str, str]:
    """os.environ without the shim, its settings, pytest's and libpq's."""
    env = {}
    for k, v in os.environ.items():
        if k in ("LD_PRELOAD", "LD_AUDIT", "DATABASE_URL"):
            continue
        if k.startswith("MIGSHIM_") and not k.startswith("MIGSHIM_TEST_"):
            continue
        if k.startswith(("PYTEST_", "COV_CORE_", "GUNICORN_")):
            continue
        if k.startswith("PG") and k != "PGCONNECT_TIMEOUT":
            continue   # the app gets everything from DATABASE_URL
        env[k] = v
    env.update({"PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1",
                "PYTHONIOENCODING": "utf-8", "PGCONNECT_TIMEOUT": "15"})
    return env


def free_port() -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie still answers kill(0): look at its state
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


# ---------------------------------------------------------------------------
# the result

@dataclass
class FleetResult:
    label: str
    example: str
    workers: int
    worker_class: str
    preload: bool
    shim: bool
    booted: bool = False
    reason: str = ""                  # why not booted
    master_pid: int = 0
    master_alive_at_end: bool = False  # alive when the wait ended
    master_rc: Optional[int] = None
    elapsed: Optional[float] = None   # start -> all ready (None: never)
    wall: float = 0.0                 # start -> stopped
    worker_pids: List[int] = field(default_factory=list)   # forked
    ready_pids: List[int] = field(default_factory=list)    # imported the app
    failed_pids: List[int] = field(default_factory=list)   # died/failed before ready
    killed_pids: List[int] = field(default_factory=list)   # killed on purpose (kill_worker)
    stderr: str = ""
    stdout: str = ""
    alembic_version: Optional[List[str]] = None
    migration_runs: Dict[str, int] = field(default_factory=dict)
    migration_pids: Dict[str, List[int]] = field(default_factory=dict)
    ready_body: Optional[dict] = None

    # -- derived --------------------------------------------------------
    @property
    def workers_failed(self) -> int:
        return len(self.failed_pids)

    @property
    def raced(self) -> bool:
        """The race showed: a failed boot or a race error in the output."""
        return (not self.booted) or self.workers_failed > 0 \
            or bool(self.race_errors())

    def race_errors(self) -> List[str]:
        return [ln for ln in self.stderr.splitlines()
                if RACE_ERROR_RE.search(ln)
                and not ln.startswith(("  ", "\t"))]   # not traceback source

    def migshim_lines(self, level: Optional[str] = None):
        """[(pid, level, message)] of every migshim line."""
        return migshim_lines_in(self.stderr, level)

    def migshim_problems(self) -> List[str]:
        return migshim_problems_in(self.stderr)

    def gate_lines(self, kind: str):
        """[(pid, message)] of the info lines classified as `kind`."""
        return [(p, m) for p, k, m in self._classified() if k == kind]

    def gate_decisions(self) -> Dict[int, List[str]]:
        """{pid: [kind, ...]} for every process that logged a decision, and
        ['at_head'] for every worker that logged no line at info level or
        above: the gate found its database at head and, by the rule of
        silence, said nothing."""
        out: Dict[int, List[str]] = {}
        for p, k, _ in self._classified():
            if k:
                out.setdefault(p, []).append(k)
        loud = {p for p, lv, _ in self.migshim_lines() if lv != "debug"}
        for p in self.worker_pids:
            if p not in loud and p not in out:
                out[p] = ["at_head"]
        return out

    def silent_pids(self) -> List[int]:
        """Workers that printed no migshim line at info level or above."""
        loud = {p for p, lv, _ in self.migshim_lines() if lv != "debug"}
        return [p for p in self.worker_pids if p not in loud]

    def _classified(self):
        res = []
        for p, lv, msg in self.migshim_lines():
            kind = None
            for k, rx in GATE_PATTERNS:
                # at head is a debug line (log = debug); the rest are info
                if rx.search(msg) and (lv == "info" or (lv == "debug" and k == "at_head")):
                    kind = k
                    break
            if lv == "info" or kind:
                res.append((p, kind, msg))
        return res

    def summary(self) -> str:
        el = f"{self.elapsed:.2f}s" if self.elapsed is not None else "-"
        return (f"[{self.label}] booted={self.booted} "
                f"master_alive={self.master_alive_at_end} "
                f"rc={self.master_rc} workers={len(self.worker_pids)}/"
                f"{self.workers} ready={len(self.ready_pids)} "
                f"failed={self.workers_failed} elapsed={el} "
                f"version={self.alembic_version} runs={self.migration_runs}"
                + (f" reason={self.reason}" if self.reason else ""))

    def describe(self, tail: int = 60) -> str:
        """summary + the migshim lines + the end of stderr (for failures)."""
        lines = self.stderr.splitlines()
        shim = [ln for ln in lines if "migshim[" in ln]
        return (self.summary() + "\n--- migshim lines ---\n"
                + "\n".join(shim[:80])
                + f"\n--- stderr (last {tail} lines) ---\n"
                + "\n".join(lines[-tail:]))


# ---------------------------------------------------------------------------
# the fleet

class Fleet:
    """One Gunicorn master.  start(), then poll() until done (or wait()),
    then stop() and result().

    app_dir: run the app from this directory instead of examples/<example>
    (e.g. a patched copy in a temp dir); `example` then only names it.

    While it runs: stderr_text() is the output so far, wait_for_line()
    waits for a line as it arrives, kill_worker() kills a worker on purpose
    (its death then counts neither as a failure nor towards the N workers
    that must be ready: Gunicorn replaces it).

    wrapper: a command the master runs under (its workers are forks of
    it), e.g. ["valgrind", "--tool=memcheck", ...]; stop_grace: seconds
    between SIGTERM and SIGKILL at stop() (raise it for a slow wrapper);
    extra_args: more Gunicorn options, after the fleet's own (they win);
    wsgi_app: what Gunicorn serves (default app:app, examples/<example>/app.py)."""

    def __init__(self, example: str, dsn: str, workers: int = 16,
                 worker_class: str = "sync", preload: bool = False,
                 shim: bool = False, shim_env: Optional[Dict[str, str]] = None,
                 env_extra: Optional[Dict[str, str]] = None,
                 timeout: float = DEFAULT_TIMEOUT,
                 gunicorn_timeout: Optional[float] = None,
                 label: Optional[str] = None, app_dir=None,
                 wrapper: Sequence[str] = (), stop_grace: float = STOP_GRACE,
                 extra_args: Sequence[str] = (), wsgi_app: str = "app:app"):
        self.example = example
        self.cwd = Path(app_dir) if app_dir is not None \
            else EXAMPLES_DIR / example
        self.wsgi_app = wsgi_app        # MODULE:CALLABLE, imported in cwd
        module = self.cwd / (wsgi_app.split(":")[0].replace(".", "/") + ".py")
        if not module.is_file():
            raise FileNotFoundError(f"no example app at {module}")
        self.dsn = dsn
        self.workers = workers
        self.worker_class = worker_class
        self.preload = preload
        self.shim = shim
        self.shim_env = dict(shim_env or {})
        self.env_extra = dict(env_extra or {})
        self.timeout = timeout
        self.gunicorn_timeout = gunicorn_timeout
        self.wrapper = list(wrapper)    # e.g. valgrind ...: prefixes the master
        self.stop_grace = stop_grace
        self.extra_args = list(extra_args)   # more Gunicorn options (last wins)
        self.label = label or (f"{example} {workers}x{worker_class}"
                               + (" preload" if preload else "")
                               + (" shim" if shim else " no-shim"))
        self.port = 0
        self.proc: Optional[subprocess.Popen] = None
        self.tmpdir: Optional[str] = None
        self.t0 = 0.0
        self.done = False
        self.res = FleetResult(label=self.label, example=example,
                               workers=workers, worker_class=worker_class,
                               preload=preload, shim=shim)
        self._ready_body = None
        self._failed_at: Optional[float] = None
        self._bind_retries = 0
        self.killed: List[int] = []     # pids killed on purpose

    # -- set-up ---------------------------------------------------------
    def env(self) -> Dict[str, str]:
        env = clean_env()
        env["DATABASE_URL"] = database_url(self.dsn)
        env["RUN_DB_MIGRATIONS_ON_STARTUP"] = "true"
        if self.worker_class == "gevent":
            env["GEVENT_PSYCOPG"] = "1"
        if self.shim:
            lib = shim_path()
            if not lib.is_file():
                raise FileNotFoundError(
                    f"{lib} not built (run `make` in {REPO_ROOT})")
            env["LD_PRELOAD"] = shimbuild.preload(lib)
            env["MIGSHIM_LOG"] = "info"
            env.update(self.shim_env)
        env.update({k: str(v) for k, v in self.env_extra.items()})
        return env

    def argv(self) -> List[str]:
        a = self.wrapper + [PYTHON, "-m", "gunicorn", "-c", str(GUNICORN_CONF),
             "--bind", f"127.0.0.1:{self.port}",
             "--workers", str(self.workers),
             "--worker-class", self.worker_class,
             "--graceful-timeout", "5"]
        if self.gunicorn_timeout is not None:
            a += ["--timeout", str(int(self.gunicorn_timeout))]
        if self.preload:
            a.append("--preload")
        a += self.extra_args
        a.append(self.wsgi_app)
        return a

    def start(self) -> "Fleet":
        self.tmpdir = tempfile.mkdtemp(prefix="migshim-fleet.")
        self.port = free_port()
        self.err_path = os.path.join(self.tmpdir, "stderr")
        self.out_path = os.path.join(self.tmpdir, "stdout")
        env = self.env()
        # O_APPEND: many processes write lines into the same file
        with open(self.err_path, "ab") as err, open(self.out_path, "ab") as out:
            self.t0 = time.monotonic()
            self.proc = subprocess.Popen(
                self.argv(), cwd=str(self.cwd), env=env,
                stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                start_new_session=True)
        self.res.master_pid = self.proc.pid
        return self

    # -- watching -------------------------------------------------------
    def stderr_text(self) -> str:
        """The fleet's stderr so far (all processes, line-buffered)."""
        return self._stderr()

    def wait_for_line(self, pattern, timeout: float = 30.0,
                      interval: float = 0.02, after: int = 0):
        """Wait until a complete stderr line matches `pattern` (a regex,
        searched); return the re.Match.  `after`: skip that many lines
        first.  Raises TimeoutError (with the end of stderr) when the
        timeout passes or the master exits first."""
        rx = re.compile(pattern) if isinstance(pattern, str) else pattern
        assert self.proc is not None, "start() first"
        deadline = time.monotonic() + timeout
        while True:
            text = self._stderr()
            # only complete lines: the last one may still be being written
            lines = text.split("\n")[:-1]
            for ln in lines[after:]:
                m = rx.search(ln)
                if m:
                    return m
            gone = self.proc.poll() is not None
            if gone or time.monotonic() > deadline:
                tail = "\n".join(lines[-40:])
                raise TimeoutError(
                    f"no line matching {rx.pattern!r} "
                    + (f"(master exited rc={self.proc.returncode})"
                       if gone else f"within {timeout:.0f}s")
                    + f"\n--- stderr (last 40 lines) ---\n{tail}")
            time.sleep(interval)

    def kill_worker(self, pid: int, sig: int = signal.SIGKILL) -> None:
        """Send `sig` to one worker of this fleet, on purpose: its death is
        not a failure, and it need not become ready."""
        forked, _, _ = self._scan(self._stderr())
        if pid not in forked:
            raise ValueError(f"pid {pid} is not a worker of this fleet "
                             f"(forked: {forked})")
        if pid not in self.killed:
            self.killed.append(pid)
        os.kill(pid, sig)

    def _stderr(self) -> str:
        try:
            with open(self.err_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def _scan(self, text: str):
        """forked, ready, failed pids from the output so far.  Failed: the
        worker raised while importing the app, or died (exit, signal,
        timeout) while its master was not shutting down."""
        forked, ready, failed, signaled = [], [], [], []

        def add(lst, pid):
            if pid not in lst:
                lst.append(pid)

        for ln in text.splitlines():
            m = FLEET_LINE_RE.match(ln)
            if m:
                what, pid = m.group(1), int(m.group(2))
                if what == "forked":
                    add(forked, pid)
                elif what == "worker-ready":
                    add(ready, pid)
                elif what == "child-exit":
                    if m.group(3) == "0" or pid in failed:
                        add(failed, pid)
                    elif pid in signaled:
                        signaled.remove(pid)   # killed by the shutdown
                continue
            m = APP_FAILED_RE.match(ln)
            if m:
                add(failed, int(m.group(1)))
                continue
            m = GUNICORN_LINE_RE.match(ln)
            if m:
                pid, msg = int(m.group(1)), m.group(3)
                if msg.startswith("Exception in worker process"):
                    add(failed, pid)
                elif msg.startswith("Worker with pid") and "terminated" in msg:
                    add(signaled, int(msg.split()[3]))
                elif msg.startswith("WORKER TIMEOUT"):
                    add(failed, int(re.search(r"pid:(\d+)", msg).group(1)))
        for pid in signaled:     # not followed by a shutdown-time child-exit
            add(failed, pid)
        failed = [p for p in failed if p not in self.killed]
        return forked, ready, failed

    def _probe_ready(self) -> bool:
        try:
            with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.port}/ready", timeout=3) as r:
                body = r.read()
                if r.status == 200:
                    try:
                        self._ready_body = json.loads(body)
                    except ValueError:
                        self._ready_body = None
                    return True
        except (urllib.error.URLError, OSError, ValueError):
            pass
        return False

    def poll(self) -> bool:
        """One look.  True once the outcome is known (ready or failed)."""
        if self.done:
            return True
        assert self.proc is not None, "start() first"
        now = time.monotonic()
        rc = self.proc.poll()
        forked, ready, failed = self._scan(self._stderr())
        if rc is not None and self._bind_retries < 3 and \
                "Connection in use" in self._stderr() and not forked:
            # the free port was taken between free_port() and the bind
            self._bind_retries += 1
            self.discard()
            self.start()
            return False
        if rc is not None:
            self.res.reason = f"master exited (rc={rc})" + (
                f", worker(s) failed: {failed}" if failed else "")
            self.res.master_rc = rc
            return self._finish(False)
        if failed:
            # Gunicorn halts on a boot error: give the master a moment to
            # do so (and the other workers to show how they fared).
            if self._failed_at is None:
                self._failed_at = now
            if now - self._failed_at < FAILURE_SETTLE:
                return False
            self.res.reason = f"worker(s) failed: {failed}"
            return self._finish(False)
        forked = [p for p in forked if p not in self.killed]
        if (len(forked) >= self.workers and
                len([p for p in ready if p in forked]) >= self.workers and
                all(_alive(p) for p in ready) and self._probe_ready()):
            self.res.elapsed = time.monotonic() - self.t0
            return self._finish(True)
        if now - self.t0 > self.timeout:
            self.res.reason = (f"timeout after {self.timeout:.0f}s "
                               f"({len(ready)}/{self.workers} ready)")
            return self._finish(False)
        return False

    def _finish(self, booted: bool) -> bool:
        self.done = True
        self.res.booted = booted
        self.res.master_alive_at_end = (self.proc.poll() is None)
        return True

    def wait(self, interval: float = 0.1) -> "Fleet":
        while not self.poll():
            time.sleep(interval)
        return self

    # -- tear-down ------------------------------------------------------
    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=self.stop_grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.res.master_rc is None and self.done and \
                not self.res.master_alive_at_end:
            self.res.master_rc = self.proc.returncode
        # Whatever is left of the fleet (workers of a master that died
        # uncleanly) is in the process group of the master we started.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.res.wall = time.monotonic() - self.t0

    def result(self, read_db: bool = True) -> FleetResult:
        """Collect the output (and the database state); removes the temp
        dir.  Call after stop()."""
        r = self.res
        try:
            r.stderr = self._stderr()
            try:
                with open(self.out_path, "rb") as f:
                    r.stdout = f.read().decode("utf-8", "replace")
            except OSError:
                pass
        finally:
            self.discard()
        forked, ready, failed = self._scan(r.stderr)
        r.worker_pids, r.ready_pids, r.failed_pids = forked, ready, failed
        r.killed_pids = list(self.killed)
        r.ready_body = self._ready_body
        if r.booted and failed:    # a death between the last poll and stop
            r.booted = False
            r.reason = f"worker(s) failed: {failed}"
        if read_db:
            r.alembic_version, r.migration_runs, r.migration_pids = \
                db_state(self.dsn)
        return r

    def discard(self) -> None:
        """Remove the output files without reading them (after stop())."""
        if self.tmpdir:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        if exc[0] is not None:
            self.discard()


def run_fleets(fleets: Sequence[Fleet], read_db: bool = True) \
        -> List[FleetResult]:
    """Start several masters at once (e.g. on the same database), wait for
    all of them, stop them, return their results."""
    ok = False
    try:
        for f in fleets:
            f.start()
        while not all([f.poll() for f in fleets]):
            time.sleep(0.1)
        ok = True
    finally:
        for f in fleets:
            f.stop()
            if not ok:
                f.discard()
    try:
        return [f.result(read_db=read_db) for f in fleets]
    finally:
        for f in fleets:
            f.discard()


def run_fleet(example: str, dsn: str, **kw) -> FleetResult:
    """Start one fleet, wait until it is ready or failed, stop it."""
    read_db = kw.pop("read_db", True)
    return run_fleets([Fleet(example, dsn, **kw)], read_db=read_db)[0]


# ---------------------------------------------------------------------------

def main(argv: Optional[Iterable[str]] = None) -> int:
    import argparse
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dsn", help="libpq conninfo of an existing database")
    ap.add_argument("--example", default="flask-alembic")
    ap.add_argument("--workers", "-w", type=int, default=16)
    ap.add_argument("--worker-class", "-k", default="sync")
    ap.add_argument("--preload", action="store_true")
    ap.add_argument("--shim", action="store_true")
    ap.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT)
    ap.add_argument("--show-stderr", action="store_true")
    a = ap.parse_args(list(argv) if argv is not None else None)
    r = run_fleet(a.example, a.dsn, workers=a.workers,
                  worker_class=a.worker_class, preload=a.preload,
                  shim=a.shim, timeout=a.timeout)
    if a.show_stderr:
        print(r.stderr)
    print(r.summary())
    for kind in GATE_KINDS:
        print(f"  {kind}: {len(r.gate_lines(kind))} line(s)")
    for ln in r.race_errors()[:5]:
        print("  race:", ln[:200])
    return 0 if r.booted else 1


if __name__ == "__main__":
    sys.exit(main())
