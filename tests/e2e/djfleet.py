"""Fleets of the Django example (examples/django): N "containers" each running
`manage.py migrate && gunicorn`, or one Gunicorn whose N workers each call
`call_command("migrate")` at import; the database states they start from; and
the oracle that says whether a run was right.  Used by tests/e2e/test_django.py
and tests/e2e/django_race.py; needs nothing from pytest.

    from djfleet import Project, prepare, run_containers, run_workers, oracle
    proj = Project.copy(tmpdir)              # a private copy of examples/django
    prepare(proj, dsn, "data_behind")       # empty | behind | data_behind | squash
    r = run_containers(proj, dsn, 8, shim=True, gunicorn=True)
    r.rcs, r.elapsed, r.events_by_pid(), r.leaders(), r.rendezvous()
    o = oracle(dsn)                          # django_migrations, seeded rows, ...

Forcing the interleaving (examples/django/djexample/race.py): every run sets
DJANGO_RENDEZVOUS_DIR/N, so each process stops after planning (Django's
pre_migrate signal, before any migration runs) and inside each RunPython
(after its inserts, before its COMMIT) until all N processes are at that
point, blocked on an advisory lock, or gone.  Without migshim all N have
planned the same migrations before any of them applies one, so the race is
certain, not likely; with migshim the leader goes on only once the N-1 others
are verified blocked on its lock -- the interleaving in which they would have
raced.  The line each process prints there ("rendezvous POINT: I inside, W
waiting on a lock, G gone") is what r.rendezvous() returns.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fleet import (Fleet, GUNICORN_CONF, PYTHON, migshim_lines_in, migshim_problems_in,  # noqa: E402
                   clean_env, database_url, free_port, parse_dsn, shim_path)
import shimbuild  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
EXAMPLE = REPO_ROOT / "examples" / "django"
TARGET_NAME = ".migshim-django.target"

# What the example's migrations seed (examples/django/*/data.py): table -> rows.
SEEDED = {"catalog_category": 5, "catalog_product": 3, "billing_currency": 4, "blog_tag": 3}
# The RunPython migrations of the example, and the table each one seeds.
DATA_MIGRATIONS = {("catalog", "0002_seed_categories"): "catalog_category",
                   ("catalog", "0004_seed_products"): "catalog_product",
                   ("billing", "0002_seed_currencies"): "billing_currency",
                   ("blog", "0002_seed_tags"): "blog_tag"}
SQUASH = ("blog", "0001_squashed_0003_post_slug")
REPLACED = [("blog", "0001_initial"), ("blog", "0002_seed_tags"), ("blog", "0003_post_slug")]

SCENARIOS = ("empty", "behind", "data_behind", "squash")

RENDEZVOUS_RE = re.compile(
    r"django-example\[(\d+)\]: rendezvous (\S+)( incomplete after \S+ s)?: "
    r"(\d+) inside, (\d+) waiting on a lock, (\d+) gone$", re.M)
MIGRATION_FAILED_RE = re.compile(r"^django-example\[(\d+)\]: migration failed: ", re.M)
# Errors the unguarded race produces (the list), as they reach stderr.
RACE_ERROR_RE = re.compile(
    r"UniqueViolation|DuplicateTable|DuplicateObject|DuplicateColumn|UndefinedColumn"
    r"|IntegrityError|MigrationSchemaMissing|already exists|duplicate key value"
    r"|InconsistentMigrationHistory")


# ---------------------------------------------------------------------------
# the project

@dataclass
class Project:
    """A copy of examples/django (the shim writes its target file into the
    project directory: never into the checkout)."""
    path: Path

    @classmethod
    def copy(cls, into) -> "Project":
        dest = Path(into) / "django"
        shutil.copytree(EXAMPLE, dest, ignore=shutil.ignore_patterns(
            "__pycache__", TARGET_NAME, "*.pyc"))
        return cls(dest)

    @property
    def target(self) -> Path:
        return self.path / TARGET_NAME

    def env(self, dsn: str, shim: bool = False, shim_env=None, extra=None) -> Dict[str, str]:
        env = clean_env()
        env["DATABASE_URL"] = database_url(dsn)
        if shim:
            lib = shim_path()
            if not lib.is_file():
                raise FileNotFoundError(f"{lib} not built (run `make` in {REPO_ROOT})")
            env["LD_PRELOAD"] = shimbuild.preload(lib)
            env["MIGSHIM_LOG"] = "info"
            env.update(shim_env or {})
        env.update({k: str(v) for k, v in (extra or {}).items()})
        return env

    def manage(self, dsn: str, *args: str, shim: bool = False, shim_env=None, extra=None,
               timeout: float = 120.0, check: bool = True) -> subprocess.CompletedProcess:
        """`python3 manage.py ARGS` in the project (without the shim unless asked)."""
        res = subprocess.run([PYTHON, "manage.py", *args], cwd=str(self.path),
                             env=self.env(dsn, shim, shim_env, extra),
                             stdin=subprocess.DEVNULL, capture_output=True, text=True,
                             timeout=timeout)
        if check and res.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(args)} failed (rc={res.returncode}):\n"
                               f"{res.stdout}\n{res.stderr}")
        return res


def prepare(proj: Project, dsn: str, scenario: str, extra=None) -> None:
    """Bring an empty database to the scenario's starting state, without the shim
    (`extra`: more environment for the project, e.g. another DATABASE_URL):
      empty        nothing
      behind       all migrated but billing.0003_invoice_note (a schema migration, a leaf)
      data_behind  all migrated but catalog.0004_seed_products (a RunPython, a leaf)
      squash       all migrated, then the squash's own row deleted: the database of an
                   older release that applied blog 0001-0003 before the squash existed
    """
    if scenario == "empty":
        return
    if scenario == "squash":
        proj.manage(dsn, "migrate", "--noinput", extra=extra)
        _exec(dsn, "DELETE FROM django_migrations WHERE app = %s AND name = %s", SQUASH)
        return
    stop = {"behind": ("billing", "0002_seed_currencies"),
            "data_behind": ("catalog", "0003_product_sku")}[scenario]
    code = (
        "import django, os\n"
        "os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'djexample.settings')\n"
        "django.setup()\n"
        "from django.core.management import call_command\n"
        "from django.db.migrations.loader import MigrationLoader\n"
        f"stop = {stop!r}\n"
        "leaves = MigrationLoader(None, ignore_no_migrations=True).graph.leaf_nodes()\n"
        "for app, name in leaves:\n"
        "    if app != stop[0]:\n"
        "        call_command('migrate', app, name, interactive=False, verbosity=0)\n"
        "call_command('migrate', stop[0], stop[1], interactive=False, verbosity=0)\n")
    res = subprocess.run([PYTHON, "-c", code], cwd=str(proj.path), env=proj.env(dsn, extra=extra),
                         stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    if res.returncode != 0:
        raise RuntimeError(f"prepare {scenario} failed:\n{res.stdout}\n{res.stderr}")


def _exec(dsn: str, sql: str, params=()):
    import psycopg2
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall() if cur.description else None
    finally:
        conn.close()


# ---------------------------------------------------------------------------
# the oracle

@dataclass
class DbState:
    migrations: Counter                      # (app, name) -> rows in django_migrations
    seeded: Dict[str, int]                   # table -> rows
    seeded_pids: Dict[str, List[int]]        # table -> distinct seeded_by_pid
    content_types: List[tuple]
    permissions: int

    @property
    def duplicate_migrations(self) -> Dict[tuple, int]:
        return {k: v for k, v in self.migrations.items() if v > 1}

    @property
    def duplicate_rows(self) -> int:
        """Rows seeded beyond the expected count, over all seeded tables."""
        return sum(max(0, self.seeded.get(t, 0) - n) for t, n in SEEDED.items())


def oracle(dsn: str) -> DbState:
    rows = _exec(dsn, "SELECT to_regclass('django_migrations') IS NOT NULL")
    migrations: Counter = Counter()
    if rows[0][0]:
        migrations.update((a, n) for a, n in _exec(dsn, "SELECT app, name FROM django_migrations"))
    seeded, pids = {}, {}
    for table in SEEDED:
        if _exec(dsn, "SELECT to_regclass(%s) IS NOT NULL", (table,))[0][0]:
            seeded[table] = _exec(dsn, f'SELECT count(*) FROM "{table}"')[0][0]
            pids[table] = sorted(r[0] for r in _exec(
                dsn, f'SELECT DISTINCT seeded_by_pid FROM "{table}"'))
    cts, perms = [], 0
    if _exec(dsn, "SELECT to_regclass('django_content_type') IS NOT NULL")[0][0]:
        cts = sorted(_exec(dsn, "SELECT app_label, model FROM django_content_type"))
    if _exec(dsn, "SELECT to_regclass('auth_permission') IS NOT NULL")[0][0]:
        perms = _exec(dsn, "SELECT count(*) FROM auth_permission")[0][0]
    return DbState(migrations, seeded, pids, cts, perms)


_DUMP_DROP = re.compile(r"^(--.*|SET .*|SELECT pg_catalog\.set_config.*|\\(un)?restrict .*|)$")


def schema_dump(dsn: str) -> str:
    """pg_dump --schema-only, without comments, SET lines, pg_dump 15.14's
    random \\restrict keys and blank lines."""
    p = parse_dsn(dsn)
    res = subprocess.run(["pg_dump", "--schema-only", "--no-owner", "-h", p["host"], "-p",
                          p["port"], "-U", p.get("user", "postgres"), p["dbname"]],
                         stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120,
                         env={k: v for k, v in os.environ.items() if k != "LD_PRELOAD"})
    if res.returncode != 0:
        raise RuntimeError(f"pg_dump failed: {res.stderr}")
    return "\n".join(ln for ln in res.stdout.splitlines() if not _DUMP_DROP.match(ln))


# ---------------------------------------------------------------------------
# results

def read_events(path) -> List[dict]:
    try:
        with open(path) as f:
            return [json.loads(ln) for ln in f if ln.strip()]
    except FileNotFoundError:
        return []


@dataclass
class RunResult:
    label: str
    n: int
    shim: bool
    rcs: List[Optional[int]] = field(default_factory=list)   # per process (None: hung)
    outputs: List[str] = field(default_factory=list)          # per process: stdout+stderr
    elapsed: float = 0.0
    events: List[dict] = field(default_factory=list)
    booted: List[bool] = field(default_factory=list)          # gunicorn ready, per container
    reason: str = ""

    @property
    def text(self) -> str:
        return "\n".join(self.outputs)

    @property
    def failed(self) -> int:
        return sum(1 for rc in self.rcs if rc != 0)

    def events_by_pid(self) -> Dict[int, List[str]]:
        out: Dict[int, List[str]] = {}
        for e in self.events:
            out.setdefault(int(e["pid"]), []).append(e["event"])
        return out

    def leaders(self) -> List[int]:
        """Pids with a "leading" event."""
        return sorted({int(e["pid"]) for e in self.events if e["event"] == "leading"})

    def migshim_lines(self, level: Optional[str] = None):
        return migshim_lines_in(self.text, level)

    def migshim_problems(self) -> List[str]:
        return migshim_problems_in(self.text)

    def rendezvous(self) -> List[tuple]:
        """[(pid, point, complete, inside, waiting, gone)]"""
        return [(int(m.group(1)), m.group(2), m.group(3) is None, int(m.group(4)),
                 int(m.group(5)), int(m.group(6))) for m in RENDEZVOUS_RE.finditer(self.text)]

    def race_errors(self) -> List[str]:
        return [ln for ln in self.text.splitlines()
                if RACE_ERROR_RE.search(ln) and not ln.startswith((" ", "\t"))]

    def describe(self, tail: int = 25) -> str:
        parts = [f"[{self.label}] rcs={self.rcs} booted={self.booted} "
                 f"elapsed={self.elapsed:.2f}s {self.reason}",
                 f"events: {self.events_by_pid()}"]
        for i, out in enumerate(self.outputs):
            lines = out.splitlines()
            keep = [ln for ln in lines if "migshim[" in ln or "django-example[" in ln
                    or "Error" in ln or "rror:" in ln]
            parts.append(f"--- process {i} (rc={self.rcs[i] if i < len(self.rcs) else '?'}) "
                         f"---\n" + "\n".join(keep[:40]) + "\n  ...\n" + "\n".join(lines[-tail:]))
        return "\n".join(parts)


def _rendezvous_env(rdir: str, n: int, timeout: float) -> Dict[str, str]:
    return {"DJANGO_RENDEZVOUS_DIR": rdir, "DJANGO_RENDEZVOUS_N": str(n),
            "DJANGO_RENDEZVOUS_TIMEOUT": str(timeout)}


# ---------------------------------------------------------------------------
# N containers: `manage.py migrate --noinput && exec gunicorn` each

def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=3) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _kill_group(proc: subprocess.Popen, grace: float = 10.0) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def run_containers(proj: Project, dsn: str, n: int, shim: bool, gunicorn: bool = False,
                   serial: bool = False, shim_env=None, extra_env=None,
                   rendezvous: bool = True, rendezvous_timeout: float = 30.0,
                   timeout: float = 120.0, label: str = "", python: str = PYTHON) -> RunResult:
    """N containers started together (serial=True: one after another, each to its end),
    each `python3 manage.py migrate --noinput`, followed with gunicorn=True by
    `exec python3 -m gunicorn` (one sync worker, its own port) that must answer GET /ready
    200; then it is stopped with SIGTERM (`python`: the interpreter both run with, as the
    shell finds it: a path, or a bare name searched in PATH).  A container's rc: that of the shell (0: migrate
    succeeded and, with gunicorn, Gunicorn booted and stopped cleanly)."""
    tmp = tempfile.mkdtemp(prefix="migshim-djfleet.")
    rdir = os.path.join(tmp, "rendezvous")
    os.mkdir(rdir)
    events = os.path.join(tmp, "events.jsonl")
    s_env = dict(shim_env or {})
    s_env.setdefault("MIGSHIM_EVENTS", events)
    extra = dict(extra_env or {})
    if rendezvous and not serial:
        extra.update(_rendezvous_env(rdir, n, rendezvous_timeout))
    env = proj.env(dsn, shim, s_env, extra)
    res = RunResult(label=label or f"{n} x manage.py migrate" + (" && gunicorn" if gunicorn
                    else "") + (" serial" if serial else "") + (" shim" if shim else " no-shim"),
                    n=n, shim=shim)
    procs, ports, logs = [], [], []

    def start(i):
        port = free_port()
        cmd = f"{python} manage.py migrate --noinput"
        if gunicorn:
            cmd += (f" && exec {python} -m gunicorn -c {GUNICORN_CONF} --bind 127.0.0.1:{port}"
                    f" --workers 1 --graceful-timeout 5 djexample.wsgi:application")
        log = os.path.join(tmp, f"out.{i}")
        with open(log, "ab") as out:
            p = subprocess.Popen(["/bin/sh", "-c", cmd], cwd=str(proj.path), env=env,
                                 stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                 start_new_session=True)
        procs.append(p)
        ports.append(port)
        logs.append(log)

    def settle(i, deadline) -> None:
        """Wait until container i is done: exited, or (gunicorn) ready and then stopped."""
        p = procs[i]
        while True:
            rc = p.poll()
            if rc is not None:
                return
            if gunicorn and _ready(ports[i]):
                res.booted[i] = True
                return
            if time.monotonic() > deadline:
                res.reason += f" container {i} timed out;"
                return
            time.sleep(0.05)

    t0 = time.monotonic()
    try:
        res.booted = [False] * n
        if serial:
            for i in range(n):
                start(i)
                settle(i, time.monotonic() + timeout)
                if gunicorn and res.booted[i]:
                    _kill_group(procs[i])
        else:
            for i in range(n):
                start(i)
            deadline = time.monotonic() + timeout
            for i in range(n):
                settle(i, deadline)
        res.elapsed = time.monotonic() - t0
    finally:
        for p in procs:
            _kill_group(p)
        for i, p in enumerate(procs):
            rc = p.returncode
            if gunicorn and not res.booted[i] and rc == 0:
                rc = -1          # exited 0 without ever answering /ready: not booted
            res.rcs.append(rc)
            with open(logs[i], "rb") as f:
                res.outputs.append(f.read().decode("utf-8", "replace"))
        res.events = read_events(events)
        shutil.rmtree(tmp, ignore_errors=True)
    return res


# ---------------------------------------------------------------------------
# one Gunicorn, N workers each calling call_command("migrate") at import

def run_workers(proj: Project, dsn: str, n: int, shim: bool, shim_env=None, extra_env=None,
                rendezvous: bool = True, rendezvous_timeout: float = 30.0,
                timeout: float = 90.0, label: str = "") -> RunResult:
    """`gunicorn --workers N djexample.wsgi:application` with DJANGO_MIGRATE_ON_STARTUP=true
    (tests/e2e/fleet.py's Fleet: ready when every worker imported the app and /ready
    answered 200).  rcs: one per worker, 0 when it booted and was alive at the end."""
    tmp = tempfile.mkdtemp(prefix="migshim-djworkers.")
    rdir = os.path.join(tmp, "rendezvous")
    os.mkdir(rdir)
    events = os.path.join(tmp, "events.jsonl")
    s_env = {"MIGSHIM_EVENTS": events}
    s_env.update(shim_env or {})
    extra = {"DJANGO_MIGRATE_ON_STARTUP": "true"}
    if rendezvous:
        extra.update(_rendezvous_env(rdir, n, rendezvous_timeout))
    extra.update(extra_env or {})
    fl = Fleet("django", dsn, workers=n, shim=shim, shim_env=s_env,
               env_extra=dict(extra, DATABASE_URL=database_url(dsn)), timeout=timeout,
               app_dir=proj.path, wsgi_app="djexample.wsgi:application",
               label=label or f"gunicorn {n} workers call_command('migrate')"
               + (" shim" if shim else " no-shim"))
    res = RunResult(label=fl.label, n=n, shim=shim)
    try:
        fl.start()
        fl.wait()
        res.elapsed = fl.res.elapsed if fl.res.elapsed is not None else \
            time.monotonic() - fl.t0
        fl.stop()
        r = fl.result(read_db=False)
    finally:
        fl.stop()
        fl.discard()
    res.reason = r.reason
    workers = r.worker_pids
    res.rcs = [0 if (r.booted and p in r.ready_pids and p not in r.failed_pids) else 1
               for p in workers] + [1] * max(0, n - len(workers))
    res.booted = [rc == 0 for rc in res.rcs]
    res.outputs = [r.stderr + r.stdout]
    res.events = read_events(events)
    res.worker_pids = workers            # type: ignore[attr-defined]
    shutil.rmtree(tmp, ignore_errors=True)
    return res


def run_scenario(proj: Project, make_db, scenario: str, n: int, shim: bool, mode: str,
                 **kw):
    """A fresh database brought to `scenario`, then the fleet (mode "containers",
    "containers+gunicorn" or "workers").  Returns (db, RunResult)."""
    d = make_db()
    prepare(proj, d.dsn, scenario)
    if mode == "workers":
        return d, run_workers(proj, d.dsn, n, shim, **kw)
    return d, run_containers(proj, d.dsn, n, shim, gunicorn=(mode == "containers+gunicorn"),
                             **kw)


def expected_state(proj: Project, make_db):
    """(DbState, schema dump) of one plain `manage.py migrate` on an empty database."""
    d = make_db()
    proj.manage(d.dsn, "migrate", "--noinput")
    return oracle(d.dsn), schema_dump(d.dsn)


def nothing_to_do(proj: Project, dsn: str) -> bool:
    """A following `manage.py migrate` (no shim) finds no migration to apply."""
    res = proj.manage(dsn, "migrate", "--noinput")
    return "No migrations to apply." in res.stdout and "Applying" not in res.stdout


def check(state: DbState, expected: DbState) -> List[str]:
    """What is wrong with a fleet's database, against a serial run's (empty: nothing)."""
    bad = []
    if state.duplicate_migrations:
        bad.append(f"django_migrations duplicates: {state.duplicate_migrations}")
    if set(state.migrations) != set(expected.migrations):
        bad.append(f"django_migrations differs: missing "
                   f"{sorted(set(expected.migrations) - set(state.migrations))}, extra "
                   f"{sorted(set(state.migrations) - set(expected.migrations))}")
    if state.seeded != SEEDED:
        bad.append(f"seeded rows {state.seeded}, want {SEEDED}")
    if state.content_types != expected.content_types:
        bad.append("django_content_type differs")
    if state.permissions != expected.permissions:
        bad.append(f"auth_permission: {state.permissions} rows, want {expected.permissions}")
    return bad


def cli(*args: str, cwd=None, env=None, timeout: float = 60.0) -> subprocess.CompletedProcess:
    """The `migshim` command of this build."""
    return subprocess.run([str(shimbuild.cli_path()), *args], cwd=str(cwd) if cwd else None,
                          env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout)


def summarize(results: Sequence[RunResult]) -> str:
    return "\n".join(f"{r.label}: failed={r.failed}/{r.n} {r.elapsed:.2f}s" for r in results)
