"""psycopg2 in green mode: gevent monkey patching + psycogreen's wait
callback, several greenlets querying concurrently (PQconnectStart,
PQconnectPoll, PQsendQuery, PQgetResult through the wait callback)."""

from gevent import monkey

monkey.patch_all()

import _common  # noqa: E402
from _common import tv, rows, diag, scrub  # noqa: E402

_common.announce("psycopg2_green")

import io  # noqa: E402
import hashlib  # noqa: E402

import gevent  # noqa: E402
import gevent.event  # noqa: E402
import psycogreen.gevent  # noqa: E402

psycogreen.gevent.patch_psycopg()

import psycopg2  # noqa: E402
import psycopg2.extensions as ext  # noqa: E402

R = _common.Recorder()
R["wait_callback_installed"] = ext.get_wait_callback() is not None


def err(e):
    return {"class": type(e).__name__, "pgcode": e.pgcode,
            "pgerror": scrub(e.pgerror), "diag": diag(e.diag)}


with R.step("setup"):
    conn = psycopg2.connect(_common.dsn())
    cur = conn.cursor()
    cur.execute("CREATE TABLE g (id int PRIMARY KEY, who text, n int)")
    conn.commit()
    R["setup"] = {"async_flag": conn.async_, "autocommit": conn.autocommit}


def worker(i):
    c = psycopg2.connect(_common.dsn())
    try:
        cu = c.cursor()
        cu.execute("SELECT pg_sleep(%s), %s::int * 2, repeat('g', %s)",
                   (0.05 * (i % 3), i, i))
        r = cu.fetchone()[1:]
        cu.execute("INSERT INTO g VALUES (%s, %s, %s)", (i, "greenlet-%d" % i, i * i))
        c.commit()
        cu.execute("SELECT count(*) FROM generate_series(1, %s)", (1000 * (i + 1),))
        return [i, tv(r), cu.fetchone()[0]]
    finally:
        c.close()


with R.step("greenlets"):
    jobs = [gevent.spawn(worker, i) for i in range(8)]
    gevent.joinall(jobs, timeout=60, raise_error=True)
    R["greenlets"] = sorted(j.value for j in jobs)
    cur.execute("SELECT id, who, n FROM g ORDER BY id")
    R["greenlet_rows"] = rows(cur.fetchall())
    conn.commit()

with R.step("interleaving"):
    # proves the greenlets really yield while waiting on the server:
    # B runs to completion while A's query is still in the server.
    order = []
    a_started = gevent.event.Event()

    def slow():
        c = psycopg2.connect(_common.dsn())
        cu = c.cursor()
        order.append("A-start")
        a_started.set()
        cu.execute("SELECT pg_sleep(0.8)")
        order.append("A-end")
        c.close()

    def fast():
        c = psycopg2.connect(_common.dsn())
        a_started.wait(10)
        gevent.sleep(0.05)
        cu = c.cursor()
        order.append("B-start")
        cu.execute("SELECT 1")
        order.append("B-end")
        c.close()

    jobs = [gevent.spawn(slow), gevent.spawn(fast)]
    gevent.joinall(jobs, timeout=30, raise_error=True)
    R["interleaving"] = order

with R.step("errors"):
    out = {}

    def failing(sql):
        c = psycopg2.connect(_common.dsn())
        try:
            c.cursor().execute(sql)
            return "no error"
        except psycopg2.Error as e:
            return err(e)
        finally:
            c.close()

    jobs = {name: gevent.spawn(failing, sql) for name, sql in (
        ("division_by_zero", "SELECT 1/0"),
        ("unique_violation", "INSERT INTO g VALUES (1, 'dup', 0)"),
        ("syntax_error", "SELEKT 1"),
        ("raise", "DO $$BEGIN RAISE EXCEPTION 'green boom' USING ERRCODE = '22023'; END$$"),
    )}
    gevent.joinall(list(jobs.values()), timeout=30, raise_error=True)
    out = {k: j.value for k, j in jobs.items()}
    R["errors"] = out

with R.step("transactions"):
    out = {}
    cur.execute("INSERT INTO g VALUES (100, 'rollback me', 0)")
    conn.rollback()
    cur.execute("INSERT INTO g VALUES (101, 'keep me', 0)")
    conn.commit()
    cur.execute("SELECT id FROM g WHERE id >= 100 ORDER BY id")
    out["after"] = rows(cur.fetchall())
    conn.commit()
    R["transactions"] = out

with R.step("copy"):
    out = {}
    # psycopg2 refuses COPY while a wait callback is installed: record that
    try:
        cur.copy_expert("COPY g FROM STDIN", io.StringIO("500\tcopy\t1\n"))
        out["with_callback"] = "no error"
    except psycopg2.Error as e:
        out["with_callback"] = {"class": type(e).__name__, "msg": str(e)}
    conn.rollback()
    # the usual workaround: drop the callback for the COPY, then restore it
    cb = ext.get_wait_callback()
    ext.set_wait_callback(None)
    try:
        cur.copy_expert("COPY g FROM STDIN",
                        io.StringIO("".join("%d\tcopied %d\t%d\n" % (i, i, i)
                                            for i in range(1000, 1300))))
        out["copy_in_rowcount"] = cur.rowcount
        buf = io.StringIO()
        cur.copy_expert("COPY (SELECT * FROM g ORDER BY id) TO STDOUT", buf)
        out["copy_out_lines"] = buf.getvalue().count("\n")
        out["copy_out_sha256"] = hashlib.sha256(buf.getvalue().encode()).hexdigest()
        conn.commit()
    finally:
        ext.set_wait_callback(cb)
    cur.execute("SELECT count(*) FROM g")
    out["count_after_copy_green_again"] = cur.fetchone()[0]
    conn.commit()
    R["copy"] = out

with R.step("notify"):
    listener = psycopg2.connect(_common.dsn())
    listener.autocommit = True
    listener.cursor().execute("LISTEN green_chan")
    got = []

    def listen():
        from gevent import select as gselect
        while len(got) < 3:
            if gselect.select([listener], [], [], 10) == ([], [], []):
                break
            listener.poll()
            while listener.notifies:
                n = listener.notifies.pop(0)
                got.append((n.channel, n.payload))

    def notify():
        c = psycopg2.connect(_common.dsn())
        c.autocommit = True
        for k in range(3):
            c.cursor().execute("NOTIFY green_chan, %s", ("msg %d" % k,))
            gevent.sleep(0.01)
        c.close()

    jobs = [gevent.spawn(listen), gevent.spawn(notify)]
    gevent.joinall(jobs, timeout=30, raise_error=True)
    R["notify"] = got
    listener.close()

conn.close()
_common.emit(R.result)
