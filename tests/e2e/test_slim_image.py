"""The drop-in in a slim image whose only libpq is the one inside the app's wheel.

An image like python:3.12-slim has neither libconfig9 nor libpq5; the app's
psycopg2-binary wheel brings its own libpq, renamed by auditwheel
(psycopg2_binary.libs/libpq-<hash>.so.5.x).  Emulated here without Docker:

* tests/harness/slim-ns.sh runs a command in a private mount namespace
  (unshare -m) where libconfig.so.9 and the system libpq.so.5 cannot be
  loaded (an empty file is bind-mounted over each);
* tests/harness/wheel-like.py lays out Debian's psycopg2 the way the wheel
  installs it (a renamed libpq copy beside the extension, patchelf as
  auditwheel does), put first on PYTHONPATH.

Checked there: the namespace really is slim (teeth); an 8-worker Gunicorn
fleet with the shim preloaded boots clean (one leader, each revision once,
the version table at head, every libpq call reached the wheel's copy); the
`migshim` command's `--version`, `heads`, `-- CMD`, `timeline` run, and
`status` finds the wheel's libpq, or says there is none; a configuration
file with no libconfig gives one error line (the shim off, or exit 78 with
strict), while configuration from the environment needs nothing.

Needs root (unshare -m, mount --bind); fails, not skips, without it.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fleet import Fleet, migrate, run_fleets  # noqa: E402
from test_gate_fleet import assert_booted, assert_db, assert_one_leader  # noqa: E402

import shimbuild  # noqa: E402
from conftest import REPO_ROOT, child_base_env  # noqa: E402

SLIM_NS = str(REPO_ROOT / "tests" / "harness" / "slim-ns.sh")
WHEEL_LIKE = str(REPO_ROOT / "tests" / "harness" / "wheel-like.py")
APP_DIR = REPO_ROOT / "examples" / "flask-alembic"
VERSION = (REPO_ROOT / "VERSION").read_text().strip()
FIRST_CALL_RE = re.compile(r"migshim\[\d+\]: debug: (\w+) -> (\S+) \(first call\)")
NO_LIBCONFIG_RE = (r"migshim\.conf: cannot read the configuration file: libconfig\.so\.9 cannot "
                   r"be loaded \(/\S*/libconfig\.so\.9: file too short\); install libconfig9, or "
                   r"remove the file and set MIGSHIM_\* variables instead; ")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A site folder holding psycopg2 as the psycopg2-binary wheel has it."""
    if os.geteuid() != 0:
        pytest.fail("test_slim_image needs root (unshare -m, mount --bind)", pytrace=False)
    d = tmp_path_factory.mktemp("wheel-site")
    r = subprocess.run([sys.executable, WHEEL_LIKE, str(d)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    copy = Path(r.stdout.strip())
    assert copy.is_file() and copy.parent.name == "psycopg2_binary.libs", r.stdout
    return d, copy


def slim(argv, env_extra=None, cwd=None, timeout=60):
    """Run argv in the slim namespace, PATH=/usr/bin:/bin, no shim unless asked."""
    env = child_base_env()
    env["PATH"] = "/usr/bin:/bin"
    env.update(env_extra or {})
    return subprocess.run([SLIM_NS, "--", *argv], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


PROBE = r"""
import ctypes, sys
for name in ("libpq.so.5", "libconfig.so.9"):
    try:
        ctypes.CDLL(name)
        print(name, "loads")
    except OSError as e:
        print(name, "fails:", "file too short" in str(e))
import psycopg2
print("psycopg2", psycopg2.__file__)
print("libpq", sorted({l.split()[-1] for l in open("/proc/self/maps") if "libpq" in l}))
"""


def test_the_namespace_is_slim_and_psycopg2_uses_the_wheels_libpq(site):
    d, copy = site
    r = slim([sys.executable, "-c", PROBE], {"PYTHONPATH": str(d)})
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        "libpq.so.5 fails: True",
        "libconfig.so.9 fails: True",
        f"psycopg2 {d}/psycopg2/__init__.py",
        f"libpq ['{copy}']",
    ]
    # outside the namespace nothing changed
    r = subprocess.run([sys.executable, "-c", "import ctypes; ctypes.CDLL('libconfig.so.9')"])
    assert r.returncode == 0


def test_an_8_worker_fleet_boots_clean_in_the_slim_image(site, db):
    d, copy = site
    lib = shimbuild.lib_path()
    needed = subprocess.run(["readelf", "-dW", str(lib)], capture_output=True, text=True,
                            check=True).stdout
    assert "libconfig" not in needed and "libpq" not in needed, needed
    f = Fleet("flask-alembic", db.dsn, workers=8, shim=True,
              shim_env={"MIGSHIM_LOG": "debug"}, env_extra={"PYTHONPATH": str(d)},
              wrapper=[SLIM_NS, "--"], label="slim image 8x sync shim")
    (r,) = run_fleets([f])
    assert_booted(r, 8)
    assert_db(r)
    assert_one_leader([r], r.worker_pids)
    # every libpq call of every process reached the wheel's copy
    sonames = {m.group(2) for m in FIRST_CALL_RE.finditer(r.stderr)}
    assert sonames == {copy.name}, r.describe()
    # each worker (and the master, if it touched libpq) said which shim it runs
    active = re.findall(r"migshim\[(\d+)\]: debug: libmigshim\.so (\S+): active in this "
                        r"process \(configuration file: none\)", r.stderr)
    assert {int(p) for p, _ in active} >= set(r.worker_pids), r.describe()
    assert {v for _, v in active} == {VERSION}


def test_the_command_runs_without_libpq_and_status_finds_the_wheels(site, db, tmp_path):
    d, copy = site
    migrate("flask-alembic", db.dsn)          # outside the namespace, no shim
    cli = str(shimbuild.cli_path())
    needed = subprocess.run(["readelf", "-dW", cli], capture_output=True, text=True,
                            check=True).stdout
    assert "libpq" not in needed and "libconfig" not in needed, needed
    wheel = {"PYTHONPATH": str(d)}

    r = slim([cli, "--version"])
    assert (r.returncode, r.stdout) == (0, f"migshim {VERSION}\n"), r.stderr
    r = slim([cli, "heads"], cwd=APP_DIR)
    assert (r.returncode, r.stdout) == (0, "0003cccc\n"), r.stderr

    # -- CMD: an app connecting through the wheel's psycopg2, shim on
    events = tmp_path / "events.jsonl"
    app = ("import psycopg2, sys; c = psycopg2.connect(sys.argv[1]); k = c.cursor(); "
           "k.execute('SELECT version_num FROM alembic_version'); print(k.fetchone()[0])")
    r = slim([cli, "--log", "info", "--", sys.executable, "-c", app, db.dsn],
             dict(wheel, MIGSHIM_EVENTS=str(events)), cwd=APP_DIR)
    assert (r.returncode, r.stdout) == (0, "0003cccc\n"), r.stderr
    # at head: silent at info; the decision is in the events file
    assert [ln for ln in r.stderr.splitlines() if "migshim[" in ln] == [], r.stderr
    assert '"event":"at_head"' in events.read_text(), events.read_text()
    r = slim([cli, "timeline", str(events), "-o", str(tmp_path / "t.svg")])
    assert r.returncode == 0, r.stderr
    assert "<svg" in (tmp_path / "t.svg").read_text()

    # status: the wheel's libpq, found through python3's sys.path
    r = slim([cli, "status", db.dsn], wheel, cwd=APP_DIR)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = dict(ln.split(":", 1) for ln in r.stdout.splitlines() if not ln.startswith("  "))
    assert lines["libpq"].strip() == f"{copy} (the psycopg2_binary wheel's copy)"
    assert lines["at head"].strip() == "yes"
    # ... and named with --libpq
    r = slim([cli, "--libpq", str(copy), "status", db.dsn], cwd=APP_DIR)
    assert r.returncode == 0 and f"libpq:           {copy} (--libpq)\n" in r.stdout, r.stdout

    # no libpq anywhere: status says so, exit 3
    r = slim([cli, "status", db.dsn], cwd=APP_DIR)
    assert r.returncode == 3, r.stdout + r.stderr
    assert re.search(r"^database: +cannot connect: no libpq: not the system's "
                     r"\(/\S*libpq\.so\.5: file too short\), nor a psycopg2/psycopg wheel's "
                     r"copy .*; install libpq5 or pass --libpq PATH$", r.stdout, re.M), r.stdout


def test_a_configuration_file_without_libconfig_is_one_clear_line(site, db, tmp_path):
    d, _ = site
    (tmp_path / "migshim.conf").write_text("wait_timeout = 12;\n")
    app = ("import psycopg2, sys; c = psycopg2.connect(sys.argv[1]); k = c.cursor(); "
           "k.execute('SELECT 1'); print(k.fetchone()[0])")
    preload = {"PYTHONPATH": str(d), "LD_PRELOAD": shimbuild.preload()}

    r = slim([sys.executable, "-c", app, db.dsn], preload, cwd=tmp_path)
    assert (r.returncode, r.stdout) == (0, "1\n"), r.stderr
    assert re.fullmatch(r"migshim\[\d+\]: error: " + NO_LIBCONFIG_RE
                        + r"migshim is disabled for this process\n", r.stderr), r.stderr

    r = slim([sys.executable, "-c", app, db.dsn], dict(preload, MIGSHIM_STRICT="true"),
             cwd=tmp_path)
    assert (r.returncode, r.stdout) == (78, ""), r.stderr
    assert re.fullmatch(r"migshim\[\d+\]: error: " + NO_LIBCONFIG_RE
                        + r"exiting with status 78 \(strict = true\)\n", r.stderr), r.stderr

    # the command says the same, exit 78
    r = slim([str(shimbuild.cli_path()), "heads"], cwd=tmp_path)
    assert r.returncode == 78 and re.fullmatch(r"migshim: " + NO_LIBCONFIG_RE.rstrip("; ")
                                               + r"\n", r.stderr), r.stderr

    # configuration from the environment needs nothing
    (tmp_path / "migshim.conf").unlink()
    r = slim([sys.executable, "-c", app, db.dsn],
             dict(preload, MIGSHIM_WAIT_TIMEOUT="12", MIGSHIM_LOG="debug"), cwd=tmp_path)
    assert (r.returncode, r.stdout) == (0, "1\n"), r.stderr
    assert re.search(r"migshim\[\d+\]: debug: libmigshim\.so \S+: active in this process "
                     r"\(configuration file: none\)", r.stderr), r.stderr
    assert not re.search(r"migshim\[\d+\]: (error|warn)", r.stderr), r.stderr
