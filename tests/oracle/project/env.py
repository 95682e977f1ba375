"""Alembic env.py of the oracle's project: Alembic's "sharing a connection"
recipe.

tests/oracle/runner.py opens a SQLAlchemy connection itself and passes it
in config.attributes["connection"]; Alembic then runs the migrations in a
transaction of its own on that connection and commits it, and the runner
goes on using the same connection for its later write.  Run by the alembic
command instead (no connection passed), it makes its own engine from
$DATABASE_URL, as the stock template does.
"""
import os
from logging.config import fileConfig

from alembic import context
from sqlalchemy import create_engine, pool

config = context.config
if config.config_file_name is not None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def migrate(connection):
    context.configure(connection=connection, target_metadata=None)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online():
    connection = config.attributes.get("connection")
    if connection is not None:
        migrate(connection)
        return
    engine = create_engine(os.environ["DATABASE_URL"], poolclass=pool.NullPool, future=True)
    with engine.connect() as connection:
        migrate(connection)


if context.is_offline_mode():
    raise SystemExit("the oracle's project runs online only")
run_migrations_online()
