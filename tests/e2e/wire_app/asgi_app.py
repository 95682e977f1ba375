"""A FastAPI app whose every worker migrates at start-up through asyncpg.

The start-up event runs `alembic upgrade head` with Alembic's async env.py on
the worker's own event loop (Alembic's cookbook recipe for asyncio: the app's
AsyncEngine, postgresql+asyncpg://, NullPool; conn.run_sync(upgrade)), as a
FastAPI app that migrates at boot does.  Served by gunicorn
`-k uvicorn.workers.UvicornWorker` (uvloop) or `uvicorn --workers N`.

For the tests (tests/e2e/test_wire_fleet.py):
* WIRE_BARRIER_DIR, WIRE_BARRIER_N: a start line.  Each worker leaves a file
  there and waits (asynchronously) until N are there, just before its first
  statement: the N migrations start together, every time.
* a ticker task wakes every 5 ms and records the event loop's gaps from the
  moment the worker opens its migration connection until its migration is
  over; stall_ms is the longest.  The wait for the leader happens inside one
  database operation (the connect with SQLAlchemy's first statements, or one
  statement): SQLAlchemy's events mark where each begins and ends, the longest
  interval between two marks is the wait (a waiter's) or pg_sleep (the
  leader's), db_s its length and wait_stall_ms the longest time the loop went
  without ticking within it: a gap that began inside the operation, counted up
  to its end.  A gap already going on when the operation began is the app's
  own work before it (in the fleets, create_async_engine and SQLAlchemy's
  connect of 8 workers leaving the start line together on 2 cores: 40-175 ms,
  which wait_stall_ms once counted whole); it and the rest of
  stall_ms is the app's own CPU work (Alembic, 8 workers on 2 cores).  The
  operation is the whole connect: besides the wait, the handshake before the
  gate holds the first statement and SQLAlchemy's dialect set-up after it;
* one line per worker on stderr, in one write:
    wire-app[PID]: ready stall_ms=X wait_stall_ms=W db_s=D migrate_s=Y
    wire-app[PID]: migration failed: stall_ms=X Type: message

Environment: DATABASE_URL (postgresql+asyncpg://...), WIRE_BARRIER_DIR,
WIRE_BARRIER_N, WIRE_BARRIER_TIMEOUT (s, default 60).
GET /ready: 200 once alembic_version holds this code's heads, 503 otherwise.
"""
import asyncio
import os
import time
import traceback

import startline  # (the app folder is the workers' working directory)

import sqlalchemy as sa
from sqlalchemy import event
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

HERE = os.path.dirname(os.path.abspath(__file__))
DATABASE_URL = os.environ["DATABASE_URL"]
TICK = 0.005


def say(msg: str) -> None:
    # one line in one write: the workers share stderr
    os.write(2, f"wire-app[{os.getpid()}]: {msg}\n".encode())


def alembic_config() -> Config:
    return Config(os.path.join(HERE, "alembic.ini"))


HEADS = sorted(ScriptDirectory.from_config(alembic_config()).get_heads())
app = FastAPI(title="migshim wire fleet app")
engine = None     # the app's own engine for /ready, made at start-up


class Ticker:
    """The gaps between two wake-ups of a 5 ms ticker while on."""

    def __init__(self):
        self.on = False
        self.gaps = []          # (end, length), every one while on
        self.last = time.monotonic()

    async def run(self):
        while True:
            await asyncio.sleep(TICK)
            now = time.monotonic()
            if self.on:
                self.gaps.append((now, now - self.last))
            self.last = now

    def stop(self) -> float:
        """The longest gap, in ms."""
        if self.on:   # a stall still going on when the window closes counts too
            now = time.monotonic()
            self.gaps.append((now, now - self.last))
        self.on = False
        return max((g for _, g in self.gaps), default=0.0) * 1000.0

    def longest_within(self, a: float, b: float) -> float:
        """The longest the loop went without ticking within [a, b], in ms: each
        gap that began in it, up to its end or b.  A gap going on at `a`
        began with the loop busy before the operation (the app's own work:
        the ticker could not even see the operation start) and is left out;
        a wait that blocks the loop begins inside it (at the operation's
        first statement, after its connect's first await) and counts."""
        return max((min(end, b) - (end - g) for end, g in self.gaps if a <= end - g < b),
                   default=0.0) * 1000.0


def mark_db_operations(sync_engine, marks) -> None:
    """Append the time to `marks` where each database operation of the
    engine begins and ends: the connect (with the dialect's first statements)
    and every statement."""
    def mark(*_args, **_kw):
        marks.append(time.monotonic())
    for name in ("do_connect", "connect", "before_cursor_execute", "after_cursor_execute"):
        event.listen(sync_engine, name, mark)


async def start_line() -> None:
    line = startline.arrive()
    while startline.still_waiting(line, say):
        await asyncio.sleep(0.01)


def upgrade(connection, cfg: Config) -> None:
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, "head")


@app.on_event("startup")
async def migrate_at_startup() -> None:
    global engine
    ticker = Ticker()
    task = asyncio.get_running_loop().create_task(ticker.run())
    try:
        await start_line()
        await asyncio.sleep(2 * TICK)       # the ticker is running
        t0 = time.monotonic()
        ticker.last, ticker.on = t0, True
        migration_engine = create_async_engine(DATABASE_URL, poolclass=NullPool)
        marks = [t0]
        mark_db_operations(migration_engine.sync_engine, marks)
        try:
            async with migration_engine.begin() as conn:
                await conn.run_sync(upgrade, alembic_config())
        finally:
            await migration_engine.dispose()
        stall = ticker.stop()
        marks.append(time.monotonic())
        db_s, a, b = max((b - a, a, b) for a, b in zip(marks, marks[1:]))
        say(f"ready stall_ms={stall:.1f} wait_stall_ms={ticker.longest_within(a, b):.1f} "
            f"db_s={db_s:.3f} migrate_s={time.monotonic() - t0:.3f}")
    except Exception as exc:
        stall = ticker.stop()
        msg = f"{type(exc).__name__}: {exc}".strip().replace("\n", " ")
        say(f"migration failed: stall_ms={stall:.1f} {msg}")
        traceback.print_exc()
        raise
    finally:
        task.cancel()
    engine = create_async_engine(DATABASE_URL, pool_size=2)


@app.get("/ready")
async def ready():
    try:
        async with engine.connect() as conn:
            version = sorted(r[0] for r in await conn.execute(
                sa.text("SELECT version_num FROM alembic_version")))
    except sa.exc.DBAPIError as exc:
        return JSONResponse({"ready": False, "error": str(exc.orig).strip(),
                             "pid": os.getpid()}, status_code=503)
    ok = version == HEADS
    return JSONResponse({"ready": ok, "version": version, "heads": HEADS,
                         "pid": os.getpid()}, status_code=200 if ok else 503)
