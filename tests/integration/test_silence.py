"""The rule of silence (issue 13): a process the gate does not act on prints
nothing at the default log level; `log = debug` still says everything.

* psql and pg_dump in a directory without Alembic scripts (a cron job or a
  shell in an image with ENV LD_PRELOAD=...): empty stderr, the program's
  own output unchanged;
* a process whose database is already at head: no line;
* with MIGSHIM_LOG=debug the same processes explain themselves.

Each process runs in its own empty temp directory (no alembic.ini, no
migshim.conf), with only the variables each test gives it
(conftest.child_base_env).

Run: tests/harness/with-pg.sh /usr/bin/python3 -m pytest -q tests/integration/test_silence.py
"""

from __future__ import annotations

import re
import subprocess

import pytest

from conftest import REPO_ROOT as REPO, child_base_env, require_migshim_lib, run_py
import shimbuild
from conftest import ASAN_EXIT_HANG


NO_SCRIPTS = ("no alembic.ini, migrations/alembic.ini or [tool.alembic] found; target heads "
              "unknown (the lock is taken at the first version-table statement)")


def shim_env(db, **extra):
    env = child_base_env()
    env.update(db.env)
    env["LD_PRELOAD"] = shimbuild.preload(require_migshim_lib())
    env.update(extra)
    return env


def run(argv, env, cwd):
    return subprocess.run(argv, env=env, cwd=str(cwd), stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=60)


# The library's first debug line (src/shim.c): its version, from VERSION.
VERSION_LINE = ("libmigshim.so " + (REPO / "VERSION").read_text().strip()
                + ": active in this process (configuration file: %s)")


def shim_lines(stderr):
    """[(level, message)] of the shim's lines, without debug's first-call lines."""
    out = []
    for ln in stderr.splitlines():
        m = re.match(r"^migshim\[\d+\]: (\w+): (.*)$", ln)
        assert m or "migshim" not in ln, ln
        if m and not m.group(2).endswith(" (first call)"):
            out.append((m.group(1), m.group(2)))
    return out


@ASAN_EXIT_HANG
def test_psql_and_pg_dump_without_scripts_print_nothing(db, tmp_path):
    env = shim_env(db)
    q = run(["psql", "-X", "-At", "-c", "SELECT 40 + 2"], env, tmp_path)
    assert (q.returncode, q.stdout, q.stderr) == (0, "42\n", "")
    # several statements, a transaction, the catalog: still not a word
    q = run(["psql", "-X", "-At", "-c", "BEGIN; CREATE TABLE t (x int); INSERT INTO t VALUES (1); "
             "COMMIT; SELECT count(*) FROM t"], env, tmp_path)
    assert (q.returncode, q.stderr) == (0, ""), q
    d = run(["pg_dump", "--schema-only", "-t", "t"], env, tmp_path)
    assert (d.returncode, d.stderr) == (0, ""), d
    assert "CREATE TABLE public.t" in d.stdout
    # without the shim, pg_dump writes exactly the same
    bare = child_base_env()
    bare.update(db.env)
    d0 = run(["pg_dump", "--schema-only", "-t", "t"], bare, tmp_path)

    def norm(dump):  # \restrict / \unrestrict carry a random key per run
        return re.sub(r"^\\(un)?restrict \S+$", r"\\\1restrict KEY", dump, flags=re.M)
    assert norm(d0.stdout) == norm(d.stdout)


@ASAN_EXIT_HANG
def test_psql_without_scripts_at_debug_says_why_it_passes(db, tmp_path):
    q = run(["psql", "-X", "-At", "-c", "SELECT 1"], shim_env(db, MIGSHIM_LOG="debug"), tmp_path)
    assert q.returncode == 0 and q.stdout == "1\n", q
    assert shim_lines(q.stderr) == [
        ("debug", VERSION_LINE % "none"),
        ("debug", NO_SCRIPTS),
        ("debug", 'database "%s": target heads unknown; the migration lock is taken at the first '
                  'version-table statement' % db.name)], q.stderr


@ASAN_EXIT_HANG
def test_psql_that_touches_the_version_table_logs_its_decision(db, tmp_path):
    """Not silent when it acts: a version-table statement takes the lock."""
    q = run(["psql", "-X", "-At", "-c", "CREATE TABLE alembic_version (version_num "
             "varchar(32) PRIMARY KEY)"], shim_env(db), tmp_path)
    assert q.returncode == 0, q
    assert shim_lines(q.stderr) == [
        ("info", 'database "%s": took the migration lock for this version-table transaction'
         % db.name),
        ("info", 'database "%s": version-table transaction ended; migration lock released'
         % db.name)], q.stderr


AT_HEAD_WORKER = r'''
import os, psycopg2
c = psycopg2.connect(os.environ["WORKLOAD_DSN"])
cur = c.cursor()
cur.execute("SELECT version_num FROM alembic_version")
print(cur.fetchall())
c.close()
'''


@pytest.mark.parametrize("level", ["info", "debug"])
def test_worker_at_head_prints_nothing_at_info(db, tmp_path, level):
    conn = db.server.connect(db.name)
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY)")
        cur.execute("INSERT INTO alembic_version VALUES ('0001aaaa')")
    conn.close()
    env = dict(db.env, MIGSHIM_HEADS="0001aaaa", MIGSHIM_LOG=level)
    r = run_py(AT_HEAD_WORKER, env_extra=env, preload=True, cwd=tmp_path)
    assert r.rc == 0 and r.stdout == "[('0001aaaa',)]\n", r
    if level == "info":
        assert r.stderr == ""
    else:
        assert shim_lines(r.stderr) == [
            ("debug", VERSION_LINE % "none"),
            ("debug", 'database "%s" is at head (0001aaaa); proceeding' % db.name)], r.stderr
