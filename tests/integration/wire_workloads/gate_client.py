"""A client for the wire gate's tests (tests/integration/test_wire_gate.py):
asyncpg (asyncio or uvloop) or pg8000, over a Unix socket or TCP.

    /usr/bin/python3 gate_client.py DRIVER TRANSPORT LOOP ROLE

DRIVER asyncpg|pg8000, TRANSPORT unix|tcp|tls (tls: TCP with ssl, the server's
certificate not verified), LOOP asyncio|uvloop (asyncpg
only; "-" for pg8000), ROLE:

    lead     the first statement (the gate runs before it), its results;
             then wait for the file $GATE_BARRIERS/commit, create the
             version table at $TARGET_REV and commit; one more statement
             (the advisory locks its backend holds: {"ev": "after"}); then
             wait for $GATE_BARRIERS/close and close the connection
    lead_notify  pg8000 only: as lead, with LISTEN ch after the results,
             and, after the commit, a wait for $GATE_BARRIERS/notified
             before the next statement ({"ev": "after"} has the
             channels of the notifications the driver received)
    plain    the first statement and its results, then close
    pool     asyncpg only: a pool of 3, each connection's first statement at
             once ({"ev": "pool", "values": [0, 1, 2]})
    close    asyncpg only: the first statement in a task; when the file
             $GATE_BARRIERS/close exists, the connection is closed under it
             (the task cancelled); then the process opens a socketpair and
             a file, checks they work, and a fresh connection to the
             database runs a statement

GATE_STATEMENT_CACHE, when set, is asyncpg's statement_cache_size (0
behind PgBouncer in transaction mode, as its users set it).  PGPASSWORD,
when set, is the password both drivers are given (pg8000 1.10.6 does not
read the environment; asyncpg gets it explicitly too).

It prints JSON lines on stdout: {"ev": "first", "pid": backend pid} as soon
as the first statement answered, {"ev": "results", ...} with the
statements' results (the same with and without the preload: nothing of the
backend pid or the time in them), and, for asyncpg, {"ev": "stall",
"max_ms": ...}: the longest gap a 5 ms ticker task saw from the connect to
the first statement's answer (the event loop's longest stall).  Nothing
here knows about migshim.
"""

import json
import os
import socket
import sys
import tempfile
import time

DRIVER, TRANSPORT, LOOP, ROLE = sys.argv[1:5]
BARRIERS = os.environ.get("GATE_BARRIERS", ".")
TARGET = os.environ.get("TARGET_REV", "r1")
PGHOST, PGPORT = os.environ["PGHOST"], int(os.environ["PGPORT"])
PGUSER, PGDATABASE = os.environ["PGUSER"], os.environ["PGDATABASE"]
SSL = "require" if TRANSPORT == "tls" else False  # (asyncpg: encrypted, not verified)
PASSWORD = ({"password": os.environ["PGPASSWORD"]}
            if os.environ.get("PGPASSWORD") is not None else {})
CACHE = ({"statement_cache_size": int(os.environ["GATE_STATEMENT_CACHE"])}
         if os.environ.get("GATE_STATEMENT_CACHE") else {})

# The statements whose results are compared with and without the preload.
CHECKS = [
    "SELECT 1 AS one, 'two'::text AS two, NULL::int AS three, 2.5::numeric AS four",
    "SHOW lock_timeout",
    "SHOW statement_timeout",
    "SELECT current_setting('application_name')",
    "SELECT count(*) FROM pg_catalog.pg_locks WHERE locktype = 'advisory' "
    "AND pid = pg_backend_pid() AND NOT granted",
    "SELECT pg_catalog.pg_try_advisory_lock(77), pg_catalog.pg_advisory_unlock(77)",
    "SELECT 1/0",
]


OWN_LOCKS = ("SELECT count(*) FROM pg_catalog.pg_locks WHERE locktype = 'advisory' "
             "AND pid = pg_backend_pid()")


def emit(ev, **kw):
    kw["ev"] = ev
    sys.stdout.write(json.dumps(kw, default=str, sort_keys=True) + "\n")
    sys.stdout.flush()


def wait_file(name, timeout=60):
    path = os.path.join(BARRIERS, name)
    end = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > end:
            emit("timeout", barrier=name)
            sys.exit(90)
        time.sleep(0.01)


def create_target_sql():
    return ["CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL, "
            "CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))",
            "INSERT INTO alembic_version (version_num) VALUES ('%s')" % TARGET]


def after_close_checks():
    """fds are numbers: after the app closed a held connection, new ones
    must work as the app expects (the gate never touches a reused one)."""
    a, b = socket.socketpair()
    a.sendall(b"ping")
    got = b.recv(4)
    with tempfile.TemporaryFile() as f:
        f.write(b"data")
        f.seek(0)
        data = f.read()
    a.close()
    b.close()
    return {"socketpair": got.decode(), "file": data.decode()}


# --- pg8000 ---------------------------------------------------------------------

def run_pg8000():
    import pg8000
    kw = dict(user=PGUSER, database=PGDATABASE, **PASSWORD)
    if TRANSPORT == "unix":
        kw["unix_sock"] = os.path.join(PGHOST, ".s.PGSQL.%d" % PGPORT)
    else:
        kw["host"], kw["port"] = "127.0.0.1", PGPORT
    if TRANSPORT == "tls":
        kw["ssl"] = True
    c = pg8000.connect(**kw)
    c.autocommit = True
    cur = c.cursor()
    cur.execute("SELECT pg_backend_pid()")
    emit("first", pid=cur.fetchone()[0])
    results = []
    for sql in CHECKS:
        try:
            cur.execute(sql)
            rows = cur.fetchall() if cur.description else None
            results.append({"sql": sql, "rows": [list(r) for r in rows] if rows else rows,
                            "cols": [d[0] for d in cur.description] if cur.description else None})
        except Exception as e:  # the driver's own error, as the app sees it
            results.append({"sql": sql, "error": type(e).__name__,
                            "code": (e.args[0].get("C") if e.args and isinstance(e.args[0], dict)
                                     else str(e))})
    emit("results", results=results)
    if ROLE in ("lead", "lead_notify"):
        if ROLE == "lead_notify":
            cur.execute("LISTEN ch")
        wait_file("commit")
        c.autocommit = False
        for sql in create_target_sql():
            cur.execute(sql)
        c.commit()
        emit("committed")
        if ROLE == "lead_notify":
            wait_file("notified")
        c.autocommit = True
        cur.execute(OWN_LOCKS)  # the next statement after the transaction
        emit("after", own_locks=cur.fetchone()[0],
             notifications=[n[1] for n in c.notifies])
        wait_file("close")
    c.close()
    emit("closed")


# --- asyncpg --------------------------------------------------------------------

async def connect_asyncpg():
    import asyncpg
    host = PGHOST if TRANSPORT == "unix" else "127.0.0.1"
    return await asyncpg.connect(host=host, port=PGPORT, user=PGUSER, database=PGDATABASE,
                                 ssl=SSL, **PASSWORD, **CACHE)


async def run_asyncpg():
    import asyncio
    state = {"max": 0.0, "stop": False}

    async def ticker():
        last = time.monotonic()
        while not state["stop"]:
            await asyncio.sleep(0.005)
            now = time.monotonic()
            state["max"] = max(state["max"], now - last)
            last = now

    tick = asyncio.ensure_future(ticker())
    if ROLE == "pool":
        import asyncpg
        host = PGHOST if TRANSPORT == "unix" else "127.0.0.1"
        pool = await asyncpg.create_pool(host=host, port=PGPORT, user=PGUSER,
                                         database=PGDATABASE, ssl=SSL, min_size=3, max_size=3,
                                         **PASSWORD, **CACHE)
        conns = [await pool.acquire() for _ in range(3)]
        got = await asyncio.gather(*(c.fetchval("SELECT %d" % i) for i, c in enumerate(conns)))
        state["stop"] = True
        await tick
        emit("pool", values=list(got))
        emit("stall", max_ms=round(state["max"] * 1000, 1))
        for c in conns:
            await pool.release(c)
        await pool.close()
        return
    c = await connect_asyncpg()
    if ROLE == "close":
        task = asyncio.ensure_future(c.fetchval("SELECT pg_backend_pid()"))
        while not os.path.exists(os.path.join(BARRIERS, "close")):
            await asyncio.sleep(0.01)
        emit("closing", done=task.done())
        c.terminate()
        try:
            await asyncio.wait_for(task, 10)
            emit("first_after_close", outcome="answered")
        except BaseException as e:  # whatever asyncpg raises for a closed connection
            emit("first_after_close", outcome=type(e).__name__)
        state["stop"] = True
        await tick
        emit("after_close", **after_close_checks())
        c2 = await connect_asyncpg()
        emit("fresh", value=await c2.fetchval("SELECT 41 + 1"))
        await c2.close()
        return
    pid = await c.fetchval("SELECT pg_backend_pid()")
    state["stop"] = True
    await tick
    emit("first", pid=pid)
    emit("stall", max_ms=round(state["max"] * 1000, 1))
    results = []
    for sql in CHECKS:
        try:
            rows = await c.fetch(sql)
            results.append({"sql": sql, "rows": [list(r.values()) for r in rows],
                            "cols": list(rows[0].keys()) if rows else None})
        except Exception as e:
            results.append({"sql": sql, "error": type(e).__name__,
                            "code": getattr(e, "sqlstate", None)})
    emit("results", results=results)
    if ROLE == "lead":
        while not os.path.exists(os.path.join(BARRIERS, "commit")):
            await asyncio.sleep(0.01)
        async with c.transaction():
            for sql in create_target_sql():
                await c.execute(sql)
        emit("committed")
        emit("after", own_locks=await c.fetchval(OWN_LOCKS))
        while not os.path.exists(os.path.join(BARRIERS, "close")):
            await asyncio.sleep(0.01)
    await c.close()
    emit("closed")


def main():
    if DRIVER == "pg8000":
        run_pg8000()
        return
    import asyncio
    if LOOP == "uvloop":
        import uvloop
        uvloop.install()
    asyncio.run(run_asyncpg())


if __name__ == "__main__":
    main()
