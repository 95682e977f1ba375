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
* the ticker also reads its thread's /proc/thread-self/schedstat at every
  tick: run_delay, the time the thread was runnable but waiting for a CPU
  (8 workers, the leader's Alembic and the server on 2 cores), which no gate
  can avoid.  wait_stall_own_ms is the longest of (gap - the run_delay
  accrued within it) over the same gaps as wait_stall_ms (each no longer
  than its part up to the operation's end): the time the loop's thread
  itself spent, running or blocked in a syscall or futex (the shim's
  wrappers; over TLS, waiting for the gate thread), the ticker's own 5 ms
  sleep included (its floor: a gap is the time between two wake-ups).
  wait_stall_own_cpu_ms is that gap's time on a CPU; the rest of its own
  time the thread was blocked or asleep;
* one line per worker on stderr, in one write:
    wire-app[PID]: ready stall_ms=X wait_stall_ms=W db_s=D migrate_s=Y wait_stall_own_ms=O wait_stall_own_cpu_ms=C
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
    """The gaps between two wake-ups of a 5 ms ticker while on, each with
    the time its loop thread spent waiting for a CPU within it.

    Made on the loop's own thread: it opens that thread's
    /proc/thread-self/schedstat (ns on a CPU, ns runnable on a runqueue
    waiting for one = run_delay, timeslices) and reads it again, with one
    pread, at every tick.  The kernel adds a wait on the runqueue to
    run_delay when the thread gets the CPU, so a read made by the running
    thread at a tick holds every wait of the gap that ended there."""

    def __init__(self):
        self.on = False
        self.gaps = []          # (end, length, run_delay, on_cpu) in s, every one while on
        try:
            self.fd = os.open("/proc/thread-self/schedstat", os.O_RDONLY)
        except OSError:         # no schedstat (CONFIG_SCHED_INFO off): own = gap
            self.fd = None
        self.last = time.monotonic()
        self.last_cpu, self.last_delay = self.schedstat()

    def schedstat(self):
        """(on-CPU s, run_delay s) of the loop thread so far."""
        if self.fd is None:
            return 0.0, 0.0
        cpu, delay, _ = os.pread(self.fd, 64, 0).split()
        return int(cpu) / 1e9, int(delay) / 1e9

    def tick(self) -> None:
        now = time.monotonic()
        cpu, delay = self.schedstat()
        if self.on:
            self.gaps.append((now, now - self.last, delay - self.last_delay,
                              cpu - self.last_cpu))
        self.last, self.last_cpu, self.last_delay = now, cpu, delay

    async def run(self):
        while True:
            await asyncio.sleep(TICK)
            self.tick()

    def start(self) -> float:
        """On from now; returns now."""
        self.tick()
        self.on = True
        return self.last

    def stop(self) -> float:
        """The longest gap, in ms."""
        if self.on:   # a stall still going on when the window closes counts too
            self.tick()
        self.on = False
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        return max((g for _, g, _, _ in self.gaps), default=0.0) * 1000.0

    def within(self, a: float, b: float):
        """The gaps that began within [a, b], each as (its length up to b,
        its length, run_delay, on-CPU), in s.  A gap going on at `a` began
        with the loop busy before the operation (the app's own work: the
        ticker could not even see the operation start) and is left out; a
        wait that blocks the loop begins inside it (at the operation's first
        statement, after its connect's first await) and counts."""
        return [(min(end, b) - (end - g), g, d, c) for end, g, d, c in self.gaps
                if a <= end - g < b]

    def longest_within(self, a: float, b: float) -> float:
        """The longest the loop went without ticking within [a, b], in ms:
        each gap that began in it, up to its end or b."""
        return max((w for w, _, _, _ in self.within(a, b)), default=0.0) * 1000.0

    def longest_own_within(self, a: float, b: float):
        """The longest stall within [a, b] not explained by the loop thread
        waiting for a CPU, in ms: of each gap that began in it, its length
        less the run_delay accrued in it, and no more than its length up to
        b (of a gap that outlasts b, the part up to b could hold none of its
        run_delay); with the on-CPU time of that gap, in ms."""
        own = [(min(w, g - d), c) for w, g, d, c in self.within(a, b)]
        o, c = max(own, default=(0.0, 0.0))
        return max(o, 0.0) * 1000.0, c * 1000.0


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
        t0 = ticker.start()
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
        own, own_cpu = ticker.longest_own_within(a, b)
        say(f"ready stall_ms={stall:.1f} wait_stall_ms={ticker.longest_within(a, b):.1f} "
            f"db_s={db_s:.3f} migrate_s={time.monotonic() - t0:.3f} "
            f"wait_stall_own_ms={own:.1f} wait_stall_own_cpu_ms={own_cpu:.1f}")
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
