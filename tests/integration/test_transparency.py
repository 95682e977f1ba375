"""Transparency: the same workloads give identical results with and without
the migshim preload, on real drivers against a real PostgreSQL.

Each workload (tests/integration/workloads/*.py) prints one deterministic
JSON document. For every workload:

* test_baseline_deterministic -- two runs without the preload, each against
  a fresh database, give the same JSON (otherwise comparisons mean nothing),
  and nothing prints a migshim line even with MIGSHIM_LOG=debug set.
* test_preload_transparent -- with LD_PRELOAD=build/libmigshim.so and
  MIGSHIM_LOG=debug: same JSON, rc 0, the shim is mapped, the shim's
  "first call" debug lines prove the driver's libpq calls went through it
  (from the workload's own pid, to libpq.so.5), no error/warn lines.
* test_disable_transparent -- preload with MIGSHIM_DISABLE=1 (and
  MIGSHIM_LOG=debug): same JSON, not a single migshim line.

Run: tests/harness/with-pg.sh /usr/bin/python3 -m pytest -q tests/integration
(or plain pytest: the `pg` fixture then starts its own server).
"""

import difflib
import json
import os
import re
import textwrap
from collections import Counter
from pathlib import Path

import pytest

from conftest import (migshim_first_calls, migshim_lines, migshim_problems,
                      require_migshim_lib, run_py)

WORKLOADS_DIR = Path(__file__).resolve().parent / "workloads"
EXPECTED_SONAME = os.environ.get("MIGSHIM_TEST_LIBPQ_SONAME", "libpq.so.5")
ANNOUNCE_RE = re.compile(
    r"^migshim-workload: name=(\S+) pid=(\d+) shim_mapped=([01])$", re.M)

# Functions each driver path must reach through the shim. Each entry is a
# tuple of alternatives: at least one of them must show a first-call line.
SYNC = [("PQconnectdb",), ("PQexec",)]
ASYNC = [("PQconnectStart",), ("PQconnectPoll",), ("PQsendQuery",),
         ("PQgetResult",)]
PSYCOPG3 = [("PQconnectStart",), ("PQconnectPoll",),
            ("PQsendQueryParams", "PQsendQuery"), ("PQgetResult",)]

WORKLOADS = {
    "psycopg2_sync": SYNC,
    "psycopg2_async": ASYNC,
    "psycopg2_green": ASYNC,
    "psycopg3": PSYCOPG3,
    "sqlalchemy_alembic": SYNC,
}

# ---------------------------------------------------------------------------
# the Alembic project used by the sqlalchemy_alembic workload

ALEMBIC_FILES = {
    "alembic.ini": """\
        [alembic]
        script_location = %(here)s
        # the workload passes the real URL through config.attributes
        sqlalchemy.url = postgresql+psycopg2://

        [loggers]
        keys = root,sqlalchemy,alembic

        [handlers]
        keys = console

        [formatters]
        keys = generic

        [logger_root]
        level = WARN
        handlers = console
        qualname =

        [logger_sqlalchemy]
        level = WARN
        handlers =
        qualname = sqlalchemy.engine

        [logger_alembic]
        level = INFO
        handlers =
        qualname = alembic

        [handler_console]
        class = StreamHandler
        args = (sys.stderr,)
        level = NOTSET
        formatter = generic

        [formatter_generic]
        format = %(levelname)-5.5s [%(name)s] %(message)s
        """,
    "env.py": """\
        from logging.config import fileConfig

        from alembic import context
        from sqlalchemy import create_engine, engine_from_config, pool

        config = context.config
        if config.config_file_name is not None:
            fileConfig(config.config_file_name, disable_existing_loggers=False)

        target_metadata = None


        def run_migrations_online():
            url = config.attributes.get("sqlalchemy_url")
            if url is not None:
                connectable = create_engine(url, poolclass=pool.NullPool,
                                            future=True)
            else:
                connectable = engine_from_config(
                    config.get_section(config.config_ini_section),
                    prefix="sqlalchemy.", poolclass=pool.NullPool, future=True)
            with connectable.connect() as connection:
                context.configure(connection=connection,
                                  target_metadata=target_metadata,
                                  transaction_per_migration=True)
                with context.begin_transaction():
                    context.run_migrations()
            connectable.dispose()


        if context.is_offline_mode():
            raise SystemExit("offline mode not used by these tests")
        run_migrations_online()
        """,
    "script.py.mako": """\
        \"\"\"${message}\"\"\"
        from alembic import op
        import sqlalchemy as sa

        revision = ${repr(up_revision)}
        down_revision = ${repr(down_revision)}
        branch_labels = None
        depends_on = None


        def upgrade():
            ${upgrades if upgrades else "pass"}


        def downgrade():
            ${downgrades if downgrades else "pass"}
        """,
    "versions/1a2b3c4d5e6f_accounts.py": """\
        \"\"\"create accounts\"\"\"
        from alembic import op
        import sqlalchemy as sa

        revision = "1a2b3c4d5e6f"
        down_revision = None
        branch_labels = None
        depends_on = None


        def upgrade():
            accounts = op.create_table(
                "accounts",
                sa.Column("id", sa.Integer, primary_key=True),
                sa.Column("email", sa.String(120), nullable=False, unique=True),
                sa.Column("created_at", sa.DateTime, nullable=False,
                          server_default=sa.text("'2024-01-01 00:00:00'")),
            )
            op.create_index("ix_accounts_created_at", "accounts", ["created_at"])
            op.bulk_insert(accounts, [
                {"id": 1, "email": "alice@example.com"},
                {"id": 2, "email": "bob@example.com"},
            ])


        def downgrade():
            op.drop_index("ix_accounts_created_at", table_name="accounts")
            op.drop_table("accounts")
        """,
    "versions/2b3c4d5e6f70_orders.py": """\
        \"\"\"create orders with an enum\"\"\"
        from alembic import op
        import sqlalchemy as sa

        revision = "2b3c4d5e6f70"
        down_revision = "1a2b3c4d5e6f"
        branch_labels = None
        depends_on = None

        status = sa.Enum("new", "paid", "void", name="order_status")


        def upgrade():
            orders = op.create_table(
                "orders",
                sa.Column("id", sa.Integer, primary_key=True),
                sa.Column("account_id", sa.Integer,
                          sa.ForeignKey("accounts.id", name="fk_orders_account"),
                          nullable=False),
                sa.Column("amount", sa.Numeric(10, 2), nullable=False),
                sa.Column("status", status, nullable=False, server_default="new"),
                sa.CheckConstraint("amount >= 0", name="ck_orders_amount"),
            )
            op.bulk_insert(orders, [
                {"id": 1, "account_id": 1, "amount": 10.5, "status": "paid"},
                {"id": 2, "account_id": 2, "amount": 0, "status": "new"},
                {"id": 3, "account_id": 1, "amount": 99.99, "status": "void"},
            ])


        def downgrade():
            op.drop_table("orders")
            status.drop(op.get_bind(), checkfirst=False)
        """,
    "versions/3c4d5e6f7081_display_name.py": """\
        \"\"\"display name, wider email, a view\"\"\"
        from alembic import op
        import sqlalchemy as sa

        revision = "3c4d5e6f7081"
        down_revision = "2b3c4d5e6f70"
        branch_labels = None
        depends_on = None


        def upgrade():
            op.add_column("accounts", sa.Column("display_name", sa.String(80)))
            op.execute("UPDATE accounts SET display_name = initcap(split_part(email, '@', 1))")
            op.alter_column("accounts", "email", type_=sa.String(200),
                            existing_type=sa.String(120), existing_nullable=False)
            op.execute(
                "CREATE VIEW account_totals AS "
                "SELECT a.id, a.email, coalesce(sum(o.amount), 0) AS total "
                "FROM accounts a LEFT JOIN orders o ON o.account_id = a.id "
                "GROUP BY a.id, a.email")


        def downgrade():
            op.execute("DROP VIEW account_totals")
            op.alter_column("accounts", "email", type_=sa.String(120),
                            existing_type=sa.String(200), existing_nullable=False)
            op.drop_column("accounts", "display_name")
        """,
}


def write_alembic_project(directory: Path) -> Path:
    for rel, text in ALEMBIC_FILES.items():
        p = directory / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text))
    return directory


# ---------------------------------------------------------------------------
# running workloads


class WorkloadRun:
    def __init__(self, name, label, res):
        self.name, self.label = name, label
        self.rc, self.stdout, self.stderr = res
        m = ANNOUNCE_RE.search(self.stderr)
        self.pid = int(m.group(2)) if m else None
        self.shim_mapped = (m.group(3) == "1") if m else None
        self.result = None

    def describe(self):
        return (f"[{self.name} / {self.label}] rc={self.rc}\n"
                f"--- stderr (tail) ---\n{self.stderr[-6000:]}\n"
                f"--- stdout (tail) ---\n{self.stdout[-3000:]}")

    def check_ok(self):
        assert self.rc == 0, f"workload failed\n{self.describe()}"
        assert self.pid is not None, \
            f"workload did not announce itself\n{self.describe()}"
        try:
            self.result = json.loads(self.stdout)
        except ValueError as e:
            pytest.fail(f"stdout is not one JSON document ({e})\n"
                        f"{self.describe()}", pytrace=False)
        unexpected = self.result.get("_unexpected")
        assert not unexpected, (
            f"[{self.name} / {self.label}] unexpected exceptions in steps:\n"
            + json.dumps(unexpected, indent=1))
        return self.result


def _empty_cwd(alembic_dir):
    d = Path(alembic_dir).parent / "workload_cwd"
    d.mkdir(exist_ok=True)
    return d


def run_workload(name, db, preload, alembic_dir, extra_env=None, label=None):
    env = dict(db.env)
    env["WORKLOAD_ALEMBIC_DIR"] = str(alembic_dir)
    env.update(extra_env or {})
    # cwd: an empty directory, so that no ./migshim.conf (which the shim
    # reads) or ./alembic.ini of the caller's checkout can change behaviour
    res = run_py(WORKLOADS_DIR / f"{name}.py", env_extra=env, preload=preload,
                 cwd=_empty_cwd(alembic_dir))
    return WorkloadRun(name, label or ("preload" if preload else "plain"), res)


def assert_same(name, expected, got, what):
    if expected == got:
        return
    a = json.dumps(expected, indent=1, sort_keys=True).splitlines()
    b = json.dumps(got, indent=1, sort_keys=True).splitlines()
    diff = list(difflib.unified_diff(a, b, "without preload", what, lineterm="",
                                     n=4))
    shown = "\n".join(diff[:300])
    if len(diff) > 300:
        shown += f"\n... ({len(diff) - 300} more diff lines)"
    pytest.fail(f"[{name}] results differ: without preload vs {what}\n{shown}",
                pytrace=False)


@pytest.fixture(scope="session")
def alembic_dir(tmp_path_factory):
    return write_alembic_project(tmp_path_factory.mktemp("alembic_project"))


@pytest.fixture(scope="session")
def baselines(db_factory, alembic_dir):
    """Lazily computed result of each workload without the preload
    (each run in its own fresh database, dropped right after)."""
    cache = {}

    def get(name):
        if name not in cache:
            db = db_factory.create(prefix="migshim_base")
            try:
                run = run_workload(name, db, preload=False,
                                   alembic_dir=alembic_dir,
                                   extra_env={"MIGSHIM_LOG": "debug"})
            finally:
                db_factory.drop(db.name)
            check_plain(run)
            cache[name] = run.result
        return cache[name]
    return get


def check_plain(run):
    run.check_ok()
    assert run.shim_mapped is False, \
        f"shim mapped without LD_PRELOAD?\n{run.describe()}"
    lines = migshim_lines(run.stderr)
    assert not lines, ("migshim output without the preload:\n"
                       + "\n".join(lines[:20]))


PARAMS = sorted(WORKLOADS)


@pytest.mark.parametrize("name", PARAMS)
def test_baseline_deterministic(name, baselines, make_db, alembic_dir):
    first = baselines(name)
    run = run_workload(name, make_db(), preload=False, alembic_dir=alembic_dir,
                       extra_env={"MIGSHIM_LOG": "debug"}, label="plain#2")
    check_plain(run)
    assert_same(name, first, run.result, "second run without preload")


@pytest.mark.parametrize("name", PARAMS)
def test_preload_transparent(name, baselines, make_db, alembic_dir):
    migshim_lib = require_migshim_lib()  # fails (not skips) when not built
    expected = baselines(name)
    run = run_workload(name, make_db(), preload=True, alembic_dir=alembic_dir,
                       extra_env={"MIGSHIM_LOG": "debug"})
    run.check_ok()
    assert run.shim_mapped is True, \
        f"{migshim_lib} is not mapped in the workload process\n{run.describe()}"

    # no problems reported by the shim
    problems = migshim_problems(run.stderr)
    assert not problems, ("migshim reported errors/warnings:\n"
                          + "\n".join(problems[:30]))

    # interception really happened, in this process, to the driver's libpq
    calls = migshim_first_calls(run.stderr)
    ours = {(fn, so) for pid, fn, so in calls if pid == run.pid}
    reached = sorted(fn for fn, so in ours if so == EXPECTED_SONAME)
    missing = [alts for alts in WORKLOADS[name]
               if not any(fn in reached for fn in alts)]
    assert not missing, (
        f"[{name}] no 'migshim[{run.pid}]: debug: FN -> {EXPECTED_SONAME} "
        f"(first call)' line for {[' or '.join(a) for a in missing]}; "
        f"first calls seen: {sorted(set(calls))}\n{run.describe()}")

    # "first call" means once per function and libpq copy
    dups = [k for k, n in Counter(calls).items() if n > 1]
    assert not dups, f"[{name}] repeated first-call lines: {dups}"

    assert_same(name, expected, run.result, "with preload")


@pytest.mark.parametrize("name", PARAMS)
def test_disable_transparent(name, baselines, make_db, alembic_dir):
    migshim_lib = require_migshim_lib()  # fails (not skips) when not built
    expected = baselines(name)
    run = run_workload(name, make_db(), preload=True, alembic_dir=alembic_dir,
                       extra_env={"MIGSHIM_DISABLE": "1",
                                  "MIGSHIM_LOG": "debug"},
                       label="preload+MIGSHIM_DISABLE=1")
    run.check_ok()
    # the library is loaded (so the test is meaningful) but stays silent
    assert run.shim_mapped is True, \
        f"{migshim_lib} is not mapped in the workload process\n{run.describe()}"
    lines = migshim_lines(run.stderr)
    assert not lines, ("migshim printed lines despite MIGSHIM_DISABLE=1:\n"
                       + "\n".join(lines[:30]))
    assert_same(name, expected, run.result, "with preload + MIGSHIM_DISABLE=1")
