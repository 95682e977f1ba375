"""End to end: the version table named only in the app's env.py (issue 12).

Apps that share a database give Alembic their own version table in
env.py -- `context.configure(..., version_table="my_version")`, sometimes
with `version_table_schema` -- and nowhere else.  Before migshim read
env.py, an 8-worker fleet so configured took 71 s to boot: each worker in
turn led, never touched `alembic_version`, held the lock for leader_grace
and lapsed.

Here the example app's env.py is patched (a copy in a temp dir) three
ways -- a literal name, a module constant for the schema, both read from
the ini with config.get_main_option -- and each fleet must boot as a fleet
with Alembic's defaults does: exactly one leader, every revision once, the
named table at the heads, no lapse, no guard line.  The boot times of the
same run are printed; the 1.1x figure is measured by `make bench`.

Run: tests/harness/with-pg.sh /usr/bin/python3 -m pytest -q tests/e2e/test_version_table.py
"""

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fleet import EXAMPLES_DIR, run_fleet  # noqa: E402
from test_gate_fleet import (REVISIONS, assert_booted,  # noqa: E402
                             assert_one_leader)

ONLINE_CONFIGURE = ("        context.configure(\n"
                    "            connection=connection, target_metadata=target_metadata\n"
                    "        )\n")

VARIANTS = {
    # name: (text put before the online configure's closing, module-level
    #        text, ini lines, the version table's qualified name)
    "name": (', version_table="my_version"', "", "", "my_version"),
    "schema": (", version_table_schema=SCHEMA", 'SCHEMA = "ops"\n', "", "ops.alembic_version"),
    "both-from-ini": (', version_table=config.get_main_option("vt"),\n'
                      '            version_table_schema=config.get_main_option("vt_schema")',
                      "", "vt = app_versions\nvt_schema = ops\n", "ops.app_versions"),
}


def patched_app(tmp_path: Path, variant: str) -> Path:
    kwargs, module, ini, _ = VARIANTS[variant]
    d = tmp_path / ("app-" + variant)
    shutil.copytree(EXAMPLES_DIR / "flask-alembic", d,
                    ignore=shutil.ignore_patterns("__pycache__"))
    env = d / "migrations" / "env.py"
    text = env.read_text()
    assert ONLINE_CONFIGURE in text, "the example's env.py changed: update this test"
    text = text.replace(ONLINE_CONFIGURE, (
        "        context.configure(\n"
        "            connection=connection, target_metadata=target_metadata" + kwargs + "\n"
        "        )\n"))
    text = text.replace("target_metadata = None\n", "target_metadata = None\n" + module)
    env.write_text(text)
    app = d / "app.py"  # its /ready reads the version table
    text = app.read_text()
    assert "FROM alembic_version" in text
    app.write_text(text.replace("FROM alembic_version", "FROM " + VARIANTS[variant][3]))
    if ini:
        p = d / "alembic.ini"
        p.write_text(p.read_text().replace("[alembic]\n", "[alembic]\n" + ini, 1))
    return d


def table_state(dsn, qualified):
    """(rows of the named version table, whether alembic_version exists)."""
    import psycopg2
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT version_num FROM %s" % qualified)
            rows = sorted(r[0] for r in cur.fetchall())
            cur.execute("SELECT to_regclass('public.alembic_version') IS NOT NULL")
            return rows, cur.fetchone()[0]
    finally:
        conn.close()


@pytest.mark.parametrize("workers", [8, 16])
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_fleet_with_the_version_table_only_in_env_py(make_db, migshim_lib, tmp_path,
                                                     variant, workers):
    app = patched_app(tmp_path, variant)
    db = make_db()
    import psycopg2
    conn = psycopg2.connect(db.dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("CREATE SCHEMA ops")  # Alembic does not create schemas
    conn.close()
    ref_db = make_db()
    ref = run_fleet("flask-alembic", ref_db.dsn, workers=workers, shim=True,
                    label="defaults %dx" % workers)
    assert_booted(ref, workers)
    r = run_fleet("flask-alembic", db.dsn, workers=workers, shim=True, app_dir=app,
                  label="%s %dx" % (variant, workers))
    assert_booted(r, workers)           # no warning: no lapse, no guard line
    assert_one_leader([r], r.worker_pids)
    assert r.migration_runs == {rev: 1 for rev in REVISIONS}, r.describe()
    rows, has_default = table_state(db.dsn, VARIANTS[variant][3])
    assert rows == ["0003cccc"] and not has_default, r.describe()
    assert not [m for _, _, m in r.migshim_lines() if "lapse" in m or "gave the" in m], \
        r.describe()
    print("\n%s, %d workers: all ready in %.2f s (Alembic's defaults: %.2f s, x%.2f)"
          % (variant, workers, r.elapsed, ref.elapsed, r.elapsed / ref.elapsed))
