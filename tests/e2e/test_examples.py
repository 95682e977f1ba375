"""End to end: the examples other than the Gunicorn fleets, and the docs.

* examples/fastapi-uvicorn: `python3 -m uvicorn app:app --workers 8` on an
  empty database.  With the shim every worker starts and stays up, each
  revision runs once, one process logs "leading" and every other worker one
  gate decision.  Without it the race kills workers (Uvicorn 0.17's parent
  does not even notice): the teeth.
* examples/docker/check.sh: the Dockerfile replayed on this machine
  (install.sh into a staged prefix, the image's CMD with its ENV
  LD_PRELOAD against the harness server); and a Dockerfile whose ENV
  LD_PRELOAD points where nothing is installed must make it fail.
* examples/psycopg3-legacy: six copies of a plain psycopg 3 (ctypes backend)
  script with its own version table, started at one instant (a barrier).
  With the shim configured for that table: one leads, each migration runs
  once.  Without it: at least one of a few tries fails (a process exits 1 or
  a migration runs twice).
* man/migshim.1 and man/migshim.conf.5 render without warnings; the
  configuration page (the one place the keys are documented) has an entry
  for exactly the keys `migshim status` shows (the code's table),
  examples/migshim.conf lists every one, and holds each at its default.
* the docs: every relative link of README.md, CONTRIBUTING.md, SECURITY.md,
  docs/*.md and the examples' READMEs resolves (file and heading); the
  README stays a guide (about 300 lines, `make demo` and `make check`, no
  configuration table).

Run: tests/harness/with-pg.sh /usr/bin/python3 -m pytest -q tests/e2e/test_examples.py
"""

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
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fleet import (RACE_ERROR_RE, clean_env, database_url, db_state,  # noqa: E402
                   free_port, shim_path)
import shimbuild  # noqa: E402  (tests/shimbuild.py, on the path via fleet)

REPO = Path(__file__).resolve().parent.parent.parent
EXAMPLES = REPO / "examples"
PYTHON = "/usr/bin/python3"

HEADS = ["0003cccc"]
REVISIONS = ["0001aaaa", "0002bbbb", "0003cccc"]
LEGACY_VERSIONS = ["0001", "0002", "0003"]

MIGSHIM_RE = re.compile(r"migshim\[(\d+)\]: (\w+): (.*)$")
# A gate decision (tests/e2e/fleet.py: GATE_PATTERNS), the kind in a group.
DECISION_RE = re.compile(
    r"migshim\[(\d+)\]: info: .*?\b(leading|waited|is at head"
    r"|before this process got the lock)\b")
LEAD_RE = re.compile(r"migshim\[(\d+)\]: info: .*\bleading\b")
PROBLEM_RE = re.compile(r"migshim\[\d+\]: (error|warn\w*): ")


def need_shim() -> Path:
    lib = shim_path()
    if not lib.is_file():
        pytest.fail(f"{lib} not built (run `make`)", pytrace=False)
    return lib


def decisions(text: str, pids=()):
    """{pid: [kind, ...]} of the gate decision lines; a process of `pids`
    that printed no migshim line at info level or above found the database
    at head (the gate did not act on it and, by the rule of silence, said
    nothing): ["is at head"]."""
    out = {}
    loud = set()
    for ln in text.splitlines():
        m = DECISION_RE.search(ln)
        if m:
            out.setdefault(int(m.group(1)), []).append(m.group(2))
        m = MIGSHIM_RE.search(ln)
        if m and m.group(2) != "debug":
            loud.add(int(m.group(1)))
    for p in pids:
        if p not in loud and p not in out:
            out[p] = ["is at head"]
    return out


def problems(text: str):
    return [ln for ln in text.splitlines() if PROBLEM_RE.search(ln)]


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def excerpt(text: str, n: int = 80) -> str:
    keep = [ln for ln in text.splitlines()
            if "migshim[" in ln or "failed" in ln or "Error" in ln
            or "Started server process" in ln or ln.startswith("legacy[")]
    return "\n".join(keep[:n]) + "\n--- tail ---\n" + \
        "\n".join(text.splitlines()[-30:])


# ---------------------------------------------------------------------------
# (a) FastAPI + uvicorn --workers 8

UVICORN_STARTED_RE = re.compile(r"Started server process \[(\d+)\]")
APP_FAILED_RE = re.compile(r"^fastapi-uvicorn\[(\d+)\]: migration failed: ", re.M)


class Uvicorn:
    """`python3 -m uvicorn app:app --workers N` in examples/fastapi-uvicorn,
    output in a temp file, in its own session (killed as a group at the
    end)."""

    def __init__(self, dsn: str, workers: int, shim: bool):
        self.dsn, self.workers, self.shim = dsn, workers, shim
        self.tmp = tempfile.mkdtemp(prefix="migshim-uvicorn.")
        self.log = os.path.join(self.tmp, "out")
        self.port = free_port()
        env = clean_env()
        env["DATABASE_URL"] = database_url(dsn)
        env["RUN_DB_MIGRATIONS_ON_STARTUP"] = "true"
        if shim:
            env["LD_PRELOAD"] = shimbuild.preload(need_shim())
            env["MIGSHIM_LOG"] = "info"
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [PYTHON, "-m", "uvicorn", "app:app", "--workers", str(workers),
                 "--host", "127.0.0.1", "--port", str(self.port)],
                cwd=str(EXAMPLES / "fastapi-uvicorn"), env=env,
                stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                start_new_session=True)
        self.t0 = time.monotonic()

    def text(self) -> str:
        with open(self.log, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def started(self):
        return sorted({int(p) for p in UVICORN_STARTED_RE.findall(self.text())})

    def failed(self):
        return sorted({int(p) for p in APP_FAILED_RE.findall(self.text())})

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.port}/ready", timeout=3) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def wait(self, timeout: float = 60.0) -> str:
        """'up' (all workers started, /ready 200), 'failed' (every worker
        started or failed, at least one failed), 'exited', or 'timeout'."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return "exited"
            started, failed = self.started(), self.failed()
            if failed and len(started) + len(failed) >= self.workers:
                return "failed"
            if len(started) >= self.workers and self.ready():
                return "up"
            time.sleep(0.1)
        return "timeout"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)   # stray workers
        except (ProcessLookupError, PermissionError):
            pass

    def discard(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def test_fastapi_uvicorn_8_workers_with_shim(db):
    n = 8
    uv = Uvicorn(db.dsn, n, shim=True)
    try:
        outcome = uv.wait()
        time.sleep(0.5)                    # a late death would show now
        started = uv.started()
        still_alive = [p for p in started if alive(p)]
        elapsed = time.monotonic() - uv.t0
        uv.stop()
        text = uv.text()
    finally:
        uv.stop()
        uv.discard()
    desc = f"outcome={outcome} started={started} alive={still_alive}\n" + excerpt(text)
    assert outcome == "up", desc
    assert len(started) == n and still_alive == started, desc
    assert not APP_FAILED_RE.search(text), desc
    races = [ln for ln in text.splitlines()
             if RACE_ERROR_RE.search(ln) and not ln.startswith((" ", "\t"))]
    assert not races, "\n".join(races) + "\n" + desc
    assert not problems(text), "\n".join(problems(text)) + "\n" + desc

    # one leader; every worker exactly one decision; only the leader migrated
    leaders = [int(m.group(1)) for m in map(LEAD_RE.search, text.splitlines()) if m]
    assert len(leaders) == 1, f"leading lines from {leaders}\n{desc}"
    dec = decisions(text, started)
    assert sorted(dec) == started, f"decisions {dec}\n{desc}"
    for pid in started:
        assert len(dec[pid]) == 1, f"pid {pid}: {dec[pid]}\n{desc}"
    version, runs, pids = db_state(db.dsn)
    assert version == HEADS, desc
    assert runs == {r: 1 for r in REVISIONS}, f"{runs}\n{desc}"
    assert all(p == [leaders[0]] for p in pids.values()), f"{pids}\n{desc}"
    print(f"uvicorn x{n} with the shim: up in {elapsed:.1f}s, leader {leaders[0]}")


def test_fastapi_uvicorn_8_workers_race_without_shim(make_db):
    """The teeth of the test above: unshimmed, workers die at import (and
    Uvicorn's parent keeps running without them)."""
    n, tries, seen = 8, 3, []
    for attempt in range(1, tries + 1):
        d = make_db()
        uv = Uvicorn(d.dsn, n, shim=False)
        try:
            outcome = uv.wait(timeout=45)
            failed, started = uv.failed(), uv.started()
            parent_alive = uv.proc.poll() is None
            text = uv.text()
        finally:
            uv.stop()
            uv.discard()
        seen.append(f"try {attempt}: {outcome}, started={len(started)} "
                    f"failed={len(failed)} parent_alive={parent_alive}")
        if failed:
            assert "migshim[" not in text
            assert RACE_ERROR_RE.search(text), excerpt(text)
            print("; ".join(seen))
            return
    pytest.fail("the unshimmed uvicorn fleet never raced: " + "; ".join(seen))


# ---------------------------------------------------------------------------
# (b) examples/docker/check.sh

def check_sh_env(pg) -> dict:
    # check.sh replays the image build (a plain `make`): nothing of a
    # `make check SANITIZE=... B=...` run may reach its make
    env = {k: v for k, v in os.environ.items()
           if k not in ("LD_PRELOAD", "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "B",
                        "SANITIZE")
           and not k.startswith(("MIGSHIM_", "PYTEST_"))}
    env.update(pg.env)
    return env


def test_docker_check_sh(pg):
    need_shim()
    res = subprocess.run(
        ["bash", str(EXAMPLES / "docker" / "check.sh")], env=check_sh_env(pg),
        cwd=str(REPO), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, timeout=180)
    assert res.returncode == 0, res.stdout[-6000:]
    assert "check.sh: all checks passed" in res.stdout, res.stdout[-6000:]
    for step in ("RUN /src/migshim/examples/docker/install.sh",
                 "RUN pip install psycopg2-binary: Debian's psycopg2 laid out as its wheel",
                 "ok: LD_PRELOAD=/usr/local/lib/libmigshim.so is in the image, a shared "
                 "library needing libc only",
                 "FROM python:3.12-slim: the CMD runs where libconfig.so.9 and libpq.so.5 "
                 "cannot be loaded",
                 "ok: GET /ready -> 200",
                 "one leader",
                 "migration_runs: 0001aaaa=1 0002bbbb=1 0003cccc=1",
                 "(the psycopg2_binary wheel's copy)",
                 "ok: migshim status: at head"):
        assert step in res.stdout, f"missing {step!r}\n{res.stdout[-6000:]}"


def test_docker_check_sh_slim_image_has_no_system_libpq(pg, tmp_path):
    """The slim image check.sh emulates has teeth: without the wheel (pip
    install minus psycopg2-binary) the app finds only Debian's psycopg2,
    whose libpq.so.5 cannot be loaded there, and never comes up."""
    src = (EXAMPLES / "docker" / "Dockerfile").read_text()
    assert " psycopg2-binary\n" in src
    bad = tmp_path / "Dockerfile"
    bad.write_text(src.replace(" psycopg2-binary\n", "\n"))
    env = check_sh_env(pg)
    env.update(DOCKERFILE=str(bad), CHECK_TIMEOUT="20")
    res = subprocess.run(
        ["bash", str(EXAMPLES / "docker" / "check.sh")], env=env,
        cwd=str(REPO), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, timeout=180)
    assert res.returncode != 0, res.stdout[-4000:]
    assert "the app exited before it was ready" in res.stdout, res.stdout[-4000:]
    assert "libpq.so.5: file too short" in res.stdout, res.stdout[-4000:]


def test_docker_check_sh_fails_on_a_wrong_ld_preload(pg, tmp_path):
    """check.sh has teeth: the same Dockerfile with ENV LD_PRELOAD naming a
    path the install does not create must fail (and say why)."""
    src = (EXAMPLES / "docker" / "Dockerfile").read_text()
    assert "ENV LD_PRELOAD=/usr/local/lib/libmigshim.so" in src
    bad = tmp_path / "Dockerfile"
    bad.write_text(src.replace("ENV LD_PRELOAD=/usr/local/lib/libmigshim.so",
                               "ENV LD_PRELOAD=/usr/lib/libmigshim.so"))
    env = check_sh_env(pg)
    env["DOCKERFILE"] = str(bad)
    res = subprocess.run(
        ["bash", str(EXAMPLES / "docker" / "check.sh")], env=env,
        cwd=str(REPO), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, timeout=180)
    assert res.returncode != 0, res.stdout[-4000:]
    assert "ENV LD_PRELOAD=/usr/lib/libmigshim.so, but the image has no such file" \
        in res.stdout, res.stdout[-4000:]


# ---------------------------------------------------------------------------
# (c) psycopg 3 legacy script, 6 processes at one instant

LEGACY = EXAMPLES / "psycopg3-legacy" / "legacy_app.py"
LEGACY_SHIM_ENV = {"MIGSHIM_VERSION_TABLE": "schema_version",
                   "MIGSHIM_VERSION_TABLE_SCHEMA": "app",
                   "MIGSHIM_HEADS": "0003"}


def run_legacy(dsn: str, n: int, shim: bool, timeout: float = 60.0):
    """n copies released together by the script's barrier.  Returns
    ([rc, ...], combined stderr)."""
    bdir = tempfile.mkdtemp(prefix="migshim-legacy.")
    env = clean_env()
    env.update({"DATABASE_URL": dsn, "LEGACY_BARRIER_DIR": bdir,
                "LEGACY_BARRIER_N": str(n), "MIGRATION_SLEEP": "0.2"})
    if shim:
        env["LD_PRELOAD"] = shimbuild.preload(need_shim())
        env["MIGSHIM_LOG"] = "info"
        env.update(LEGACY_SHIM_ENV)
    errpath = os.path.join(bdir, "stderr")
    procs = []
    try:
        with open(errpath, "ab") as err:
            for _ in range(n):
                procs.append(subprocess.Popen(
                    [PYTHON, str(LEGACY)], env=env, cwd=str(LEGACY.parent),
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                    stderr=err, start_new_session=True))
        deadline = time.monotonic() + timeout
        rcs = []
        for p in procs:
            try:
                rcs.append(p.wait(timeout=max(0.1, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                rcs.append(None)
        with open(errpath, "rb") as f:
            text = f.read().decode("utf-8", "replace")
        return rcs, text
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        shutil.rmtree(bdir, ignore_errors=True)


def legacy_state(dsn: str):
    """({version: [pid, ...]} of app.migration_runs, schema_version rows,
    number of users) -- None for tables that do not exist."""
    import psycopg2
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT to_regclass('app.migration_runs'), "
                        "to_regclass('app.schema_version'), "
                        "to_regclass('app.users')")
            has_runs, has_version, has_users = cur.fetchone()
            runs = version = users = None
            if has_runs:
                cur.execute("SELECT version, pid FROM app.migration_runs "
                            "ORDER BY version, at")
                runs = {}
                for v, pid in cur.fetchall():
                    runs.setdefault(v, []).append(pid)
            if has_version:
                cur.execute("SELECT version_num FROM app.schema_version")
                version = sorted(r[0] for r in cur.fetchall())
            if has_users:
                cur.execute("SELECT count(*) FROM app.users")
                users = cur.fetchone()[0]
            return runs, version, users
    finally:
        conn.close()


def test_psycopg3_legacy_is_the_ctypes_backend():
    """The example's point: Debian's psycopg 3 reaches libpq through ctypes
    (dlsym), not a C extension linking it."""
    res = subprocess.run([PYTHON, "-c", "import psycopg; print(psycopg.pq.__impl__)"],
                         cwd="/", env=clean_env(), capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "python", res.stdout + res.stderr


def test_psycopg3_legacy_6_processes_with_shim(db):
    n = 6
    rcs, text = run_legacy(db.dsn, n, shim=True)
    desc = f"rcs={rcs}\n" + excerpt(text)
    assert rcs == [0] * n, desc
    assert not problems(text), "\n".join(problems(text)) + "\n" + desc
    leaders = [int(m.group(1)) for m in map(LEAD_RE.search, text.splitlines()) if m]
    assert len(leaders) == 1, f"leading lines from {leaders}\n{desc}"
    leader = leaders[0]
    dec = decisions(text, {int(p) for p in re.findall(r"^legacy\[(\d+)\]: ", text, re.M)})
    assert len(dec) == n, f"decisions {dec}\n{desc}"
    for pid, kinds in dec.items():
        assert len(kinds) == 1, f"pid {pid}: {kinds}\n{desc}"
        if pid != leader:
            assert kinds[0] in ("waited", "is at head",
                                "before this process got the lock"), desc
    applying = {int(p) for p in re.findall(r"^legacy\[(\d+)\]: applying ", text, re.M)}
    assert applying == {leader}, f"applying from {applying}\n{desc}"
    nothing = re.findall(r"^legacy\[(\d+)\]: database at 0003: nothing to do$", text, re.M)
    assert len(nothing) == n - 1, desc
    assert f"legacy[{leader}]: migrated to 0003" in text, desc
    runs, version, users = legacy_state(db.dsn)
    assert runs == {v: [leader] for v in LEGACY_VERSIONS}, f"{runs}\n{desc}"
    assert version == ["0003"], desc
    assert users == 1, f"users={users} (the seed ran more than once?)\n{desc}"


def test_psycopg3_legacy_6_processes_race_without_shim(make_db):
    """The teeth: the same six, unshimmed, fail at least once in a few tries
    (a process exits non-zero, or a migration ran twice)."""
    n, tries, seen = 6, 4, []
    for attempt in range(1, tries + 1):
        d = make_db()
        rcs, text = run_legacy(d.dsn, n, shim=False)
        assert "migshim[" not in text
        assert None not in rcs, f"a copy hung: {rcs}\n{excerpt(text)}"
        runs, version, users = legacy_state(d.dsn)
        twice = {v: p for v, p in (runs or {}).items() if len(p) != 1}
        seen.append(f"try {attempt}: rcs={rcs} runs_twice={twice} users={users}")
        if any(rc != 0 for rc in rcs) or twice or (users or 0) > 1:
            if any(rc != 0 for rc in rcs):
                assert re.search(r"^legacy\[\d+\]: migration failed: ", text, re.M), \
                    excerpt(text)
            print("; ".join(seen))
            return
    pytest.fail("six unshimmed copies never raced: " + "; ".join(seen))


# ---------------------------------------------------------------------------
# (d) man pages, and the example configuration

MAN_PAGES = [REPO / "man" / "migshim.1", REPO / "man" / "migshim.conf.5"]


def man_keys():
    """[(key, VARIABLE)] from the KEYS section of man/migshim.conf.5, the one
    place the configuration is documented (README.md links to it)."""
    rows = re.findall(r'^\.BR (\w+) " \(" (MIGSHIM_\w+) "\)"$',
                      (REPO / "man" / "migshim.conf.5").read_text(), re.M)
    assert len(rows) >= 10, "man/migshim.conf.5: the KEYS entries not found"
    for key, var in rows:
        assert var == "MIGSHIM_" + key.upper(), f"{key}: documented as {var}"
    return rows


@pytest.mark.parametrize("page", MAN_PAGES, ids=lambda p: p.name)
def test_man_page_renders_without_warnings(page):
    if shutil.which("man") is None:
        pytest.skip("`man` is not installed (Debian: man-db, groff-base): "
                    "cannot check that the pages render")
    env = dict(clean_env(), MANWIDTH="80", LC_ALL="C.UTF-8")
    res = subprocess.run(["man", "--warnings", "-l", str(page)], env=env,
                         stdin=subprocess.DEVNULL, capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stderr == "", res.stderr
    assert len(res.stdout.splitlines()) > 50, res.stdout


def test_example_config_lists_every_documented_key():
    example = (REPO / "examples" / "migshim.conf").read_text()
    for key, _ in man_keys():
        assert re.search(rf"^#? ?{key} = ", example, re.M), \
            f"examples/migshim.conf does not list {key}"


def test_example_config_sets_every_key_to_its_default(db):
    """`migshim --config examples/migshim.conf status` shows the same
    effective values as no file at all, each key read from the file (except
    lock_key, whose default -- derived -- has no file form); and the keys it
    shows (the code's table) are exactly those man/migshim.conf.5 documents."""
    cli = shimbuild.cli_path()
    if not os.access(cli, os.X_OK):
        pytest.fail(f"{cli} not built (run `make`)", pytrace=False)
    conf = REPO / "examples" / "migshim.conf"

    def status(*extra):
        # cwd: a directory without alembic.ini or migshim.conf
        with tempfile.TemporaryDirectory() as cwd:
            res = subprocess.run([str(cli), *extra, "status", db.dsn], cwd=cwd,
                                 env=clean_env(), capture_output=True,
                                 text=True, timeout=60)
        assert res.returncode in (0, 1, 2), res.stdout + res.stderr
        vals = {k: (v, src) for k, v, src in
                re.findall(r"^  (\w+) +(\S+) +\((\w+)\)$", res.stdout, re.M)}
        assert vals, res.stdout + res.stderr
        return vals, res

    base, _ = status()
    documented = [key for key, _ in man_keys()]
    assert sorted(base) == sorted(documented), \
        (f"keys the code knows but man/migshim.conf.5 does not document: "
         f"{sorted(set(base) - set(documented))}; documented but unknown to the code: "
         f"{sorted(set(documented) - set(base))}")
    with_file, res = status("--config", str(conf))
    assert f"configuration:   {conf}" in res.stdout, res.stdout
    for key in documented:
        assert with_file[key][0] == base[key][0], \
            f"{key}: {with_file[key][0]} in the example, default {base[key][0]}"
        want = "default" if key == "lock_key" else "file"
        assert with_file[key][1] == want, f"{key}: from {with_file[key][1]}\n{res.stdout}"


DOCS = ["README.md", "CONTRIBUTING.md", "SECURITY.md", "docs/design.md", "docs/django.md",
        "docs/performance.md", "docs/compatibility.md", "docs/wheel.md"]


def md_anchors(path):
    """GitHub's anchors for the headings of a Markdown file (code blocks skipped)."""
    text = re.sub(r"(?ms)^```.*?^```", "", path.read_text())
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
            for h in re.findall(r"(?m)^#+ (.*)$", text)}


def test_docs_links_resolve():
    """Every relative link of the docs (and the examples' READMEs) names a file
    that exists and, with a #fragment, a heading of that file."""
    files = [REPO / d for d in DOCS] + sorted(REPO.glob("examples/*/README.md"))
    bad = []
    for f in files:
        text = re.sub(r"(?ms)^```.*?^```", "", f.read_text())
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, frag = target.partition("#")
            dest = (f.parent / path).resolve() if path else f
            if not dest.exists():
                bad.append(f"{f.relative_to(REPO)}: {target}: no such file")
            elif frag and (dest.suffix != ".md" or frag not in md_anchors(dest)):
                bad.append(f"{f.relative_to(REPO)}: {target}: no such heading")
    assert not bad, "\n".join(bad)


def test_readme_stays_a_guide():
    """Issue 20: the README is a guide of at most about 300 lines, keeps its
    two commands, and leaves the configuration to the man page."""
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= 320, f"README.md has {len(text.splitlines())} lines"
    for command in ("make demo", "make check"):
        assert re.search(rf"^{command}\b", text, re.M), f"README.md lost `{command}`"
    table_rows = re.findall(r"^\| `\w+` \| `MIGSHIM_\w+` \|", text, re.M)
    assert not table_rows, "a configuration table in README.md: keys live in man/migshim.conf.5"


def test_lock_key_in_a_file_without_L_suffix_is_not_silently_truncated(db, tmp_path):
    cli = shimbuild.cli_path()
    key = "6045674662015341072"
    conf = tmp_path / "migshim.conf"
    conf.write_text(f"lock_key = {key};\n")
    res = subprocess.run([str(cli), "--config", str(conf), "status", db.dsn],
                         cwd=str(tmp_path), env=clean_env(), capture_output=True,
                         text=True, timeout=60)
    # libconfig 1.5 would read it as a truncated 32-bit number: an error
    assert res.returncode == 78, res.stdout + res.stderr
    assert res.stderr == (f"migshim: {conf}:1: 'lock_key' does not fit in 32 bits: write a "
                          "64-bit value with an L suffix (123L) or as a string\n")
    conf.write_text(f"lock_key = {key}L;\n")
    res = subprocess.run([str(cli), "--config", str(conf), "status", db.dsn],
                         cwd=str(tmp_path), env=clean_env(), capture_output=True,
                         text=True, timeout=60)
    shown = re.search(r"^  lock_key +(\S+) +\(file\)", res.stdout, re.M)
    assert shown and shown.group(1) == key, res.stdout + res.stderr
