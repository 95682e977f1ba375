"""psycopg2, synchronous connections (PQconnectdb / PQexec paths)."""

import datetime
import decimal
import hashlib
import io
import select

import _common
from _common import tv, rows, diag, scrub

_common.announce("psycopg2_sync")

import psycopg2  # noqa: E402
import psycopg2.errorcodes  # noqa: E402
import psycopg2.extensions as ext  # noqa: E402
import psycopg2.extras  # noqa: E402

psycopg2.extras.register_uuid()
R = _common.Recorder()


def _errname(code):
    try:
        return psycopg2.errorcodes.lookup(code) if code else None
    except KeyError:
        return "<unknown>"


def err(e):
    return {
        "class": type(e).__name__,
        "pgcode": e.pgcode,
        "pgerror": scrub(e.pgerror),
        "str": scrub(str(e)),
        "errorcode_name": _errname(e.pgcode),
        "diag": diag(e.diag),
    }


conn = psycopg2.connect(_common.dsn())
R.on_error = conn.rollback
R["connection"] = {
    "server_version_major": conn.server_version // 10000,
    "protocol_version": conn.protocol_version,
    "encoding": conn.encoding,
    "closed": conn.closed,
    "status": conn.status,
    "autocommit": conn.autocommit,
    "isolation_level": conn.isolation_level,
    "tx_status_idle": conn.info.transaction_status == ext.TRANSACTION_STATUS_IDLE,
    "dsn_params_dbname_is_ours": conn.get_dsn_parameters().get("dbname") == _common.dbname(),
}
cur = conn.cursor()

with R.step("types"):
    cur.execute("SET TimeZone TO 'UTC'")
    cur.execute("""
        SELECT 1::int2 AS i2, 2::int4 AS i4, 9007199254740993::int8 AS i8,
               3.14159::numeric(10,5) AS num, 1.5::float8 AS f8,
               0.1::float4 AS f4, 'h\u00e9llo w\u00f6rld'::text AS txt,
               'x'::char(3) AS ch, true AS b, NULL::int AS nul,
               '\\xdeadbeef'::bytea AS ba,
               '2024-02-29'::date AS d,
               '2024-02-29 12:34:56.789'::timestamp AS ts,
               '2024-02-29 12:34:56.5+02'::timestamptz AS tstz,
               '13:14:15'::time AS t,
               '1 day 02:03:04.5'::interval AS iv,
               'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid AS u,
               '{"a": [1, 2, {"b": null}]}'::jsonb AS jb,
               '[1, "x"]'::json AS js,
               '{1,2,3}'::int[] AS arr,
               ARRAY['x', NULL, 'z'] AS tarr,
               '{{1,2},{3,4}}'::int[][] AS arr2,
               '192.168.0.1/24'::inet AS ip,
               'NaN'::float8 AS nan, 'Infinity'::float8 AS inf,
               '-12345678901234567890.123'::numeric AS bignum,
               int4range(1, 10) AS rng,
               'infinity'::date AS dinf
    """)
    R["types"] = {
        "description": [(d.name, d.type_code) for d in cur.description],
        "row": tv(cur.fetchone()),
        "rowcount": cur.rowcount,
        "statusmessage": cur.statusmessage,
    }

with R.step("params"):
    out = {}
    cur.execute("SELECT %s, %s, %s, %s, %s, %s, %s, %s, %s",
                (1, "it's \"quoted\"", None, decimal.Decimal("1.10"),
                 [1, 2, 3], datetime.date(2020, 1, 2),
                 psycopg2.Binary(b"\x00\x01\xff"), True, 2.5))
    out["positional"] = tv(cur.fetchone())
    cur.execute("SELECT %(a)s + %(b)s AS s, %(a)s * 2 AS d", {"a": 20, "b": 22})
    out["named"] = tv(cur.fetchone())
    out["mogrify"] = cur.mogrify("SELECT %s, %s", ("a'b", None)).decode()
    cur.execute("SELECT %s::jsonb", (psycopg2.extras.Json({"k": [1, "v"]}),))
    out["json_param"] = tv(cur.fetchone())
    cur.execute("SELECT %s = ANY(%s)", (3, [1, 2, 3]))
    out["any"] = tv(cur.fetchone())
    cur.execute("SELECT * FROM (VALUES (1), (2)) v(x) WHERE x IN %s", ((1, 2, 5),))
    out["in_tuple"] = rows(cur.fetchall())
    R["params"] = out

with R.step("ddl_dml"):
    out = {}
    cur.execute("""CREATE TABLE items (
        id int PRIMARY KEY,
        name text NOT NULL UNIQUE,
        qty int CHECK (qty >= 0),
        price numeric(8,2) DEFAULT 0)""")
    out["create_status"] = cur.statusmessage
    cur.executemany("INSERT INTO items (id, name, qty, price) VALUES (%s, %s, %s, %s)",
                    [(i, "item%02d" % i, i * 3, decimal.Decimal(i) / 4)
                     for i in range(1, 21)])
    out["executemany_rowcount"] = cur.rowcount
    psycopg2.extras.execute_values(
        cur, "INSERT INTO items (id, name, qty) VALUES %s",
        [(i, "bulk%03d" % i, i) for i in range(100, 150)], page_size=17)
    psycopg2.extras.execute_batch(
        cur, "UPDATE items SET qty = qty + %s WHERE id = %s",
        [(1, i) for i in range(100, 110)], page_size=4)
    cur.execute("INSERT INTO items (id, name) VALUES (%s, %s) RETURNING id, qty, price",
                (500, "returning"))
    out["returning"] = tv(cur.fetchone())
    cur.execute("UPDATE items SET qty = qty + 1 WHERE id <= 5")
    out["update_rowcount"] = cur.rowcount
    out["update_status"] = cur.statusmessage
    cur.execute("SELECT count(*), sum(qty), sum(price) FROM items")
    out["aggregates"] = tv(cur.fetchone())
    dc = conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor)
    dc.execute("SELECT id, name, qty FROM items ORDER BY id LIMIT 3")
    out["realdict"] = [tv(dict(r)) for r in dc.fetchall()]
    dc.close()
    cur.execute("SELECT id, name FROM items ORDER BY id")
    out["fetchmany"] = rows(cur.fetchmany(4))
    out["fetchone"] = tv(cur.fetchone())
    out["fetchall_len"] = len(cur.fetchall())
    conn.commit()
    R["ddl_dml"] = out

with R.step("errors"):
    errs = {}
    cases = [
        ("unique_violation", "INSERT INTO items (id, name) VALUES (1, 'dup')", None),
        ("unique_violation_name", "INSERT INTO items (id, name) VALUES (999, 'item01')", None),
        ("not_null_violation", "INSERT INTO items (id, name) VALUES (%s, %s)", (998, None)),
        ("check_violation", "UPDATE items SET qty = -1 WHERE id = 2", None),
        ("syntax_error", "SELEC 1 FROM items", None),
        ("division_by_zero", "SELECT 1/0", None),
        ("undefined_table", "SELECT * FROM no_such_table", None),
        ("undefined_column", "SELECT no_such_col FROM items", None),
        ("invalid_text_repr", "SELECT 'abc'::int", None),
        ("numeric_out_of_range", "SELECT 2147483647::int + 1", None),
        ("raise_custom", """DO $$ BEGIN RAISE EXCEPTION 'custom % failure', 42
            USING ERRCODE = 'MS001', DETAIL = 'some detail', HINT = 'a hint'; END $$""", None),
        ("plpgsql_context", """DO $$ DECLARE x int; BEGIN x := 1/0; END $$""", None),
    ]
    for name, sql, args in cases:
        try:
            cur.execute(sql, args)
            errs[name] = "no error"
        except psycopg2.Error as e:
            errs[name] = err(e)
            # the transaction is now aborted
            try:
                cur.execute("SELECT 1")
                errs[name + "_then"] = "no error"
            except psycopg2.Error as e2:
                errs[name + "_then"] = {"class": type(e2).__name__, "pgcode": e2.pgcode}
            conn.rollback()
    errs["class_map"] = {
        "unique": isinstance(psycopg2.errors.lookup("23505")(), psycopg2.IntegrityError),
    }
    R["errors"] = errs

with R.step("notices"):
    del conn.notices[:]
    cur.execute("""DO $$ BEGIN RAISE NOTICE 'first notice %', 1;
                   RAISE WARNING 'a warning'; RAISE NOTICE 'second'; END $$""")
    R["notices"] = [n.strip() for n in conn.notices]
    conn.commit()

with R.step("transactions"):
    out = {}
    cur.execute("SELECT count(*) FROM items")
    before = cur.fetchone()[0]
    cur.execute("INSERT INTO items (id, name) VALUES (700, 'tx')")
    out["status_in_tx"] = conn.info.transaction_status == ext.TRANSACTION_STATUS_INTRANS
    conn.rollback()
    cur.execute("SELECT count(*) FROM items")
    out["after_rollback_same"] = cur.fetchone()[0] == before
    cur.execute("INSERT INTO items (id, name) VALUES (701, 'tx2')")
    cur.execute("SAVEPOINT sp1")
    cur.execute("INSERT INTO items (id, name) VALUES (702, 'tx3')")
    try:
        cur.execute("INSERT INTO items (id, name) VALUES (702, 'tx3-dup')")
    except psycopg2.IntegrityError as e:
        out["in_savepoint_error"] = e.pgcode
    cur.execute("ROLLBACK TO SAVEPOINT sp1")
    conn.commit()
    cur.execute("SELECT id, name FROM items WHERE id >= 700 ORDER BY id")
    out["after_savepoint"] = rows(cur.fetchall())
    with conn:
        with conn.cursor() as c2:
            c2.execute("INSERT INTO items (id, name) VALUES (703, 'ctx')")
    try:
        with conn:
            with conn.cursor() as c2:
                c2.execute("INSERT INTO items (id, name) VALUES (704, 'ctx-rolled-back')")
                c2.execute("SELECT 1/0")
    except psycopg2.DataError as e:
        out["ctx_error"] = e.pgcode
    cur.execute("SELECT array_agg(id ORDER BY id) FROM items WHERE id >= 700")
    out["after_ctx"] = tv(cur.fetchone())
    conn.commit()
    conn.set_session(isolation_level="SERIALIZABLE", readonly=True)
    cur.execute("SHOW transaction_isolation")
    out["serializable"] = cur.fetchone()[0]
    try:
        cur.execute("INSERT INTO items (id, name) VALUES (705, 'ro')")
    except psycopg2.Error as e:
        out["readonly_error"] = e.pgcode
    conn.rollback()
    conn.set_session(isolation_level="DEFAULT", readonly="DEFAULT")
    conn.autocommit = True
    cur.execute("INSERT INTO items (id, name) VALUES (706, 'autocommit')")
    out["autocommit_tx_idle"] = conn.info.transaction_status == ext.TRANSACTION_STATUS_IDLE
    conn.autocommit = False
    R["transactions"] = out

with R.step("copy"):
    out = {}
    cur.execute("CREATE TABLE copytest (id int, label text, amount numeric, note text)")
    src = io.StringIO("".join(
        "%d,label %d,%d.%02d,%s\n" % (i, i, i, i % 100, "" if i % 7 else "sev\u00e9n")
        for i in range(1, 5001)))
    cur.copy_expert("COPY copytest FROM STDIN WITH (FORMAT csv)", src, size=1000)
    out["copy_in_rowcount"] = cur.rowcount
    cur.copy_from(io.StringIO("9001\ttab one\t1.5\t\\N\n9002\ttab two\t2.5\tx\n"),
                  "copytest", columns=("id", "label", "amount", "note"))
    dst = io.StringIO()
    cur.copy_expert("COPY (SELECT * FROM copytest ORDER BY id) TO STDOUT "
                    "WITH (FORMAT csv, HEADER)", dst)
    data = dst.getvalue()
    out["copy_out_lines"] = data.count("\n")
    out["copy_out_head"] = data.splitlines()[:3]
    out["copy_out_tail"] = data.splitlines()[-2:]
    out["copy_out_sha256"] = hashlib.sha256(data.encode()).hexdigest()
    dst2 = io.StringIO()
    cur.copy_to(dst2, "copytest", sep="|", columns=("id", "label"))
    out["copy_to_sha256"] = hashlib.sha256(dst2.getvalue().encode()).hexdigest()
    bdst = io.BytesIO()
    cur.copy_expert("COPY (SELECT id, label FROM copytest WHERE id < 4 ORDER BY id) "
                    "TO STDOUT WITH (FORMAT binary)", bdst)
    out["copy_binary_hex"] = bdst.getvalue().hex()
    conn.commit()
    try:
        cur.copy_expert("COPY copytest (id, label) FROM STDIN WITH (FORMAT csv)",
                        io.StringIO("1,ok\nnot-a-number,bad\n"))
        out["copy_error"] = "no error"
    except psycopg2.Error as e:
        out["copy_error"] = err(e)
    conn.rollback()
    cur.execute("SELECT count(*), sum(amount) FROM copytest")
    out["final_count"] = tv(cur.fetchone())
    R["copy"] = out

with R.step("listen_notify"):
    out = {}
    listener = psycopg2.connect(_common.dsn())
    listener.autocommit = True
    notifier = psycopg2.connect(_common.dsn())
    notifier.autocommit = True
    lcur = listener.cursor()
    lcur.execute("LISTEN migshim_chan")
    lcur.execute('LISTEN "Other Chan"')
    ncur = notifier.cursor()
    ncur.execute("NOTIFY migshim_chan, 'payload one'")
    ncur.execute("SELECT pg_notify('migshim_chan', 'payload two')")
    ncur.execute("""SELECT pg_notify('Other Chan', 'caf\u00e9')""")
    notifier.autocommit = False
    ncur.execute("NOTIFY migshim_chan, 'in tx (before commit)'")
    notifier.commit()
    notifier.autocommit = True
    got = []
    waits = 0
    while len(got) < 4 and waits < 50:
        if select.select([listener], [], [], 5) == ([], [], []):
            waits += 1
            continue
        listener.poll()
        while listener.notifies:
            n = listener.notifies.pop(0)
            got.append((n.channel, n.payload, n.pid == notifier.get_backend_pid()))
    out["received"] = got
    # self-notification is delivered with the next command result
    lcur.execute("NOTIFY migshim_chan, 'self'")
    out["self"] = [(n.channel, n.payload, n.pid == listener.get_backend_pid())
                   for n in listener.notifies]
    lcur.execute("UNLISTEN *")
    listener.close()
    notifier.close()
    R["listen_notify"] = out

with R.step("large_objects"):
    out = {}
    payload = bytes(range(256)) * 400 + b"tail"
    lo = conn.lobject(0, "wb")
    oid = lo.oid
    out["written"] = lo.write(payload)
    out["tell_after_write"] = lo.tell()
    lo.close()
    conn.commit()
    lo = conn.lobject(oid, "rb")
    data = lo.read()
    out["read_len"] = len(data)
    out["same"] = data == payload
    out["sha256"] = hashlib.sha256(data).hexdigest()
    lo.seek(1000)
    out["partial"] = lo.read(8).hex()
    out["tell"] = lo.tell()
    lo.close()
    lo = conn.lobject(oid, "rwb")
    lo.seek(0)
    lo.write(b"HEAD")
    lo.truncate(16)
    lo.seek(0)
    out["after_truncate"] = lo.read().hex()
    lo.unlink()
    conn.commit()
    try:
        conn.lobject(oid, "rb")
        out["open_unlinked"] = "no error"
    except psycopg2.Error as e:
        out["open_unlinked"] = {"class": type(e).__name__, "pgcode": e.pgcode,
                                "msg": scrub(str(e)).replace(str(oid), "<oid>")}
    conn.rollback()
    R["large_objects"] = out

with R.step("named_cursors"):
    out = {}
    nc = conn.cursor("migshim_named")
    nc.itersize = 7
    nc.execute("SELECT g, g * g, repeat('x', g % 5) FROM generate_series(1, 60) g")
    out["first"] = tv(nc.fetchone())
    out["many"] = rows(nc.fetchmany(5))
    nc.scroll(40, mode="absolute")
    out["after_scroll"] = tv(nc.fetchone())
    out["rest"] = len(list(nc))
    out["rownumber"] = nc.rownumber
    nc.close()
    conn.commit()
    wh = conn.cursor("migshim_withhold", withhold=True)
    wh.execute("SELECT id, name FROM items WHERE id BETWEEN 3 AND 6 ORDER BY id")
    conn.commit()
    out["withhold_after_commit"] = rows(wh.fetchall())
    wh.close()
    conn.commit()
    R["named_cursors"] = out

with R.step("prepared"):
    out = {}
    cur.execute("PREPARE q_double(int) AS SELECT $1 * 2, $1::text || ' doubled'")
    res = []
    for i in (1, 21, -5):
        cur.execute("EXECUTE q_double(%s)", (i,))
        res.append(tv(cur.fetchone()))
    out["results"] = res
    cur.execute("SELECT name, parameter_types::text, statement FROM pg_prepared_statements")
    out["pg_prepared_statements"] = rows(cur.fetchall())
    cur.execute("DEALLOCATE q_double")
    try:
        cur.execute("EXECUTE q_double(1)")
    except psycopg2.Error as e:
        out["after_deallocate"] = err(e)
    conn.rollback()
    R["prepared"] = out

with R.step("client_encoding"):
    out = {}
    conn.set_client_encoding("LATIN1")
    cur.execute("SELECT 'caf\u00e9', length('caf\u00e9')")
    out["latin1"] = tv(cur.fetchone())
    out["encoding"] = conn.encoding
    conn.set_client_encoding("UTF8")
    out["encoding_back"] = conn.encoding
    R["client_encoding"] = out

with R.step("cancel"):
    # PQcancel from another thread while PQexec is blocked in the server
    import threading
    out = {}
    pid = conn.get_backend_pid()

    def canceller():
        _common.wait_until_active(lambda: psycopg2.connect(_common.dsn()), pid)
        conn.cancel()
    t = threading.Thread(target=canceller)
    t.start()
    try:
        cur.execute("SELECT pg_sleep(20)")
        out["cancel"] = "no error"
    except psycopg2.Error as e:
        out["cancel"] = {"class": type(e).__name__, "pgcode": e.pgcode,
                         "msg": scrub(str(e))}
    t.join()
    conn.rollback()
    R["cancel"] = out

conn.close()
R["closed"] = conn.closed
_common.emit(R.result)
