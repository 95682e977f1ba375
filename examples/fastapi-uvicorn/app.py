"""The "migrate at start-up" app, FastAPI + Uvicorn flavour.

Every process that imports this module runs `alembic upgrade head` when
RUN_DB_MIGRATIONS_ON_STARTUP=true.  With `uvicorn app:app --workers N` the
parent process only binds the socket; each of the N workers (started with
multiprocessing's "spawn") imports the app itself, so all N migrate at the
same moment.  With LD_PRELOAD=libmigshim.so one of them migrates and the
others wait, then find nothing to do.

Environment:
  DATABASE_URL                   SQLAlchemy URL (required)
  RUN_DB_MIGRATIONS_ON_STARTUP   "true" to migrate at import
  MIGRATION_SLEEP                seconds each revision sleeps (default 0.2)

Routes:
  /ready   200 {"ready": true, "version": [...], "pid": N} once the database
           is at this code's heads, 503 otherwise
  /        {"app": "fastapi-uvicorn", "pid": N}
"""
import os
import sys
import traceback

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from fastapi import FastAPI
from fastapi.responses import JSONResponse

HERE = os.path.dirname(os.path.abspath(__file__))
DATABASE_URL = os.environ["DATABASE_URL"]


def alembic_config() -> Config:
    return Config(os.path.join(HERE, "alembic.ini"))


def run_migrations() -> None:
    try:
        command.upgrade(alembic_config(), "head")
    except Exception as exc:
        # One line of our own: Uvicorn 0.17's parent does not notice a worker
        # that dies while importing the app (it keeps serving with fewer
        # workers), so this line may be the only trace of it.
        # one line in one write: the workers share stderr
        msg = f"{type(exc).__name__}: {exc}".strip().replace("\n", " ")
        sys.stderr.write(f"fastapi-uvicorn[{os.getpid()}]: migration failed: {msg}\n")
        sys.stderr.flush()
        traceback.print_exc()
        raise


if os.environ.get("RUN_DB_MIGRATIONS_ON_STARTUP", "").lower() == "true":
    run_migrations()

HEADS = sorted(ScriptDirectory.from_config(alembic_config()).get_heads())
engine = sa.create_engine(DATABASE_URL, pool_pre_ping=True)
app = FastAPI(title="fastapi-uvicorn migshim example")


# Plain `def` routes: FastAPI runs them in its thread pool, so the blocking
# psycopg2 calls do not stall the event loop.
@app.get("/ready")
def ready():
    try:
        with engine.connect() as conn:
            version = sorted(r[0] for r in conn.execute(
                sa.text("SELECT version_num FROM alembic_version")))
    except sa.exc.DBAPIError as exc:
        return JSONResponse({"ready": False, "error": str(exc.orig).strip(),
                             "pid": os.getpid()}, status_code=503)
    ok = version == HEADS
    return JSONResponse({"ready": ok, "version": version, "heads": HEADS,
                         "pid": os.getpid()}, status_code=200 if ok else 503)


@app.get("/")
def index():
    return {"app": "fastapi-uvicorn", "pid": os.getpid()}
