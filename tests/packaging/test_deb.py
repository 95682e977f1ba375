"""The Debian package: `make deb`, lintian, an install into a throwaway root,
and a shimmed fleet started with what was installed.

* `make deb` (incremental, in $DEB_B, default build-deb/) builds
  migshim_<VERSION>_<arch>.deb; its control fields (Depends libc6 only,
  Recommends libpq5 and libconfig9), its exact file list, and the
  packaged ELF files' DT_NEEDED (libc only) are checked;
* lintian (installed by `make deb-deps`, which `make check` runs) reports
  no error and no warning;
* dpkg installs it into a throwaway root (dpkg --root) whose package
  database holds only this machine's libc6 entry, so dpkg itself verifies
  that libc6 is all the package depends on; the installed command's
  `-- CMD` preloads the installed library (found relative to itself; so
  does `--wire -- CMD`, the former variant's option): a python3 child's
  asyncpg connection is followed by it;
* a 4-worker Gunicorn fleet of examples/flask-alembic started as
  `<root>/usr/bin/migshim -- gunicorn ...` boots clean: one leader, each
  revision once, the version table at head;
* dpkg --purge leaves nothing behind.
"""

import gzip
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(REPO_ROOT / "tests" / "e2e"))
from fleet import Fleet, run_fleets  # noqa: E402
from test_gate_fleet import assert_booted, assert_db, assert_one_leader  # noqa: E402
from conftest import child_base_env  # noqa: E402
from shimbuild import ASYNCPG_MAPS, needed, soname  # noqa: E402

VERSION = (REPO_ROOT / "VERSION").read_text().strip()
ARCH = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True,
                      check=True).stdout.strip()
MULTIARCH = subprocess.run(["dpkg-architecture", "-qDEB_HOST_MULTIARCH"], capture_output=True,
                           text=True, check=True).stdout.strip()
LIB = f"usr/lib/{MULTIARCH}/libmigshim.so"
FILES = sorted([
    "usr/bin/migshim",
    LIB,
    "usr/share/doc/migshim/changelog.gz",
    "usr/share/doc/migshim/copyright",
    "usr/share/doc/migshim/migshim.conf.example",
    "usr/share/lintian/overrides/migshim",
    "usr/share/man/man1/migshim.1.gz",
    "usr/share/man/man5/migshim.conf.5.gz",
])


@pytest.fixture(scope="module")
def deb():
    env = {k: v for k, v in os.environ.items() if k not in ("SANITIZE", "B")}
    r = subprocess.run(["make", "-s", "-C", str(REPO_ROOT), "deb",
                        f"DEB_B={os.environ.get('DEB_B', 'build-deb')}"],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    m = re.search(r"^build-deb\.sh: (\S+\.deb) \(Depends: (.*)\)$", r.stdout, re.M)
    assert m, r.stdout
    path = Path(m.group(1))
    path = path if path.is_absolute() else REPO_ROOT / path
    assert path.name == f"migshim_{VERSION}_{ARCH}.deb"
    return path


def field(deb, name):
    return subprocess.run(["dpkg-deb", "-f", str(deb), name], capture_output=True,
                          text=True, check=True).stdout.strip()


def test_control_fields_contents_and_elf_dependencies(deb, tmp_path):
    assert field(deb, "Package") == "migshim"
    assert field(deb, "Version") == VERSION
    assert field(deb, "Architecture") == ARCH
    assert re.fullmatch(r"libc6 \(>= [0-9.]+\)", field(deb, "Depends")), field(deb, "Depends")
    assert field(deb, "Recommends") == "libpq5, libconfig9"
    listing = subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True, text=True,
                             check=True).stdout
    files = sorted(ln.split()[-1][2:] for ln in listing.splitlines() if not ln.startswith("d"))
    assert files == FILES, listing
    for ln in listing.splitlines():
        assert " root/root " in ln, ln
        if ln.split()[-1] == "./" + LIB:
            assert ln.startswith("-rw-r--r--"), ln   # a shared library is not executable
    x = tmp_path / "x"
    subprocess.run(["dpkg-deb", "-x", str(deb), str(x)], check=True)
    assert needed(x / LIB) == ["libc.so.6"]
    assert soname(x / LIB) == "libmigshim.so"
    assert needed(x / "usr/bin/migshim") == ["libc.so.6"]
    for page, section in (("migshim.1.gz", "man1"), ("migshim.conf.5.gz", "man5")):
        th = [ln for ln in gzip.open(x / "usr/share/man" / section / page, "rt")
              if ln.startswith(".TH")]
        assert len(th) == 1 and f'"migshim {VERSION}"' in th[0], th


def test_lintian_reports_no_errors_or_warnings(deb):
    lintian = shutil.which("lintian")
    assert lintian, "lintian is not installed: run `make deb-deps`"
    r = subprocess.run([lintian, "--fail-on", "error,warning", str(deb)], capture_output=True,
                       text=True, timeout=300)
    tags = [ln for ln in r.stdout.splitlines() if re.match(r"^[EW]: ", ln)]
    assert r.returncode == 0 and tags == [], r.stdout + r.stderr


def test_install_into_a_throwaway_root_then_a_fleet_runs_with_it(deb, db, tmp_path):
    root = tmp_path / "root"
    admin = root / "var/lib/dpkg"
    for d in ("info", "updates", "triggers"):
        (admin / d).mkdir(parents=True)
    # the package database knows this machine's libc6, and nothing else
    libc6 = subprocess.run(["dpkg-query", "-s", f"libc6:{ARCH}"], capture_output=True,
                           text=True, check=True).stdout
    (admin / "status").write_text(libc6.rstrip("\n") + "\n\n")
    r = subprocess.run(["dpkg", f"--root={root}", "-i", str(deb)], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    st = subprocess.run(["dpkg", f"--root={root}", "-s", "migshim"], capture_output=True,
                        text=True, check=True).stdout
    assert "Status: install ok installed" in st and f"Version: {VERSION}" in st, st
    installed = sorted(str(p.relative_to(root)) for p in root.rglob("*")
                       if p.is_file() and not str(p.relative_to(root)).startswith("var/"))
    assert installed == FILES

    cmd = root / "usr/bin/migshim"
    env = child_base_env()
    r = subprocess.run([str(cmd), "--version"], capture_output=True, text=True, env=env)
    assert (r.returncode, r.stdout) == (0, f"migshim {VERSION}\n"), r.stderr
    r = subprocess.run([str(cmd), "--", "/usr/bin/printenv", "LD_PRELOAD"],
                       capture_output=True, text=True, env=env)
    assert r.stdout == f"{root / LIB}\n", r.stdout + r.stderr
    r = subprocess.run([str(cmd), "--wire", "--", "/usr/bin/printenv", "LD_PRELOAD"],
                       capture_output=True, text=True, env=env)
    assert r.stdout == f"{root / LIB}\n", r.stdout + r.stderr
    r = subprocess.run([str(cmd), "--lib-path"], capture_output=True, text=True, env=env)
    assert (r.returncode, r.stdout) == (0, f"{root / LIB}\n"), r.stderr
    r = subprocess.run([str(cmd), "--log", "debug", "--", "/usr/bin/python3", "-c",
                        ASYNCPG_MAPS], capture_output=True, text=True, env=dict(env, **db.env),
                       timeout=60)
    assert (r.returncode, r.stdout) == (0, f"{root / LIB}\n"), r.stdout + r.stderr
    assert re.search(r"debug: wire: PostgreSQL connection on fd \d+ \(unix\), followed",
                     r.stderr), r.stderr

    f = Fleet("flask-alembic", db.dsn, workers=4, shim=False, wrapper=[str(cmd), "--"],
              env_extra={"MIGSHIM_LOG": "info"}, label="installed package 4x sync")
    (res,) = run_fleets([f])
    assert_booted(res, 4)
    assert_db(res)
    assert_one_leader([res], res.worker_pids)

    r = subprocess.run(["dpkg", f"--root={root}", "--purge", "migshim"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    left = [str(p.relative_to(root)) for p in root.rglob("*")
            if p.is_file() and not str(p.relative_to(root)).startswith("var/")]
    assert left == []
