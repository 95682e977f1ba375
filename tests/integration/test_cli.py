"""The `migshim` command: the `-- COMMAND` wrapper (`--wire`: accepted, changes nothing),
`heads`, `status`.

Each test runs build/migshim as a child in a temporary working directory
holding (or not) an Alembic script folder, against a fresh database, and
asserts its exact output and exit status.
"""

import os
import re
import subprocess
from pathlib import Path

import pytest

import shimbuild
from shimbuild import ASYNCPG_MAPS
from conftest import REPO_ROOT, child_base_env

MIGSHIM = shimbuild.cli_path()
LIB = shimbuild.build_dir() / "libmigshim.so"

# A child that connects with asyncpg (which bypasses libpq) and prints the shim
# libraries mapped into it, as /proc/self/maps names them (symlinks resolved).


def scripts(cwd: Path, revs):
    """alembic.ini + versions/ with `revs` = [(id, down or None), ...]."""
    (cwd / "alembic.ini").write_text("[alembic]\nscript_location = %(here)s/mig\n")
    v = cwd / "mig" / "versions"
    v.mkdir(parents=True)
    for rid, down in revs:
        (v / f"{rid}_r.py").write_text(
            f'"""r"""\nrevision = "{rid}"\ndown_revision = {down!r}\n')


def run(args, cwd, env_extra=None, timeout=30):
    assert MIGSHIM.exists(), "build/migshim is missing: run `make`"
    env = child_base_env()
    env.update(env_extra or {})
    return subprocess.run([str(MIGSHIM), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_help_version_and_usage_errors(tmp_path):
    r = run(["--help"], tmp_path)
    assert r.returncode == 0 and r.stdout.startswith("usage: migshim [--config FILE] ")
    assert "--wire" not in r.stdout
    r = run(["--version"], tmp_path)
    assert r.returncode == 0 and r.stdout.startswith("migshim ")
    r = run([], tmp_path)
    assert r.returncode == 64
    assert r.stderr == "migshim: no command given (usage: migshim [OPTIONS] -- COMMAND [ARGS...])\n"
    r = run(["--bogus"], tmp_path)
    assert (r.returncode, r.stderr) == (64, "migshim: unexpected argument '--bogus' (try --help)\n")
    r = run(["--log", "loud", "--", "true"], tmp_path)
    assert r.returncode == 64 and "--log takes error, warn, info or debug" in r.stderr
    r = run(["--", "/nonexistent/cmd"], tmp_path)
    assert r.returncode == 127 and "cannot run '/nonexistent/cmd'" in r.stderr


def test_wrapper_prepends_the_library_and_keeps_ld_preload(tmp_path):
    keep = "/lib/x86_64-linux-gnu/libc.so.6"  # harmless, already loaded
    extra = {"LD_PRELOAD": keep}
    if shimbuild.sanitized(LIB):
        # the sanitized command itself then starts with libc ahead of its
        # ASan runtime: let ASan accept that (the command it runs gets the
        # runtimes first)
        extra["ASAN_OPTIONS"] = os.environ.get("ASAN_OPTIONS", "") + ":verify_asan_link_order=0"
    r = run(["--config", "/x/migshim.conf", "--log", "debug", "--", "/usr/bin/env"], tmp_path,
            extra)
    assert r.returncode == 0, r.stderr
    env = dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)
    # a SANITIZE= build puts the sanitizer runtimes first (tests/shimbuild.py)
    assert env["LD_PRELOAD"] == f"{shimbuild.preload(LIB)}:{keep}"
    assert env["MIGSHIM_CONFIG"] == "/x/migshim.conf"
    assert env["MIGSHIM_LOG"] == "debug"
    r = run(["--", "/bin/sh", "-c", "exit 7"], tmp_path)
    assert r.returncode == 7  # the command's own status


def test_wrapped_command_is_intercepted(tmp_path, db):
    code = "import psycopg2; c = psycopg2.connect(''); c.cursor().execute('select 1')"
    r = run(["--log", "debug", "--", "/usr/bin/python3", "-c", code], tmp_path, db.env)
    assert r.returncode == 0, r.stderr
    assert "debug: PQconnectdb -> libpq.so.5 (first call)" in r.stderr


def test_the_library_follows_asyncpg_and_wire_changes_nothing(tmp_path, db):
    """`--` preloads the one library, which follows a child's asyncpg
    connection (the wire layer is part of it); `--wire`, the option of the
    former opt-in variant, is accepted and preloads the same file."""
    env = dict(db.env, LD_PRELOAD="/lib/x86_64-linux-gnu/libc.so.6")
    rts = shimbuild.sanitizer_runtimes(LIB)
    if rts:
        env["ASAN_OPTIONS"] = os.environ.get("ASAN_OPTIONS", "") + ":verify_asan_link_order=0"
    for pre in ([], ["--wire"]):
        r = run([*pre, "--lib-path"], tmp_path)
        assert (r.returncode, r.stdout) == (0, f"{LIB}\n"), r.stderr
        r = run([*pre, "--", "/usr/bin/printenv", "LD_PRELOAD"], tmp_path, env)
        assert r.stdout == ":".join(rts + [str(LIB), env["LD_PRELOAD"]]) + "\n", r.stderr
    r = run(["--log", "debug", "--", "/usr/bin/python3", "-c", ASYNCPG_MAPS], tmp_path, env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [str(LIB.resolve())], r.stdout
    assert re.search(r"debug: wire: PostgreSQL connection on fd \d+ \(unix\), followed",
                     r.stderr), r.stderr


def test_heads(tmp_path):
    scripts(tmp_path, [("a1", None), ("b2", "a1"), ("c3", "a1")])
    r = run(["heads"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert sorted(r.stdout.split()) == ["b2", "c3"]
    r = run(["heads"], tmp_path, {"MIGSHIM_HEADS": "x9"})
    assert (r.returncode, r.stdout) == (0, "x9\n")


def test_heads_unknown_and_bad_config(tmp_path):
    r = run(["heads"], tmp_path)
    assert r.returncode == 2 and r.stdout == ""
    assert "target heads unknown" in r.stderr
    r = run(["heads"], tmp_path, {"MIGSHIM_WAIT_TIMEOUT": "soon"})
    assert r.returncode == 78
    assert r.stderr == ("migshim: MIGSHIM_WAIT_TIMEOUT: 'wait_timeout' must be a number of "
                        "seconds, got 'soon'\n")


def status_fields(out):
    return {k.strip(): v.strip() for k, v in
            (line.split(":", 1) for line in out.splitlines() if not line.startswith("  "))}


def test_status_behind_then_at_head(tmp_path, db, pg):
    scripts(tmp_path, [("a1", None), ("b2", "a1")])
    r = run(["status", db.dsn], tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    f = status_fields(r.stdout)
    assert f["target heads"].startswith("b2")
    assert f["database"] == f'"{db.name}"'
    assert f["version table"] == "alembic_version: absent"
    assert f["at head"] == "no"
    assert f["migration lock"].endswith(": free")
    conn = pg.connect(db.name)
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY)")
        cur.execute("INSERT INTO alembic_version VALUES ('b2')")
    conn.close()
    r = run(["status"], tmp_path, {"DATABASE_URL": f"postgresql:///{db.name}?host={pg.host}"
                                   f"&port={pg.port}&user={pg.user}"})
    assert r.returncode == 0, r.stdout + r.stderr
    f = status_fields(r.stdout)
    assert (f["version table"], f["at head"]) == ("alembic_version: b2", "yes")


def test_status_names_the_lock_holder_and_config_sources(tmp_path, db, pg):
    scripts(tmp_path, [("a1", None)])
    (tmp_path / "migshim.conf").write_text('wait_timeout = 12;\non_timeout = "fail";\n')
    holder = pg.connect(db.name)
    with holder.cursor() as cur:
        cur.execute("SET application_name = 'the-holder'")
        cur.execute("SELECT pg_backend_pid()")
        pid = cur.fetchone()[0]
        cur.execute("SELECT pg_advisory_lock(4242)")
    try:
        r = run(["status", db.dsn], tmp_path, {"MIGSHIM_LOCK_KEY": "4242"})
    finally:
        holder.close()
    assert r.returncode == 1, r.stdout + r.stderr
    f = status_fields(r.stdout)
    assert f["migration lock"].startswith(f"key 4242: backend pid {pid} from local, "
                                          "application_name 'the-holder', since ")
    assert f["configuration"] == "migshim.conf"
    lines = {l.split()[0]: l.split() for l in r.stdout.splitlines() if l.startswith("  ")}
    assert lines["wait_timeout"][1:] == ["12", "(file)"]
    assert lines["on_timeout"][1:] == ["fail", "(file)"]
    assert lines["lock_key"][1:] == ["4242", "(environment)"]
    assert lines["leader_grace"][1:] == ["10", "(default)"]


def test_status_cannot_connect(tmp_path, pg):
    r = run(["status", f"host={pg.host} port={pg.port} user={pg.user} dbname=no_such_db"],
            tmp_path)
    assert r.returncode == 3
    assert 'database:        cannot connect: ' in r.stdout
    assert 'database "no_such_db" does not exist' in r.stdout


def test_make_install_and_uninstall_with_prefix_and_destdir(tmp_path):
    stage = tmp_path / "stage"
    make = ["make", "-s", "-C", str(REPO_ROOT), f"B={tmp_path}/b", "PREFIX=/opt/ms",
            f"DESTDIR={stage}"]
    r = subprocess.run(make + ["install"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    files = sorted(str(p.relative_to(stage)) for p in stage.rglob("*") if p.is_file())
    assert files == ["opt/ms/bin/migshim", "opt/ms/lib/libmigshim.so",
                     "opt/ms/share/doc/migshim/migshim.conf.example",
                     "opt/ms/share/man/man1/migshim.1", "opt/ms/share/man/man5/migshim.conf.5"]
    assert os.access(stage / "opt/ms/bin/migshim", os.X_OK)
    # the installed command points LD_PRELOAD at the library of its own
    # tree (BINDIR/../lib, wherever the tree was unpacked), and at
    # PREFIX/lib when it stands alone
    env = child_base_env()
    env.pop("LD_PRELOAD", None)
    # (behind the sanitizer runtimes when SANITIZE= made it: tests/shimbuild.py)
    rts = shimbuild.sanitizer_runtimes(stage / "opt/ms/lib/libmigshim.so")
    solo = tmp_path / "solo" / "migshim"
    solo.parent.mkdir()
    solo.write_bytes((stage / "opt/ms/bin/migshim").read_bytes())
    solo.chmod(0o755)
    for cmd, lib in ((stage / "opt/ms/bin/migshim", stage / "opt/ms/lib/libmigshim.so"),
                     (solo, "/opt/ms/lib/libmigshim.so")):
        r = subprocess.run([str(cmd), "--", "/usr/bin/printenv", "LD_PRELOAD"],
                           capture_output=True, text=True, env=env, timeout=30)
        assert r.stdout == ":".join(rts + [str(lib)]) + "\n", (cmd, r.stderr)
    # --lib-path names the library `--` preloads, and fails when there is none
    r = subprocess.run([str(stage / "opt/ms/bin/migshim"), "--lib-path"], capture_output=True,
                       text=True, env=env, timeout=30)
    assert (r.returncode, r.stdout) == (0, f"{stage / 'opt/ms/lib/libmigshim.so'}\n"), r.stderr
    r = subprocess.run([str(solo), "--lib-path"], capture_output=True, text=True, env=env,
                       timeout=30)
    assert (r.returncode, r.stdout, r.stderr) == (
        1, "", "migshim: no libmigshim.so next to this command, nor at "
               "/opt/ms/lib/libmigshim.so\n")
    r = subprocess.run(make + ["uninstall"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert [p for p in stage.rglob("*") if p.is_file()] == []


def test_status_ahead_agrees_with_the_library(tmp_path, db, pg):
    """A database holding a revision the scripts do not know: the library
    proceeds ("a newer deploy migrated it"), and `status` says the same
    through the same comparison (it used to say "at head: no", exit 1)."""
    scripts(tmp_path, [("a1", None), ("b2", "a1")])
    conn = pg.connect(db.name)
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY)")
        cur.execute("INSERT INTO alembic_version VALUES ('c9')")
    conn.close()
    r = run(["status", db.dsn], tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    f = status_fields(r.stdout)
    assert f["version table"] == "alembic_version: c9"
    assert f["at head"].startswith("ahead (")
    code = "import psycopg2; c = psycopg2.connect(''); c.cursor().execute('select 1')"
    r = run(["--", "/usr/bin/python3", "-c", code], tmp_path, db.env)
    assert r.returncode == 0, r.stderr
    assert ("holds revisions the local scripts do not know (c9): a newer deploy migrated it; "
            "proceeding") in r.stderr


def test_lib_path_and_a_library_path_with_a_space(tmp_path, db):
    """--lib-path prints the library next to the command (build/, or the wheel's package
    directory).  LD_PRELOAD splits at spaces and has no escape: a library under a
    directory with a space (a virtualenv under "My Projects") goes in by its bare name,
    its directory first in LD_LIBRARY_PATH; a ':' fits neither list and is refused."""
    r = run(["--lib-path"], tmp_path)
    assert (r.returncode, r.stdout) == (0, f"{LIB}\n"), r.stderr
    rts = shimbuild.sanitizer_runtimes(LIB)
    env = dict(db.env, LD_LIBRARY_PATH="/opt/x")
    if rts:
        env["ASAN_OPTIONS"] = os.environ.get("ASAN_OPTIONS", "") + ":verify_asan_link_order=0"
    spaced = tmp_path / "My Projects" / "venv"
    colon = tmp_path / "a:b"
    for d in (spaced, colon):
        d.mkdir(parents=True)
        for f in (MIGSHIM, LIB):
            (d / f.name).write_bytes(f.read_bytes())
            (d / f.name).chmod(0o755)
    show = ["/bin/sh", "-c", 'printf "%s|%s\\n" "$LD_PRELOAD" "$LD_LIBRARY_PATH"']
    r = subprocess.run([str(spaced / "migshim"), "--lib-path"], capture_output=True, text=True,
                       env=env, timeout=30)
    assert (r.returncode, r.stdout) == (0, f"{spaced}/libmigshim.so\n"), r.stderr
    r = subprocess.run([str(spaced / "migshim"), "--", *show], capture_output=True, text=True,
                       env=env, timeout=30)
    assert r.stdout == ":".join(rts + ["libmigshim.so"]) + f"|{spaced}:/opt/x\n", r.stderr
    # and the loader finds it there: the shim is active in the command
    code = "import psycopg2; c = psycopg2.connect(''); c.cursor().execute('select 1')"
    r = subprocess.run([str(spaced / "migshim"), "--log", "debug", "--", "/usr/bin/python3",
                        "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    assert ": active in this process" in r.stderr and "cannot be preloaded" not in r.stderr, \
        r.stderr
    r = subprocess.run([str(colon / "migshim"), "--", *show], capture_output=True, text=True,
                       env=env, timeout=30)
    assert (r.returncode, r.stdout) == (126, ""), r.stderr
    assert r.stderr == (f"migshim: cannot preload '{colon}/libmigshim.so': LD_PRELOAD cannot "
                        "hold a path with a space or ':', nor LD_LIBRARY_PATH one with ':' or "
                        "';'\n")
