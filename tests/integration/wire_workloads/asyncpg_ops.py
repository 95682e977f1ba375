"""asyncpg's own operations, as an app does them; prints one JSON document.

usage: asyncpg_ops.py unix|tcp asyncio|uvloop [ssl]
The same document with and without the preload is the test
(tests/integration/test_wire.py).  Connects with the PG* variables.
"""
import asyncio
import io
import json
import os
import sys

import asyncpg

transport, loop_kind = sys.argv[1], sys.argv[2]
ssl = sys.argv[3] if len(sys.argv) > 3 else None


def params():
    p = dict(user=os.environ["PGUSER"], database=os.environ["PGDATABASE"],
             port=int(os.environ["PGPORT"]))
    p["host"] = os.environ["PGHOST"] if transport == "unix" else "127.0.0.1"
    if ssl:
        import ssl as ssl_mod
        ctx = ssl_mod.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl_mod.CERT_NONE
        p["ssl"] = ctx
    return p


async def main():
    out = {}
    c = await asyncpg.connect(**params())
    out["param"] = await c.fetchval("SELECT $1::int + 1", 41)
    st = await c.prepare("SELECT g, g * $1::int FROM generate_series(1, 3) g")
    out["prepared"] = [[list(r) for r in await st.fetch(k)] for k in (2, 3)]
    await c.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
    async with c.transaction():
        await c.executemany("INSERT INTO t VALUES ($1, $2)", [(1, "a"), (2, "b")])
    try:
        async with c.transaction():
            await c.execute("INSERT INTO t VALUES (3, 'c')")
            raise RuntimeError("roll back")
    except RuntimeError:
        pass
    try:
        await c.execute("INSERT INTO t VALUES (1, 'dup')")
    except asyncpg.UniqueViolationError as e:
        out["unique"] = e.sqlstate
    try:
        await c.fetch("SELEC 1")
    except asyncpg.PostgresSyntaxError as e:
        out["syntax"] = e.sqlstate
    tr = c.transaction()
    await tr.start()
    try:
        await c.execute("SELECT 1/0")
    except asyncpg.DivisionByZeroError as e:
        out["in_txn_error"] = e.sqlstate
    await tr.rollback()
    out["copy_in"] = await c.copy_records_to_table("t", records=[(10, "x"), (11, "y")])
    buf = io.BytesIO()
    await c.copy_from_query("SELECT id, v FROM t ORDER BY id", output=buf, format="csv")
    out["copy_out"] = buf.getvalue().decode()
    notices = []
    c.add_log_listener(lambda conn, msg: notices.append(msg.message))
    await c.execute("DO $$ BEGIN RAISE NOTICE 'hello'; END $$")
    await asyncio.sleep(0)
    out["notice"] = notices
    got = asyncio.get_running_loop().create_future()
    await c.add_listener("ch", lambda *a: got.done() or got.set_result(a[3]))
    await c.execute("NOTIFY ch, 'payload'")
    out["notify"] = await asyncio.wait_for(got, 10)
    await c.execute("SET application_name = 'wire-test'")
    out["rows"] = [list(r) for r in await c.fetch("SELECT id, v FROM t ORDER BY id")]
    big = "x" * 300000
    out["big"] = len(await c.fetchval("SELECT $1::text", big))
    await c.close()

    pool = await asyncpg.create_pool(min_size=3, max_size=6, **params())
    res = await asyncio.gather(*[pool.fetchval("SELECT $1::int * 2, pg_sleep(0.01)", i)
                                 for i in range(12)])
    out["pool"] = res
    async with pool.acquire() as pc:
        async with pc.transaction():
            out["pool_txn"] = await pc.fetchval("SELECT count(*) FROM t")
    await pool.close()
    print(json.dumps(out, sort_keys=True))


if loop_kind == "uvloop":
    import uvloop
    uvloop.install()
asyncio.run(main())
