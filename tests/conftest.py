"""Shared pytest fixtures for migshim's tests against a real PostgreSQL.

Fixtures
--------
pg          (session) the server: taken from PGHOST/PGPORT if set (e.g. by
            tests/harness/with-pg.sh), else started with tests/harness/pg.sh
            in a temp dir and stopped at session end.
db          a fresh, uniquely named database for one test (dropped after it).
make_db     factory: ``make_db()`` returns another fresh database; all are
            dropped when the test ends.
db_factory  (session) the same, for session-scoped helpers.
run_py      the :func:`run_py` helper below.
migshim_lib path of the shim; *fails* the test if it has not been built.

The pytest process itself never loads the shim: its own psycopg2 (used to
create/drop databases) runs without LD_PRELOAD, and children get LD_PRELOAD
only when ``run_py(..., preload=True)`` asks for it.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections import namedtuple
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, Optional, Union

import pytest

import shimbuild

REPO_ROOT = Path(__file__).resolve().parent.parent
HARNESS_DIR = REPO_ROOT / "tests" / "harness"
PG_SH = HARNESS_DIR / "pg.sh"
PYTHON = "/usr/bin/python3"
DEFAULT_TIMEOUT = 120.0

# migshim's own log line prefix: "migshim[PID]: LEVEL: ..."
# psql and libpq C programs with ASan's runtime preloaded hang at exit in
# p11-kit's destructor (freelocale waits on libc's setlocale lock), with or
# without the shim (Debian 12: libasan8, libp11-kit0).  These run in
# `make check`; under `make check-san` they would only time out.
ASAN_EXIT_HANG = pytest.mark.skipif(
    shimbuild.sanitized(), reason="psql/libpq C programs hang at exit under ASan (p11-kit)")

MIGSHIM_LINE_RE = re.compile(r"^migshim\[(\d+)\]: (\w+): (.*)$")
FIRST_CALL_RE = re.compile(
    r"^migshim\[(\d+)\]: debug: (\w+) -> (\S+) \(first call\)$")


# --------------------------------------------------------------------------
# the shim library

def migshim_lib_path() -> Path:
    """<build dir>/libmigshim.so of this checkout (build/, or
    $MIGSHIM_BUILD_DIR), or $MIGSHIM_LIB if set: see tests/shimbuild.py."""
    return shimbuild.lib_path()


def require_migshim_lib() -> Path:
    """Return the shim's path; fail (never skip) the test if it is missing."""
    lib = migshim_lib_path()
    if not lib.is_file():
        pytest.fail(
            f"migshim library not found at {lib}: build it first "
            f"(`make` in {REPO_ROOT}) or point MIGSHIM_LIB at it. "
            f"Tests that need the preload fail rather than skip.",
            pytrace=False)
    return lib


# --------------------------------------------------------------------------
# child processes

RunResult = namedtuple("RunResult", "rc stdout stderr")


def child_base_env() -> Dict[str, str]:
    """os.environ without anything that could load or configure the shim.

    Every MIGSHIM_* variable is dropped, PGHARNESS_DIR (exported by
    with-pg.sh) included: the shim reads all MIGSHIM_* names as its own
    configuration keys and rejects unknown ones (it then logs an error and
    disables itself). Children get only what run_py's env_extra adds."""
    env = {}
    for k, v in os.environ.items():
        if k in ("LD_PRELOAD", "LD_AUDIT"):
            continue
        if k.startswith("MIGSHIM_"):
            continue
        if k.startswith(("PYTEST_", "COV_CORE_")):
            continue
        env[k] = v
    env.update({
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONHASHSEED": "0",
        "PYTHONIOENCODING": "utf-8",
        "PYTHONUNBUFFERED": "1",
        "PGCONNECT_TIMEOUT": "15",
    })
    return env


def run_py(script: Union[str, Path],
           env_extra: Optional[Dict[str, str]] = None,
           preload: bool = False,
           timeout: float = DEFAULT_TIMEOUT,
           args: Iterable[str] = (),
           cwd: Optional[Union[str, Path]] = None) -> RunResult:
    """Run /usr/bin/python3 on a script file (or a code string).

    With ``preload=True`` the child gets ``LD_PRELOAD=<the shim>`` (behind
    the sanitizer runtimes for a SANITIZE= build: tests/shimbuild.py; the test
    fails if the shim is not built). ``env_extra`` is applied last, so it can
    add MIGSHIM_LOG, MIGSHIM_DISABLE, PGDATABASE... Returns (rc, stdout,
    stderr) as text. The child runs in its own session and is killed (with
    everything it started) after ``timeout`` seconds, failing the test.
    """
    env = child_base_env()
    if preload:
        env["LD_PRELOAD"] = shimbuild.preload(require_migshim_lib())
    if env_extra:
        env.update({k: str(v) for k, v in env_extra.items()})

    script_s = str(script)
    if isinstance(script, Path) or (script_s.endswith(".py")
                                    and "\n" not in script_s
                                    and os.path.isfile(script_s)):
        if not os.path.isfile(script_s):
            pytest.fail(f"workload script not found: {script_s}",
                        pytrace=False)
        argv = [PYTHON, script_s]
    else:
        argv = [PYTHON, "-c", script_s]
    argv += list(args)

    proc = subprocess.Popen(
        argv, env=env, cwd=str(cwd) if cwd else None,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        out, err = proc.communicate()
        pytest.fail(
            f"timeout after {timeout}s: {' '.join(argv)} "
            f"(preload={preload})\n--- stdout ---\n"
            f"{out.decode('utf-8', 'replace')[-4000:]}\n--- stderr ---\n"
            f"{err.decode('utf-8', 'replace')[-4000:]}", pytrace=False)
    return RunResult(proc.returncode, out.decode("utf-8", "replace"),
                     err.decode("utf-8", "replace"))


# --------------------------------------------------------------------------
# migshim log parsing helpers

def migshim_lines(stderr: str):
    """All lines of stderr that come from migshim (anywhere in the line)."""
    return [ln for ln in stderr.splitlines() if "migshim[" in ln]


def migshim_first_calls(stderr: str):
    """[(pid, function, soname)] of the 'first call' debug lines."""
    out = []
    for ln in stderr.splitlines():
        m = FIRST_CALL_RE.match(ln)
        if m:
            out.append((int(m.group(1)), m.group(2), m.group(3)))
    return out


def migshim_problems(stderr: str):
    """migshim lines at error or warn level."""
    return [ln for ln in migshim_lines(stderr)
            if re.search(r"migshim\[\d+\]: (error|warn\w*):", ln)]


# --------------------------------------------------------------------------
# the server

@dataclass
class PgServer:
    host: str
    port: str
    user: str
    dbname: str
    pgdir: Optional[str] = None
    owned: bool = False

    @property
    def env(self) -> Dict[str, str]:
        """libpq variables for this server (no MIGSHIM_* names: see
        child_base_env)."""
        return {"PGHOST": self.host, "PGPORT": self.port, "PGUSER": self.user,
                "PGDATABASE": self.dbname}

    def dsn(self, dbname: Optional[str] = None) -> str:
        return (f"host={self.host} port={self.port} user={self.user} "
                f"dbname={dbname or self.dbname}")

    def connect(self, dbname: Optional[str] = None):
        import psycopg2
        conn = psycopg2.connect(self.dsn(dbname))
        conn.autocommit = True
        return conn


def _start_own_server() -> PgServer:
    if not PG_SH.is_file():
        pytest.fail(f"harness missing: {PG_SH}", pytrace=False)
    pgdir = tempfile.mkdtemp(prefix="migshim-pg.", dir="/tmp")
    os.chmod(pgdir, 0o755)
    try:
        res = subprocess.run(["bash", str(PG_SH), "start", pgdir],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             stdin=subprocess.DEVNULL, timeout=180,
                             text=True)
    except subprocess.TimeoutExpired:
        subprocess.run(["bash", str(PG_SH), "stop", pgdir], timeout=60)
        shutil.rmtree(pgdir, ignore_errors=True)
        pytest.fail("pg.sh start timed out", pytrace=False)
    if res.returncode != 0:
        subprocess.run(["bash", str(PG_SH), "stop", pgdir], timeout=60)
        shutil.rmtree(pgdir, ignore_errors=True)
        pytest.fail(f"pg.sh start failed (rc={res.returncode}):\n"
                    f"{res.stderr}", pytrace=False)
    vals = dict(re.findall(r"^export (\w+)='([^']*)'$", res.stdout, re.M))
    return PgServer(host=vals["PGHOST"], port=vals["PGPORT"],
                    user=vals.get("PGUSER", "postgres"),
                    dbname=vals.get("PGDATABASE", "postgres"),
                    pgdir=pgdir, owned=True)


@pytest.fixture(scope="session")
def pg():
    """The PostgreSQL server for this session."""
    if os.environ.get("PGHOST") and os.environ.get("PGPORT"):
        server = PgServer(host=os.environ["PGHOST"],
                          port=os.environ["PGPORT"],
                          user=os.environ.get("PGUSER") or "postgres",
                          dbname=os.environ.get("PGDATABASE") or "postgres",
                          pgdir=os.environ.get("PGHARNESS_DIR"))
        yield server
        return
    server = _start_own_server()
    exported = dict(server.env, PGHARNESS_DIR=server.pgdir)
    saved = {k: os.environ.get(k) for k in exported}
    os.environ.update(exported)
    try:
        yield server
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        subprocess.run(["bash", str(PG_SH), "stop", server.pgdir],
                       timeout=120)
        shutil.rmtree(server.pgdir, ignore_errors=True)


# --------------------------------------------------------------------------
# databases

@dataclass
class TestDb:
    name: str
    dsn: str
    env: Dict[str, str] = field(default_factory=dict)
    server: Optional[PgServer] = None

    __test__ = False  # not a test class


class DbFactory:
    """Creates fresh databases (through psycopg2, without the shim)."""

    def __init__(self, server: PgServer):
        self.server = server
        self.created = []

    def create(self, prefix: str = "migshim_t") -> TestDb:
        name = f"{prefix}_{uuid.uuid4().hex[:16]}"
        conn = self.server.connect()
        try:
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}" TEMPLATE template0 '
                            f"ENCODING 'UTF8'")
        finally:
            conn.close()
        self.created.append(name)
        dsn = self.server.dsn(name)
        env = dict(self.server.env)
        env["PGDATABASE"] = name
        env["WORKLOAD_DSN"] = dsn  # not MIGSHIM_*: see child_base_env
        return TestDb(name=name, dsn=dsn, env=env, server=self.server)

    def drop(self, name: str) -> None:
        conn = self.server.connect()
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT pg_terminate_backend(pid) "
                            "FROM pg_stat_activity "
                            "WHERE datname = %s AND pid <> pg_backend_pid()",
                            (name,))
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            conn.close()
        if name in self.created:
            self.created.remove(name)

    def drop_all(self) -> None:
        errors = []
        for name in list(self.created):
            try:
                self.drop(name)
            except Exception as e:  # keep dropping the others
                errors.append(f"{name}: {e}")
        if errors:
            raise RuntimeError("could not drop: " + "; ".join(errors))


@pytest.fixture(scope="session")
def db_factory(pg):
    factory = DbFactory(pg)
    yield factory
    factory.drop_all()


@pytest.fixture
def make_db(pg):
    factory = DbFactory(pg)
    yield factory.create
    factory.drop_all()


@pytest.fixture
def db(make_db):
    """A fresh database: .name, .dsn (libpq conninfo), .env (for children)."""
    return make_db()


@pytest.fixture(name="run_py")
def run_py_fixture():
    return run_py


@pytest.fixture
def migshim_lib():
    """Path of the shim. Prefer calling require_migshim_lib() in the test
    body: a missing library then shows as FAILED rather than ERROR."""
    return require_migshim_lib()


# --------------------------------------------------------------------------
# the race guard's oracle (tests/oracle/): its tally at the end of the run


def pytest_terminal_summary(terminalreporter):
    import sys
    oracle = sys.modules.get("oracle")
    tally = getattr(oracle, "SESSION", None)
    if tally is not None and (tally.verdicts or tally.latency):
        terminalreporter.write_sep("=", "guard oracle")
        for line in tally.table().splitlines():
            terminalreporter.write_line(line)
