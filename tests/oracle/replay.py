#!/usr/bin/python3
"""The psycopg 3 side of the oracle: sends, in one transaction on one
psycopg 3 connection, the statements a real `alembic upgrade heads`
sent (recorded by runner.py --record from a clean run of the same
migration family and start), then the process's later write on the same
connection -- as runner.py does with psycopg2.

    replay.py NAME RECORDING [--no-audit] [--same-txn] [--before KIND]

--before KIND: the app's own work first, in the migration's transaction,
as runner.py --before (the same kinds; "before_ok" checked just before
the transaction's COMMIT).

Debian bookworm's SQLAlchemy 1.4 has no psycopg 3 dialect, so Alembic
itself cannot run on psycopg 3 here; this client covers psycopg 3's own
libpq paths (Debian's ctypes backend, through the shim's dlsym):

  * a statement without parameters: PQsendQuery (simple protocol; a
    multi-statement string stays one string);
  * a statement with parameters: prepared (prepare=True: PQsendPrepare +
    PQsendQueryPrepared);
  * an executemany (Alembic's op.bulk_insert with SQLAlchemy 1.4):
    cursor.executemany, which psycopg 3 runs in pipeline mode (SQLAlchemy
    2 sends the batch as one multi-VALUES INSERT, recorded and replayed as
    one execute);
  * SAVEPOINT / RELEASE / ROLLBACK TO of SQLAlchemy's begin_nested become
    psycopg 3 nested transactions (conn.transaction(): "_pg3_n" savepoints);
  * COPY ... FROM STDIN: cursor.copy();
  * the revisions' points (oracle_hooks.point_sql: pg_sleep, barriers) are
    sent as runner.py's revisions would send them for this process.

With --same-txn the later write goes into the migration's own transaction,
just before its COMMIT (as runner.py --recipe begin).

Like Alembic, it first looks at the version table: if the database is
already at the recording's target heads it sends nothing more (Alembic
finds nothing to do) and goes on to the later write.  A statement that
failed in the recording and was caught by the revision (the next step
rolls its savepoint back: an insert-if-absent) may fail the same way; any
other error ends the run as it would end Alembic's.  Alembic's version
UPDATE/DELETE matching other than one row ends it as Alembic's
CommandError does.  Output and exit status as runner.py's; 4 when the
database is in a state the recording does not cover (neither its start nor
its target).
"""
import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "project"))

import oracle_hooks  # noqa: E402

SAVEPOINT = re.compile(r"^\s*SAVEPOINT\s+(\S+)\s*$", re.I)
RELEASE = re.compile(r"^\s*RELEASE\s+SAVEPOINT\s+(\S+)\s*$", re.I)
ROLLBACK_TO = re.compile(r"^\s*ROLLBACK\s+TO\s+SAVEPOINT\s+(\S+)\s*$", re.I)
HAS_VT = "relname=%(name)s"
READ_VT = re.compile(r"^\s*SELECT alembic_version\.version_num\s+FROM alembic_version\s*$")
# Alembic's version writes whose row count it checks (MigrationContext
# _update_version / _delete_version): anything but 1 raises CommandError.
WRITE_VT = re.compile(r"^\s*(UPDATE alembic_version SET version_num='(\w+)' WHERE "
                      r"alembic_version\.version_num = '(\w+)'|DELETE FROM alembic_version "
                      r"WHERE alembic_version\.version_num = '(\w+)')\s*$")


class Diverged(Exception):
    pass


class CommandError(Exception):
    """What alembic.util.CommandError would have said."""


def error_of(e):
    diag = getattr(e, "diag", None)
    return {"class": type(e).__name__, "sqlstate": getattr(e, "sqlstate", None),
            "constraint": getattr(diag, "constraint_name", None) if diag else None,
            "message": (str(e).strip().splitlines() or [""])[0]}


def main():
    args = sys.argv[1:]
    name, recording = args[0], args[1]
    audit = "--no-audit" not in args[2:]
    same_txn = "--same-txn" in args[2:]
    before = args[args.index("--before") + 1] if "--before" in args[2:] else None
    with open(recording) as f:
        meta = json.load(f)
    steps, target = meta["steps"], sorted(meta["target"])
    start = sorted(meta["start"])
    points = oracle_hooks.points()

    import psycopg
    assert psycopg.pq.__impl__ == "python", psycopg.pq.__impl__
    out = {"name": name, "ok": False, "versions": None, "error": None}
    code = 0
    conn = psycopg.connect("", autocommit=False)
    stack = []  # psycopg 3 nested transactions standing for SQLAlchemy's savepoints
    from runner import BEFORE, BEFORE_CHECK

    def pg3(q):  # runner.py's :w for psycopg 3
        return re.sub(r"(?<![:\w]):([wb])\b", r"%(\1)s", q)

    def check_before():
        """Once, just before the migration's transaction commits."""
        if before in BEFORE_CHECK and "before_ok" not in out:
            q, want = BEFORE_CHECK[before]
            out["before_ok"] = conn.execute(pg3(q), {"w": name}).fetchone()[0] == want

    def versions_now(read_sql):
        cur = conn.execute(read_sql)
        return sorted(r[0] for r in cur.fetchall())

    def run(step):
        sql, params, many = step["sql"], step.get("params"), step.get("many")
        if SAVEPOINT.match(sql):
            tx = conn.transaction()
            tx.__enter__()
            stack.append(tx)
            return None
        if RELEASE.match(sql):
            stack.pop().__exit__(None, None, None)
            return None
        if ROLLBACK_TO.match(sql):
            tx = stack.pop()
            exc = psycopg.Rollback(tx)
            tx.__exit__(type(exc), exc, None)
            return None
        cur = conn.cursor()
        if many:
            # a list of parameter sets (runner.py records SQLAlchemy 2's
            # insertmanyvalues batch as one execute, not as its keys)
            assert isinstance(params, list) and all(
                isinstance(p, (dict, list)) for p in params), params
            cur.executemany(sql, params)
        elif params:
            cur.execute(sql, params, prepare=True)
        else:
            cur.execute(sql)
        return cur

    read_sql = next((s["sql"] for s in steps if s["op"] == "sql" and READ_VT.match(s["sql"])),
                    "SELECT alembic_version.version_num \nFROM alembic_version")
    try:
        if before:
            conn.execute(pg3(BEFORE[before]), {"w": name, "b": name + ":before"})
        i = 0
        at_target = False
        while i < len(steps):
            step = steps[i]
            i += 1
            op = step["op"]
            if op == "point":
                for sql in oracle_hooks.point_sql(step["name"], points):
                    conn.execute(sql)
            elif op == "copy":
                with conn.cursor().copy(step["sql"]) as cp:
                    cp.write(step["data"])
            elif op == "commit":
                check_before()
                if same_txn and audit and i == len(steps):
                    conn.execute("INSERT INTO oracle_audit (who) VALUES (%s)", (name,))
                    audit = False
                conn.commit()
            elif op == "rollback":
                conn.rollback()
            elif HAS_VT in step["sql"] and step.get("params") == {"name": "alembic_version"}:
                # Alembic's has_table: run it as psycopg 3 would (bound parameter)
                cur = run(step)
                present = bool(cur.fetchall())
                if present and not start:
                    # Alembic would read the version table next: at the target, nothing to do
                    if versions_now(read_sql) == target:
                        at_target = True
                        break
                    raise Diverged("version table present, recording starts without one")
                if not present and start:
                    raise Diverged("no version table, recording starts at %s" % start)
            elif READ_VT.match(step["sql"]):
                v = sorted(r[0] for r in run(step).fetchall())
                if v == target and v != start:
                    at_target = True
                    break
                if v != start:
                    raise Diverged("version table at %s, recording starts at %s" % (v, start))
            else:
                try:
                    cur = run(step)
                    m = WRITE_VT.match(step["sql"])
                    if m and cur.rowcount != 1:
                        if m.group(2):
                            raise CommandError(
                                "Online migration expected to match one row when updating "
                                "'%s' to '%s' in 'alembic_version'; %d found"
                                % (m.group(3), m.group(2), cur.rowcount))
                        raise CommandError(
                            "Online migration expected to match one row when deleting '%s' "
                            "in 'alembic_version'; %d found" % (m.group(4), cur.rowcount))
                except psycopg.Error as e:
                    nxt = steps[i] if i < len(steps) else {}
                    if (step.get("error") == e.sqlstate and nxt.get("op") == "sql"
                            and ROLLBACK_TO.match(nxt["sql"])):
                        continue  # the revision catches this one (its savepoint is rolled back)
                    raise
        if at_target:
            check_before()
            conn.commit()  # Alembic's transaction of reads ends
        if audit:
            conn.execute("INSERT INTO oracle_audit (who) VALUES (%s)", (name,))
        out["versions"] = versions_now("SELECT version_num FROM alembic_version")
        check_before()
        conn.commit()
        out["ok"] = True
        out["noop"] = at_target
    except psycopg.Error as e:
        out["error"] = error_of(e)
        code = 1
    except CommandError as e:
        out["error"] = {"class": "CommandError", "sqlstate": None, "constraint": None,
                        "message": str(e)}
        code = 1
    except Diverged as e:
        out["error"] = {"class": "Diverged", "sqlstate": None, "constraint": None,
                        "message": str(e)}
        code = 4
    finally:
        try:
            conn.close()
        except Exception:
            pass
    print(json.dumps(out, sort_keys=True), flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
