"""Alembic's stock online env.py (NullPool), with the URL from $DATABASE_URL.

Two changes from `alembic init`'s template, both ordinary in real apps
(and one hook for the demo, off unless asked for):

* the database URL comes from the environment;
* fileConfig(..., disable_existing_loggers=False): the stock call disables
  every logger that already exists, which inside a Gunicorn worker (or a
  --preload master) silences Gunicorn's own "gunicorn.error" logger, so a
  worker that then fails to boot dies without its traceback (inside a
  Uvicorn worker, the fastapi-uvicorn example, "uvicorn.error" likewise);
* (demo only) MIGRATION_BARRIER_DIR with MIGRATION_BARRIER_N: a start line.
  Each process leaves a file in the directory and waits, before it opens its
  migration connection, until N processes are there (at most
  MIGRATION_BARRIER_TIMEOUT seconds, default 20): the N migrations then
  start together, so an unguarded fleet races every time (make demo).
"""
import os
import sys
import time
from logging.config import fileConfig

from sqlalchemy import engine_from_config
from sqlalchemy import pool

from alembic import context

# this is the Alembic Config object, which provides
# access to the values within the .ini file in use.
config = context.config

if os.environ.get("DATABASE_URL"):
    # configparser interpolates '%': escape it
    config.set_main_option("sqlalchemy.url",
                           os.environ["DATABASE_URL"].replace("%", "%%"))

# Interpret the config file for Python logging.
# This line sets up loggers basically.
if config.config_file_name is not None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)

# add your model's MetaData object here
# for 'autogenerate' support
target_metadata = None


def run_migrations_offline() -> None:
    """Run migrations in 'offline' mode (emit SQL to stdout)."""
    url = config.get_main_option("sqlalchemy.url")
    context.configure(
        url=url,
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )

    with context.begin_transaction():
        context.run_migrations()


def start_line() -> None:
    """The demo's barrier (MIGRATION_BARRIER_DIR / MIGRATION_BARRIER_N)."""
    where = os.environ.get("MIGRATION_BARRIER_DIR")
    if not where:
        return
    n = int(os.environ.get("MIGRATION_BARRIER_N", "1"))
    timeout = float(os.environ.get("MIGRATION_BARRIER_TIMEOUT", "20"))
    open(os.path.join(where, f"{os.getpid()}.arrived"), "w").close()
    deadline = time.monotonic() + timeout
    while len(os.listdir(where)) < n:
        if time.monotonic() > deadline:
            # one line in one write: the workers share stderr
            sys.stderr.write(f"flask-alembic[{os.getpid()}]: barrier: "
                             f"{len(os.listdir(where))} of {n} processes "
                             f"arrived in {timeout:g} s; going on\n")
            sys.stderr.flush()
            return
        time.sleep(0.01)


def run_migrations_online() -> None:
    """Run migrations in 'online' mode: one connection, one transaction."""
    start_line()
    connectable = engine_from_config(
        config.get_section(config.config_ini_section),
        prefix="sqlalchemy.",
        poolclass=pool.NullPool,
    )

    with connectable.connect() as connection:
        context.configure(
            connection=connection, target_metadata=target_metadata
        )

        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
