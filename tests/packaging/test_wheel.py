"""The Python wheel: `make wheel`, pip install into fresh venvs, a fleet through the
console script, pip uninstall (issue 23, part 1).

* `make wheel` (stdlib only, packaging/build-wheel.py) writes
  <B>/dist/migshim-<VERSION>-py3-none-manylinux_2_X_<arch>.whl; its exact file list, the
  modes, METADATA/WHEEL/entry_points.txt, and RECORD (each file's sha256, urlsafe base64
  without padding, and size) are checked here by code of the test's own;
* the tag's 2.X is checked against the packaged files' version needs as readelf -V lists
  them (the builder reads objdump -T: two tools, one answer), and the three files need
  libc.so.6 only;
* `pip install --no-index` of the wheel into a fresh venv of Debian's python3 (3.11) --
  under a directory whose name has a space -- and of pyenv's 3.13 when it is there: the
  console script `migshim` and `python -m migshim` are the C command (--version,
  --lib-path naming the installed copy, heads, status, timeline), its `--` prepends the
  installed library to an existing LD_PRELOAD (by its bare name and LD_LIBRARY_PATH when
  its path has a space, which LD_PRELOAD cannot hold); `--wire` (the former variant's
  option) the same library, and a python3 child's asyncpg connection is followed by it;
* `migshim -- gunicorn ...` through the console script boots a 4-worker Gunicorn fleet of
  examples/flask-alembic whose workers start their migrations together (the demo's start
  line): one leader, each revision once, every worker ready;
* `pip uninstall -y migshim` leaves the venv as it was before the install.

The musl wheel, `make wheel-musl` (skipped, with one line, where `make musl` cannot
build -- no musl-gcc -- but failed when CI=true):

* its name and its WHEEL's Tag are py3-none-musllinux_1_Y_<arch>, 1.Y the version the
  musl loader on this machine prints (the musl the build linked against); the same
  file list, modes and RECORD checks as the glibc wheel's; its library needs musl's
  libc only (NEEDED libc.so or libc.musl-<arch>.so.1, no GLIBC_ version), its command's
  interpreter is musl's loader; both stripped; the glibc and musl wheels hold different
  libraries and commands;
* its command, run as itself (its interpreter is musl's loader, which make musl-deps
  installs): --version, --lib-path (the library next to it), `-- /bin/true` refused
  with exit 125 (the musl library into a glibc program, src/elflibc.c), `-- <itself>
  --version` runs (the musl library loads into a musl process; the glibc wheel's library
  there is musl's "Error relocating ...", exit 127);
* the builder refuses a glibc library with a musl command and the reverse, with one
  line, and writes the same bytes twice.
No Python runs on musl here (Debian has no musl Python): pip on Alpine is not tested.
"""

import base64
import csv
import glob
import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(REPO_ROOT / "tests" / "e2e"))
from fleet import Fleet, run_fleets  # noqa: E402
from test_gate_fleet import assert_booted, assert_db, assert_one_leader  # noqa: E402
from conftest import child_base_env  # noqa: E402
from shimbuild import ASYNCPG_MAPS, needed, soname  # noqa: E402

VERSION = (REPO_ROOT / "VERSION").read_text().strip()
DIST_INFO = f"migshim-{VERSION}.dist-info"
FILES = sorted(["migshim/__init__.py", "migshim/__main__.py", "migshim/libmigshim.so",
                "migshim/migshim", f"{DIST_INFO}/METADATA", f"{DIST_INFO}/WHEEL",
                f"{DIST_INFO}/entry_points.txt", f"{DIST_INFO}/top_level.txt",
                f"{DIST_INFO}/RECORD"])
EXAMPLE = REPO_ROOT / "examples" / "flask-alembic"
# Debian's 3.11 (python3-venv) and pyenv's 3.13 if this machine has it
PYENV_313 = sorted(glob.glob("/root/.pyenv/versions/3.13.*/bin/python3"))
PYTHONS = [("/usr/bin/python3", "venv 3.11")] + [(p, "venv-3.13") for p in PYENV_313[-1:]]


@pytest.fixture(scope="module")
def wheel():
    env = {k: v for k, v in os.environ.items() if k not in ("SANITIZE", "B")}
    r = subprocess.run(["make", "-s", "-C", str(REPO_ROOT), "wheel"], capture_output=True,
                       text=True, env=env, timeout=600)
    return built_wheel(r, r"(GLIBC_2\.\d+) needed by ")


def built_wheel(r, detail):
    """The wheel make wrote, from build-wheel.py's line: `<path> (<size>
    bytes; <detail>…`; its size is checked against the file."""
    assert r.returncode == 0, r.stdout + r.stderr
    m = re.search(r"^build-wheel\.py: (\S+\.whl) \((\d+) bytes; " + detail, r.stdout, re.M)
    assert m, r.stdout
    path = Path(m.group(1))
    path = path if path.is_absolute() else REPO_ROOT / path
    assert path.stat().st_size == int(m.group(2))
    print(f"\n{r.stdout.strip()}")
    return path


def record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()) \
        .rstrip(b"=").decode()


def version_needs(path: Path):
    """The GLIBC_ versions in the file's .gnu.version_r (readelf -V), as (major, minor)."""
    out = subprocess.run(["readelf", "-VW", str(path)], capture_output=True, text=True,
                         check=True).stdout
    vr = out[out.index(".gnu.version_r"):]
    return {tuple(int(x) for x in v.split(".")[:2]) for v in re.findall(r"Name: GLIBC_([\d.]+)", vr)}


def test_contents_record_and_tag(wheel, tmp_path):
    m = re.fullmatch(rf"migshim-{re.escape(VERSION)}-py3-none-manylinux_2_(\d+)_(x86_64|aarch64)"
                     r"\.whl", wheel.name)
    assert m, wheel.name
    with zipfile.ZipFile(wheel) as z:
        assert sorted(z.namelist()) == FILES
        assert z.namelist()[-1] == f"{DIST_INFO}/RECORD"   # the .dist-info last, RECORD at its end
        modes = {i.filename: (i.external_attr >> 16) & 0o777 for i in z.infolist()}
        assert modes["migshim/migshim"] == 0o755 and modes["migshim/libmigshim.so"] == 0o644
        rows = list(csv.reader(io.StringIO(z.read(f"{DIST_INFO}/RECORD").decode())))
        assert sorted(r[0] for r in rows) == FILES
        for name, digest, size in rows:
            if name == f"{DIST_INFO}/RECORD":
                assert (digest, size) == ("", "")
                continue
            data = z.read(name)
            assert (digest, size) == (record_hash(data), str(len(data))), name
            assert "=" not in digest[len("sha256="):], name     # no padding
        wheel_file = z.read(f"{DIST_INFO}/WHEEL").decode()
        assert f"Tag: py3-none-{wheel.name.split('-py3-none-')[1][:-4]}\n" in wheel_file
        assert "Root-Is-Purelib: false\n" in wheel_file
        meta = z.read(f"{DIST_INFO}/METADATA").decode()
        assert f"\nName: migshim\nVersion: {VERSION}\n" in meta
        assert z.read(f"{DIST_INFO}/entry_points.txt").decode() == \
            "[console_scripts]\nmigshim = migshim:main\n"
        assert f'__version__ = "{VERSION}"' in z.read("migshim/__init__.py").decode()
        z.extractall(tmp_path)
    lib, cli = tmp_path / "migshim/libmigshim.so", tmp_path / "migshim/migshim"
    assert needed(lib) == ["libc.so.6"] and needed(cli) == ["libc.so.6"]
    assert soname(lib) == "libmigshim.so"
    newest = max(version_needs(lib) | version_needs(cli))
    assert newest == (2, int(m.group(1))), (newest, wheel.name)
    for f in (lib, cli):   # stripped
        assert ".symtab" not in subprocess.run(["readelf", "-SW", str(f)], capture_output=True,
                                               text=True, check=True).stdout, f


def venv_env():
    env = child_base_env()
    for k in ("LD_PRELOAD", "LD_LIBRARY_PATH", "VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME"):
        env.pop(k, None)
    env.update({"PIP_NO_CACHE_DIR": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1",
                "PIP_NO_INPUT": "1"})
    return env


def tree(d: Path):
    return sorted(str(p.relative_to(d)) for p in d.rglob("*")
                  if "__pycache__" not in p.parts)


@pytest.mark.parametrize("python,dirname", PYTHONS, ids=[d for _, d in PYTHONS])
def test_pip_install_fleet_and_uninstall(wheel, python, dirname, db, tmp_path):
    env = venv_env()
    venv = tmp_path / dirname
    r = subprocess.run([python, "-m", "venv", str(venv)], capture_output=True, text=True,
                       env=env, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    vpy = venv / "bin" / "python"
    site = Path(subprocess.run([str(vpy), "-c", "import sysconfig; "
                                "print(sysconfig.get_paths()['platlib'])"],
                               capture_output=True, text=True, env=env, check=True).stdout.strip())
    before = tree(venv)
    r = subprocess.run([str(vpy), "-m", "pip", "install", "--no-index", str(wheel)],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"Successfully installed migshim-{VERSION}" in r.stdout, r.stdout

    cmd = venv / "bin" / "migshim"
    lib = site / "migshim" / "libmigshim.so"

    def run(*args, cwd=None, extra=None, argv0=(str(cmd),)):
        e = dict(env, **(extra or {}))
        return subprocess.run([*argv0, *args], capture_output=True, text=True, env=e,
                              cwd=cwd, timeout=60)

    for argv0 in ((str(cmd),), (str(vpy), "-m", "migshim")):
        r = run("--version", argv0=argv0)
        assert (r.returncode, r.stdout) == (0, f"migshim {VERSION}\n"), r.stderr
        r = run("--lib-path", argv0=argv0)
        assert (r.returncode, r.stdout) == (0, f"{lib}\n"), r.stderr
        r = run("--wire", "--lib-path", argv0=argv0)
        assert (r.returncode, r.stdout) == (0, f"{lib}\n"), r.stderr
    assert lib.is_file() and os.access(site / "migshim" / "migshim", os.X_OK)
    r = subprocess.run([str(vpy), "-c", "import migshim; print(migshim.LIBRARY)"],
                       capture_output=True, text=True, env=env)
    assert (r.returncode, r.stdout) == (0, f"{lib}\n"), r.stderr

    # `--` prepends the installed copy to an existing LD_PRELOAD
    keep = "/lib/x86_64-linux-gnu/libc.so.6" if os.path.exists(
        "/lib/x86_64-linux-gnu/libc.so.6") else "libc.so.6"
    r = run("--", "/bin/sh", "-c", 'printf "%s|%s\\n" "$LD_PRELOAD" "$LD_LIBRARY_PATH"',
            extra={"LD_PRELOAD": keep, "LD_LIBRARY_PATH": "/opt/x"})
    assert r.returncode == 0, r.stderr
    if " " in str(lib):
        # LD_PRELOAD splits at spaces: the bare name, found through LD_LIBRARY_PATH
        assert r.stdout == f"libmigshim.so:{keep}|{lib.parent}:/opt/x\n", r.stdout
    else:
        assert r.stdout == f"{lib}:{keep}|/opt/x\n", r.stdout
    # a command's arguments pass unchanged, spaces and all, and its status is its own
    r = run("--", "/bin/sh", "-c", 'printf "[%s]" "$@"; exit 7', "sh", "a b", "", "c  d")
    assert (r.returncode, r.stdout) == (7, "[a b][][c  d]"), r.stderr
    r = run("heads", cwd=str(EXAMPLE))
    assert (r.returncode, r.stdout) == (0, "0003cccc\n"), r.stderr
    # the installed library follows asyncpg's connection (the system's python3: the venv
    # has no asyncpg)
    r = run("--log", "debug", "--", "/usr/bin/python3", "-c", ASYNCPG_MAPS, extra=db.env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout == f"{lib}\n", r.stdout
    assert re.search(r"debug: wire: PostgreSQL connection on fd \d+ \(unix\), followed",
                     r.stderr), r.stderr

    # a fleet through the console script, its workers' migrations started together
    events = tmp_path / "events.jsonl"
    bdir = tmp_path / "barrier"
    bdir.mkdir()
    f = Fleet("flask-alembic", db.dsn, workers=4, shim=False, wrapper=[str(cmd), "--"],
              env_extra={"MIGSHIM_LOG": "info", "MIGSHIM_EVENTS": str(events),
                         "MIGRATION_BARRIER_DIR": str(bdir), "MIGRATION_BARRIER_N": "4"},
              label=f"wheel in {dirname}: migshim -- gunicorn, 4x sync")
    (res,) = run_fleets([f])
    assert_booted(res, 4)
    assert_db(res)
    assert_one_leader([res], res.worker_pids)
    assert "barrier: " not in res.stderr, res.describe()
    assert len(os.listdir(bdir)) == 4
    print(f"\n{dirname}: `migshim -- gunicorn` from the wheel, 4 workers ready in "
          f"{res.elapsed:.2f} s, 1 leader, each revision once")

    r = run("status", db.dsn, cwd=str(EXAMPLE))
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(r"^at head: +yes$", r.stdout, re.M), r.stdout
    svg = tmp_path / "start.svg"
    r = run("timeline", str(events), "-o", str(svg))
    assert r.returncode == 0, r.stderr
    assert "<svg" in svg.read_text()

    r = subprocess.run([str(vpy), "-m", "pip", "uninstall", "-y", "migshim"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert tree(venv) == before


# --- the musl wheel (make wheel-musl) ---------------------------------------------------

MUSL_LOADERS = sorted(glob.glob("/lib/ld-musl-*.so.1"))


def make_wheel(target):
    env = {k: v for k, v in os.environ.items() if k not in ("SANITIZE", "B", "MUSL_B")}
    return subprocess.run(["make", "-s", "-C", str(REPO_ROOT), target], capture_output=True,
                          text=True, env=env, timeout=900)


@pytest.fixture(scope="module")
def musl_wheel():
    r = make_wheel("wheel-musl")
    if r.returncode != 0 and not shutil.which("musl-gcc"):
        msg = "make musl cannot build here: no musl-gcc (make musl-deps installs musl-tools)"
        if os.environ.get("CI") == "true":
            pytest.fail(msg + "; on CI the musl wheel must be built\n" + r.stdout + r.stderr)
        pytest.skip(msg)
    return built_wheel(r, r"musl (\d+)\.(\d+)[.\d]*, from ")


def extract(whl: Path, dest: Path):
    """Unpack with the modes the archive records (zipfile's extract drops them)."""
    with zipfile.ZipFile(whl) as z:
        for i in z.infolist():
            z.extract(i, dest)
            os.chmod(dest / i.filename, (i.external_attr >> 16) & 0o777)
    return dest / "migshim" / "libmigshim.so", dest / "migshim" / "migshim"


def interpreter(path: Path):
    out = subprocess.run(["readelf", "-lW", str(path)], capture_output=True, text=True,
                         check=True).stdout
    m = re.search(r"\[Requesting program interpreter: ([^\]]+)\]", out)
    return m.group(1) if m else None


def loader_version():
    """(major, minor) of the musl the loader here is, from its own banner."""
    assert MUSL_LOADERS, "no /lib/ld-musl-*.so.1 though make musl built"
    r = subprocess.run([MUSL_LOADERS[0]], capture_output=True, text=True)
    m = re.search(r"^Version (\d+)\.(\d+)", r.stderr, re.M)
    assert m, r.stderr
    return int(m.group(1)), int(m.group(2))


def test_musl_wheel(musl_wheel, wheel, tmp_path):
    major, minor = loader_version()
    m = re.fullmatch(rf"migshim-{re.escape(VERSION)}-py3-none-musllinux_(\d+)_(\d+)_"
                     r"(x86_64|aarch64)\.whl", musl_wheel.name)
    assert m, musl_wheel.name
    assert (int(m.group(1)), int(m.group(2))) == (major, minor), (musl_wheel.name, major, minor)
    tag = f"musllinux_{major}_{minor}_{m.group(3)}"
    with zipfile.ZipFile(musl_wheel) as z:
        assert sorted(z.namelist()) == FILES
        assert z.namelist()[-1] == f"{DIST_INFO}/RECORD"
        modes = {i.filename: (i.external_attr >> 16) & 0o777 for i in z.infolist()}
        assert modes["migshim/migshim"] == 0o755 and modes["migshim/libmigshim.so"] == 0o644
        rows = list(csv.reader(io.StringIO(z.read(f"{DIST_INFO}/RECORD").decode())))
        assert sorted(r[0] for r in rows) == FILES
        for name, digest, size in rows:
            if name != f"{DIST_INFO}/RECORD":
                data = z.read(name)
                assert (digest, size) == (record_hash(data), str(len(data))), name
        wheel_file = z.read(f"{DIST_INFO}/WHEEL").decode()
        tags = re.findall(r"^Tag: (.*)$", wheel_file, re.M)
        assert tags == [f"py3-none-{tag}"], wheel_file
        assert "Root-Is-Purelib: false\n" in wheel_file
    lib, cli = extract(musl_wheel, tmp_path / "musl")
    glib, gcli = extract(wheel, tmp_path / "glibc")

    # musl's libc only, no glibc symbol version, musl's loader; stripped
    for f in (lib, cli):
        (libc,) = needed(f)
        assert re.fullmatch(r"libc\.so|libc\.musl-[a-z0-9_]+\.so\.1", libc), (f, libc)
        assert "GLIBC_" not in subprocess.run(["objdump", "-T", str(f)], capture_output=True,
                                              text=True, check=True).stdout, f
        assert ".symtab" not in subprocess.run(["readelf", "-SW", str(f)], capture_output=True,
                                               text=True, check=True).stdout, f
    assert interpreter(lib) is None
    assert re.fullmatch(r"/lib/ld-musl-[a-z0-9_]+\.so\.1", interpreter(cli)), interpreter(cli)
    assert os.path.exists(interpreter(cli))
    # two libraries, two commands
    assert needed(glib) == ["libc.so.6"] and interpreter(gcli).startswith(("/lib64/ld-linux",
                                                                          "/lib/ld-linux"))
    assert lib.read_bytes() != glib.read_bytes() and cli.read_bytes() != gcli.read_bytes()

    # the musl command, started by musl's loader (its interpreter): run it as itself, as the
    # console script does (under `ld-musl… migshim`, /proc/self/exe would be the loader)
    env = venv_env()

    def run(*args, extra=None):
        return subprocess.run([str(cli), *args], capture_output=True, text=True,
                              env=dict(env, **(extra or {})), timeout=60)

    r = run("--version")
    assert (r.returncode, r.stdout) == (0, f"migshim {VERSION}\n"), r.stderr
    r = run("--lib-path")
    assert (r.returncode, r.stdout) == (0, f"{lib}\n"), r.stderr
    r = run("--", "/bin/true")
    assert r.returncode == 125, (r.returncode, r.stderr)
    assert r.stderr == (f"migshim: refusing to preload {lib}: built for musl (NEEDED libc.so), "
                        f"but /bin/true runs on glibc ({interpreter(Path('/bin/true'))}); "
                        "use the library built for glibc\n"), r.stderr
    # the musl library loads into a musl process (itself, run by the wrapper) ...
    r = run("--", str(cli), "--version")
    assert (r.returncode, r.stdout, r.stderr) == (0, f"migshim {VERSION}\n", ""), r.stderr
    # ... where the glibc wheel's library makes musl's loader fail the process
    r = run("--version", extra={"LD_PRELOAD": str(glib)})
    assert r.returncode == 127 and "Error relocating" in r.stderr, (r.returncode, r.stderr)


def test_builder_refuses_a_mix_and_is_reproducible(musl_wheel, wheel, tmp_path):
    lib, cli = extract(musl_wheel, tmp_path / "musl")
    glib, gcli = extract(wheel, tmp_path / "glibc")
    builder = [sys.executable, str(REPO_ROOT / "packaging" / "build-wheel.py"),
               "--version", VERSION, "--mtime", "1700000000"]
    for l, c in ((glib, cli), (lib, gcli)):
        out = tmp_path / "mix"
        r = subprocess.run([*builder, "--lib", str(l), "--cli", str(c),
                            "--out-dir", str(out)],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 1 and r.stdout == "", (r.returncode, r.stdout, r.stderr)
        assert r.stderr.count("\n") == 1 and r.stderr.startswith(
            "build-wheel.py: the library and the command must be built for one C library: "), \
            r.stderr
        assert not out.exists() or not list(out.iterdir()), list(out.iterdir())
    built = []
    for n in (1, 2):
        out = tmp_path / f"out{n}"
        r = subprocess.run([*builder, "--lib", str(lib), "--cli",
                            str(cli), "--out-dir", str(out)],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        (whl,) = out.iterdir()
        assert whl.name == musl_wheel.name
        built.append(whl.read_bytes())
    assert built[0] == built[1]
