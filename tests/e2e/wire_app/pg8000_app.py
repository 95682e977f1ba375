"""A WSGI app whose every worker migrates at import through pg8000 1.10.6.

SQLAlchemy 1.4 refuses pg8000 older than 1.16.6 (Debian 12 has 1.10.6), so
this app sends Alembic 1.8's statement sequence itself, in Alembic's order
and shapes (../shared/alembic-statements.md): the dialect's probes, each
followed by ROLLBACK; then in one transaction the version table's lookup
(twice), CREATE TABLE alembic_version or the read of its row, each pending
revision's statements (the same as migrations/versions/*.py) with the
version INSERT ... RETURNING / UPDATE, whose row count it checks as Alembic
does; COMMIT.  pg8000 prepares every statement (Parse/Describe/Sync,
Bind/Execute/Sync) on a blocking socket.

Served by gunicorn sync workers (each worker imports it, so each migrates).
For the tests (tests/e2e/test_wire_fleet.py):
* WIRE_BARRIER_DIR, WIRE_BARRIER_N: a start line, after connecting and just
  before the first statement;
* one line per worker on stderr, in one write:
    wire-app[PID]: ready migrate_s=Y
    wire-app[PID]: migration failed: Type: message

Environment: WIRE_DSN (libpq key=value: host (the socket directory), port,
user, dbname), WIRE_TRANSPORT (unix|tcp), WIRE_MIGRATION_SLEEP (default 2).
GET /ready: 200 once alembic_version holds the heads, 503 otherwise.
"""
import json
import os
import time
import traceback

import startline  # (the app folder is the workers' working directory)

import pg8000

HEAD = "wire0003"
SLEEP = float(os.environ.get("WIRE_MIGRATION_SLEEP", "2"))


def say(msg: str) -> None:
    # one line in one write: the workers share stderr
    os.write(2, f"wire-app[{os.getpid()}]: {msg}\n".encode())


def connect():
    p = dict(kv.split("=", 1) for kv in os.environ["WIRE_DSN"].split())
    kw = dict(user=p.get("user", "postgres"), database=p["dbname"])
    if os.environ.get("WIRE_TRANSPORT", "unix") == "unix":
        kw["unix_sock"] = f"{p['host']}/.s.PGSQL.{p['port']}"
    else:
        kw.update(host="127.0.0.1", port=int(p["port"]))
    if os.environ.get("WIRE_TRANSPORT") == "tls":
        kw["ssl"] = True  # (pg8000 1.10.6: TLS, the certificate not verified)
    return pg8000.connect(**kw)


def ran(rev):
    return f"INSERT INTO migration_runs (revision, pid) VALUES ('{rev}', {os.getpid()})"


# The statements of migrations/versions/*.py as Alembic renders them.
REVISIONS = [
    ("wire0001", [
        "\nCREATE TABLE migration_runs (\n\trevision TEXT NOT NULL, \n\tpid INTEGER NOT NULL, \n"
        "\tat TIMESTAMP WITH TIME ZONE DEFAULT clock_timestamp()\n)\n\n",
        "CREATE TYPE plan_tier AS ENUM ('free', 'pro', 'team')",
        "\nCREATE TABLE accounts (\n\tid SERIAL NOT NULL, \n\tname VARCHAR(80) NOT NULL, \n"
        "\ttier plan_tier NOT NULL, \n\tPRIMARY KEY (id)\n)\n\n",
        ran("wire0001"),
    ]),
    ("wire0002", [
        "CREATE TYPE account_status AS ENUM ('active', 'closed')",
        "ALTER TABLE accounts ADD COLUMN status account_status DEFAULT 'active' NOT NULL",
        "\nCREATE TABLE plans (\n\tid SERIAL NOT NULL, \n\tname VARCHAR(40) NOT NULL, \n"
        "\ttier plan_tier NOT NULL, \n\tPRIMARY KEY (id)\n)\n\n",
        ran("wire0002"),
    ]),
    ("wire0003", [
        ("INSERT INTO plans (name, tier) VALUES (%s, %s)",
         [("Free", "free"), ("Pro", "pro"), ("Team", "team")]),
        f"SELECT pg_sleep({SLEEP})",
        ran("wire0003"),
    ]),
]

VERSION_TABLE_LOOKUP = (
    "select relname from pg_class c join pg_namespace n on n.oid=c.relnamespace where "
    "pg_catalog.pg_table_is_visible(c.oid) and relname=%s")


def start_line() -> None:
    line = startline.arrive()
    while startline.still_waiting(line, say):
        time.sleep(0.01)


def upgrade_head() -> None:
    conn = connect()
    try:
        start_line()
        cur = conn.cursor()
        # SQLAlchemy's dialect initialisation: short transactions, rolled back
        for probe in ("select pg_catalog.version()", "select current_schema()",
                      "show transaction isolation level", "show standard_conforming_strings"):
            cur.execute(probe)
            cur.fetchall()
            conn.rollback()
        # the migration: one transaction (pg8000 begins it before the first statement)
        cur.execute(VERSION_TABLE_LOOKUP, ("alembic_version",))
        exists = bool(cur.fetchall())
        cur.execute(VERSION_TABLE_LOOKUP, ("alembic_version",))
        cur.fetchall()
        if not exists:
            cur.execute("\nCREATE TABLE alembic_version (\n\tversion_num VARCHAR(32) NOT NULL, \n"
                        "\tCONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)\n)\n\n")
            current = None
        else:
            cur.execute("SELECT alembic_version.version_num \nFROM alembic_version")
            rows = cur.fetchall()
            current = rows[0][0] if rows else None
        order = [r for r, _ in REVISIONS]
        start = order.index(current) + 1 if current else 0
        for rev, statements in REVISIONS[start:]:
            for st in statements:
                if isinstance(st, tuple):
                    cur.executemany(*st)
                else:
                    cur.execute(st)
            if current is None:
                cur.execute("INSERT INTO alembic_version (version_num) VALUES (%s) "
                            "RETURNING alembic_version.version_num", (rev,))
                cur.fetchall()
            else:
                cur.execute("UPDATE alembic_version SET version_num=%s WHERE "
                            "alembic_version.version_num = %s", (rev, current))
                if cur.rowcount != 1:
                    raise RuntimeError(
                        f"Online migration expected to match one row when updating '{current}' "
                        f"to '{rev}' in 'alembic_version'; {cur.rowcount} found")
            current = rev
        conn.commit()
    finally:
        conn.close()


if os.environ.get("RUN_DB_MIGRATIONS_ON_STARTUP", "").lower() == "true":
    t0 = time.monotonic()
    try:
        upgrade_head()
    except Exception as exc:
        msg = f"{type(exc).__name__}: {exc}".strip().replace("\n", " ")
        say(f"migration failed: {msg}")
        traceback.print_exc()
        raise
    say(f"ready migrate_s={time.monotonic() - t0:.3f}")


def app(environ, start_response):
    if environ.get("PATH_INFO") != "/ready":
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found\n"]
    try:
        conn = connect()
        try:
            cur = conn.cursor()
            cur.execute("SELECT version_num FROM alembic_version")
            version = sorted(r[0] for r in cur.fetchall())
            conn.rollback()
        finally:
            conn.close()
        ok, body = version == [HEAD], {"version": version}
    except Exception as exc:     # noqa: BLE001 (the probe says what went wrong)
        ok, body = False, {"error": str(exc)}
    body.update(ready=ok, pid=os.getpid())
    start_response("200 OK" if ok else "503 Service Unavailable",
                   [("Content-Type", "application/json")])
    return [json.dumps(body).encode()]
