"""A scripted libpq client for the race-guard tests (tests/integration/test_guard.py).

    /usr/bin/python3 client.py DRIVER '<JSON program>'

DRIVER picks the libpq path the statements take:

    psycopg2        synchronous psycopg2: PQexec
    psycopg2-green  psycopg2 with gevent + psycogreen's wait callback:
                    PQsendQuery + PQconsumeInput/PQisBusy + PQgetResult
    psycopg2-async  psycopg2 with async_=1 (always autocommit: BEGIN and
                    COMMIT are sent as statements): PQsendQuery + PQgetResult
    psycopg3        psycopg 3, Debian's pure-Python (ctypes) libpq wrapper:
                    PQsendQuery(Params) + PQgetResult, through dlsym
    psycopg3-prepared
                    the same with prepare_threshold=0: every statement
                    prepared (PQsendPrepare + PQsendQueryPrepared)

The program is {"autocommit": bool, "steps": [STEP, ...]}; a step is

    ["sql", SQL]      run SQL; emit what the app sees
    ["sqlp", SQL, [params]]
                      run SQL with %s parameters (psycopg 3 sends them as $n)
    ["begin"]         start a transaction: a no-op for the drivers that open
                      one implicitly, "BEGIN" for psycopg2-async
    ["commit"] / ["rollback"]
                      conn.commit() / conn.rollback() ("COMMIT"/"ROLLBACK"
                      statements for psycopg2-async)
    ["prepared", SQL] run SQL as a prepared statement (psycopg 3:
                      prepare=True, i.e. PQsendPrepare + PQsendQueryPrepared;
                      the other drivers run it plainly)
    ["executemany", SQL, [[params], ...]]
                      cursor.executemany (psycopg 3 runs it in pipeline mode)
    ["pipeline", [SQL, ...]]
                      psycopg 3: the statements in one conn.pipeline() block
    ["status"]        emit the transaction status
    ["wait_file"]     wait until the file $GUARD_BARRIER exists (the test
                      creates it), at most 30 s (exit 90 on timeout)

Every step emits one JSON line on stdout (nothing time- or pid-dependent,
so that two runs of the same scenario compare byte for byte):

    {"i": N, "op": "sql", "sql": "<first 60 chars>", "ok": true,
     "statusmessage": "INSERT 0 1", "rowcount": 1, "rows": [[...]] | null,
     "tx": "INTRANS"}
    {"i": N, "op": "sql", ..., "ok": false, "error": {"class": ..,
     "pgcode": .., "pgerror": .., "diag": {...}}, "tx": "INERROR"}

A database error is recorded and the program goes on (an app would stop;
the tests compare what every later statement sees too).  The first line is
{"op": "connected", "driver": ..., "backend_pid": N}; the last
{"op": "done"}.  Any other exception exits 3.  Nothing here knows about
migshim: the same program runs with and without the preload.  The
connection string is $WORKLOAD_DSN; the tests name the connection with
$PGAPPNAME.
"""

import json
import os
import select
import sys
import time

DRIVER = sys.argv[1]
PROGRAM = json.loads(sys.argv[2])
DSN = os.environ["WORKLOAD_DSN"]

DIAG_FIELDS = ("column_name", "constraint_name", "context", "datatype_name",
               "internal_position", "internal_query", "message_detail",
               "message_hint", "message_primary", "schema_name", "severity",
               "severity_nonlocalized", "source_file", "source_function",
               "source_line", "sqlstate", "statement_position", "table_name")


def emit(rec):
    sys.stdout.write(json.dumps(rec, sort_keys=True, default=str) + "\n")
    sys.stdout.flush()


def plain(v):
    if v is None or isinstance(v, (bool, int, str)):
        return v
    return str(v)


def wait_file(path, timeout):
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            emit({"op": "barrier_timeout"})
            os._exit(90)
        time.sleep(0.005)


# --------------------------------------------------------------------------
# drivers

class Driver:
    """What both drivers do the same way (DB-API)."""

    def executemany(self, sql, rows):
        cur = self.conn.cursor()
        cur.executemany(sql, rows)
        return cur.statusmessage, cur.rowcount, None


class Psycopg2(Driver):
    def __init__(self, autocommit, green=False, async_=False):
        if green:
            from psycogreen.gevent import patch_psycopg
            patch_psycopg()
        import psycopg2
        import psycopg2.extensions as ext
        self.errors = (psycopg2.Error,)
        self.async_ = async_
        if green:
            assert ext.get_wait_callback() is not None
        if async_:
            self.conn = psycopg2.connect(DSN, async_=1)
            self.wait()
        else:
            self.conn = psycopg2.connect(DSN)
            self.conn.autocommit = autocommit
        self.tx_names = {ext.TRANSACTION_STATUS_IDLE: "IDLE",
                         ext.TRANSACTION_STATUS_ACTIVE: "ACTIVE",
                         ext.TRANSACTION_STATUS_INTRANS: "INTRANS",
                         ext.TRANSACTION_STATUS_INERROR: "INERROR",
                         ext.TRANSACTION_STATUS_UNKNOWN: "UNKNOWN"}

    def wait(self):
        import psycopg2.extensions as ext
        while True:
            state = self.conn.poll()
            if state == ext.POLL_OK:
                return
            if state == ext.POLL_READ:
                select.select([self.conn.fileno()], [], [], 30)
            elif state == ext.POLL_WRITE:
                select.select([], [self.conn.fileno()], [], 30)
            else:
                raise RuntimeError("poll() returned %r" % state)

    def backend_pid(self):
        return self.conn.get_backend_pid()

    def tx(self):
        return self.tx_names[self.conn.info.transaction_status]

    def execute(self, sql, params=None):
        cur = self.conn.cursor()
        cur.execute(sql, params)
        if self.async_:
            self.wait()     # an error is raised by poll()
        rows = None
        if cur.description is not None:
            rows = [[plain(v) for v in r] for r in cur.fetchall()]
        return cur.statusmessage, cur.rowcount, rows

    def prepared(self, sql):
        return self.execute(sql)

    def pipeline(self, stmts):
        out = None
        for s in stmts:
            out = self.execute(s)
        return out

    def begin(self):
        if self.async_:
            return self.execute("BEGIN")
        return None

    def commit(self):
        if self.async_:
            return self.execute("COMMIT")
        self.conn.commit()
        return None

    def rollback(self):
        if self.async_:
            return self.execute("ROLLBACK")
        self.conn.rollback()
        return None

    @staticmethod
    def error(e):
        return {"class": type(e).__name__, "pgcode": e.pgcode, "pgerror": e.pgerror,
                "str": str(e),
                "diag": {f: plain(getattr(e.diag, f, None)) for f in DIAG_FIELDS}}


class Psycopg3(Driver):
    def __init__(self, autocommit, prepare_threshold=5):
        import psycopg
        assert psycopg.pq.__impl__ == "python", psycopg.pq.__impl__
        self.errors = (psycopg.Error,)
        self.conn = psycopg.connect(DSN, autocommit=autocommit,
                                    prepare_threshold=prepare_threshold)

    def backend_pid(self):
        return self.conn.info.backend_pid

    def tx(self):
        return self.conn.info.transaction_status.name

    def execute(self, sql, params=None):
        cur = self.conn.cursor()
        cur.execute(sql, params)
        rows = None
        if cur.description is not None:
            rows = [[plain(v) for v in r] for r in cur.fetchall()]
        return cur.statusmessage, cur.rowcount, rows

    def prepared(self, sql):
        cur = self.conn.cursor()
        cur.execute(sql, prepare=True)
        rows = None
        if cur.description is not None:
            rows = [[plain(v) for v in r] for r in cur.fetchall()]
        return cur.statusmessage, cur.rowcount, rows

    def pipeline(self, stmts):
        out = None
        with self.conn.pipeline():
            curs = [self.conn.cursor() for _ in stmts]
            for c, s in zip(curs, stmts):
                c.execute(s)
        c = curs[-1]
        return c.statusmessage, c.rowcount, None

    def begin(self):
        return None

    def commit(self):
        self.conn.commit()
        return None

    def rollback(self):
        self.conn.rollback()
        return None

    @staticmethod
    def error(e):
        return {"class": type(e).__name__, "pgcode": e.sqlstate,
                "pgerror": getattr(e, "pgerror", None), "str": str(e),
                "diag": {f: plain(getattr(e.diag, f, None)) for f in DIAG_FIELDS}}


def make_driver(name, autocommit):
    if name == "psycopg2":
        return Psycopg2(autocommit)
    if name == "psycopg2-green":
        return Psycopg2(autocommit, green=True)
    if name == "psycopg2-async":
        return Psycopg2(True, async_=True)
    if name == "psycopg3":
        return Psycopg3(autocommit)
    if name == "psycopg3-prepared":
        return Psycopg3(autocommit, prepare_threshold=0)
    raise SystemExit("unknown driver %r" % name)


# --------------------------------------------------------------------------

def main():
    d = make_driver(DRIVER, bool(PROGRAM.get("autocommit")))
    emit({"op": "connected", "driver": DRIVER, "backend_pid": d.backend_pid(),
          "tx": d.tx()})
    for i, step in enumerate(PROGRAM["steps"]):
        op = step[0]
        rec = {"i": i, "op": op}
        if op == "sql":
            rec["sql"] = " ".join(step[1].split())[:60]
        try:
            if op == "sql":
                out = d.execute(step[1])
            elif op == "sqlp":
                rec["sql"] = " ".join(step[1].split())[:60]
                out = d.execute(step[1], step[2])
            elif op == "prepared":
                rec["sql"] = " ".join(step[1].split())[:60]
                out = d.prepared(step[1])
            elif op == "executemany":
                out = d.executemany(step[1], step[2])
            elif op == "pipeline":
                out = d.pipeline(step[1])
            elif op == "begin":
                out = d.begin()
            elif op == "commit":
                out = d.commit()
            elif op == "rollback":
                out = d.rollback()
            elif op == "status":
                out = None
            elif op == "wait_file":
                wait_file(os.environ["GUARD_BARRIER"], 30.0)
                out = None
            else:
                raise SystemExit("unknown step %r" % (step,))
            rec["ok"] = True
            if out is not None:
                rec["statusmessage"], rec["rowcount"], rec["rows"] = out
        except d.errors as e:
            rec["ok"] = False
            rec["error"] = d.error(e)
        rec["tx"] = d.tx()
        emit(rec)
    emit({"op": "done"})


if __name__ == "__main__":
    main()
