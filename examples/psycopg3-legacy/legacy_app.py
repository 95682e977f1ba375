#!/usr/bin/python3
"""A legacy start-up script: plain psycopg 3, hand-written SQL migrations.

No Alembic, no ORM.  At start-up it brings the database up to date by
itself, the way many older apps do:

  1. connect (one connection, psycopg 3; Debian's build uses the pure-Python
     "ctypes" libpq wrapper);
  2. make sure the schema `app` and the version table `app.schema_version`
     exist (one row, column `version_num`, like Alembic's alembic_version);
  3. read the version, then apply every file of migrations/NNNN_*.sql
     numbered above it, in order, each in its own transaction, which also
     records the run in `app.migration_runs` (no unique key: a migration
     applied twice shows up as two rows) and sets the new version;
  4. report where the database is and exit 0 (a real app would start
     serving here).

Nothing coordinates two copies of it: started side by side on a fresh
database they race (CREATE SCHEMA / CREATE TABLE collisions, a data
migration applied twice).  Under LD_PRELOAD=libmigshim.so with

  MIGSHIM_VERSION_TABLE=schema_version
  MIGSHIM_VERSION_TABLE_SCHEMA=app
  MIGSHIM_HEADS=0003            (the newest migration's number)

one process migrates and the others wait at connect, then find the database
at 0003 and do nothing.  See README.md.

Environment:
  DATABASE_URL          libpq conninfo or postgresql:// URI (default: the
                        PG* variables)
  MIGRATION_SLEEP       seconds each migration sleeps inside its
                        transaction (default 0.2), so racing copies overlap
  LEGACY_BARRIER_DIR    with LEGACY_BARRIER_N: a start line for tests.  Each
  LEGACY_BARRIER_N      process drops a file in the directory and waits
                        (at most LEGACY_BARRIER_TIMEOUT s, default 30) until
                        N files are there before it connects, so N copies
                        reach the database at the same instant.

Exit status: 0 the database is at the newest migration; 1 a migration or
the bootstrap failed (the error is printed); 2 the database is at a version
this script does not know.
"""
import glob
import os
import re
import sys
import time

import psycopg

HERE = os.path.dirname(os.path.abspath(__file__))
MIGRATIONS_DIR = os.path.join(HERE, "migrations")
PID = os.getpid()


def log(msg: str) -> None:
    # one write per line: the lines of several processes never interleave
    os.write(2, f"legacy[{PID}]: {msg}\n".encode())


def migrations():
    """[(version, name, sql)] sorted by version: migrations/NNNN_name.sql."""
    out = []
    for path in sorted(glob.glob(os.path.join(MIGRATIONS_DIR, "*.sql"))):
        m = re.match(r"^(\d{4})_(\w+)\.sql$", os.path.basename(path))
        if not m:
            raise SystemExit(f"legacy: bad migration file name: {path}")
        with open(path, encoding="utf-8") as f:
            out.append((m.group(1), m.group(0)[:-4], f.read()))
    return out


def barrier() -> None:
    """The test-only start line (LEGACY_BARRIER_DIR / LEGACY_BARRIER_N)."""
    d = os.environ.get("LEGACY_BARRIER_DIR")
    if not d:
        return
    n = int(os.environ.get("LEGACY_BARRIER_N", "1"))
    timeout = float(os.environ.get("LEGACY_BARRIER_TIMEOUT", "30"))
    open(os.path.join(d, f"{PID}.arrived"), "w").close()
    deadline = time.monotonic() + timeout
    while len(glob.glob(os.path.join(d, "*.arrived"))) < n:
        if time.monotonic() > deadline:
            log(f"barrier: fewer than {n} processes arrived in {timeout:g} s; going on")
            return
        time.sleep(0.005)


def bootstrap(conn) -> None:
    with conn.transaction():
        conn.execute("CREATE SCHEMA IF NOT EXISTS app")
        conn.execute("CREATE TABLE IF NOT EXISTS app.schema_version ("
                     " version_num varchar(32) NOT NULL PRIMARY KEY)")


def current_version(conn):
    row = conn.execute("SELECT version_num FROM app.schema_version").fetchone()
    return row[0] if row else None


def main() -> int:
    todo = migrations()
    newest = todo[-1][0]
    sleep = float(os.environ.get("MIGRATION_SLEEP", "0.2"))
    barrier()
    dsn = os.environ.get("DATABASE_URL", "")
    # autocommit: every statement outside conn.transaction() commits by
    # itself, so the script never sits idle in an open transaction.
    conn = psycopg.connect(dsn, autocommit=True)
    try:
        bootstrap(conn)
        version = current_version(conn)
        known = [v for v, _, _ in todo]
        if version is not None and version not in known:
            log(f"database at {version}, which this code does not know "
                f"(newest here: {newest}); not touching it")
            return 2
        pending = [m for m in todo if version is None or m[0] > version]
        if not pending:
            log(f"database at {version}: nothing to do")
            return 0
        for v, name, sql in pending:
            log(f"applying {name} (database at {version or '(none)'})")
            with conn.transaction():
                conn.execute(sql)
                conn.execute("INSERT INTO app.migration_runs (version, pid) "
                             "VALUES (%s, %s)", (v, PID))
                conn.execute("SELECT pg_sleep(%s)", (sleep,))
                if version is None:
                    conn.execute("INSERT INTO app.schema_version (version_num) "
                                 "VALUES (%s)", (v,))
                else:
                    conn.execute("UPDATE app.schema_version SET version_num = %s",
                                 (v,))
            version = v
        log(f"migrated to {version}")
        return 0
    finally:
        conn.close()


if __name__ == "__main__":
    try:
        sys.exit(main())
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        log(f"migration failed: {type(exc).__name__} "
            f"(SQLSTATE {exc.sqlstate}): {first}")
        sys.exit(1)
