"""psycopg 3 with Debian's pure-python (ctypes) libpq wrapper: libpq is
dlopen()ed by ctypes, not linked -- the shim must still be reached
(PQconnectStart/PQconnectPoll, PQsendQuery(Params), PQgetResult...)."""

import asyncio
import datetime
import decimal
import hashlib

import _common
from _common import tv, rows, diag, scrub

_common.announce("psycopg3")

import psycopg  # noqa: E402
from psycopg import sql  # noqa: E402

assert psycopg.pq.__impl__ == "python", psycopg.pq.__impl__

R = _common.Recorder()


def err(e):
    return {"class": type(e).__name__, "sqlstate": e.sqlstate,
            "str": scrub(str(e)), "diag": diag(e.diag)}


conn = psycopg.connect(_common.dsn())
R.on_error = conn.rollback
R["meta"] = {
    "impl": psycopg.pq.__impl__,
    "libpq_major": psycopg.pq.version() // 10000,
    "server_major": conn.info.server_version // 10000,
    "encoding": conn.info.encoding,
    "status": conn.info.status.name,
    "tx_status": conn.info.transaction_status.name,
    "pipeline_supported": psycopg.Pipeline.is_supported(),
    "dbname_is_ours": conn.info.dbname == _common.dbname(),
}

with R.step("types"):
    cur = conn.cursor()
    cur.execute("SET TimeZone TO 'UTC'")
    cur.execute("""
        SELECT 1::int2, 2::int4, 9007199254740993::int8, 3.14159::numeric(10,5),
               1.5::float8, 'h\u00e9llo'::text, true, NULL::int, '\\xcafe'::bytea,
               '2024-02-29'::date, '2024-02-29 12:34:56.789'::timestamp,
               '2024-02-29 12:34:56.5+02'::timestamptz, '13:14:15'::time,
               '1 day 02:03:04.5'::interval,
               'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid,
               '{"a": [1, 2]}'::jsonb, '{1,2,3}'::int[], ARRAY['x', NULL],
               '10.0.0.1/8'::inet, 'NaN'::numeric, int4range(1, 10)""")
    R["types"] = {"description": [(d.name, d.type_code) for d in cur.description],
                  "row": tv(cur.fetchone()), "rowcount": cur.rowcount,
                  "statusmessage": cur.statusmessage}
    # the same in binary format
    bcur = conn.cursor(binary=True)
    bcur.execute("SELECT 7::int8, 'bin'::text, 2.25::numeric, '2020-01-01'::date, "
                 "ARRAY[1.5, 2.5]::float8[], '\\x00ff'::bytea")
    R["types_binary"] = tv(bcur.fetchone())
    conn.commit()

with R.step("params"):
    cur = conn.cursor()
    out = {}
    cur.execute("SELECT %s, %s, %s, %s, %s, %s, %s, %s",
                (1, "it's", None, decimal.Decimal("1.10"), [1, 2],
                 datetime.date(2020, 1, 2), b"\x00\x01", 2.5))
    out["positional"] = tv(cur.fetchone())
    cur.execute("SELECT %(a)s::int + %(b)s::int, %(a)s::text", {"a": 20, "b": 22})
    out["named"] = tv(cur.fetchone())
    cur.execute("SELECT %b, %t", (b"binparam", "textparam"))
    out["formats"] = tv(cur.fetchone())
    cur.execute(sql.SQL("SELECT {} FROM (VALUES (1, 2)) AS v({}, {})").format(
        sql.Identifier("b"), sql.Identifier("a"), sql.Identifier("b")))
    out["sql_compose"] = tv(cur.fetchone())
    cur.execute("SELECT 1 AS x")  # no params: simple query protocol
    out["no_params"] = tv(cur.fetchone())
    out["mogrify_like"] = sql.SQL("SELECT {}").format(sql.Literal("a'b")).as_string(conn)
    R["params"] = out
    conn.commit()

with R.step("dml"):
    cur = conn.cursor()
    out = {}
    cur.execute("""CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL UNIQUE,
                   qty int CHECK (qty >= 0), price numeric(8, 2) DEFAULT 0)""")
    cur.executemany("INSERT INTO items (id, name, qty) VALUES (%s, %s, %s)",
                    [(i, "item%02d" % i, i) for i in range(1, 31)])
    out["executemany_rowcount"] = cur.rowcount
    cur.execute("INSERT INTO items (id, name) VALUES (%s, %s) RETURNING id, qty, price",
                (99, "ret"))
    out["returning"] = tv(cur.fetchone())
    cur.execute("UPDATE items SET qty = qty + 1 WHERE id <= %s", (10,))
    out["update_rowcount"] = cur.rowcount
    cur.execute("SELECT id, name, qty FROM items ORDER BY id")
    out["fetchmany"] = rows(cur.fetchmany(3))
    out["rest"] = len(cur.fetchall())
    from psycopg.rows import dict_row
    dcur = conn.cursor(row_factory=dict_row)
    dcur.execute("SELECT id, name FROM items ORDER BY id LIMIT 2")
    out["dict_rows"] = [tv(r) for r in dcur.fetchall()]
    conn.commit()
    R["dml"] = out

with R.step("errors"):
    out = {}
    cur = conn.cursor()
    for name, q, args in (
            ("unique_violation", "INSERT INTO items (id, name) VALUES (1, 'x')", None),
            ("unique_violation_params", "INSERT INTO items (id, name) VALUES (%s, %s)",
             (500, "item01")),
            ("not_null", "INSERT INTO items (id, name) VALUES (%s, %s)", (501, None)),
            ("check", "UPDATE items SET qty = -5 WHERE id = 3", None),
            ("syntax_error", "SELEC 1", None),
            ("syntax_error_params", "SELEC %s", (1,)),
            ("division_by_zero", "SELECT 1/0", None),
            ("division_by_zero_params", "SELECT %s::int / 0", (1,)),
            ("undefined_table", "SELECT * FROM nope", None),
            ("bad_param_type", "SELECT %s::int", ("abc",)),
            ("raise_custom", "DO $$ BEGIN RAISE EXCEPTION 'p3 %', 'boom' USING "
             "ERRCODE = 'MS002', DETAIL = 'd', HINT = 'h'; END $$", None)):
        try:
            cur.execute(q, args)
            out[name] = "no error"
        except psycopg.Error as e:
            out[name] = err(e)
            try:
                cur.execute("SELECT 1")
            except psycopg.Error as e2:
                out[name + "_then"] = e2.sqlstate
            conn.rollback()
    R["errors"] = out

with R.step("notices"):
    got = []
    conn.add_notice_handler(lambda d: got.append((d.severity, d.message_primary)))
    conn.execute("DO $$ BEGIN RAISE NOTICE 'n1'; RAISE WARNING 'w1'; END $$")
    R["notices"] = got
    conn.commit()

with R.step("transactions"):
    out = {}
    cur = conn.cursor()
    with conn.transaction():
        cur.execute("INSERT INTO items (id, name) VALUES (700, 'tx-commit')")
    with conn.transaction():
        cur.execute("INSERT INTO items (id, name) VALUES (701, 'tx-outer')")
        try:
            with conn.transaction():
                cur.execute("INSERT INTO items (id, name) VALUES (702, 'tx-inner')")
                cur.execute("INSERT INTO items (id, name) VALUES (702, 'dup')")
        except psycopg.errors.UniqueViolation as e:
            out["inner_error"] = e.sqlstate
    with conn.transaction() as tx:
        cur.execute("INSERT INTO items (id, name) VALUES (703, 'explicit rollback')")
        raise_rollback = psycopg.Rollback(tx)
        out["tx_status_in"] = conn.info.transaction_status.name
        raise raise_rollback
    conn.execute("INSERT INTO items (id, name) VALUES (704, 'rolled back')")
    conn.rollback()
    cur.execute("SELECT id, name FROM items WHERE id >= 700 ORDER BY id")
    out["rows"] = rows(cur.fetchall())
    conn.commit()
    conn.autocommit = True
    conn.execute("INSERT INTO items (id, name) VALUES (705, 'autocommit')")
    out["autocommit_idle"] = conn.info.transaction_status.name
    conn.autocommit = False
    conn.isolation_level = psycopg.IsolationLevel.SERIALIZABLE
    conn.read_only = True
    out["iso"] = conn.execute("SHOW transaction_isolation").fetchone()[0]
    try:
        conn.execute("INSERT INTO items (id, name) VALUES (706, 'ro')")
    except psycopg.Error as e:
        out["readonly"] = e.sqlstate
    conn.rollback()
    conn.isolation_level = None
    conn.read_only = None
    R["transactions"] = out

with R.step("copy"):
    out = {}
    cur = conn.cursor()
    cur.execute("CREATE TABLE c (id int, label text, amount numeric, d date)")
    with cur.copy("COPY c (id, label, amount, d) FROM STDIN") as copy:
        for i in range(1, 3001):
            copy.write_row((i, "row %d" % i, decimal.Decimal(i) / 8,
                            datetime.date(2020, 1, 1) + datetime.timedelta(days=i)))
    out["copy_in_rows"] = cur.rowcount
    with cur.copy("COPY c (id, label) FROM STDIN WITH (FORMAT csv)") as copy:
        copy.write("5001,csv one\n5002,\"csv, two\"\n")
    with cur.copy("COPY c (id, label, amount) FROM STDIN WITH (FORMAT binary)") as copy:
        copy.set_types(["int4", "text", "numeric"])
        copy.write_row((6001, "binary row", decimal.Decimal("1.5")))
    conn.commit()
    with cur.copy("COPY (SELECT id, label, amount, d FROM c ORDER BY id) TO STDOUT") as copy:
        copy.set_types(["int4", "text", "numeric", "date"])
        got = [tv(r) for r in copy.rows()]
    out["copy_out_rows"] = len(got)
    out["copy_out_sample"] = got[:2] + got[-3:]
    chunks = []
    with cur.copy("COPY (SELECT * FROM c ORDER BY id) TO STDOUT WITH (FORMAT csv)") as copy:
        for data in copy:
            chunks.append(bytes(data))
    blob = b"".join(chunks)
    out["copy_out_sha256"] = hashlib.sha256(blob).hexdigest()
    out["copy_out_bytes"] = len(blob)
    try:
        with cur.copy("COPY c (id) FROM STDIN") as copy:
            copy.write("1\nnot-int\n")
        out["copy_error"] = "no error"
    except psycopg.Error as e:
        out["copy_error"] = err(e)
    conn.rollback()
    out["final_count"] = conn.execute("SELECT count(*) FROM c").fetchone()[0]
    conn.commit()
    R["copy"] = out

with R.step("listen_notify"):
    listener = psycopg.connect(_common.dsn(), autocommit=True)
    notifier = psycopg.connect(_common.dsn(), autocommit=True)
    listener.execute("LISTEN p3_chan")
    listener.execute('LISTEN "P3 Other"')
    notifier.execute("NOTIFY p3_chan, 'one'")
    notifier.execute("SELECT pg_notify(%s, %s)", ("p3_chan", "two"))
    notifier.execute("SELECT pg_notify('P3 Other', 'caf\u00e9')")
    with notifier.transaction():
        notifier.execute("NOTIFY p3_chan, 'from tx'")
    notifier.execute("NOTIFY p3_chan, 'stop'")
    npid = notifier.info.backend_pid
    got = []
    gen = listener.notifies()
    for n in gen:
        got.append((n.channel, n.payload, n.pid == npid))
        if n.payload == "stop":
            gen.close()
    R["listen_notify"] = got
    listener.close()
    notifier.close()

with R.step("pipeline"):
    out = {}
    if psycopg.Pipeline.is_supported():
        with conn.pipeline() as p:
            c1 = conn.execute("SELECT %s::int * 2", (21,))
            c2 = conn.execute("SELECT 'pipelined'")
            conn.execute("INSERT INTO items (id, name) VALUES (%s, %s)", (800, "pipe"))
            p.sync()
            out["r1"] = tv(c1.fetchone())
            out["r2"] = tv(c2.fetchone())
        conn.commit()
        try:
            with conn.pipeline():
                conn.execute("SELECT 1")
                conn.execute("SELECT 1/0")
                conn.execute("SELECT 2")
            out["error"] = "no error"
        except psycopg.Error as e:
            out["error"] = err(e)
        conn.rollback()
        with conn.cursor() as c:
            c.executemany("INSERT INTO items (id, name) VALUES (%s, %s)",
                          [(900 + i, "pipe-many-%d" % i) for i in range(20)])
        conn.commit()
        out["count"] = conn.execute(
            "SELECT count(*) FROM items WHERE id >= 800").fetchone()[0]
        conn.commit()
    else:
        out["skipped"] = "pipeline not supported by libpq"
    R["pipeline"] = out

with R.step("prepared"):
    out = {}
    cur = conn.cursor()
    res = []
    for i in range(5):
        cur.execute("SELECT %s::int + 1, %s::text", (i, "p%d" % i), prepare=True)
        res.append(tv(cur.fetchone()))
    out["results"] = res
    out["prepared_statements"] = rows(conn.execute(
        "SELECT name, statement FROM pg_prepared_statements ORDER BY name").fetchall())
    conn.prepare_threshold = 0
    conn.execute("SELECT %s::int", (1,))
    conn.execute("SELECT %s::int", (2,))
    out["count_threshold0"] = conn.execute(
        "SELECT count(*) FROM pg_prepared_statements").fetchone()[0]
    try:
        cur.execute("SELECT %s::int / 0", (1,), prepare=True)
    except psycopg.Error as e:
        out["error"] = err(e)
    conn.rollback()
    conn.prepare_threshold = 5
    R["prepared"] = out

with R.step("server_cursor"):
    out = {}
    with conn.cursor(name="p3_named") as sc:
        sc.itersize = 7
        sc.execute("SELECT g, g * g FROM generate_series(1, 50) g WHERE g > %s", (2,))
        out["first"] = tv(sc.fetchone())
        out["many"] = rows(sc.fetchmany(3))
        sc.scroll(30, mode="absolute")
        out["after_scroll"] = tv(sc.fetchone())
        out["rest"] = len(sc.fetchall())
    conn.commit()
    R["server_cursor"] = out

with R.step("cancel"):
    import threading
    pid = conn.info.backend_pid

    def canceller():
        _common.wait_until_active(lambda: psycopg.connect(_common.dsn()), pid)
        conn.cancel()
    t = threading.Thread(target=canceller)
    t.start()
    try:
        conn.execute("SELECT pg_sleep(20)")
        R["cancel"] = "no error"
    except psycopg.Error as e:
        R["cancel"] = {"class": type(e).__name__, "sqlstate": e.sqlstate}
    t.join()
    conn.rollback()

with R.step("asyncio"):
    async def amain():
        aconn = await psycopg.AsyncConnection.connect(_common.dsn())
        async with aconn:
            acur = aconn.cursor()
            await acur.execute("SELECT %s::int * 3, 'async'", (14,))
            r = await acur.fetchone()
            try:
                await acur.execute("SELECT 1/0")
            except psycopg.Error as e:
                e1 = e.sqlstate
            await aconn.rollback()
            results = await asyncio.gather(*[
                _one(i) for i in range(4)])
        return {"row": tv(r), "error": e1, "gather": results}

    async def _one(i):
        async with await psycopg.AsyncConnection.connect(_common.dsn()) as c:
            cur = await c.execute("SELECT pg_sleep(0.1), %s::int", (i,))
            return (await cur.fetchone())[1]

    R["asyncio"] = asyncio.run(amain())

conn.close()
R["closed"] = conn.closed
_common.emit(R.result)
