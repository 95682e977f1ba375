"""What the oracle's revisions call besides Alembic's op.

    point(name)        a named point of a revision ("seed1:start",
                       "seed1:end").  $ORACLE_POINTS (JSON, set per process
                       by tests/oracle/oracle.py) may ask for a pg_sleep or an
                       advisory-lock barrier there:
                       {"seed1:end": {"sleep": 0.2, "barrier": 100003}}.
                       A barrier is `SELECT pg_advisory_xact_lock_shared(K)`
                       in the migration's own transaction: the oracle holds K
                       exclusively and lets the process go by releasing it.
    copy_in(sql, data) COPY ... FROM STDIN on the migration's connection
                       (psycopg2's copy_expert: SQLAlchemy has no COPY).

While tests/oracle/runner.py records a run (RECORD is a list), the points
and COPYs are recorded too, so the psycopg 3 replay client
(tests/oracle/replay.py) sends the same statements with its own points.
"""
import io
import json
import os

RECORD = None


def points():
    return json.loads(os.environ.get("ORACLE_POINTS") or "{}")


def point_sql(name, table=None):
    """The statements a point sends for this process (none by default)."""
    cfg = (table if table is not None else points()).get(name) or {}
    out = []
    if cfg.get("sleep"):
        out.append("SELECT pg_sleep(%.3f)" % float(cfg["sleep"]))
    if cfg.get("barrier"):
        out.append("SELECT pg_advisory_xact_lock_shared(%d)" % int(cfg["barrier"]))
    return out


def point(name):
    from alembic import op
    if RECORD is not None:
        RECORD.append({"op": "point", "name": name})
    for sql in point_sql(name):
        op.execute(sql)


def copy_in(sql, data):
    from alembic import op
    if RECORD is not None:
        RECORD.append({"op": "copy", "sql": sql, "data": data})
    raw = op.get_bind().connection  # the DBAPI (psycopg2) connection
    cur = raw.cursor()
    try:
        cur.copy_expert(sql, io.StringIO(data))
    finally:
        cur.close()
