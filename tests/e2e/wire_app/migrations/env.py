"""Alembic 1.8's async template env.py (`alembic init -t async`), with the
changes real apps make to it:

* the database URL comes from $DATABASE_URL (postgresql+asyncpg://...);
* fileConfig(..., disable_existing_loggers=False): the stock call silences
  the loggers that already exist (a worker's "uvicorn.error", "gunicorn.error");
* Alembic's cookbook recipe "Programmatic API use (connection sharing) With
  Asyncio": when the app hands a connection in config.attributes["connection"]
  (asgi_app.py does, from its start-up event, on the worker's own event loop)
  the migrations run on it; otherwise (the `alembic` command) the template's
  asyncio.run() with its own NullPool engine.
"""
import asyncio
import os
from logging.config import fileConfig

from sqlalchemy import engine_from_config
from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from alembic import context

config = context.config

if os.environ.get("DATABASE_URL"):
    # configparser interpolates '%': escape it
    config.set_main_option("sqlalchemy.url",
                           os.environ["DATABASE_URL"].replace("%", "%%"))

if config.config_file_name is not None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = None


def run_migrations_offline() -> None:
    url = config.get_main_option("sqlalchemy.url")
    context.configure(
        url=url,
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )

    with context.begin_transaction():
        context.run_migrations()


def do_run_migrations(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata)

    with context.begin_transaction():
        context.run_migrations()


async def run_migrations_online() -> None:
    connectable = AsyncEngine(
        engine_from_config(
            config.get_section(config.config_ini_section),
            prefix="sqlalchemy.",
            poolclass=pool.NullPool,
            future=True,
        )
    )

    async with connectable.connect() as connection:
        await connection.run_sync(do_run_migrations)

    await connectable.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    shared = config.attributes.get("connection")
    if shared is None:
        asyncio.run(run_migrations_online())
    else:
        do_run_migrations(shared)
