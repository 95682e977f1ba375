"""The gate asks the server which database a connection reached (issue 12).

* A standby (read replica): the first connection of a process landing on
  one is never gated -- no lock is taken there, nothing is waited for, one
  debug line says why.  The standby is a second throw-away server started
  in standby mode (standby.signal) by tests/harness/pg.sh's functions.
* (The PgBouncer alias and a direct connection sharing one gate:
  tests/e2e/test_topologies.py, test_pgbouncer_alias_and_direct_share_one_gate.)

Run: tests/harness/with-pg.sh /usr/bin/python3 -m pytest -q tests/integration/test_gate_identity.py
"""

import os
import subprocess
import tempfile
from pathlib import Path

import psycopg2
import pytest

from conftest import HARNESS_DIR, PYTHON, child_base_env, require_migshim_lib
import shimbuild

PG_SH = HARNESS_DIR / "pg.sh"


@pytest.fixture
def standby():
    """A server in standby mode: (env for libpq, its pg.sh directory)."""
    base = Path(tempfile.mkdtemp(prefix="migshim-standby.", dir="/tmp"))
    os.chmod(base, 0o755)
    d = base / "pg"
    out = subprocess.run(["bash", str(PG_SH), "start", str(d)], check=True,
                         stdout=subprocess.PIPE, text=True).stdout
    env = {}
    for line in out.splitlines():
        k, _, v = line.replace("export ", "").partition("=")
        env[k] = v.strip("'")
    # stop it cleanly, then start it again as a standby of nobody: it stays
    # in recovery and, being consistent, takes read-only connections
    script = ('. "%s"; b=$(pg_harness__bindir); '
              'pg_harness__as_pg "$b/pg_ctl" -D "%s/data" -m fast -w stop >&2 && '
              'pg_harness__as_pg touch "%s/data/standby.signal" && '
              'pg_harness__as_pg "$b/pg_ctl" -D "%s/data" -l "%s/postgresql.log" -w -t 60 start >&2'
              % (PG_SH, d, d, d, d))
    subprocess.run(["bash", "-c", script], check=True, cwd=str(d))
    try:
        yield env, d
    finally:
        subprocess.run(["bash", str(PG_SH), "stop", str(d)], check=False)


def test_a_standby_is_never_gated(standby, tmp_path):
    env_pg, d = standby
    conn = psycopg2.connect(host=env_pg["PGHOST"], port=env_pg["PGPORT"], user="postgres",
                            dbname="postgres")
    with conn.cursor() as cur:
        cur.execute("SELECT pg_is_in_recovery()")
        assert cur.fetchone()[0] is True
    env = child_base_env()
    env.update({k: env_pg[k] for k in ("PGHOST", "PGPORT", "PGUSER", "PGDATABASE")})
    env.update({"LD_PRELOAD": shimbuild.preload(require_migshim_lib()),
                "MIGSHIM_HEADS": "r1", "MIGSHIM_LOG": "debug", "MIGSHIM_WAIT_TIMEOUT": "5"})
    # the version table is absent there: behind the target, yet nothing waits
    res = subprocess.run([PYTHON, "-c", (
        "import psycopg2\n"
        "c = psycopg2.connect('')\n"
        "cur = c.cursor(); cur.execute('SELECT 1'); print(cur.fetchone()[0])\n")],
        env=env, cwd=str(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, timeout=60)
    assert res.returncode == 0 and res.stdout.strip() == "1", res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("migshim[")]
    assert any(ln.endswith('database "postgres" on a standby (pg_is_in_recovery()); '
                           "not gated") for ln in lines), "\n".join(lines)
    assert not [ln for ln in lines if "lead" in ln or "wait" in ln or ": warn:" in ln
                or ": error:" in ln], "\n".join(lines)
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")
        assert cur.fetchone()[0] == 0
    conn.close()
