"""The musl variant (issue 23, part 2) on real musl processes.

Run by tests/run.sh as its suite musl (`make check`, `make check-musl`),
after `make all musl` and tests/musl/prepare.sh have built what these need:
$MUSL_B/libmigshim.so and $MUSL_B/migshim, a musl libpq from Debian's
postgresql-15 source ($MUSL_B/libpq), a musl libconfig ($MUSL_B/libconfig)
and the fleet clients ($MUSL_B/tests/client and client-dlopen, from
tests/musl/client.c).
A missing piece fails the test; nothing here skips.

- the build checks of the musl files (tests/musl/check-build.sh);
- a configuration file in a musl process: the shim dlopens a musl
  libconfig.so.9 (tests/musl/libconfig.sh), or says in one line that it
  cannot and steps aside;
- why the refusal exists: the glibc library preloaded into a musl process
  kills it (musl's loader, exit 127), and the musl library kills a glibc
  process the same way;
- the refusal of `migshim -- COMMAND` both ways (the glibc command given the
  musl library, the musl command given the glibc library, run under musl's
  loader), by the command's own libc, #! scripts and static programs
  included; no refusal where the libcs match;
- an 8-process fleet of musl libpq clients doing Alembic's statement
  sequence from an empty database, all sending their first statement at
  one instant: with the shim (through the musl `migshim --`) one leader,
  each revision once, the version table at the head, all exit 0; without
  it, the race's failures.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

import shimbuild
from conftest import child_base_env, REPO_ROOT

B = shimbuild.build_dir()
MUSL_B = Path(os.environ.get("MUSL_B", REPO_ROOT / "build-musl"))
CLIENT = MUSL_B / "tests" / "client"
CLIENT_DLOPEN = MUSL_B / "tests" / "client-dlopen"
MUSL_LIBPQ = MUSL_B / "libpq" / "lib" / "libpq.so.5"
MUSL_LIBCONFIG_DIR = MUSL_B / "libconfig" / "lib"
PROJECT = REPO_ROOT / "tests" / "musl" / "project"
HEAD = "0003cccc"
REVISIONS = ["0001aaaa", "0002bbbb", "0003cccc"]
N = 8
REFUSAL_RE = re.compile(
    r"^migshim: refusing to preload (\S+): built for (glibc|musl) \(NEEDED (\S+)\), but (.+) "
    r"runs on (glibc|musl) \((\S+)\); use the library built for (glibc|musl)$")


def need(path: Path) -> Path:
    if not path.is_file():
        pytest.fail(f"{path} is missing: run `make check-musl` (make all musl, tests/musl/prepare.sh)",
                    pytrace=False)
    return path


@pytest.fixture
def pair(tmp_path):
    """pair(cli, lib): a directory holding a copy of the command `cli` with
    the library `lib` next to it (where the command takes its library
    from); returns the command's path."""
    def make(cli: Path, lib: Path, name: str = "kit") -> Path:
        d = tmp_path / name
        d.mkdir()
        shutil.copy2(need(cli), d / "migshim")
        shutil.copy2(need(lib), d / "libmigshim.so")
        return d / "migshim"
    return make


def run(cmd, **kw) -> subprocess.CompletedProcess:
    env = kw.pop("env", None) or child_base_env()
    return subprocess.run([str(c) for c in cmd], env=env, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          timeout=kw.pop("timeout", 60), **kw)


# --------------------------------------------------------------------------
# the build

def test_build_checks():
    r = run(["bash", REPO_ROOT / "tests" / "musl" / "check-build.sh"],
            env={**child_base_env(), "B": str(B), "MUSL_B": str(MUSL_B)})
    print(r.stdout)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "FAIL" not in r.stdout


def test_musl_command_runs_and_reads_the_scripts():
    """The musl command, with the musl library preloaded into itself."""
    env = {**child_base_env(), "LD_PRELOAD": str(need(MUSL_B / "libmigshim.so"))}
    r = run([need(MUSL_B / "migshim"), "heads"], cwd=PROJECT, env=env)
    assert (r.returncode, r.stdout, r.stderr) == (0, HEAD + "\n", "")


def test_config_file_loads_libconfig_in_a_musl_process(db, tmp_path):
    """A configuration file makes the shim dlopen libconfig.so.9 in the musl
    process (a musl build of it, tests/musl/libconfig.sh, on
    LD_LIBRARY_PATH); without one, one error line and the process runs as
    without the shim."""
    conf = tmp_path / "migshim.conf"
    conf.write_text('log = "debug";\n')
    need(MUSL_LIBCONFIG_DIR / "libconfig.so.9")
    env = child_base_env()
    env.update(db.env)
    env.update({"MIGSHIM_CONFIG": str(conf), "LD_PRELOAD": str(need(MUSL_B / "libmigshim.so")),
                "LD_LIBRARY_PATH": str(MUSL_LIBCONFIG_DIR), "MIGRATION_MS": "0"})
    r = run([need(CLIENT)], cwd=PROJECT, env=env)
    assert r.returncode == 0 and r.stdout == f"migrated (none) -> {HEAD}\n", (r.stdout, r.stderr)
    assert f"debug: libmigshim.so {(REPO_ROOT / 'VERSION').read_text().strip()}: active in this process " \
           f"(configuration file: {conf})" in r.stderr, r.stderr
    assert "leading: this process holds the migration lock" in r.stderr, r.stderr
    del env["LD_LIBRARY_PATH"]
    r = run([need(CLIENT)], cwd=PROJECT, env=env)
    lines = [l for l in r.stderr.splitlines() if l.startswith("migshim[")]
    assert r.returncode == 0 and r.stdout == "at head\n", (r.stdout, r.stderr)
    assert len(lines) == 1, r.stderr
    assert re.search(r"error: .*: libconfig\.so\.9 cannot be loaded .*; migshim is disabled for this "
                     r"process$", lines[0]), lines[0]


# --------------------------------------------------------------------------
# what the refusal prevents: the loaders' own behaviour, which we cannot change

def test_glibc_library_kills_a_musl_process():
    env = {**child_base_env(), "LD_PRELOAD": str(need(B / "libmigshim.so"))}
    r = run([need(MUSL_B / "migshim"), "--version"], env=env)
    assert r.returncode == 127, (r.returncode, r.stdout, r.stderr)
    assert "Error relocating" in r.stderr and "symbol not found" in r.stderr, r.stderr
    assert r.stdout == ""


def test_musl_library_kills_a_glibc_process():
    env = {**child_base_env(), "LD_PRELOAD": str(need(MUSL_B / "libmigshim.so"))}
    r = run(["/bin/echo", "ran"], env=env)
    assert r.returncode == 127 and r.stdout == "", (r.returncode, r.stdout, r.stderr)


# --------------------------------------------------------------------------
# the refusal

def assert_refused(r, lib_libc: str, cmd_libc: str, who: str):
    assert r.returncode == 125, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    m = REFUSAL_RE.match(lines[0])
    assert m, lines[0]
    assert (m.group(2), m.group(5), m.group(7)) == (lib_libc, cmd_libc, cmd_libc), lines[0]
    assert m.group(4) == who, lines[0]
    assert r.stdout == "", "the command ran"


def test_refusal_glibc_wrapper_given_the_musl_library(pair, tmp_path):
    cli = pair(B / "migshim", MUSL_B / "libmigshim.so")
    marker = tmp_path / "ran"
    r = run([cli, "--", "/usr/bin/touch", marker])
    assert_refused(r, "musl", "glibc", "/usr/bin/touch")
    assert "(NEEDED libc.so)" in r.stderr and "(/lib64/ld-linux-x86-64.so.2)" in r.stderr, r.stderr
    assert not marker.exists()
    print(r.stderr.strip())
    # found on PATH, as execvp finds it
    r = run([cli, "--", "touch", marker])
    assert_refused(r, "musl", "glibc", f"touch ({shutil.which('touch')})")
    assert not marker.exists()


def test_refusal_musl_wrapper_given_the_glibc_library(pair):
    """The musl command, run by musl's loader, refusing the glibc library
    for a musl program."""
    cli = pair(MUSL_B / "migshim", B / "libmigshim.so")
    r = run([cli, "--", need(CLIENT)])
    assert_refused(r, "glibc", "musl", str(CLIENT))
    assert "(NEEDED libc.so.6)" in r.stderr and "(/lib/ld-musl-x86_64.so.1)" in r.stderr, r.stderr
    print(r.stderr.strip())


def test_refusal_follows_scripts(pair, tmp_path):
    """A #! script is judged by its interpreter, through /usr/bin/env."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    musl_prog = bindir / "muslprog"
    shutil.copy2(need(MUSL_B / "migshim"), musl_prog)  # any musl program
    direct = bindir / "direct"
    direct.write_text(f"#!{musl_prog} --version\n")
    via_env = bindir / "via-env"
    via_env.write_text("#!/usr/bin/env muslprog\n")
    for s in (direct, via_env):
        s.chmod(0o755)
    env = {**child_base_env(), "PATH": f"{bindir}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    cli = pair(B / "migshim", B / "libmigshim.so")
    for s in (direct, via_env):
        r = run([cli, "--", s], env=env)
        assert_refused(r, "glibc", "musl", str(s))
    # the same scripts with the musl library run
    cli = pair(B / "migshim", MUSL_B / "libmigshim.so", "musl-lib")
    r = run([cli, "--", direct], env=env)
    assert (r.returncode, r.stdout.strip()) == (0, "migshim " + (REPO_ROOT / "VERSION").read_text().strip()), r


def test_static_command_is_judged_by_the_system(pair, tmp_path):
    """A static program names no libc (tini-static): the wrapper's own
    interpreter decides, i.e. this system's libc."""
    src = tmp_path / "static.c"
    src.write_text('#include <stdio.h>\nint main(void) { puts("static ran"); return 0; }\n')
    prog = tmp_path / "static"
    subprocess.run(["musl-gcc", "-static", "-o", str(prog), str(src)], check=True)
    r = run([pair(B / "migshim", MUSL_B / "libmigshim.so"), "--", prog])
    assert_refused(r, "musl", "glibc", "this system")
    r = run([pair(MUSL_B / "migshim", MUSL_B / "libmigshim.so", "musl"), "--", prog])
    assert (r.returncode, r.stdout, r.stderr) == (0, "static ran\n", ""), r


def test_no_refusal_when_the_libcs_match(pair):
    # the musl library for a musl program, from either wrapper
    for cli in (pair(B / "migshim", MUSL_B / "libmigshim.so", "g"),
                pair(MUSL_B / "migshim", MUSL_B / "libmigshim.so", "m")):
        r = run([cli, "--", need(MUSL_B / "migshim"), "--version"])
        assert r.returncode == 0 and r.stdout.startswith("migshim "), (cli, r)
    # the glibc library for a glibc program, from either wrapper
    for cli in (pair(B / "migshim", B / "libmigshim.so", "gg"),
                pair(MUSL_B / "migshim", B / "libmigshim.so", "mg")):
        r = run([cli, "--", "/bin/echo", "ran"])
        assert (r.returncode, r.stdout, r.stderr) == (0, "ran\n", ""), (cli, r)


# --------------------------------------------------------------------------
# the fleet

def run_fleet(db, shim: bool, n: int = N, sync_ms: int = 2000, client: Path = CLIENT):
    """n musl clients from tests/musl/project, released together; returns
    [(rc, stdout, stderr), ...]."""
    fdir = tempfile.mkdtemp(prefix="migshim-musl-fleet.")
    env = child_base_env()
    env.update(db.env)
    env.update({"FLEET_DIR": fdir, "FLEET_N": str(n), "FLEET_SYNC_MS": str(sync_ms),
                "MIGRATION_MS": "100", "CLIENT_LIBPQ": str(need(MUSL_LIBPQ))})
    cmd = [str(need(client))]
    if shim:
        cmd = [str(need(MUSL_B / "migshim")), "--log", "info", "--"] + cmd
    procs = []
    try:
        for _ in range(n):
            procs.append(subprocess.Popen(cmd, cwd=str(PROJECT), env=env, stdin=subprocess.DEVNULL,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                          text=True, start_new_session=True))
        out = []
        deadline = time.monotonic() + 90
        for p in procs:
            o, e = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
            out.append((p.returncode, o, e))
        return out
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        shutil.rmtree(fdir, ignore_errors=True)


def db_state(db):
    conn = db.server.connect(db.name)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT to_regclass('migration_runs') IS NOT NULL, "
                        "to_regclass('alembic_version') IS NOT NULL")
            has_runs, has_version = cur.fetchone()
            runs, version = {}, None
            if has_runs:
                cur.execute("SELECT revision, pid FROM migration_runs ORDER BY at")
                for rev, pid in cur.fetchall():
                    runs.setdefault(rev, []).append(pid)
            if has_version:
                cur.execute("SELECT version_num FROM alembic_version")
                version = sorted(r[0] for r in cur.fetchall())
            return runs, version
    finally:
        conn.close()


@pytest.mark.parametrize("client", [CLIENT, CLIENT_DLOPEN], ids=["linked", "dlopen"])
def test_musl_fleet_with_the_shim(db, client):
    """linked: libpq in the client's DT_NEEDED, its calls bound to the
    shim's wrappers; dlopen: libpq dlopen'ed RTLD_LOCAL and every function
    taken from dlsym (the shim's dlsym on musl hands out its wrappers)."""
    t0 = time.monotonic()
    res = run_fleet(db, shim=True, client=client)
    took = time.monotonic() - t0
    errs = "".join(e for _, _, e in res)
    rcs = [rc for rc, _, _ in res]
    assert rcs == [0] * N, errs
    leaders = [l for l in errs.splitlines() if ": info: " in l and "leading: this process holds" in l]
    assert len(leaders) == 1, errs
    migrated = [o for _, o, _ in res if o.startswith("migrated ")]
    assert migrated == [f"migrated (none) -> {HEAD}\n"], [o for _, o, _ in res]
    assert sorted(o for _, o, _ in res).count("at head\n") == N - 1
    runs, version = db_state(db)
    assert version == [HEAD], version
    assert sorted(runs) == REVISIONS and all(len(p) == 1 for p in runs.values()), runs
    problems = [l for l in errs.splitlines() if re.search(r": (warn|error): ", l) or "client[" in l]
    assert problems == [], errs
    waited = sum("waited" in l for l in errs.splitlines())
    print(f"musl fleet ({client.name}) with the shim: {N}/{N} exit 0, 1 leader, {waited} waited, each revision once, "
          f"alembic_version = {version[0]}, {took:.1f} s")


def test_musl_fleet_without_the_shim(db):
    """The same fleet without the shim: the race the test claims to fix."""
    res = run_fleet(db, shim=False)
    errs = "".join(e for _, _, e in res)
    failed = [rc for rc, _, _ in res if rc != 0]
    runs, version = db_state(db)
    dup = {r: p for r, p in (runs or {}).items() if len(p) > 1}
    assert failed or dup, ("no race without the shim", errs, runs)
    codes = sorted(set(re.findall(r"client\[\d+\]: (\w+):", errs)))
    print(f"musl fleet without the shim: {len(failed)}/{N} failed ({', '.join(codes)}), "
          f"revisions run twice: {len(dup)}")
    # every failure is the race's, not something else
    for line in errs.splitlines():
        assert re.search(r"client\[\d+\]: (23505|42P07|42701|40P01|Online migration)", line), line
