#!/usr/bin/python3
"""One process of the oracle: `alembic upgrade heads` on a connection of
its own, then a later write on that same connection (Alembic's "sharing a
connection" recipe, SQLAlchemy 2.0 style).

    runner.py NAME [--target REV] [--no-audit] [--record FILE]
              [--recipe future|begin|legacy] [--before KIND]

Run in a directory holding the scenario's alembic.ini (made by
tests/oracle/oracle.py: script_location is tests/oracle/project, the
versions one migration family); the database URL is $DATABASE_URL
(postgresql+psycopg2).

1. opens a SQLAlchemy connection (future engine, NullPool), puts it in
   config.attributes["connection"] and runs command.upgrade(cfg, TARGET)
   (default "heads"); the project's env.py runs the migrations in a
   transaction of Alembic's own on it, and commits;
2. on the same connection: INSERT INTO oracle_audit (who) VALUES (NAME),
   reads the version table, COMMIT -- the process's later write, which must
   be in the database iff the process exits 0.

--recipe picks how the connection is shared (Alembic's cookbook):

    future  (default) SQLAlchemy 2.0 style: engine.connect(); Alembic
            commits the migration's own transaction; the later write is a
            transaction of its own (conn.commit())
    legacy  SQLAlchemy 1.4 engine.connect(): the same, the later INSERT
            autocommits
    begin   SQLAlchemy 1.4 `with engine.begin() as conn:` (the recipe as
            Alembic's cookbook prints it): Alembic runs inside the app's
            transaction, and the later write is in that same transaction,
            committed with the migration when the block ends

--before KIND runs the app's own statement on the connection first, in the
transaction the migration then joins (future and begin recipes): a SQL
function that writes ("function": its row is "NAME:before" in
oracle_audit), a setting, an advisory transaction lock, a temporary
table, or a pool's "SELECT 1" ("probe").  After the upgrade, still in that
transaction, the process looks whether its setting, lock or table is
still there ("before_ok" in its JSON line); with the future recipe it then
commits that transaction, and its later write is a transaction of its own.

Prints one JSON line: {"name", "ok", "versions", "error"}; exit 0 on
success, 1 on an error the app saw (a database error, Alembic's
CommandError), 3 on anything else.  $ORACLE_LINGER=S keeps the process
alive S seconds after printing (a web app goes on running after its
start-up: its gate lock must not be held meanwhile).  --record FILE writes every statement
the upgrade sent (SQLAlchemy's before_cursor_execute), with its parameters,
whether it was an executemany, and the SQLSTATE it failed with, plus
COMMIT/ROLLBACK, COPY and the revisions' points (oracle_hooks): the script
tests/oracle/replay.py sends with psycopg 3.
"""
import json
import os
import sys
import traceback
from collections.abc import Mapping

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "project"))

import oracle_hooks  # noqa: E402

# --before KIND: the app's own work in the shared transaction before the
# migration (issue 19): the statement, and how the process sees afterwards,
# on the same connection, that it is still there.  A write's row is looked
# for by the oracle itself (oracle_audit, "NAME:before").
BEFORE = {
    "function": "SELECT oracle_record(:b)",   # a SQL function that inserts NAME:before
    "setting": "SET statement_timeout = '10min'",
    "advisory": "SELECT pg_advisory_xact_lock(hashtext(:w))",
    "temp": "CREATE TEMP TABLE oracle_scratch (a integer)",
    "probe": "SELECT 1",                                    # a pool's ping: admitted
}
BEFORE_CHECK = {
    "setting": ("SHOW statement_timeout", "10min"),
    "advisory": ("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                 "AND pid = pg_backend_pid() AND objsubid = 1 AND objid::bigint = "
                 "(hashtext(:w)::bigint & 4294967295)", 1),
    "temp": ("SELECT to_regclass('pg_temp.oracle_scratch') IS NOT NULL", True),
}


def error_of(e):
    """What the app saw: SQLSTATE, class, constraint, first message line."""
    from alembic.util import CommandError
    from sqlalchemy.exc import DBAPIError
    orig = getattr(e, "orig", None) if isinstance(e, DBAPIError) else None
    if orig is None and hasattr(e, "pgcode"):
        orig = e  # psycopg2's own (COPY goes through the raw DBAPI connection)
    if orig is not None:
        diag = getattr(orig, "diag", None)
        return {"class": type(orig).__name__, "sqlstate": getattr(orig, "pgcode", None),
                "constraint": getattr(diag, "constraint_name", None) if diag else None,
                "message": (str(orig).strip().splitlines() or [""])[0]}
    kind = "CommandError" if isinstance(e, CommandError) else type(e).__name__
    return {"class": kind, "sqlstate": None, "constraint": None,
            "message": (str(e).strip().splitlines() or [""])[0]}


def main():
    args = sys.argv[1:]
    name = args.pop(0)
    target, audit, record, recipe, before = "heads", True, None, "future", None
    while args:
        a = args.pop(0)
        if a == "--target":
            target = args.pop(0)
        elif a == "--no-audit":
            audit = False
        elif a == "--record":
            record = args.pop(0)
        elif a == "--recipe":
            recipe = args.pop(0)
        elif a == "--before":
            before = args.pop(0)
            if before not in BEFORE:
                raise SystemExit("runner.py: unknown --before %r" % before)
        else:
            raise SystemExit("runner.py: unknown argument %r" % a)

    from alembic import command
    from alembic.config import Config
    from sqlalchemy import create_engine, event, pool, text

    engine = create_engine(os.environ["DATABASE_URL"], poolclass=pool.NullPool,
                           future=recipe == "future")
    rec = []
    if record:
        @event.listens_for(engine, "before_cursor_execute")
        def _sql(conn, cursor, statement, parameters, context, executemany):
            if oracle_hooks.RECORD is not None:
                # SQLAlchemy 2's "insertmanyvalues" (op.bulk_insert) sends a
                # batch as ONE execute of a multi-VALUES INSERT with one
                # parameter mapping, and tells this hook executemany=True:
                # recorded as the single execute it is (replay.py would
                # otherwise hand executemany the mapping's keys, strs)
                many = bool(executemany) and not isinstance(parameters, Mapping)
                params = list(parameters) if many else parameters
                rec.append({"op": "sql", "sql": statement, "params": params or None,
                            "many": many})

        @event.listens_for(engine, "handle_error")
        def _err(ctx):
            if oracle_hooks.RECORD is not None and rec and rec[-1]["op"] == "sql":
                rec[-1]["error"] = getattr(ctx.original_exception, "pgcode", None) or "?"

        @event.listens_for(engine, "commit")
        def _commit(conn):
            if oracle_hooks.RECORD is not None:
                rec.append({"op": "commit"})

        @event.listens_for(engine, "rollback")
        def _rollback(conn):
            if oracle_hooks.RECORD is not None:
                rec.append({"op": "rollback"})

    out = {"name": name, "ok": False, "versions": None, "error": None}
    code = 0
    def upgrade(conn):
        cfg = Config("alembic.ini")
        cfg.attributes["connection"] = conn
        if before:  # the app's own work, in the transaction the migration joins
            conn.execute(text(BEFORE[before]), {"w": name, "b": name + ":before"})
        oracle_hooks.RECORD = rec if record else None
        try:
            command.upgrade(cfg, target)
        finally:
            oracle_hooks.RECORD = None
        if before in BEFORE_CHECK:  # still the same transaction: still there?
            q, want = BEFORE_CHECK[before]
            out["before_ok"] = conn.execute(text(q), {"w": name}).scalar() == want
        if before and recipe == "future":
            # the app commits its work and the migration together, and
            # writes later in a transaction of its own
            conn.commit()
        if audit:
            conn.execute(text("INSERT INTO oracle_audit (who) VALUES (:w)"), {"w": name})
        return sorted(conn.execute(
            text("SELECT version_num FROM alembic_version")).scalars().all())

    try:
        if recipe == "begin":
            with engine.begin() as conn:  # commits at the end of the block
                out["versions"] = upgrade(conn)
        else:
            with engine.connect() as conn:
                out["versions"] = upgrade(conn)
                if recipe == "future":
                    conn.commit()
        out["ok"] = True
    except Exception as e:  # what the app saw
        out["error"] = error_of(e)
        out["versions"] = None
        from alembic.util import CommandError
        from sqlalchemy.exc import DBAPIError
        import psycopg2
        code = 1 if isinstance(e, (DBAPIError, CommandError, psycopg2.Error)) else 3
        if code == 3:
            traceback.print_exc()
    if record:
        with open(record, "w") as f:
            json.dump(rec, f, indent=1, default=str)
    print(json.dumps(out, sort_keys=True), flush=True)
    if os.environ.get("ORACLE_LINGER"):  # a web app keeps running after its start-up
        import time
        time.sleep(float(os.environ["ORACLE_LINGER"]))
    return code


if __name__ == "__main__":
    sys.exit(main())
