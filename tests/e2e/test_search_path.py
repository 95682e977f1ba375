"""End to end: per-schema version tables (issue 19, section 2).

Alembic's multi-tenant recipe keeps one `alembic_version` per tenant
schema: env.py runs `SET search_path TO "<tenant>"` on its connection, in
the connection's transaction, before `context.run_migrations()`, and the
app upgrades each tenant in turn at start-up.  The shim's first read, in
the connection's own search_path, finds no version table; before issue 19
it then led, and every restart of a fleet at head was serialized (4.6 s
for 1/4 ready, 0.5 s without the shim).

Each scenario runs the same fleet with and without the shim (4 workers of
examples/flask-alembic, patched in a temp dir):

1. restart at head, 3 tenants: no lock taken (no lock connection seen in
   pg_stat_activity while it boots, no leading/waiting line or event, one
   at_head event per process and tenant), time to ready comparable;
2. from empty, 3 tenants: each tenant migrated exactly once, by one
   process that held the lock (exactly one leading line per tenant: the
   design's guarantee is one leader per tenant schema, not per fleet);
3. options=-csearch_path=tenant1 in the URL (stock env.py): restart at
   head takes no lock; from empty, exactly one leader;
4. a tenant schema added to an at-head database: it alone is migrated,
   once, by one leader; the others' tables are untouched.

Run: tests/harness/with-pg.sh /usr/bin/python3 -m pytest -q tests/e2e/test_search_path.py
"""

import json
import shutil
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fleet import (EXAMPLES_DIR, PYTHON, clean_env, database_url,  # noqa: E402
                   run_fleet)
from test_gate_fleet import REVISIONS, assert_one_leader  # noqa: E402

WORKERS = 4
TENANTS = ["tenant_a", "tenant_b", "tenant_c"]
HEAD = ["0003cccc"]

ONLINE = ("    with connectable.connect() as connection:\n"
          "        context.configure(\n")
UPGRADE = '        command.upgrade(alembic_config(), "head")\n'
READY = 'sa.text("SELECT version_num FROM alembic_version")'


SET_STYLES = {
    # the recipe's statement
    "set": "            connection.execute(text('SET search_path TO \"%s\"' % tenant))\n",
    # the same through set_config(), the value bound
    "set_config": ("            connection.execute(text(\"SELECT set_config('search_path', "
                   ":t, false)\"), {\"t\": '\"%s\"' % tenant.replace('\"', '\"\"')})\n"),
}


# set_config() binds the name: one tenant's name needs quoting everywhere
# (the shim never puts a learned name into SQL unquoted)
TENANTS_FOR = {"set": TENANTS, "set_config": ["tenant_a", 'Tenant "Q"', "tenant_c"]}


def qi(name):
    """A schema name as an SQL identifier."""
    return '"%s"' % name.replace('"', '""')


def tenant_app(tmp_path: Path, tenants, style: str = "set") -> Path:
    """examples/flask-alembic copied: env.py sets search_path to
    config.attributes["tenant"] in the migration's transaction (the
    multi-tenant recipe; `style`: SET_STYLES), app.py upgrades each of
    $TENANTS in turn and its /ready wants every tenant's table at the heads."""
    d = tmp_path / "app-tenants"
    shutil.copytree(EXAMPLES_DIR / "flask-alembic", d,
                    ignore=shutil.ignore_patterns("__pycache__"))
    env = d / "migrations" / "env.py"
    text = env.read_text()
    assert ONLINE in text, "the example's env.py changed: update this test"
    text = text.replace("from sqlalchemy import pool\n",
                        "from sqlalchemy import pool\nfrom sqlalchemy import text\n")
    text = text.replace(ONLINE, (
        "    with connectable.connect() as connection:\n"
        "        tenant = config.attributes.get(\"tenant\")\n"
        "        if tenant:\n"
        + SET_STYLES[style] +
        "            connection.dialect.default_schema_name = tenant\n"
        "        context.configure(\n"))
    env.write_text(text)
    app = d / "app.py"
    text = app.read_text()
    assert UPGRADE in text and READY in text, "the example's app.py changed"
    text = text.replace(UPGRADE, (
        "        for tenant in [t for t in os.environ.get('TENANTS', '').split(',') if t]:\n"
        "            cfg = alembic_config()\n"
        "            cfg.attributes['tenant'] = tenant\n"
        "            command.upgrade(cfg, 'head')\n"))
    union = " UNION ".join('SELECT version_num FROM %s.alembic_version' % qi(t)
                           for t in tenants)
    text = text.replace(READY, "sa.text(%r)" % ("SELECT DISTINCT version_num FROM (%s) v"
                                                 % union))
    app.write_text(text)
    return d


def sql(dsn, *stmts):
    import psycopg2
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            out = None
            for s in stmts:
                cur.execute(s)
                out = cur.fetchall() if cur.description else None
            return out
    finally:
        conn.close()


def tenant_state(dsn, tenant):
    """(version rows or None, {revision: [pid, ...]}) of one tenant schema."""
    lit = qi(tenant).replace("'", "''")
    has_v, has_r = sql(dsn, "SELECT to_regclass('%s.alembic_version'), "
                            "to_regclass('%s.migration_runs')" % (lit, lit))[0]
    version = sorted(r[0] for r in sql(
        dsn, 'SELECT version_num FROM %s.alembic_version' % qi(tenant))) if has_v else None
    runs = {}
    if has_r:
        for rev, pid in sql(dsn, 'SELECT revision, pid FROM %s.migration_runs '
                                 'ORDER BY at' % qi(tenant)):
            runs.setdefault(rev, []).append(pid)
    return version, runs


class LockConnWatch:
    """Polls pg_stat_activity every 10 ms while a fleet boots: any
    connection of the shim's own ('migshim lock ...'), and any advisory
    lock held or awaited, is recorded."""

    def __init__(self, dsn):
        self.dsn = dsn
        self.seen = set()
        self.stop = threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)

    def run(self):
        import psycopg2
        conn = psycopg2.connect(self.dsn)
        conn.autocommit = True
        with conn.cursor() as cur:
            while not self.stop.is_set():
                cur.execute("SELECT application_name FROM pg_stat_activity "
                            "WHERE application_name LIKE 'migshim %%' "
                            "UNION ALL SELECT 'advisory lock pid ' || pid FROM pg_locks "
                            "WHERE locktype = 'advisory'")
                self.seen.update(r[0] for r in cur.fetchall())
                time.sleep(0.01)
        conn.close()

    def __enter__(self):
        self.t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.t.join()


def run_both(label, dsn_shim, dsn_plain, app, env, shim_env=None, watch=False):
    """The same fleet on two databases prepared alike: with the shim
    (events to a file, MIGSHIM_LOG=debug) and without.  Returns
    (result with, result without, events, what the watcher saw)."""
    events = Path(app) / ("events-%s.jsonl" % label.replace(" ", "-"))
    senv = {"MIGSHIM_EVENTS": str(events), "MIGSHIM_LOG": "debug"}
    senv.update(shim_env or {})
    plain = run_fleet("flask-alembic", dsn_plain, workers=WORKERS, shim=False, app_dir=app,
                      env_extra=env, label=label + " without", read_db=False)
    w = LockConnWatch(dsn_shim)
    with w:
        r = run_fleet("flask-alembic", dsn_shim, workers=WORKERS, shim=True, app_dir=app,
                      env_extra=env, shim_env=senv, label=label + " with", read_db=False)
    rows = [json.loads(ln) for ln in events.read_text().splitlines()] if events.exists() else []
    print("\n%s: with the shim all %d ready in %s s, without %s s"
          % (label, WORKERS, r.elapsed and "%.2f" % r.elapsed,
             plain.elapsed and "%.2f" % plain.elapsed))
    return r, plain, rows, w.seen


def booted(r):
    assert r.booted and r.master_alive_at_end and r.workers_failed == 0, r.describe()
    assert set(r.worker_pids) <= set(r.ready_pids), r.describe()
    assert not r.race_errors(), r.describe()
    assert not r.migshim_problems(), "\n".join(r.migshim_problems()) + "\n" + r.describe()


def two_dbs(make_db, schemas):
    dbs = [make_db(), make_db()]
    for db in dbs:
        for s in schemas:
            sql(db.dsn, 'CREATE SCHEMA %s' % qi(s))
    return dbs


def migrate_tenants(dsn, app, tenants):
    """Bring `tenants` to head without the shim (a previous deploy)."""
    import subprocess
    env = clean_env()
    env.update({"DATABASE_URL": database_url(dsn), "RUN_DB_MIGRATIONS_ON_STARTUP": "true",
                "TENANTS": ",".join(tenants), "MIGRATION_SLEEP": "0"})
    res = subprocess.run([PYTHON, "-c", "import app"], cwd=str(app), env=env,
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, timeout=120)
    assert res.returncode == 0, res.stdout
    for t in tenants:
        assert tenant_state(dsn, t)[0] == HEAD


def lead_lines(r):
    return [(p, m) for p, lv, m in r.migshim_lines() if lv == "info" and "leading" in m]


def assert_no_lock(r, rows, seen, tenants):
    kinds = [e["event"] for e in rows]
    assert not [k for k in kinds if k in ("leading", "waiting", "migrated", "proceed",
                                          "lapsed", "ungated", "timeout")], (kinds, r.describe())
    # every process found every tenant at head (at its has_table query and
    # again at Alembic's read of the table: one or two events each)
    at_head = sorted({(e["pid"], e["detail"]) for e in rows if e["event"] == "at_head"})
    want = sorted((p, '"%s"."alembic_version"' % t) for p in r.worker_pids for t in tenants)
    assert at_head == want, (at_head, want, r.describe())
    assert not seen, (seen, r.describe())
    assert not [m for _, lv, m in r.migshim_lines() if lv in ("info", "warn", "error")], \
        r.describe()


@pytest.mark.parametrize("style", sorted(SET_STYLES))
def test_restart_at_head_takes_no_lock(make_db, migshim_lib, tmp_path, style):
    tenants = TENANTS_FOR[style]
    app = tenant_app(tmp_path, tenants, style)
    db, ref = two_dbs(make_db, tenants)
    for d in (db, ref):
        migrate_tenants(d.dsn, app, tenants)
    r, plain, rows, seen = run_both("restart at head " + style, db.dsn, ref.dsn, app,
                                    {"TENANTS": ",".join(tenants)})
    booted(r)
    assert plain.booted, plain.describe()
    assert_no_lock(r, rows, seen, tenants)
    for t in tenants:
        v, runs = tenant_state(db.dsn, t)
        assert v == HEAD and all(len(p) == 1 for p in runs.values()), (t, runs)
    assert r.elapsed < max(2.0 * plain.elapsed, plain.elapsed + 3.0), (r.elapsed, plain.elapsed)


@pytest.mark.parametrize("style,lock", [("set", "xact"), ("set_config", "xact"),
                                        ("set", "session")])
def test_from_empty_each_tenant_once(make_db, migshim_lib, tmp_path, style, lock):
    tenants = TENANTS_FOR[style]
    app = tenant_app(tmp_path, tenants, style)
    db, ref = two_dbs(make_db, tenants)
    # each revision sleeps 0.4 s in its transaction: the 4 processes
    # reach each tenant while a peer migrates it
    env = {"TENANTS": ",".join(tenants), "MIGRATION_SLEEP": "0.4"}
    r, plain, rows, _ = run_both("from empty %s %s" % (style, lock), db.dsn, ref.dsn, app, env,
                                 shim_env={"MIGSHIM_LOCK": lock})
    booted(r)
    # the interleaving happened: some process waited for a peer's tenant
    assert r.gate_lines("wait"), r.describe()
    leaders = set()
    for t in tenants:
        v, runs = tenant_state(db.dsn, t)
        assert v == HEAD, (t, v, r.describe())
        assert sorted(runs) == sorted(REVISIONS), (t, runs)
        assert all(len(p) == 1 for p in runs.values()), (t, runs, r.describe())
        pids = {p[0] for p in runs.values()}
        assert len(pids) == 1, (t, runs)   # one process migrated the whole tenant
        leaders |= pids
    # exactly one leading line per tenant schema, each by a process that
    # migrated one: the design guarantees one leader per tenant, not per fleet
    lines = lead_lines(r)
    assert len(lines) == len(tenants), (lines, r.describe())
    assert {p for p, _ in lines} == leaders, (lines, leaders)
    assert len([e for e in rows if e["event"] == "leading"]) == len(tenants), rows
    plain_runs = {t: tenant_state(ref.dsn, t)[1] for t in tenants}
    print("without the shim: booted=%s race errors=%d runs=%s"
          % (plain.booted, len(plain.race_errors()),
             {t: {k: len(v) for k, v in runs.items()} for t, runs in plain_runs.items()}))


@pytest.mark.parametrize("shared", [False, True], ids=["tenants-only", "shared-public"])
def test_new_tenant_in_at_head_database(make_db, migshim_lib, tmp_path, shared):
    # shared-public: "public" is migrated like a tenant too, so the first
    # connection's read (search_path: public) finds a table at head there
    tenants = (["public"] if shared else []) + TENANTS
    old, new = tenants[:-1], tenants[-1]
    app = tenant_app(tmp_path, tenants)
    db, ref = two_dbs(make_db, TENANTS)
    for d in (db, ref):
        migrate_tenants(d.dsn, app, old)
    before = {t: tenant_state(db.dsn, t)[1] for t in old}
    env = {"TENANTS": ",".join(tenants), "MIGRATION_SLEEP": "0.4"}
    r, plain, rows, _ = run_both("new tenant" + (" shared" if shared else ""), db.dsn, ref.dsn,
                                 app, env)
    booted(r)
    for t in old:
        assert tenant_state(db.dsn, t) == (HEAD, before[t]), t
    v, runs = tenant_state(db.dsn, new)
    assert v == HEAD and sorted(runs) == sorted(REVISIONS), (v, runs)
    assert all(len(p) == 1 for p in runs.values()), (runs, r.describe())
    lines = lead_lines(r)
    assert len(lines) == 1 and '"%s"' % new in lines[0][1], (lines, r.describe())
    assert {p for p in runs.values() for p in p} == {lines[0][0]}, (runs, lines)
    # nobody waited on the at-head tenants: one at_head event per process for each
    at_head = sorted({(e["pid"], e["detail"]) for e in rows if e["event"] == "at_head"})
    for t in old:
        assert sorted(p for p, d in at_head if d == '"%s"."alembic_version"' % t) \
            == sorted(r.worker_pids), (t, at_head)


def options_url(dsn, schema):
    return database_url(dsn) + "&options=-csearch_path%%3D%s" % schema


def test_options_search_path_in_the_url(make_db, migshim_lib, tmp_path):
    # the stock example: its /ready reads alembic_version where the URL's
    # search_path puts it
    app = tmp_path / "app-options"
    shutil.copytree(EXAMPLES_DIR / "flask-alembic", app,
                    ignore=shutil.ignore_patterns("__pycache__"))
    db, ref = two_dbs(make_db, ["tenant_a"])
    env = lambda d: {"DATABASE_URL": options_url(d.dsn, "tenant_a")}  # noqa: E731
    # from empty: one leader, every revision once, in tenant_a
    w = LockConnWatch(db.dsn)
    r = run_fleet("flask-alembic", db.dsn, workers=WORKERS, shim=True, app_dir=app,
                  env_extra=env(db), label="options from empty", read_db=False)
    plain = run_fleet("flask-alembic", ref.dsn, workers=WORKERS, shim=False, app_dir=app,
                      env_extra=env(ref), label="options from empty without", read_db=False)
    booted(r)
    assert_one_leader([r], r.worker_pids, migrated=[])
    v, runs = tenant_state(db.dsn, "tenant_a")
    assert v == HEAD and {k: len(p) for k, p in runs.items()} == {k: 1 for k in REVISIONS}
    assert sql(db.dsn, "SELECT to_regclass('public.alembic_version')")[0][0] is None
    print("\noptions from empty: with %.2f s, without %s" % (
        r.elapsed, plain.elapsed and "%.2f s" % plain.elapsed))
    # restart at head: no lock
    if not plain.booted:  # the race without the shim: bring ref to head for the restart
        sql(ref.dsn, 'DROP SCHEMA tenant_a CASCADE', 'CREATE SCHEMA tenant_a')
        r0 = run_fleet("flask-alembic", ref.dsn, workers=1, shim=False, app_dir=app,
                       env_extra=env(ref), read_db=False)
        assert r0.booted, r0.describe()
    events = tmp_path / "events-options.jsonl"
    with w:
        r = run_fleet("flask-alembic", db.dsn, workers=WORKERS, shim=True, app_dir=app,
                      env_extra=env(db), shim_env={"MIGSHIM_EVENTS": str(events),
                                                   "MIGSHIM_LOG": "debug"},
                      label="options restart", read_db=False)
    plain = run_fleet("flask-alembic", ref.dsn, workers=WORKERS, shim=False, app_dir=app,
                      env_extra=env(ref), label="options restart without", read_db=False)
    booted(r)
    assert plain.booted, plain.describe()
    rows = [json.loads(ln) for ln in events.read_text().splitlines()]
    # the first connection's read: at head (the URL's search_path), no per-schema mode
    assert sorted(e["pid"] for e in rows if e["event"] == "at_head") == sorted(r.worker_pids)
    assert not [e for e in rows if e["event"] in ("leading", "waiting", "proceed")], rows
    assert not w.seen, w.seen
    assert r.elapsed < max(2.0 * plain.elapsed, plain.elapsed + 3.0), (r.elapsed, plain.elapsed)
    print("options restart at head: with %.2f s, without %.2f s" % (r.elapsed, plain.elapsed))


READ_ONLY_SCRIPT = r"""
import os, sys, time
import sqlalchemy as sa
from alembic.runtime.migration import MigrationContext
e = sa.create_engine(os.environ["DATABASE_URL"], poolclass=sa.pool.NullPool)
with e.connect() as c:
    with c.begin():
        c.execute(sa.text('SET search_path TO "%s"' % sys.argv[1]))
        rev = MigrationContext.configure(c).get_current_revision()
    print("rev", rev, flush=True)
    sys.stdin.readline()   # idle, connection open, until the test has looked
"""


def test_a_read_of_a_schema_without_a_table_releases(make_db, migshim_lib, tmp_path):
    """A per-schema lead whose transaction only read (`alembic current` in a
    schema with no version table) releases the lock at its end, instead of
    holding the fleet's lock until hold_timeout."""
    import subprocess
    from fleet import shimbuild
    app = tenant_app(tmp_path, TENANTS[:1])
    db = make_db()
    sql(db.dsn, 'CREATE SCHEMA "%s"' % TENANTS[0], "CREATE SCHEMA empty_one")
    migrate_tenants(db.dsn, app, TENANTS[:1])
    env = clean_env()
    env.update({"DATABASE_URL": database_url(db.dsn), "LD_PRELOAD": shimbuild.preload(migshim_lib),
                "MIGSHIM_LOG": "info"})
    p = subprocess.Popen([PYTHON, "-c", READ_ONLY_SCRIPT, "empty_one"], cwd=str(app), env=env,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "rev None"
        locks = sql(db.dsn, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")[0][0]
        p.stdin.write("\n")
        p.stdin.flush()
        _, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, err
    assert locks == 0, err
    assert 'the transaction on "empty_one"."alembic_version" ((none)) only read it; ' \
           'migration lock released' in err, err
