"""The wire gate behind a connection pooler (issue 22): a real pgbouncer, in
transaction mode and in session mode, between asyncpg/pg8000 and the
server.  Every test preloads the library (shimbuild.lib_path()).

Behind PgBouncer's transaction pooling a session lock taken on the app's
connection lands on whichever server connection served the statement and
stays there after the app is gone (no reset query in transaction mode): the
next fleet would wait until wait_timeout.  The gate detects the pooler (the
BackendKeyData pid the app got at start-up is not the pg_backend_pid() of
the gate's first round trip: a pooler fakes the cancel key) and does not
gate over the wire: one warn line, no lock.

* test_through_a_pooler_not_gated -- pg8000, asyncpg on asyncio and
  uvloop; pool_mode transaction and session; the database behind the
  target (the gate would lead): the warn line, exactly once, with both
  pids; afterwards no advisory lock anywhere in the database (pg_locks,
  with pgbouncer still up and its server connections pooled: in
  transaction mode a lock taken would still be there); then a peer holds
  the key on a direct connection and a second client does not wait for
  it; both clients' results equal a run through the same pooler without
  the preload.
* test_pool_says_it_once -- an asyncpg pool of 3 through the pooler: one
  warn line for the process and database, no lock.
* test_at_head_through_a_pooler_is_silent -- at the target the gate takes
  nothing anyway: no line.
The direct case (no pooler: leads, waits) is test_wire_gate.py's, whose
exact lines would fail on a pooler line there.
"""

import re
import sys
import time
from pathlib import Path

import psycopg2
import pytest

from test_wire_gate import Client, TARGET, unique_key, wire_library, clients  # noqa: F401

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
from topo import PgBouncer  # noqa: E402

MODES = ["transaction", "session"]
DRIVERS = [("pg8000", "-"), ("asyncpg", "asyncio"), ("asyncpg", "uvloop")]
WHERE = r"\(asyncpg/pg8000 connection on fd \d+, tcp\)"


def pooled_line(db):
    return re.compile(
        rf'database "{db}": this connection goes through a connection pooler \(the '
        rf"BackendKeyData pid (\d+) is not the server's backend pid (\d+)\): the wire gate "
        rf"cannot hold the migration lock across the pool's transactions, so this process is "
        rf"not gated; run the migration over a direct connection to the server \(e\.g\. a DSN "
        rf"without the pooler for `alembic upgrade`\) {WHERE}")


def advisory_in(mon, dbname):
    """Every advisory lock (held or requested) in the database."""
    with mon.cursor() as cur:
        cur.execute("SELECT pid, objid, granted FROM pg_catalog.pg_locks WHERE locktype = "
                    "'advisory' AND database = (SELECT oid FROM pg_catalog.pg_database "
                    "WHERE datname = %s)", (dbname,))
        return cur.fetchall()


def pooled_backends(mon, dbname):
    """The server connections pgbouncer keeps to the database."""
    with mon.cursor() as cur:
        cur.execute("SELECT pid FROM pg_catalog.pg_stat_activity WHERE datname = %s AND "
                    "pid <> pg_backend_pid() AND client_addr IS NOT NULL", (dbname,))
        return [r[0] for r in cur.fetchall()]


def check_lines(client, db):
    lines = client.lines()
    assert len(lines) == 1 and lines[0][0] == "warn", client.describe()
    m = pooled_line(db).fullmatch(lines[0][1])
    assert m, lines
    assert m.group(1) != m.group(2), lines
    return int(m.group(1)), int(m.group(2))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("driver,loop", DRIVERS, ids=["-".join(d) for d in DRIVERS])
def test_through_a_pooler_not_gated(make_db, pg, tmp_path, clients, mode, driver, loop):
    db = make_db()
    key = unique_key()
    base = {**db.env, "PGHOST": "127.0.0.1", "MIGSHIM_HEADS": TARGET, "MIGSHIM_LOCK_KEY": key,
            "MIGSHIM_WAIT_TIMEOUT": "120", "GATE_STATEMENT_CACHE": "0",
            "GATE_BARRIERS": tmp_path}
    # (a pgbouncer per client: pg8000 names its prepared statements per
    # connection, pg8000_statement_0, and the next client on the same
    # server connection would meet the last one's in transaction mode)
    mon = psycopg2.connect(db.dsn)  # direct, not through the pooler
    mon.autocommit = True
    try:
        # 1. alone, behind the target: the gate would lead
        with PgBouncer(pg, pool_mode=mode, users=(pg.user,)) as pb:
            a = Client(tmp_path, "A", [driver, "tcp", loop, "plain"], {**base, "PGPORT": pb.port})
            clients.append(a)
            a.finish(timeout=60)
            pooled = pooled_backends(mon, db.name)
            assert pooled, "the pool kept no server connection: the lock check would prove nothing"
            # nothing left on the pool's server connections (a session lock
            # taken in transaction mode stays there after the client left)
            assert advisory_in(mon, db.name) == []
            key_pid, server_pid = check_lines(a, db.name)
            assert server_pid in pooled and key_pid not in pooled, (key_pid, server_pid, pooled)

        # 2. a peer holds the key: the client does not wait for it
        with mon.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s)", (key,))
        with PgBouncer(pg, pool_mode=mode, users=(pg.user,)) as pb:
            t0 = time.monotonic()
            b = Client(tmp_path, "B", [driver, "tcp", loop, "plain"], {**base, "PGPORT": pb.port})
            clients.append(b)
            b.finish(timeout=30)  # (a wait would last wait_timeout: 120 s)
            took = time.monotonic() - t0
            check_lines(b, db.name)
            assert advisory_in(mon, db.name) == [(mon.get_backend_pid(), key, True)]
        with mon.cursor() as cur:
            cur.execute("SELECT pg_advisory_unlock(%s)", (key,))
        assert advisory_in(mon, db.name) == []

        # 3. the app's results: as through a pooler without the preload
        with PgBouncer(pg, pool_mode=mode, users=(pg.user,)) as pb:
            plain = Client(tmp_path, "plain", [driver, "tcp", loop, "plain"],
                           {**base, "PGPORT": pb.port}, preload=False)
            clients.append(plain)
            plain.finish(timeout=60)
            assert plain.lines() == []
    finally:
        mon.close()
    want = plain.events("results")[0]["results"]
    assert a.events("results")[0]["results"] == want
    assert b.events("results")[0]["results"] == want
    print(f"\n{driver}/{loop} through pgbouncer ({mode}): not gated; with the key held by a "
          f"peer the client ran in {took:.2f} s")


def test_pool_says_it_once(make_db, pg, tmp_path, clients):
    db = make_db()
    with PgBouncer(pg, pool_mode="transaction", users=(pg.user,)) as pb:
        env = {**db.env, "PGHOST": "127.0.0.1", "PGPORT": pb.port, "MIGSHIM_HEADS": TARGET,
               "MIGSHIM_LOCK_KEY": unique_key(), "GATE_STATEMENT_CACHE": "0",
               "GATE_BARRIERS": tmp_path}
        c = Client(tmp_path, "P", ["asyncpg", "tcp", "asyncio", "pool"], env)
        clients.append(c)
        c.finish(timeout=60)
        mon = psycopg2.connect(db.dsn)
        mon.autocommit = True
        try:
            assert advisory_in(mon, db.name) == []
        finally:
            mon.close()
    assert c.events("pool")[0]["values"] == [0, 1, 2]
    check_lines(c, db.name)


def test_at_head_through_a_pooler_is_silent(make_db, pg, tmp_path, clients):
    """At the target the gate would take nothing anyway: no line (the rule
    of silence), through the pooler as directly."""
    db = make_db()
    mon = psycopg2.connect(db.dsn)
    mon.autocommit = True
    try:
        with mon.cursor() as cur:
            cur.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL "
                        "PRIMARY KEY)")
            cur.execute("INSERT INTO alembic_version VALUES (%s)", (TARGET,))
        with PgBouncer(pg, pool_mode="transaction", users=(pg.user,)) as pb:
            env = {**db.env, "PGHOST": "127.0.0.1", "PGPORT": pb.port, "MIGSHIM_HEADS": TARGET,
                   "GATE_STATEMENT_CACHE": "0", "GATE_BARRIERS": tmp_path}
            c = Client(tmp_path, "H", ["pg8000", "tcp", "-", "plain"], env)
            clients.append(c)
            c.finish(timeout=60)
        assert advisory_in(mon, db.name) == []
    finally:
        mon.close()
    assert c.lines() == [], c.describe()
    assert c.events("results")
