"""psycopg2 asynchronous connections (async_=1): PQconnectStart/PQconnectPoll,
PQsendQuery/PQgetResult driven by conn.poll() + select()."""

import select

import _common
from _common import tv, rows, diag, scrub

_common.announce("psycopg2_async")

import psycopg2  # noqa: E402
import psycopg2.extensions as ext  # noqa: E402

R = _common.Recorder()


def wait(conn, timeout=30):
    polls = 0
    while True:
        state = conn.poll()
        polls += 1
        if state == ext.POLL_OK:
            return polls
        elif state == ext.POLL_WRITE:
            r = select.select([], [conn.fileno()], [], timeout)
        elif state == ext.POLL_READ:
            r = select.select([conn.fileno()], [], [], timeout)
        else:
            raise psycopg2.OperationalError("poll() returned %s" % state)
        if r == ([], [], []):
            raise RuntimeError("timeout waiting for the connection")


def err(e):
    return {"class": type(e).__name__, "pgcode": e.pgcode,
            "pgerror": scrub(e.pgerror), "diag": diag(e.diag)}


aconn = psycopg2.connect(_common.dsn(), async_=1)
wait(aconn)
R["connection"] = {
    "async": aconn.async_,
    "status": aconn.status,
    "autocommit": aconn.autocommit,
    "server_version_major": aconn.server_version // 10000,
    "isexecuting_idle": aconn.isexecuting(),
}
cur = aconn.cursor()

with R.step("queries"):
    out = {}
    cur.execute("SET TimeZone TO 'UTC'")
    wait(aconn)
    cur.execute("SELECT 42::int8, 'async text'::text, 2.5::numeric, "
                "'2021-06-01 10:00+00'::timestamptz, ARRAY[1,NULL,3], "
                "'\\x0102'::bytea, NULL::text")
    out["isexecuting_busy"] = aconn.isexecuting()
    wait(aconn)
    out["row"] = tv(cur.fetchone())
    out["description"] = [(d.name, d.type_code) for d in cur.description]
    cur.execute("SELECT %s + %s, %s || %s", (40, 2, "a", "b"))
    wait(aconn)
    out["params"] = tv(cur.fetchone())
    cur.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
    wait(aconn)
    cur.execute("INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 200) g")
    wait(aconn)
    out["insert_rowcount"] = cur.rowcount
    cur.execute("SELECT id, v FROM t WHERE id % 50 = 0 ORDER BY id")
    wait(aconn)
    out["select"] = rows(cur.fetchall())
    # explicit transaction on an autocommit (async) connection
    for sql in ("BEGIN", "INSERT INTO t VALUES (1000, 'rolled back')", "ROLLBACK",
                "BEGIN", "INSERT INTO t VALUES (1001, 'committed')", "COMMIT"):
        cur.execute(sql)
        wait(aconn)
    cur.execute("SELECT array_agg(id ORDER BY id) FROM t WHERE id >= 1000")
    wait(aconn)
    out["tx"] = tv(cur.fetchone())
    # several statements in one query string: last result wins
    cur.execute("SELECT 1; SELECT 2; SELECT 'last'")
    wait(aconn)
    out["multi_stmt"] = tv(cur.fetchall())
    R["queries"] = out

with R.step("errors"):
    out = {}
    for name, sql in (("division_by_zero", "SELECT 1/0"),
                      ("unique_violation", "INSERT INTO t VALUES (1, 'dup')"),
                      ("syntax_error", "SELECT FROM WHERE"),
                      ("undefined_function", "SELECT no_such_fn(1)")):
        cur.execute(sql)
        try:
            wait(aconn)
            out[name] = "no error"
        except psycopg2.Error as e:
            out[name] = err(e)
    cur.execute("SELECT 'usable after errors'")
    wait(aconn)
    out["after"] = tv(cur.fetchone())
    R["errors"] = out

with R.step("concurrent"):
    # several async connections in flight at once, multiplexed with select()
    conns = [psycopg2.connect(_common.dsn(), async_=1) for _ in range(4)]
    pending = {c.fileno(): c for c in conns}
    state = {c.fileno(): ext.POLL_WRITE for c in conns}
    while pending:
        rl = [fd for fd, s in state.items() if fd in pending and s == ext.POLL_READ]
        wl = [fd for fd, s in state.items() if fd in pending and s == ext.POLL_WRITE]
        r, w, _ = select.select(rl, wl, [], 30)
        if not r and not w:
            raise RuntimeError("timeout connecting")
        for fd in r + w:
            s = pending[fd].poll()
            state[fd] = s
            if s == ext.POLL_OK:
                del pending[fd]
    curs = [c.cursor() for c in conns]
    for i, c in enumerate(curs):
        c.execute("SELECT pg_sleep(0.2), %s * 10", (i,))
    results = []
    for c, cu in zip(conns, curs):
        wait(c)
        results.append(tv(cu.fetchone()))
    R["concurrent"] = results
    for c in conns:
        c.close()

with R.step("notify"):
    out = {}
    cur.execute("LISTEN async_chan")
    wait(aconn)
    other = psycopg2.connect(_common.dsn())
    other.autocommit = True
    with other.cursor() as oc:
        oc.execute("NOTIFY async_chan, 'hello async'")
        oc.execute("SELECT pg_notify('async_chan', 'second')")
    got = []
    tries = 0
    while len(got) < 2 and tries < 20:
        if select.select([aconn], [], [], 5) == ([], [], []):
            tries += 1
            continue
        aconn.poll()
        while aconn.notifies:
            n = aconn.notifies.pop(0)
            got.append((n.channel, n.payload, n.pid == other.get_backend_pid()))
    out["received"] = got
    other.close()
    R["notify"] = out

with R.step("cancel"):
    pid = aconn.get_backend_pid()
    cur.execute("SELECT pg_sleep(20)")
    R["cancel_saw_active"] = _common.wait_until_active(
        lambda: psycopg2.connect(_common.dsn()), pid)
    aconn.cancel()
    try:
        wait(aconn)
        R["cancel"] = "no error"
    except psycopg2.Error as e:
        R["cancel"] = {"class": type(e).__name__, "pgcode": e.pgcode,
                       "msg": scrub(str(e))}

with R.step("unsupported_in_async"):
    out = {}
    try:
        aconn.commit()
    except psycopg2.ProgrammingError as e:
        out["commit"] = str(e)
    try:
        aconn.cursor("named")
    except psycopg2.ProgrammingError as e:
        out["named_cursor"] = str(e)
    R["unsupported_in_async"] = out

aconn.close()
R["closed"] = aconn.closed
_common.emit(R.result)
