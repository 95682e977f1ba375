"""A scripted libpq client for the gate tests (tests/integration/test_gate.py).

    /usr/bin/python3 steps.py '<JSON program>'

The program is a list of steps, run in order; each step is a list whose
first element is the operation:

    ["connect", NAME, {"driver": "psycopg2"|"psycopg3", "autocommit": false,
                       "application_name": "...", "expect_error": false}]
    ["exec", NAME, SQL]             run SQL (no parameters), discard rows
    ["query", NAME, SQL]            run SQL, emit its rows
    ["queryp", NAME, SQL, PARAMS]   the same with %s parameters (psycopg 3
                                    sends them as $n)
    ["commit", NAME] / ["rollback", NAME] / ["close", NAME]
    ["status", NAME]                emit backend pid + transaction status
    ["mark", BARRIER]               create file $GATE_BARRIERS/BARRIER
    ["wait", BARRIER, TIMEOUT]      wait for that file (exit 90 on timeout)
    ["sleep", SECONDS]
    ["import", DRIVER]              import the driver now (not at connect)
    ["try", STEP]                   run STEP; an error is emitted, not fatal
    ["threads", [PROGRAM, ...]]     run each sub-program in its own thread,
                                    then join them all
    ["tbarrier", NAME, N]           threading.Barrier(N) shared by threads
    ["alembic_upgrade", NAME, {"target": REV, "may_commit": BARRIER,
                               "work_sleep": SECONDS}]
                                    what `alembic upgrade head` sends for a
                                    one-revision script (see below)

Every step emits one JSON line on stdout, {"ev": ..., "t": time.time(),
"tid": thread name, ...}: "begin"/"end" around each step, plus "error"
when a step raises (the program then exits 3, unless "expect_error").
The connection string is $WORKLOAD_DSN. Nothing here knows about migshim:
the same program runs with and without the preload.
"""

import json
import os
import sys
import threading
import time

DSN = os.environ.get("WORKLOAD_DSN", "")
BARRIERS = os.environ.get("GATE_BARRIERS", ".")
DEFAULT_DRIVER = os.environ.get("GATE_DRIVER", "psycopg2")

_out_lock = threading.Lock()
_conns = {}
_drivers = {}
_tbarriers = {}
_tb_lock = threading.Lock()


def emit(ev, **kw):
    rec = {"ev": ev, "t": time.time(), "tid": threading.current_thread().name}
    rec.update(kw)
    line = json.dumps(rec, default=str) + "\n"
    with _out_lock:
        sys.stdout.write(line)
        sys.stdout.flush()


class Fatal(Exception):
    pass


def barrier_path(name):
    return os.path.join(BARRIERS, name)


def mark(name):
    path = barrier_path(name)
    with open(path + ".tmp", "w") as f:
        f.write("%.6f\n" % time.time())
    os.rename(path + ".tmp", path)


def wait_file(name, timeout):
    deadline = time.monotonic() + float(timeout)
    path = barrier_path(name)
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            emit("barrier_timeout", name=name)
            os._exit(90)
        time.sleep(0.005)


def connect(name, opts):
    driver = opts.get("driver", DEFAULT_DRIVER)
    # the pid lets the test find where this process waits at the gate
    appname = opts.get("application_name", "gate-%s@%d" % (name, os.getpid()))
    dsn = "%s application_name=%s" % (DSN, appname)
    if driver == "psycopg3":
        import psycopg
        assert psycopg.pq.__impl__ == "python", psycopg.pq.__impl__
        conn = psycopg.connect(dsn, autocommit=bool(opts.get("autocommit")))
        pid = conn.info.backend_pid
        tx = conn.info.transaction_status.name
    else:
        import psycopg2
        import psycopg2.extensions as ext
        conn = psycopg2.connect(dsn)
        conn.autocommit = bool(opts.get("autocommit"))
        pid = conn.get_backend_pid()
        tx = {ext.TRANSACTION_STATUS_IDLE: "IDLE",
              ext.TRANSACTION_STATUS_ACTIVE: "ACTIVE",
              ext.TRANSACTION_STATUS_INTRANS: "INTRANS",
              ext.TRANSACTION_STATUS_INERROR: "INERROR",
              ext.TRANSACTION_STATUS_UNKNOWN: "UNKNOWN"}[conn.info.transaction_status]
    _conns[name] = conn
    _drivers[name] = driver
    emit("connected", name=name, backend_pid=pid, tx=tx, driver=driver)


def run_sql(name, sql, params=None, fetch=False):
    conn = _conns[name]
    cur = conn.cursor()
    cur.execute(sql, params)
    rows = None
    if fetch:
        rows = [list(r) for r in cur.fetchall()]
    cur.close()
    return rows


def alembic_upgrade(name, opts):
    """The statements Alembic 1.8 (SQLAlchemy 1.4) sends for `upgrade head`
    of a one-revision script on PostgreSQL (transactional DDL): has_table,
    CREATE TABLE alembic_version when absent (else read it), the revision's
    work, the version INSERT, COMMIT -- all in one transaction.  The
    revision also records itself in migration_runs (no unique key), so a
    revision run twice shows as two rows."""
    target = opts["target"]
    has = run_sql(name,
                  "select relname from pg_class c join pg_namespace n on "
                  "n.oid=c.relnamespace where "
                  "pg_catalog.pg_table_is_visible(c.oid) and relname=%s",
                  ("alembic_version",), fetch=True)
    exists = bool(has)
    emit("checked", name=name, exists=exists)
    if exists:
        cur = run_sql(name, "SELECT alembic_version.version_num FROM alembic_version",
                      fetch=True)
        current = sorted(r[0] for r in cur)
        emit("current", name=name, revs=current)
        if current == [target]:
            _conns[name].commit()
            emit("nothing_to_do", name=name)
            return
    else:
        run_sql(name, "CREATE TABLE alembic_version (\n"
                      "    version_num VARCHAR(32) NOT NULL, \n"
                      "    CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)\n)")
    emit("version_table_created", name=name)
    # the revision's own work
    run_sql(name, "CREATE TABLE widgets (id SERIAL NOT NULL, name VARCHAR(50), "
                  "PRIMARY KEY (id))")
    run_sql(name, "INSERT INTO migration_runs (rev, pid) VALUES (%s, %s)",
            (target, os.getpid()))
    if opts.get("work_sleep"):
        run_sql(name, "SELECT pg_sleep(%s)" % float(opts["work_sleep"]))
    run_sql(name, "INSERT INTO alembic_version (version_num) VALUES ('%s') "
                  "RETURNING alembic_version.version_num" % target)
    if opts.get("may_commit"):
        emit("waiting_to_commit", name=name)
        wait_file(opts["may_commit"], opts.get("timeout", 30))
    _conns[name].commit()
    emit("migrated", name=name, rev=target)


def run_program(program):
    for step in program:
        op, args = step[0], step[1:]
        emit("begin", op=op, args=args)
        expect_error = False
        if op == "try":
            step = args[0]
            op, args = step[0], step[1:]
            expect_error = True
        try:
            if op == "connect":
                opts = args[1] if len(args) > 1 else {}
                expect_error = expect_error or bool(opts.get("expect_error"))
                connect(args[0], opts)
            elif op == "exec":
                run_sql(args[0], args[1])
            elif op == "query":
                emit("rows", name=args[0], rows=run_sql(args[0], args[1], fetch=True))
            elif op == "queryp":
                emit("rows", name=args[0],
                     rows=run_sql(args[0], args[1], args[2], fetch=True))
            elif op == "commit":
                _conns[args[0]].commit()
            elif op == "rollback":
                _conns[args[0]].rollback()
            elif op == "close":
                _conns.pop(args[0]).close()
            elif op == "status":
                conn = _conns[args[0]]
                if _drivers[args[0]] == "psycopg3":
                    emit("status", name=args[0], backend_pid=conn.info.backend_pid,
                         tx=conn.info.transaction_status.name)
                else:
                    emit("status", name=args[0], backend_pid=conn.get_backend_pid(),
                         tx=conn.info.transaction_status)
            elif op == "mark":
                mark(args[0])
            elif op == "wait":
                wait_file(args[0], args[1] if len(args) > 1 else 30)
            elif op == "import":
                if args[0] == "psycopg3":
                    import psycopg
                    assert psycopg.pq.__impl__ == "python", psycopg.pq.__impl__
                else:
                    import psycopg2  # noqa: F401
            elif op == "sleep":
                time.sleep(float(args[0]))
            elif op == "tbarrier":
                with _tb_lock:
                    b = _tbarriers.setdefault(args[0], threading.Barrier(int(args[1])))
                b.wait(timeout=30)
            elif op == "threads":
                errors = []

                def body(prog):
                    try:
                        run_program(prog)
                    except Fatal as e:
                        errors.append(e)

                ts = [threading.Thread(target=body, args=(p,), name="T%d" % i)
                      for i, p in enumerate(args[0], 1)]
                for t in ts:
                    t.start()
                for t in ts:
                    t.join(60)
                    if t.is_alive():
                        emit("thread_hung", thread=t.name)
                        os._exit(91)
                if errors:
                    raise Fatal(str(errors[0]))
            elif op == "alembic_upgrade":
                alembic_upgrade(args[0], args[1])
            else:
                raise ValueError("unknown step %r" % (op,))
        except Fatal:
            raise
        except Exception as e:
            emit("error", op=op, args=args, cls=type(e).__name__,
                 sqlstate=getattr(e, "pgcode", None) or getattr(e, "sqlstate", None),
                 msg=str(e))
            if not expect_error:
                raise Fatal("%s: %s" % (type(e).__name__, e))
        emit("end", op=op, args=args)


def main():
    program = json.loads(sys.argv[1])
    emit("start", pid=os.getpid())
    try:
        run_program(program)
    except Fatal:
        sys.stdout.flush()
        os._exit(3)
    emit("done")


if __name__ == "__main__":
    main()
