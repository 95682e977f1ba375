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


def copy_app(tmp_path: Path, variant: str, kwargs: str, module: str, qualified: str) -> Path:
    """examples/flask-alembic copied, its env.py's context.configure() given `kwargs` (and
    `module` at module level), its /ready reading the version table `qualified`."""
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
    app.write_text(text.replace("FROM alembic_version", "FROM " + qualified))
    return d


def db_and_reference(make_db, workers: int):
    """A database with schema "ops" (Alembic does not create schemas), and the same fleet
    with Alembic's defaults run on a database of its own first: the boot-time reference."""
    db = make_db()
    import psycopg2
    conn = psycopg2.connect(db.dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("CREATE SCHEMA ops")
    conn.close()
    ref_db = make_db()
    ref = run_fleet("flask-alembic", ref_db.dsn, workers=workers, shim=True,
                    label="defaults %dx" % workers)
    assert_booted(ref, workers)
    return db, ref


def patched_app(tmp_path: Path, variant: str) -> Path:
    kwargs, module, ini, qualified = VARIANTS[variant]
    d = copy_app(tmp_path, variant, kwargs, module, qualified)
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
    db, ref = db_and_reference(make_db, workers)
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


# ---------------------------------------------------------------------------
# The version table set where the env.py reader cannot see it: the leader
# learns it from its migration's own statements (gate_learn), follows it,
# publishes it for the waiters (holder_mark_migrating_vt) and warns once.

HIDDEN = {
    # name: (module-level text, kwargs text, the qualified name, env, the
    #        warnings expected besides the leader's one)
    # a function call the reader does not follow: no keyword to see at all
    "name-from-a-call": (
        'def version_settings():\n    return {"version_table": "my_" + "version"}\n',
        ", **version_settings()", "my_version", {}, False),
    "schema-from-a-call": (
        'def version_settings():\n    return {"version_table_schema": "o" + "ps"}\n',
        ", **version_settings()", "ops.alembic_version", {}, False),
    "both-from-a-call": (
        'def version_settings():\n'
        '    return dict(version_table="app_versions", version_table_schema="ops")\n',
        ", **version_settings()", "ops.app_versions", {}, False),
    # read from the environment: the reader sees the keyword and warns in
    # each process (envpy) naming MIGSHIM_VERSION_TABLE; the leader learns
    "name-from-environ": (
        "import os\n", ', version_table=os.environ["APP_VT"]', "my_version",
        {"APP_VT": "my_version"}, True),
}


def hidden_app(tmp_path: Path, variant: str) -> Path:
    module, kwargs, qualified, _, _ = HIDDEN[variant]
    return copy_app(tmp_path, variant, kwargs, module, qualified)


LEARNED_RE = r"the migration writes the version table (\S+), not \"alembic_version\""


@pytest.mark.parametrize("variant", sorted(HIDDEN))
def test_fleet_learns_the_version_table_from_the_migration(make_db, migshim_lib, tmp_path,
                                                           variant):
    import re
    workers = 8
    module, kwargs, qualified, env, reader_warns = HIDDEN[variant]
    app = hidden_app(tmp_path, variant)
    db, ref = db_and_reference(make_db, workers)
    r = run_fleet("flask-alembic", db.dsn, workers=workers, shim=True, app_dir=app,
                  env_extra=env, label="%s %dx" % (variant, workers))
    assert r.booted and r.master_alive_at_end and r.workers_failed == 0, r.describe()
    assert set(r.worker_pids) <= set(r.ready_pids), r.describe()
    assert not r.race_errors(), r.describe()
    leader = assert_one_leader([r], r.worker_pids)
    assert r.migration_runs == {rev: 1 for rev in REVISIONS}, r.describe()
    rows, has_default = table_state(db.dsn, qualified)
    assert rows == ["0003cccc"], r.describe()
    assert not has_default, r.describe()
    # the warnings: the leader's one, naming both settings; with the
    # name from os.environ also the reader's, one per process, naming
    # MIGSHIM_VERSION_TABLE; nothing else (no lapse, no guard line)
    problems = [(p, m) for p, lv, m in r.migshim_lines() if lv in ("warn", "warning", "error")]
    learned = [(p, m) for p, m in problems if re.search(LEARNED_RE, m)]
    assert len(learned) == 1 and learned[0][0] == leader, r.describe()
    msg = learned[0][1]
    schema, _, table = qualified.rpartition(".")
    assert "version_table = \"%s\" (MIGSHIM_VERSION_TABLE)" % table in msg, msg
    assert "version_table_schema = \"%s\" (MIGSHIM_VERSION_TABLE_SCHEMA)" % schema in msg, msg
    rest = [(p, m) for p, m in problems if (p, m) not in learned]
    if reader_warns:
        assert sorted(p for p, _ in rest) == sorted(set(r.worker_pids)), r.describe()
        assert all("set MIGSHIM_VERSION_TABLE " in m for _, m in rest), rest
    else:
        assert rest == [], r.describe()
    # the others: waited (some reading the published table), or took the
    # lock after the leader was done and found the learned table at the
    # target in their migration's first read (assert_one_leader: none led)
    kinds = [k for p, ks in r.gate_decisions().items() if p != leader for k in ks]
    waited = [m for _, m in r.gate_lines("wait")]
    print("\n%s, %d workers: all ready in %.2f s (Alembic's defaults: %.2f s, x%.2f); "
          "others: %d waited (%d on the published table), %d found it at the target"
          % (variant, workers, r.elapsed, ref.elapsed, r.elapsed / ref.elapsed,
             kinds.count("wait"), len([m for m in waited if "the leader's migration wrote" in m]),
             kinds.count("found_head")))
