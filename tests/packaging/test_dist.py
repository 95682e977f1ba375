"""`make dist`: a versioned source tarball that builds from its own contents.

* `make dist` writes <B>/migshim-<VERSION>.tar.gz: every file git tracks
  (or, in an unpacked tarball, every file its MANIFEST lists) under
  migshim-<VERSION>/, plus that MANIFEST; nothing built;
* unpacked in a temp dir, it builds (`make all tests`): the library and the
  command need libc only, `migshim --version` says VERSION, and the unit
  tests pass;
* the unpacked tree makes the same tarball again (no git needed).

The full `make check` from the tarball's contents is `make distcheck`
(as long as make check itself).
"""

import os
import re
import subprocess
import tarfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
VERSION = (REPO_ROOT / "VERSION").read_text().strip()
DIST = f"migshim-{VERSION}"


def make(cwd, *args, timeout=600):
    env = {k: v for k, v in os.environ.items() if k not in ("SANITIZE", "B", "MAKEFLAGS")}
    r = subprocess.run(["make", "-s", "-C", str(cwd), *args], capture_output=True, text=True,
                       env=env, timeout=timeout)
    assert r.returncode == 0, f"make {' '.join(args)} in {cwd}:\n{r.stdout}\n{r.stderr}"
    return r.stdout


def members(tgz):
    with tarfile.open(tgz) as t:
        return sorted(m.name for m in t.getmembers() if m.isfile())


def source_files():
    if (REPO_ROOT / "MANIFEST").is_file():      # we run from an unpacked tarball
        return sorted((REPO_ROOT / "MANIFEST").read_text().split())
    out = subprocess.run(["git", "ls-files"], cwd=REPO_ROOT, capture_output=True, text=True,
                         check=True).stdout
    return sorted(set(out.split()) | {"MANIFEST"})


def test_the_tarball_holds_the_sources_and_builds_from_them(tmp_path):
    out = make(REPO_ROOT, "dist", f"B={tmp_path}/b")
    tgz = tmp_path / "b" / f"{DIST}.tar.gz"
    assert re.search(rf"make dist: .*{re.escape(DIST)}\.tar\.gz \(\d+ files\)", out), out
    names = members(tgz)
    assert all(n.startswith(f"{DIST}/") for n in names), names[:5]
    files = sorted(n[len(DIST) + 1:] for n in names)
    assert files == source_files()
    for must in ("VERSION", "Makefile", "src/libconfig_dl.c", "src/libpq_dl.c",
                 "packaging/build-deb.sh", "packaging/deb/control.in", "man/migshim.1",
                 "tests/run.sh", "MANIFEST"):
        assert must in files, must
    assert not [f for f in files if f.startswith(("build/", "build-san/", "build-deb/"))]

    with tarfile.open(tgz) as t:
        t.extractall(tmp_path / "src")
    tree = tmp_path / "src" / DIST
    make(tree, "all", "tests")
    r = subprocess.run([str(tree / "build/migshim"), "--version"], capture_output=True,
                       text=True)
    assert (r.returncode, r.stdout) == (0, f"migshim {VERSION}\n")
    for f in ("build/libmigshim.so", "build/migshim"):
        d = subprocess.run(["readelf", "-dW", str(tree / f)], capture_output=True, text=True,
                           check=True).stdout
        assert re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", d) == ["libc.so.6"], d
    units = make(tree, "print-unit-tests").split()
    assert len(units) >= 4, units
    for u in units:
        r = subprocess.run([str(tree / u), "--jobs", "1"], capture_output=True, text=True,
                           cwd=tree, timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr

    # the unpacked tree (no git) makes the same tarball
    make(tree, "dist", f"B={tmp_path}/b2")
    assert members(tmp_path / "b2" / f"{DIST}.tar.gz") == names
