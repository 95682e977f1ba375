"""End to end: the Django example (examples/django, Debian's python3-django 3.2)
started as a fleet, with and without migshim (issue 15).

Fleets (tests/e2e/djfleet.py):
* containers: N processes started together, each `manage.py migrate --noinput`
  (followed by a Gunicorn boot, one worker, that must answer GET /ready 200,
  in the shapes marked +gunicorn) -- the `migrate && gunicorn` entrypoint;
* workers: one Gunicorn with N workers, each calling call_command("migrate")
  as it imports djexample.wsgi (DJANGO_MIGRATE_ON_STARTUP=true).

Scenarios: from an empty database; one migration behind (billing.0003, schema);
one data migration behind (catalog.0004, a RunPython); squashed history (blog
0001-0003 recorded, the squash's own row missing).

The interleaving is forced, not hoped for: every process stops at a rendezvous
after planning (pre_migrate) and inside each RunPython after its inserts, until
all N are there, blocked on an advisory lock, or gone (djexample/race.py).
Without the shim the N processes therefore all apply the same plan (the teeth:
test_without_shim_the_fleet_races); with it the leader goes on only once the N-1
others are verified blocked on its lock, and each run asserts that rendezvous
line: "rendezvous pre_migrate: 1 inside, N-1 waiting on a lock".

Oracle of every fleet run: every process exits 0 (every Gunicorn worker booted);
django_migrations holds exactly the rows of a serial run, none twice; each
RunPython's rows exist exactly once (and were written by the leader); contenttypes
and permissions as in a serial run; the schema (pg_dump --schema-only,
normalized) equals a serial run's; a following `manage.py migrate` has nothing
to do; exactly one process led (MIGSHIM_EVENTS), the log says so and how it
released; no migshim warning or error.

Run: tests/harness/with-pg.sh /usr/bin/python3 -m pytest -q tests/e2e/test_django.py
The with/without comparison over many runs: make soak-django (tests/e2e/django_race.py).
"""

import os
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import djfleet  # noqa: E402
from djfleet import (DATA_MIGRATIONS, REPLACED, SEEDED, SQUASH, Project,  # noqa: E402
                     check, cli, oracle, prepare, read_events, run_containers,
                     run_workers, schema_dump)
from fleet import PYTHON, clean_env, shim_path  # noqa: E402
import shimbuild  # noqa: E402

LEAD_LOG_RE = re.compile(r"migshim\[(\d+)\]: info: (.*\bleading\b.*)$", re.M)
NODE_RE = re.compile(r"^node (\S+) (\S+)$", re.M)
# What the example's graph holds: 18 of django.contrib (admin 3, auth 12,
# contenttypes 2, sessions 1) and 8 of its own (catalog 4, billing 3, blog 1: the squash).
NODE_COUNT = 26


def need_shim():
    lib = shim_path()
    if not lib.is_file():
        pytest.fail(f"{lib} not built (run `make`)", pytrace=False)


@pytest.fixture
def proj(tmp_path):
    return Project.copy(tmp_path)


@pytest.fixture(scope="module")
def serial(tmp_path_factory, db_factory):
    """One plain `manage.py migrate` on an empty database: (DbState, schema)."""
    p = Project.copy(tmp_path_factory.mktemp("serial"))
    d = db_factory.create()
    p.manage(d.dsn, "migrate", "--noinput")
    return oracle(d.dsn), schema_dump(d.dsn)


def graph_nodes(p: Project):
    """The migration graph's nodes as Django lists them (no connection)."""
    code = ("import django, os\n"
            "os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'djexample.settings')\n"
            "django.setup()\n"
            "from django.db.migrations.loader import MigrationLoader\n"
            "for a, n in sorted(MigrationLoader(None, ignore_no_migrations=True).graph.nodes):\n"
            "    print(a, n)\n")
    env = p.env("host=/nonexistent port=1 user=x dbname=unused")
    out = subprocess.run([PYTHON, "-c", code], cwd=str(p.path), env=env, check=True,
                         capture_output=True, text=True, timeout=60).stdout
    return {tuple(ln.split()) for ln in out.splitlines()}


# ---------------------------------------------------------------------------
# the oracle, in one place

def assert_fleet_ok(proj, r, d, serial, scenario, release_re):
    """Everything a fleet run with the shim must satisfy (see the module doc)."""
    exp_state, exp_schema = serial
    desc = r.describe()
    assert r.failed == 0 and len(r.rcs) == r.n, desc
    assert not r.race_errors(), "\n".join(r.race_errors()[:10]) + "\n" + desc
    assert not r.migshim_problems(), "\n".join(r.migshim_problems()) + "\n" + desc

    state = oracle(d.dsn)
    assert check(state, exp_state) == [], f"{check(state, exp_state)}\n{desc}"
    assert schema_dump(d.dsn) == exp_schema, desc

    # exactly one leader, by the events and by the log
    leaders = r.leaders()
    assert len(leaders) == 1, f"leaders {leaders}\n{desc}"
    leader = leaders[0]
    by_pid = r.events_by_pid()
    assert by_pid[leader].count("leading") == 1, f"{by_pid}\n{desc}"
    lead_lines = LEAD_LOG_RE.findall(r.text)
    assert [int(p) for p, _ in lead_lines] == [leader], f"{lead_lines}\n{desc}"
    assert "Django" in lead_lines[0][1], lead_lines
    released = [m for p, lv, m in r.migshim_lines() if p == leader and release_re.search(m)]
    assert len(released) == 1, f"no release line matching {release_re.pattern!r}\n{desc}"

    # the N-1 others were held at the gate while the leader worked (forced), then let go
    waiters = [p for p, ev in by_pid.items() if "waiting" in ev]
    assert len(waiters) == r.n - 1 and leader not in waiters, f"{by_pid}\n{desc}"
    for p in waiters:
        ev = by_pid[p]
        assert "leading" not in ev and "proceed" in ev[ev.index("waiting"):], f"{p}: {ev}"
    # the leader went on only once the N-1 others were blocked on its lock (the others
    # pass the rendezvous afterwards: every process is there by then)
    rv = [x for x in r.rendezvous() if x[1] == "pre_migrate" and x[0] == leader]
    assert rv == [(leader, "pre_migrate", True, 1, r.n - 1, 0)], f"{r.rendezvous()}\n{desc}"
    assert all(x[2] for x in r.rendezvous()), f"{r.rendezvous()}\n{desc}"

    # the RunPython data that ran in this fleet was written by the leader alone
    ran = {"empty": list(DATA_MIGRATIONS.values()),
           "data_behind": ["catalog_product"]}.get(scenario, [])
    for table in ran:
        assert state.seeded_pids[table] == [leader], \
            f"{table} seeded by {state.seeded_pids[table]}, leader {leader}\n{desc}"
    assert djfleet.nothing_to_do(proj, d.dsn), desc
    return leader


RELEASED_AT_EXIT = re.compile(r"released at exit")
RELEASED = re.compile(r"\breleased\b")

FLEETS = [
    # (scenario, n, mode)
    ("empty", 4, "containers+gunicorn"),
    ("empty", 8, "containers"),
    ("behind", 4, "containers"),
    ("behind", 8, "containers+gunicorn"),
    ("data_behind", 4, "containers"),
    ("data_behind", 8, "containers"),
    ("squash", 4, "containers"),
    ("squash", 8, "containers"),
    ("empty", 4, "workers"),
    ("data_behind", 8, "workers"),
    ("squash", 4, "workers"),
]


@pytest.mark.parametrize("scenario,n,mode", FLEETS,
                         ids=[f"{s}-{n}-{m}" for s, n, m in FLEETS])
def test_fleet_with_shim(proj, make_db, serial, scenario, n, mode):
    need_shim()
    if scenario == "squash":
        # the squash case needs the example's squash in place of what it replaces
        assert SQUASH in graph_nodes(proj) and not set(REPLACED) & graph_nodes(proj)
    d = make_db()
    prepare(proj, d.dsn, scenario)
    before = oracle(d.dsn)
    if scenario == "squash":
        assert SQUASH not in before.migrations and all(before.migrations[k] == 1
                                                       for k in REPLACED)
    if mode == "workers":
        r = run_workers(proj, d.dsn, n, shim=True)
    else:
        r = run_containers(proj, d.dsn, n, shim=True, gunicorn=mode.endswith("+gunicorn"))
    release = RELEASED if mode == "workers" else RELEASED_AT_EXIT
    leader = assert_fleet_ok(proj, r, d, serial, scenario, release)
    if mode.endswith("+gunicorn"):
        assert all(r.booted), r.describe()
    if scenario == "squash":
        assert oracle(d.dsn).migrations[SQUASH] == 1
    print(f"{scenario} {n} {mode}: {r.elapsed:.2f}s, leader {leader}")


# ---------------------------------------------------------------------------
# the teeth

def test_without_shim_the_fleet_races(proj, make_db, serial):
    """The same fleets without the shim go wrong every time (the rendezvous makes the
    race certain): one data migration behind, 4 processes all exit 0 and the RunPython
    rows and its django_migrations row are there 4 times; from empty, processes fail."""
    d = make_db()
    prepare(proj, d.dsn, "data_behind")
    r = run_containers(proj, d.dsn, 4, shim=False, rendezvous_timeout=10)
    assert "migshim[" not in r.text
    assert r.rcs == [0, 0, 0, 0], r.describe()
    st = oracle(d.dsn)
    assert st.seeded["catalog_product"] == 4 * SEEDED["catalog_product"], r.describe()
    assert st.duplicate_migrations == {("catalog", "0004_seed_products"): 4}, r.describe()
    assert len(st.seeded_pids["catalog_product"]) == 4

    d = make_db()
    r = run_containers(proj, d.dsn, 4, shim=False, rendezvous_timeout=10)
    assert r.failed >= 1, r.describe()
    assert r.race_errors(), r.describe()

    d = make_db()
    prepare(proj, d.dsn, "squash")
    r = run_containers(proj, d.dsn, 4, shim=False, rendezvous_timeout=10)
    assert r.failed == 0, r.describe()
    assert oracle(d.dsn).migrations[SQUASH] >= 1, r.describe()


# ---------------------------------------------------------------------------
# migshim heads --django, and the target file

def heads_env(**extra):
    """For `migshim heads --django`: the Python that has Django is /usr/bin/python3,
    whatever python3 comes first on this machine's PATH."""
    return dict(clean_env(), MIGSHIM_DJANGO_PYTHON=PYTHON, **extra)


def target_nodes(path: Path):
    return set(NODE_RE.findall(path.read_text()))


def test_heads_django_writes_the_target(proj, tmp_path):
    env = heads_env(DJANGO_SETTINGS_MODULE="djexample.settings")
    res = cli("heads", "--django", cwd=proj.path, env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout == f"{NODE_COUNT} Django migrations; target written to " \
                         f"{proj.target}\n", res.stdout
    nodes = target_nodes(proj.target)
    assert nodes == graph_nodes(proj) and len(nodes) == NODE_COUNT, nodes
    assert SQUASH in nodes and not set(REPLACED) & nodes
    text = proj.target.read_text()
    # the key: the migration directories and files, with their mtimes
    assert re.search(r"^dir .*catalog/migrations", text, re.M), text
    assert re.search(r"^file .*catalog/migrations/0004_seed_products\.py", text, re.M), text

    # manage.py is there: no DJANGO_SETTINGS_MODULE needed; MIGSHIM_DJANGO_TARGET moves it
    other = tmp_path / "elsewhere.target"
    res = cli("heads", "--django", cwd=proj.path,
              env=heads_env(MIGSHIM_DJANGO_TARGET=str(other)))
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout == f"{NODE_COUNT} Django migrations; target written to {other}\n"
    assert target_nodes(other) == nodes


def test_heads_django_outside_a_project_says_why(tmp_path):
    res = cli("heads", "--django", cwd=tmp_path, env=heads_env())
    assert res.returncode != 0
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "DJANGO_SETTINGS_MODULE" in res.stderr or "manage.py" in res.stderr, res.stderr


def add_migration(p: Project):
    """A new leaf migration catalog.0005_extra (a table of its own)."""
    (p.path / "catalog" / "migrations" / "0005_extra.py").write_text(
        "from django.db import migrations\n\n\n"
        "class Migration(migrations.Migration):\n"
        "    dependencies = [('catalog', '0004_seed_products')]\n"
        "    operations = [migrations.RunSQL('CREATE TABLE catalog_extra (id int)',\n"
        "                                    'DROP TABLE catalog_extra')]\n")


def test_target_key_invalidated_by_a_new_migration(proj, make_db):
    """A target written by `migshim heads --django` is not reused once the migration
    files changed: the process leads for the new migration instead of finding the
    database "at head" by the stale list."""
    need_shim()
    d = make_db()
    proj.manage(d.dsn, "migrate", "--noinput")
    env = heads_env(DJANGO_SETTINGS_MODULE="djexample.settings")
    assert cli("heads", "--django", cwd=proj.path, env=env).returncode == 0
    stale = proj.target.read_text()
    add_migration(proj)
    r = run_containers(proj, d.dsn, 1, shim=True, rendezvous=False)
    assert r.rcs == [0], r.describe()
    assert r.events_by_pid() and r.leaders() == list(r.events_by_pid()), r.describe()
    assert ("catalog", "0005_extra") in target_nodes(proj.target)
    assert proj.target.read_text() != stale
    assert oracle(d.dsn).migrations[("catalog", "0005_extra")] == 1
    assert not r.migshim_problems(), r.describe()


def test_target_key_invalidated_by_an_edited_migration(proj, make_db):
    need_shim()
    d = make_db()
    env = heads_env(DJANGO_SETTINGS_MODULE="djexample.settings")
    assert cli("heads", "--django", cwd=proj.path, env=env).returncode == 0
    first = proj.target.read_text()
    mig = proj.path / "billing" / "migrations" / "0003_invoice_note.py"
    mig.write_text(mig.read_text() + "\n# edited\n")
    st = mig.stat()
    os.utime(mig, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))
    r = run_containers(proj, d.dsn, 1, shim=True, rendezvous=False)
    assert r.rcs == [0], r.describe()
    assert proj.target.read_text() != first, "the target was not recomputed"
    assert target_nodes(proj.target) == graph_nodes(proj)


def test_target_computed_at_run_time_and_cached(proj, make_db):
    """No target file: the first connection computes it (and writes the cache in the
    project directory); the next process reuses it as it is."""
    need_shim()
    assert not proj.target.exists()
    d = make_db()
    r = run_containers(proj, d.dsn, 1, shim=True, rendezvous=False)
    assert r.rcs == [0] and len(r.leaders()) == 1, r.describe()
    assert target_nodes(proj.target) == graph_nodes(proj)
    st = proj.target.stat()
    text = proj.target.read_text()
    time.sleep(0.05)
    r = run_containers(proj, d.dsn, 1, shim=True, rendezvous=False,
                       shim_env={"MIGSHIM_LOG": "debug"})
    assert r.rcs == [0] and r.leaders() == [], r.describe()
    assert [e for ev in r.events_by_pid().values() for e in ev if e != "connect"] \
        == ["at_head"], r.describe()
    assert proj.target.stat().st_mtime_ns == st.st_mtime_ns and proj.target.read_text() == text
    assert not r.migshim_problems(), r.describe()


# a debug line: listing and caching the target is not an act on the database
CACHED_RE = re.compile(r"migshim\[\d+\]: debug: Django target: (\d+) migrations, listed by "
                       r"Django in \d+ ms; cached in (\S+)$", re.M)


def migrate_readonly(proj, dsn, events, extra=None):
    """One `manage.py migrate` with the shim, the project directory mounted read-only (a
    mount namespace of its own: root only)."""
    script = ('mount --bind "$0" "$0" && mount -o remount,ro,bind "$0" "$0" && cd "$0" '
              f'&& exec {PYTHON} manage.py migrate --noinput')
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script,
                           str(proj.path)], env=proj.env(dsn, True, {"MIGSHIM_EVENTS": str(events)},
                                                        extra),
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(os.geteuid() != 0, reason="a read-only bind mount needs root")
def test_target_falls_back_to_the_user_cache(proj, make_db, serial, tmp_path):
    """The project directory is read-only at run time (as in many images): the list goes
    to the per-user cache ($XDG_CACHE_HOME, or /tmp/migshim-<uid>/), the process leads and
    migrates correctly, and the next process reuses that cache."""
    need_shim()
    cache = tmp_path / "cache"
    d = make_db()
    events = tmp_path / "events.jsonl"
    res = migrate_readonly(proj, d.dsn, events, {"XDG_CACHE_HOME": str(cache),
                                                 "MIGSHIM_LOG": "debug"})
    out = res.stdout + res.stderr
    cached = CACHED_RE.findall(out)
    try:
        assert res.returncode == 0, out
        assert not proj.target.exists()
        assert len(cached) == 1 and cached[0][0] == str(NODE_COUNT), out
        path = Path(cached[0][1])
        assert path.is_file() and proj.path not in path.parents, path
        assert str(path).startswith((str(cache) + "/", f"/tmp/migshim-{os.getuid()}/")), path
        assert target_nodes(path) == graph_nodes(proj)
        assert check(oracle(d.dsn), serial[0]) == []
        assert [e["event"] for e in read_events(events)] == ["connect", "leading", "migrated"]
        assert not re.search(r"migshim\[\d+\]: (warn|error)", out), out
        # the next process finds it there: nothing listed again, at head
        events.unlink()
        res = migrate_readonly(proj, d.dsn, events, {"XDG_CACHE_HOME": str(cache),
                                                     "MIGSHIM_LOG": "debug"})
        out = res.stdout + res.stderr
        assert res.returncode == 0 and not CACHED_RE.search(out), out
        assert [e["event"] for e in read_events(events)] == ["connect", "at_head"], out
    finally:
        for _, p in cached:
            if not str(p).startswith(str(tmp_path)):
                Path(p).unlink(missing_ok=True)


UNKNOWN_RE = re.compile(r"migshim\[(\d+)\]: warn: Django target unknown: (.*)$", re.M)


def test_target_unknown_every_process_migrates_in_turn(proj, make_db, serial):
    """When the graph cannot be listed (here: the interpreter named is not Python), each
    process says so in one warn line and the fleet falls back to taking the lock in turn,
    each holding it to its exit: slower, never wrong.  Forced as the fleets above: the
    first leader holds in pre_migrate until the 3 others are blocked on its lock."""
    need_shim()
    d = make_db()
    prepare(proj, d.dsn, "data_behind")
    r = run_containers(proj, d.dsn, 4, shim=True,
                       shim_env={"MIGSHIM_DJANGO_PYTHON": "/bin/false"})
    desc = r.describe()
    assert r.rcs == [0, 0, 0, 0], desc
    unknown = UNKNOWN_RE.findall(r.text)
    assert len({p for p, _ in unknown}) == 4, desc
    assert all("/bin/false" in why for _, why in unknown), unknown
    assert check(oracle(d.dsn), serial[0]) == [], desc
    assert schema_dump(d.dsn) == serial[1]
    st = oracle(d.dsn)
    first = [x for x in r.rendezvous() if x[1] == "pre_migrate" and x[4] == 3]
    assert len(first) == 1 and first[0][3] == 1, r.rendezvous()
    assert st.seeded_pids["catalog_product"] == [first[0][0]], desc
    assert djfleet.nothing_to_do(proj, d.dsn)
    assert not proj.target.exists()
    # in turn: each one led, holding the lock to its exit ("migrated"), three of them after a wait
    by_pid = r.events_by_pid()
    assert len(by_pid) == 4 and all(ev[-2:] == ["leading", "migrated"] for ev in by_pid.values()), by_pid
    assert len(re.findall(r"the Django target is unknown, so it keeps the lock until it exits", r.text)) == 4, desc
    assert sum("waiting" in ev for ev in by_pid.values()) == 3, by_pid


# ---------------------------------------------------------------------------
# the app's interpreter is a virtualenv's (issue 19 section 3)

PYENV_311 = sorted(Path("/root/.pyenv/versions").glob("3.11.*/bin/python3.11"))
DEBIAN_SITE = "/usr/lib/python3/dist-packages"
CHOSEN_RE = re.compile(r"migshim\[(\d+)\]: debug: Django target: listing the migrations with "
                       r"(\S+) \((.*)\)$", re.M)


# What setproctitle does (Gunicorn's "gunicorn: worker [app]" when python3-setproctitle is
# installed), once Python has found its venv: the argv area overwritten in place, so that
# /proc/self/cmdline no longer names the interpreter.  Installed in the venv as a module that a
# .pth imports at start-up; it acts only with RETITLE_PROCESS set (a MIGSHIM_* name would be
# refused by the shim as an unknown setting).
RETITLE_PY = """\
import os
title = os.environ.get("RETITLE_PROCESS")
if title:
    with open("/proc/self/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    start, end = int(fields[45]), int(fields[46])      # arg_start, arg_end (proc(5))
    data = title.encode()[:end - start - 1]
    with open("/proc/self/mem", "r+b", buffering=0) as mem:
        mem.seek(start)
        mem.write(data + bytes(end - start - len(data)))
"""


def django_venv(tmp_path) -> Path:
    """A venv made from pyenv's Python 3.11, which has no Django, given Debian's Django and
    psycopg2 by a .pth file: its bin/python is a symlink to the base interpreter, as in every
    venv (venv, virtualenv, uv, Poetry).  RETITLE_PROCESS=TITLE: each process rewrites its
    command line at start-up, as setproctitle does."""
    if not PYENV_311:
        pytest.skip("no pyenv Python 3.11 (/root/.pyenv/versions/3.11.*/bin/python3.11) to make "
                    "a virtualenv from an interpreter without Django")
    base = str(PYENV_311[-1])
    no_django = subprocess.run([base, "-c", "import django"], capture_output=True,
                               env=clean_env(), timeout=60)
    assert no_django.returncode != 0, f"{base} has Django: it cannot show the bug"
    venv = tmp_path / "venv"
    subprocess.run([base, "-m", "venv", "--without-pip", str(venv)], check=True,
                   env=clean_env(), timeout=120)
    py = venv / "bin" / "python"
    assert py.is_symlink() and (venv / "pyvenv.cfg").is_file()
    sites = list(venv.glob("lib/python3.11/site-packages"))
    assert len(sites) == 1, sites
    (sites[0] / "debian-dist-packages.pth").write_text(DEBIAN_SITE + "\n")
    (sites[0] / "retitle_process.py").write_text(RETITLE_PY)
    (sites[0] / "retitle_process.pth").write_text("import retitle_process\n")
    check_env = dict(clean_env(), PYTHONNOUSERSITE="1")
    ok = subprocess.run([str(py), "-c", "import django, psycopg2, sys; print(sys.prefix)"],
                        capture_output=True, text=True, env=check_env, timeout=60)
    assert ok.returncode == 0 and ok.stdout.strip() == str(venv), ok.stdout + ok.stderr
    return venv


@pytest.mark.parametrize("invoked", ["path", "bare-name", "setproctitle"])
def test_django_in_a_virtualenv_knows_its_target(proj, make_db, serial, tmp_path, invoked):
    """`manage.py migrate` run by a venv's bin/python (a symlink to an interpreter without
    Django): the shim lists the graph with that venv's python -- the path as invoked, a
    bare `python` found in PATH, or, once the command line was rewritten (setproctitle), the
    path execve ran -- so the target is known (no "target unknown" warning), one process
    leads, the three others wait and find nothing to do, and the oracle holds.  Before the
    fix /proc/self/exe named the base interpreter: every process warned and led in turn."""
    need_shim()
    venv = django_venv(tmp_path)
    d = make_db()
    prepare(proj, d.dsn, "data_behind")
    if invoked == "path":
        python, extra = str(venv / "bin" / "python"), {}
    elif invoked == "setproctitle":
        python, extra = str(venv / "bin" / "python"), {"RETITLE_PROCESS": "gunicorn: worker [x]"}
    else:
        python, extra = "python", {"PATH": f"{venv / 'bin'}:{os.environ.get('PATH', '')}"}
    r = run_containers(proj, d.dsn, 4, shim=True, python=python,
                       shim_env={"MIGSHIM_LOG": "debug"}, extra_env=extra)
    desc = r.describe()
    assert not UNKNOWN_RE.findall(r.text), desc
    chosen = CHOSEN_RE.findall(r.text)
    assert chosen, desc
    how = "the path execve ran (AT_EXECFN)" if invoked == "setproctitle" else "argv[0] as invoked"
    for _, path, why in chosen:
        assert path == str(venv / "bin" / "python"), chosen
        assert why == f"{how}; a virtualenv: {venv / 'pyvenv.cfg'}", chosen
    assert target_nodes(proj.target) == graph_nodes(proj)
    assert_fleet_ok(proj, r, d, serial, "data_behind", RELEASED_AT_EXIT)


def schema_url(d, schema):
    """The database's URL with options=-csearch_path=SCHEMA (and the schema created)."""
    djfleet._exec(d.dsn, f'CREATE SCHEMA "{schema}"')
    return djfleet.database_url(d.dsn) + "&options=" + \
        urllib.parse.quote(f"-csearch_path={schema}", safe="")


@pytest.mark.parametrize("how", ["url", "set_search_path"])
def test_django_migrations_in_another_schema(proj, make_db, how):
    """django_migrations in schema "tenant": named in the URL's options, the shim sees it
    (one leader, as above); chosen by a SET search_path the app runs on each new
    connection (a connection_created handler), the shim cannot see it and every process
    leads in turn, each finding nothing left to do -- slower, never wrong (docs/django.md, Limits)."""
    need_shim()
    d = make_db()
    if how == "url":
        extra = {"DATABASE_URL": schema_url(d, "tenant")}
    else:
        djfleet._exec(d.dsn, 'CREATE SCHEMA "tenant"')
        extra = {"DJANGO_SEARCH_PATH": "tenant"}
    prepare(proj, d.dsn, "data_behind", extra=extra)
    r = run_containers(proj, d.dsn, 4, shim=True, extra_env=extra)
    desc = r.describe()
    assert r.rcs == [0, 0, 0, 0], desc
    assert not r.migshim_problems(), desc
    assert all(x[2] for x in r.rendezvous()), desc
    st = oracle(d.dsn + " options=-csearch_path=tenant")
    assert st.seeded == SEEDED and not st.duplicate_migrations, desc
    assert djfleet._exec(d.dsn, "SELECT to_regclass('public.django_migrations')") == [(None,)]
    applied = [x[0] for x in r.rendezvous() if x[1] == "catalog.0004_seed_products"]
    assert len(applied) == 1 and st.seeded_pids["catalog_product"] == applied, desc
    if how == "url":
        assert len(r.leaders()) == 1 and r.leaders() == applied, desc
    else:
        assert len(r.leaders()) == 4, desc


# ---------------------------------------------------------------------------
# manage.py's throwaway check connection; a process that never migrates

def test_check_connection_does_not_end_the_lead(proj, make_db, tmp_path):
    """`manage.py migrate` opens (and closes) a connection for its system checks before
    the one that migrates.  A is started alone and holds in pre_migrate (after both);
    only then B starts: B must find A's lock held (A's rendezvous sees it blocked), wait
    and proceed after A released at exit; A led once."""
    need_shim()
    d = make_db()
    prepare(proj, d.dsn, "data_behind")
    rdir = tmp_path / "rv"
    rdir.mkdir()
    events = tmp_path / "events.jsonl"
    env = proj.env(d.dsn, shim=True, shim_env={"MIGSHIM_EVENTS": str(events)},
                   extra={"DJANGO_RENDEZVOUS_DIR": str(rdir), "DJANGO_RENDEZVOUS_N": "2",
                          "DJANGO_RENDEZVOUS_TIMEOUT": "30"})

    def start():
        return subprocess.Popen([PYTHON, "manage.py", "migrate", "--noinput"],
                                cwd=str(proj.path), env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
    a = start()
    deadline = time.monotonic() + 60
    while not any(f.name.startswith("pre_migrate.") for f in rdir.iterdir()):
        assert a.poll() is None and time.monotonic() < deadline, a.communicate()[0]
        time.sleep(0.02)
    b = start()
    out_a, _ = a.communicate(timeout=90)
    out_b, _ = b.communicate(timeout=90)
    desc = f"--- A ---\n{out_a}\n--- B ---\n{out_b}"
    assert (a.returncode, b.returncode) == (0, 0), desc
    assert f"django-example[{a.pid}]: rendezvous pre_migrate: 1 inside, 1 waiting on a lock" \
        in out_a, desc
    ev = read_events(events)
    by = {}
    for e in ev:
        by.setdefault(e["pid"], []).append(e["event"])
    assert by[a.pid].count("leading") == 1, by
    assert "waiting" in by[b.pid] and "proceed" in by[b.pid] and "leading" not in by[b.pid], by
    assert "released at exit" in out_a, desc
    assert "No migrations to apply." in out_b, desc
    st = oracle(d.dsn)
    assert st.seeded["catalog_product"] == 3 and st.seeded_pids["catalog_product"] == [a.pid]
    assert not st.duplicate_migrations


def test_a_process_that_never_migrates_does_not_hold_the_fleet(proj, make_db, tmp_path):
    """A Django process that connects to a database behind (so the gate makes it the
    leader) but never migrates gives the lock up after leader_grace; a `manage.py
    migrate` started behind it then leads and migrates while the idle one still runs."""
    need_shim()
    d = make_db()
    prepare(proj, d.dsn, "data_behind")
    events = tmp_path / "events.jsonl"
    shim_env = {"MIGSHIM_EVENTS": str(events), "MIGSHIM_LEADER_GRACE": "2"}
    idle_code = ("import os, time, django\n"
                 "os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'djexample.settings')\n"
                 "django.setup()\n"
                 "from django.db import connection\n"
                 "with connection.cursor() as c:\n"
                 "    c.execute('SELECT 1')\n"
                 "print('idle: connected', flush=True)\n"
                 "time.sleep(60)\n")
    idle = subprocess.Popen([PYTHON, "-c", idle_code], cwd=str(proj.path),
                            env=proj.env(d.dsn, True, shim_env), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while not any(e["event"] == "leading" for e in read_events(events)):
            assert idle.poll() is None and time.monotonic() < deadline, \
                idle.communicate()[0]
            time.sleep(0.05)
        t0 = time.monotonic()
        res = proj.manage(d.dsn, "migrate", "--noinput", shim=True, shim_env=shim_env,
                          check=False, timeout=60)
        took = time.monotonic() - t0
        assert idle.poll() is None, "the idle process ended early"
    finally:
        os.killpg(idle.pid, 9)
        out_idle = idle.communicate()[0]
    desc = f"--- idle ---\n{out_idle}\n--- migrate ---\n{res.stdout}\n{res.stderr}"
    assert res.returncode == 0, desc
    assert took < 30, f"{took:.1f}s\n{desc}"
    by = {}
    for e in read_events(events):
        by.setdefault(e["pid"], []).append(e["event"])
    # the idle process led; the migrate waited and then led.  Two paths, both right, and
    # which one is timing: the server ends the idle leader's lock session during one of
    # the waiter's slices (the waiter sees the holder lapse, goes on, and takes the lock
    # at its first statement on django_migrations: "lapsed" first), or between two slices
    # (its next exclusive try simply succeeds).  Either way it leads exactly once.
    assert by[idle.pid] == ["connect", "leading"], by
    others = [p for p in by if p != idle.pid]
    assert len(others) == 1, by
    assert by[others[0]] in (["connect", "waiting", "lapsed", "leading", "migrated"],
                             ["connect", "waiting", "leading", "migrated"]), by
    st = oracle(d.dsn)
    assert st.seeded["catalog_product"] == 3 and st.seeded_pids["catalog_product"] == others
    assert not st.duplicate_migrations


# ---------------------------------------------------------------------------
# which tool

TOOL_RE = re.compile(r"^tool:\s+(alembic|django)\b", re.M)


def status_tool(cwd, env):
    res = cli("status", "host=/nonexistent port=1 dbname=x", cwd=cwd, env=env)
    m = TOOL_RE.search(res.stdout)
    assert m, res.stdout + res.stderr
    return m.group(1)


def test_tool_auto_detection(proj, tmp_path):
    env = clean_env()
    dj = dict(env, DJANGO_SETTINGS_MODULE="djexample.settings")
    assert status_tool(proj.path, env) == "django"          # manage.py there
    assert status_tool(tmp_path, dj) == "django"            # DJANGO_SETTINGS_MODULE
    alembic = Path(__file__).resolve().parents[2] / "examples" / "flask-alembic"
    assert status_tool(alembic, env) == "alembic"
    # both: an Alembic ini wins under auto; MIGSHIM_TOOL decides otherwise
    shutil.copy(alembic / "alembic.ini", proj.path / "alembic.ini")
    assert status_tool(proj.path, dj) == "alembic"
    assert status_tool(proj.path, dict(dj, MIGSHIM_TOOL="django")) == "django"
    assert status_tool(alembic, dict(env, MIGSHIM_TOOL="django")) == "django"


def test_bad_tool_value_is_one_clear_line(proj):
    res = cli("status", "host=/nonexistent port=1 dbname=x", cwd=proj.path,
              env=dict(clean_env(), MIGSHIM_TOOL="rails"))
    assert res.returncode == 78, res.stdout + res.stderr
    assert len(res.stderr.splitlines()) == 1 and "rails" in res.stderr \
        and "tool" in res.stderr, res.stderr


# ---------------------------------------------------------------------------
# the example's own check script

def test_example_check_sh(pg):
    need_shim()
    env = {k: v for k, v in os.environ.items()
           if k != "LD_PRELOAD" and not k.startswith(("MIGSHIM_", "PYTEST_"))}
    env.update(pg.env)
    res = subprocess.run(["bash", str(djfleet.EXAMPLE / "check.sh"),
                          shimbuild.preload(shim_path())], env=env,
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-6000:]
    for line in (f"{NODE_COUNT} Django migrations; target written to ",
                 "ok: all 4 exited 0", "ok: one leader",
                 "ok: django_migrations has no duplicate (app, name)",
                 "ok: each data migration's rows exist once",
                 "ok: a following migrate has nothing to do",
                 "check.sh: all checks passed"):
        assert line in res.stdout, f"missing {line!r}\n{res.stdout[-6000:]}"
    assert len(LEAD_LOG_RE.findall(res.stdout)) == 1, res.stdout
