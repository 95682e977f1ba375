"""One process that reaches one database through libpq (psycopg2) and
through asyncpg or pg8000 (tests/integration/test_wire_gate.py's
test_one_decision_across_layers).

    /usr/bin/python3 mixed_client.py DRIVER TRANSPORT ORDER

DRIVER asyncpg|pg8000, TRANSPORT unix|tcp, ORDER:

    libpq_first  psycopg2 connects first ({"ev": "libpq"}, its backend pid);
                 then the wire driver connects and runs its first statement,
                 timed ({"ev": "wire", "ms": ..., "pid": backend pid}); then
                 wait for $GATE_BARRIERS/commit, and psycopg2 creates the
                 version table at $TARGET_REV and commits
    wire_first   the wire driver connects and runs its first statement
                 ({"ev": "wire", ...}); then psycopg2 connects and runs a
                 statement, timed ({"ev": "libpq", "ms": ...}); then wait for
                 $GATE_BARRIERS/commit, and the wire connection creates the
                 version table and commits, and runs one more statement

Nothing here knows about migshim.
"""

import asyncio
import json
import os
import sys
import time

import psycopg2

DRIVER, TRANSPORT, ORDER = sys.argv[1:4]
BARRIERS = os.environ["GATE_BARRIERS"]
TARGET = os.environ.get("TARGET_REV", "r1")
PGHOST, PGPORT = os.environ["PGHOST"], int(os.environ["PGPORT"])
PGUSER, PGDATABASE = os.environ["PGUSER"], os.environ["PGDATABASE"]
HOST = PGHOST if TRANSPORT == "unix" else "127.0.0.1"
CREATE = ("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY); "
          f"INSERT INTO alembic_version VALUES ('{TARGET}')")


def emit(ev, **kw):
    print(json.dumps({"ev": ev, **kw}), flush=True)


def wait_file(name, timeout=60):
    end = time.monotonic() + timeout
    while not os.path.exists(os.path.join(BARRIERS, name)):
        if time.monotonic() > end:
            raise SystemExit(f"no barrier {name}")
        time.sleep(0.01)


def libpq_connect():
    return psycopg2.connect(host=HOST, port=PGPORT, user=PGUSER, dbname=PGDATABASE)


class Wire:
    """The wire driver's connection, its calls made synchronous."""

    def __init__(self):
        self.loop = asyncio.new_event_loop() if DRIVER == "asyncpg" else None
        if DRIVER == "asyncpg":
            import asyncpg
            self.conn = self.loop.run_until_complete(asyncpg.connect(
                host=HOST, port=PGPORT, user=PGUSER, database=PGDATABASE, ssl=False))
        else:
            import pg8000
            kw = {"unix_sock": f"{PGHOST}/.s.PGSQL.{PGPORT}"} if TRANSPORT == "unix" else \
                {"host": HOST, "port": PGPORT}
            self.conn = pg8000.connect(user=PGUSER, database=PGDATABASE, **kw)
            self.conn.autocommit = True

    def scalar(self, sql):
        if DRIVER == "asyncpg":
            return self.loop.run_until_complete(self.conn.fetchval(sql))
        cur = self.conn.cursor()
        cur.execute(sql)
        return cur.fetchone()[0]

    def script(self, sql):
        """`sql` in a transaction of its own (BEGIN sent first)."""
        if DRIVER == "asyncpg":
            async def run():
                async with self.conn.transaction():
                    await self.conn.execute(sql)
            self.loop.run_until_complete(run())
        else:
            cur = self.conn.cursor()
            cur.execute("BEGIN")
            for part in sql.split("; "):
                cur.execute(part)
            cur.execute("COMMIT")

    def close(self):
        if DRIVER == "asyncpg":
            self.loop.run_until_complete(self.conn.close())
            self.loop.close()
        else:
            self.conn.close()


def timed(fn):
    t0 = time.monotonic()
    v = fn()
    return v, round((time.monotonic() - t0) * 1000, 1)


def main():
    if ORDER == "libpq_first":
        lc = libpq_connect()
        lc.autocommit = True
        with lc.cursor() as cur:
            cur.execute("SELECT pg_backend_pid()")
            emit("libpq", pid=cur.fetchone()[0])
        (w, pid), ms = timed(lambda: (lambda w: (w, w.scalar("SELECT pg_backend_pid()")))(Wire()))
        emit("wire", ms=ms, pid=pid)
        wait_file("commit")
        with lc.cursor() as cur:
            cur.execute("BEGIN; " + CREATE + "; COMMIT")
        emit("committed")
        w.close()
        lc.close()
    else:
        w = Wire()
        emit("wire", pid=w.scalar("SELECT pg_backend_pid()"))

        def libpq_statement():
            lc = libpq_connect()
            with lc.cursor() as cur:
                cur.execute("SELECT pg_backend_pid()")
                pid = cur.fetchone()[0]
            lc.rollback()
            return lc, pid
        (lc, pid), ms = timed(libpq_statement)
        emit("libpq", ms=ms, pid=pid)
        wait_file("commit")
        w.script(CREATE)
        emit("after", pid=w.scalar("SELECT pg_backend_pid() AS after"))  # (a new text: a Parse)
        lc.close()
        w.close()


if __name__ == "__main__":
    main()
