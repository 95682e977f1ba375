"""The classic "migrate at start-up" Flask app.

Every process that imports this module (each Gunicorn worker, or the master
with --preload) runs `alembic upgrade head` when
RUN_DB_MIGRATIONS_ON_STARTUP=true.  Without coordination a fleet of workers
races on an empty database; with LD_PRELOAD=libmigshim.so one process
migrates and the others wait, then find nothing to do.

Environment:
  DATABASE_URL                   SQLAlchemy URL (required)
  RUN_DB_MIGRATIONS_ON_STARTUP   "true" to migrate at import
  GEVENT_PSYCOPG                 "1": make psycopg2 cooperative (gevent workers)
  MIGRATION_SLEEP                seconds each revision sleeps (default 0.2)

Routes:
  /ready   200 {"version": [...], "pid": N} once the database is at this
           code's heads, 503 otherwise
"""
import os
import sys
import traceback

if os.environ.get("GEVENT_PSYCOPG") == "1":
    # Before anything opens a connection: psycopg2 then waits through gevent.
    from psycogreen.gevent import patch_psycopg
    patch_psycopg()

import sqlalchemy as sa  # noqa: E402
from alembic import command  # noqa: E402
from alembic.config import Config  # noqa: E402
from alembic.script import ScriptDirectory  # noqa: E402
from flask import Flask, jsonify  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DATABASE_URL = os.environ["DATABASE_URL"]


def alembic_config() -> Config:
    return Config(os.path.join(HERE, "alembic.ini"))


def run_migrations() -> None:
    try:
        command.upgrade(alembic_config(), "head")
    except Exception as exc:
        # Say it here too: Gunicorn's own "Exception in worker process" is
        # easy to lose when the logging configuration gets replaced.
        # one line in one write: the workers share stderr
        msg = f"{type(exc).__name__}: {exc}".strip().replace("\n", " ")
        sys.stderr.write(f"flask-alembic[{os.getpid()}]: migration failed: {msg}\n")
        sys.stderr.flush()
        traceback.print_exc()
        raise


if os.environ.get("RUN_DB_MIGRATIONS_ON_STARTUP", "").lower() == "true":
    run_migrations()

HEADS = sorted(ScriptDirectory.from_config(alembic_config()).get_heads())
engine = sa.create_engine(DATABASE_URL, pool_pre_ping=True)
app = Flask(__name__)


@app.get("/ready")
def ready():
    try:
        with engine.connect() as conn:
            version = sorted(r[0] for r in conn.execute(
                sa.text("SELECT version_num FROM alembic_version")))
    except sa.exc.DBAPIError as exc:
        return jsonify(ready=False, error=str(exc.orig).strip(),
                       pid=os.getpid()), 503
    ok = version == HEADS
    return jsonify(ready=ok, version=version, heads=HEADS,
                   pid=os.getpid()), 200 if ok else 503


@app.get("/")
def index():
    return jsonify(app="flask-alembic", pid=os.getpid())
