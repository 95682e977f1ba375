"""End to end: Gunicorn fleets of the flask-alembic example under
LD_PRELOAD=build/libmigshim.so, reaching the harness server the ways
deployments do rather than through its Unix socket.

1. PgBouncer (a real pgbouncer process, tests/e2e/topo.PgBouncer) in front
   of the server:
   * transaction pooling, default lock mode (xact): a 16-worker fleet boots
     with one leader; the gate's lock connections went through pgbouncer;
   * transaction pooling, the leader SIGKILLed mid-migration: the lock goes
     with it (pgbouncer drops the server connection of a client that dies
     in a transaction), the next leader migrates, the fleet is up far below
     wait_timeout, and the real server shows no advisory lock afterwards;
   * session pooling, with the default lock and with MIGSHIM_LOCK=session.
2. TCP with sslmode=require (and verify-full with sslrootcert) against the
   server with a self-signed certificate (ssl=on by ALTER SYSTEM, restored
   afterwards): the gate's lock connections are SSL (pg_stat_ssl), even
   with PGSSLMODE=disable in the fleet's environment -- the lock connection
   takes the app connection's parameters, not libpq's defaults.
3. A scram-sha-256 role (a pg_hba.conf line for that role only, before the
   harness's trust lines; the file restored afterwards): the password given
   (a) in the URL, (b) in a keyword conninfo (an app variant that accepts
   one), (c) in PGPASSWORD, (d) in a .pgpass file (PGPASSFILE), and (e) in
   the URL over SSL with channel_binding=require.  The password holds
   characters each form must quote or escape.  Each fleet boots with one
   leader, the gate's lock connections logged in as that role over TCP,
   and the password is in no migshim line at MIGSHIM_LOG=debug.

Every fleet: all workers booted, master alive, version at head, each
revision committed exactly once (migration_runs), exactly one `leading`
line, every other worker one of waited / at head / found at head, no
migshim warning or error.

Run: tests/harness/with-pg.sh /usr/bin/python3 -m pytest -q \
         tests/e2e/test_topologies.py          (-s prints timings)
As root, pgbouncer runs as the server's OS user (it refuses root) and the
certificate is chowned to it.
"""

import os
import re
import shutil
import sys
import time
import urllib.parse
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fleet import (EXAMPLES_DIR, LEAD_LINE_RE, Fleet,  # noqa: E402
                   FleetResult, run_fleets)
from topo import (BackendSampler, PgBouncer,  # noqa: E402
                  password_role, query, tls_on)

HEADS = ["0003cccc"]
REVISIONS = ["0001aaaa", "0002bbbb", "0003cccc"]
ONCE_EACH = {rev: 1 for rev in REVISIONS}

BIG = 16            # workers of the PgBouncer fleets
SMALL = 8           # workers of the SSL / password fleets and the kill test
SLEEP = "0.7"       # MIGRATION_SLEEP: ~2 s of migration, so that peers wait

KILL_SLEEP = "1.0"
KILL_WAIT_TIMEOUT = 120     # MIGSHIM_WAIT_TIMEOUT in the kill test
KILL_BOUND = 20.0           # kill -> fleet up, far below KILL_WAIT_TIMEOUT

RELEASE_RE = re.compile(r"\bmigrated to (\S+); migration lock released\b")
WAITED_RE = re.compile(r"\bwaited ([0-9.]+) s\b")
MIGRATION_SQL_RE = re.compile(
    r"pg_sleep|migration_runs|alembic_version|CREATE TABLE|ALTER TABLE"
    r"|INSERT INTO users", re.I)
# the shim's wait statement, sent on a waiter's own connection (lock = xact)
SHIM_WAIT_RE = re.compile(r"pg_catalog\.pg_advisory\w*_lock_shared")

# ---------------------------------------------------------------------------
# assertions

def assert_fleet_up(r: FleetResult, n: int, killed=()):
    """Booted, master alive, n live workers all ready (the killed ones
    replaced), no race error, no migshim warning/error, the database at
    head with each revision committed exactly once."""
    d = r.describe()
    assert r.booted, d
    assert r.master_alive_at_end, d
    assert r.workers_failed == 0, d
    assert sorted(r.killed_pids) == sorted(killed), d
    live = [p for p in r.worker_pids if p not in killed]
    assert len(live) == n, f"live workers {live}\n{d}"
    assert set(live) <= set(r.ready_pids), d
    assert not r.race_errors(), "\n".join(r.race_errors()[:10]) + "\n" + d
    assert not r.migshim_problems(), \
        "\n".join(r.migshim_problems()) + "\n" + d
    assert r.alembic_version == HEADS, d
    assert r.migration_runs == ONCE_EACH, d


def assert_one_leader(r: FleetResult, killed=()):
    """Exactly one `leading` line (besides the killed ones), by a live
    worker that ran every revision and released the lock at 0003cccc;
    every live worker logged exactly one decision, the others waited or
    found the database at head.  Returns (leader, {pid: kind})."""
    d = r.describe()
    leads = [p for p, _ in r.gate_lines("lead") if p not in killed]
    assert len(leads) == 1, f"lead lines: {r.gate_lines('lead')}\n{d}"
    leader = leads[0]
    live = [p for p in r.worker_pids if p not in killed]
    assert leader in live, d
    dec = r.gate_decisions()
    kinds = {}
    for p in live:
        assert len(dec.get(p, [])) == 1, f"pid {p}: {dec.get(p)}\n{d}"
        kinds[p] = dec[p][0]
    for p, k in kinds.items():
        if p != leader:
            assert k in ("wait", "at_head", "found_head"), f"{p}: {k}\n{d}"
    for rev in REVISIONS:
        assert r.migration_pids[rev] == [leader], \
            f"{rev} run by {r.migration_pids[rev]}, leader {leader}\n{d}"
    rel = [(p, RELEASE_RE.search(m).group(1))
           for p, _, m in r.migshim_lines("info") if RELEASE_RE.search(m)]
    assert rel == [(leader, "0003cccc")], f"release lines {rel}\n{d}"
    for p, m in r.gate_lines("wait"):
        assert "0003cccc" in m, f"{p} proceeded at {m}\n{d}"
    return leader, kinds


def advisory_locks(pg, dbname):
    """[(pid, mode, granted, application_name)] of the advisory locks the
    real server holds in this database."""
    return query(pg,
                 "SELECT l.pid, l.mode, l.granted, a.application_name "
                 "FROM pg_locks l LEFT JOIN pg_stat_activity a "
                 "ON a.pid = l.pid WHERE l.locktype = 'advisory' "
                 "AND l.database = (SELECT oid FROM pg_database "
                 "WHERE datname = %s)", (dbname,))


def lock_backends_of(sampler, pid):
    return [b for b in sampler.lock_backends()
            if b.application_name.startswith(f"migshim lock pid={pid} ")]


def run_one(fleet: Fleet, sampler: BackendSampler = None) -> FleetResult:
    """Run a fleet to its outcome with a sampler watching the server from
    before the start until the outcome is known (not while the result's
    database state is read: that is the test's own connection)."""
    if sampler is None:
        return run_fleets([fleet])[0]
    sampler.start()
    fleet.start()
    try:
        fleet.wait()
    finally:
        sampler.stop()
        fleet.stop()
    return fleet.result()


def describe(r, sampler=None, bouncer=None):
    d = r.describe()
    if sampler is not None:
        d += "\n--- backends seen ---\n" + "\n".join(
            map(repr, sorted(sampler.backends(), key=lambda b: b.pid)))
    if bouncer is not None and bouncer.dir:
        d += "\n--- pgbouncer log (last 30 lines) ---\n" + "\n".join(
            bouncer.log().splitlines()[-30:])
    return d


# ---------------------------------------------------------------------------
# 1. PgBouncer

@pytest.fixture
def bouncer_factory(pg):
    started = []

    def make(pool_mode, **kw):
        b = PgBouncer(pg, pool_mode=pool_mode, **kw).start()
        started.append(b)
        return b

    yield make
    for b in started:
        b.stop()


def _bouncer_fleet_checks(pg, db, r, sampler, bouncer, n):
    d = describe(r, sampler, bouncer)
    assert sampler.error is None, sampler.error
    assert_fleet_up(r, n)
    leader, kinds = assert_one_leader(r)
    # the gate's connections went through pgbouncer: every lock backend
    # the server saw came from 127.0.0.1 (pgbouncer's server connections;
    # the fleet has no other way to the server), and pgbouncer logged
    # a client login for each worker and for the lock connections
    locks = sampler.lock_backends()
    assert lock_backends_of(sampler, leader), d
    assert all(b.client_addr == "127.0.0.1" for b in locks), d
    assert bouncer.logins(db.name) >= n + 1, \
        f"{bouncer.logins(db.name)} logins through pgbouncer\n{d}"
    # nothing of the gate left on the real server
    assert advisory_locks(pg, db.name) == [], \
        f"{advisory_locks(pg, db.name)}\n{d}"
    return leader, kinds


@pytest.mark.parametrize("pool_size", [60, 3])
def test_pgbouncer_transaction_pooling(pg, make_db, migshim_lib,
                                       bouncer_factory, pool_size):
    """pool_mode = transaction, lock = xact (the default), 16 workers on an
    empty database: every worker boots, one leads, the others wait for it
    (or find the database at head), each revision once.  With a pool
    larger than the fleet's connections, and with default_pool_size = 3
    (the leader's lock transaction pins one server connection, its
    migration another; the waiters' 250 ms lock slices and at-head checks
    queue in pgbouncer for the third)."""
    db = make_db()
    bouncer = bouncer_factory("transaction", default_pool_size=pool_size)
    sampler = BackendSampler(pg, db.name)
    fl = Fleet("flask-alembic", db.dsn, workers=BIG, shim=True,
               env_extra={"DATABASE_URL": bouncer.url(db.name),
                          "MIGRATION_SLEEP": SLEEP},
               label=f"pgbouncer transaction pooling, pool {pool_size}")
    r = run_one(fl, sampler)
    leader, kinds = _bouncer_fleet_checks(pg, db, r, sampler, bouncer, BIG)
    waited = [p for p, k in kinds.items() if k == "wait"]
    if pool_size > 2 * BIG:
        # (with 3 server connections the others' at-head checks may all
        # queue in pgbouncer until the leader commits: no one waits then)
        assert waited, \
            f"nobody waited for the leader: {kinds}\n{r.describe()}"
    print(f"\npgbouncer transaction pooling, pool {pool_size}: up in "
          f"{r.elapsed:.2f}s, leader "
          f"{leader}, {len(waited)} waited, "
          f"{bouncer.logins(db.name)} client logins through pgbouncer, "
          f"{len(sampler.lock_backends())} lock backends seen")


@pytest.mark.parametrize("pool_mode,lock_mode,kill_delay", [
    ("transaction", "default", 0.3),
    ("transaction", "default", 1.6),
    ("session", "session", 1.0),
])
def test_pgbouncer_leader_killed(pg, make_db, migshim_lib, bouncer_factory,
                                 pool_mode, lock_mode, kill_delay):
    """8 workers behind pgbouncer, each revision sleeping 1 s; the leader is
    SIGKILLed kill_delay s after the real server first shows its migration
    transaction open and its lock connection's server backend holding the
    advisory lock (still so at the kill).  Transaction pooling, default
    lock (xact): pgbouncer drops the server connections of a client gone in
    a transaction, so the lock transaction ends with the leader.  Session
    pooling with lock = session: the lock is a session lock on an idle
    server connection, which pgbouncer keeps and resets (DISCARD ALL
    releases advisory locks).  Either way: Gunicorn respawns the worker, a
    different worker leads and migrates from (none), the fleet is up within
    KILL_BOUND s of the kill (wait_timeout is 120 s), no waiter waited
    anywhere near wait_timeout, and once the fleet is up the real server
    holds no advisory lock in the database."""
    db = make_db()
    bouncer = bouncer_factory(pool_mode)
    shim_env = {"MIGSHIM_WAIT_TIMEOUT": str(KILL_WAIT_TIMEOUT)}
    if lock_mode != "default":
        shim_env["MIGSHIM_LOCK"] = lock_mode
    fl = Fleet("flask-alembic", db.dsn, workers=SMALL, shim=True,
               shim_env=shim_env,
               env_extra={"DATABASE_URL": bouncer.url(db.name),
                          "MIGRATION_SLEEP": KILL_SLEEP},
               timeout=90, gunicorn_timeout=KILL_WAIT_TIMEOUT + 30,
               label=f"pgbouncer {pool_mode} pooling, lock={lock_mode}, "
                     f"leader SIGKILLed")

    last_rows = []

    def migration_state(leader):
        rows = query(pg,
                     "SELECT a.pid, coalesce(a.application_name, ''), "
                     "a.xact_start IS NOT NULL, coalesce(a.query, ''), "
                     "EXISTS (SELECT 1 FROM pg_locks l WHERE l.pid = a.pid "
                     "AND l.locktype = 'advisory' AND l.granted "
                     "AND l.mode = 'ExclusiveLock') "
                     "FROM pg_stat_activity a WHERE a.datname = %s "
                     "AND a.backend_type = 'client backend'", (db.name,))
        own = [x for x in rows
               if x[1].startswith(f"migshim lock pid={leader} ") and x[4]]
        mig = [x for x in rows if not x[1].startswith("migshim") and x[2]
               and MIGRATION_SQL_RE.search(x[3])
               and not SHIM_WAIT_RE.search(x[3])]
        last_rows[:] = rows
        return (own[0], mig[0]) if own and len(mig) == 1 else None

    fl.start()
    try:
        try:
            leader = int(fl.wait_for_line(LEAD_LINE_RE, timeout=40).group(1))
            deadline = time.monotonic() + 15
            st = None
            while st is None and time.monotonic() < deadline:
                st = migration_state(leader)
                if st is None:
                    time.sleep(0.02)
            assert st, (f"leader {leader}: no open migration transaction "
                        f"with the lock held seen through pgbouncer; "
                        f"last seen: {last_rows}")
            time.sleep(kill_delay)
            # still open (a peer's connect-time version read may hide it
            # for a moment: look again for up to 1 s), then kill at once
            deadline = time.monotonic() + 1.0
            st = migration_state(leader)
            while st is None and time.monotonic() < deadline:
                time.sleep(0.01)
                st = migration_state(leader)
            assert st, f"leader {leader}: migration no longer open"
            fl.kill_worker(leader)
            t_kill = time.monotonic()
            nxt = int(fl.wait_for_line(
                r"migshim\[(?!%d\])(\d+)\]: info: .*\bleading\b" % leader,
                timeout=KILL_BOUND).group(1))
            t_next = time.monotonic() - t_kill
            fl.wait()
            kill_to_up = time.monotonic() - t_kill
            locks_when_up = advisory_locks(pg, db.name)
        except (AssertionError, TimeoutError) as e:
            raise AssertionError(
                f"{e}\n--- fleet stderr so far (last 60 lines) ---\n"
                + "\n".join(fl.stderr_text().splitlines()[-60:])
                + "\n--- pgbouncer log (last 30) ---\n"
                + "\n".join(bouncer.log().splitlines()[-30:])) from e
    finally:
        fl.stop()
    r = fl.result()
    d = describe(r, bouncer=bouncer)
    assert_fleet_up(r, SMALL, killed=[leader])
    assert nxt != leader
    new_leader, kinds = assert_one_leader(r, killed=[leader])
    assert new_leader == nxt, d
    (msg,) = [m for p, m in r.gate_lines("lead") if p == nxt]
    assert "from (none) to 0003cccc" in msg, f"{msg}\n{d}"
    respawned = [p for p in r.worker_pids if p not in fl.killed][-1:]
    assert respawned and respawned[0] in kinds, d
    assert kill_to_up < KILL_BOUND, f"up {kill_to_up:.1f}s after the kill\n{d}"
    waits = [float(WAITED_RE.search(m).group(1))
             for _, m in r.gate_lines("wait") if WAITED_RE.search(m)]
    assert all(w < KILL_BOUND for w in waits), f"waits {waits}\n{d}"
    assert locks_when_up == [], \
        f"advisory locks when the fleet was up: {locks_when_up}\n{d}"
    assert advisory_locks(pg, db.name) == [], d
    print(f"\npgbouncer {pool_mode} pooling, lock={lock_mode}: leader "
          f"{leader} killed {kill_delay}s in, in "
          f"{st[1][3][:50]!r}: next leader {nxt} after {t_next:.2f}s, "
          f"respawned worker {respawned[0]}: {kinds[respawned[0]]}, "
          f"fleet up {kill_to_up:.2f}s after the kill; longest wait "
          f"{max(waits) if waits else 0:.2f}s (wait_timeout "
          f"{KILL_WAIT_TIMEOUT}s)")


@pytest.mark.parametrize("lock_mode", ["default", "session"])
def test_pgbouncer_session_pooling(pg, make_db, migshim_lib, bouncer_factory,
                                   lock_mode):
    """pool_mode = session, 16 workers on an empty database, with the
    default lock (xact) and with MIGSHIM_LOCK=session."""
    db = make_db()
    bouncer = bouncer_factory("session")
    sampler = BackendSampler(pg, db.name)
    shim_env = {} if lock_mode == "default" else {"MIGSHIM_LOCK": lock_mode}
    fl = Fleet("flask-alembic", db.dsn, workers=BIG, shim=True,
               shim_env=shim_env,
               # a longer migration (~6 s) than elsewhere: on a loaded
               # machine 16 workers may take seconds to import, and this
               # test asserts that some of them did wait for the leader
               env_extra={"DATABASE_URL": bouncer.url(db.name),
                          "MIGRATION_SLEEP": "2.0"},
               label=f"pgbouncer session pooling, lock={lock_mode}")
    r = run_one(fl, sampler)
    leader, kinds = _bouncer_fleet_checks(pg, db, r, sampler, bouncer, BIG)
    waited = [p for p, k in kinds.items() if k == "wait"]
    assert waited, f"nobody waited for the leader: {kinds}\n{r.describe()}"
    print(f"\npgbouncer session pooling, lock={lock_mode}: up in "
          f"{r.elapsed:.2f}s, leader {leader}, {len(waited)} waited")


def test_pgbouncer_alias_and_direct_share_one_gate(pg, make_db, migshim_lib,
                                                   bouncer_factory):
    """Half the fleet reaches the database through a PgBouncer alias
    (`shop_pool = ... dbname=<db>`), half directly: the key and the gate
    state come from the server's current_database(), not the client's
    spelling, so the two masters' 16 workers have one leader between them
    and each revision runs once (with the client's names they had two)."""
    db = make_db()
    alias = "shop_pool"
    bouncer = bouncer_factory("transaction", aliases={alias: db.name})
    fleets = [Fleet("flask-alembic", db.dsn, workers=BIG // 2, shim=True,
                    env_extra={"DATABASE_URL": bouncer.url(alias), "MIGRATION_SLEEP": SLEEP},
                    label="through the alias"),
              Fleet("flask-alembic", db.dsn, workers=BIG // 2, shim=True,
                    env_extra={"MIGRATION_SLEEP": SLEEP}, label="direct")]
    results = run_fleets(fleets)
    d = "\n\n".join(r.describe() for r in results)
    leads = [p for r in results for p, _ in r.gate_lines("lead")]
    assert len(leads) == 1, f"lead lines: {leads}\n{d}"
    for r in results:
        assert r.booted and r.workers_failed == 0, d
        assert not r.race_errors() and not r.migshim_problems(), d
    assert results[1].alembic_version == HEADS, d
    assert results[1].migration_runs == ONCE_EACH, d
    assert bouncer.logins(alias) >= BIG // 2, d
    print(f"\nalias + direct: one leader ({leads[0]}); up in "
          f"{max(r.elapsed for r in results):.2f}s")


# ---------------------------------------------------------------------------
# 2. TCP with SSL

@pytest.fixture
def ssl_server(pg):
    """The harness server with ssl = on and a fresh self-signed
    certificate; restored (and the files removed) afterwards."""
    with tls_on(pg) as cert:
        yield cert


def _tcp_ssl(pg, sslmode):
    import psycopg2
    c = psycopg2.connect(host="127.0.0.1", port=pg.port, user="postgres",
                         dbname="postgres", sslmode=sslmode)
    try:
        with c.cursor() as cur:
            cur.execute("SELECT ssl FROM pg_stat_ssl "
                        "WHERE pid = pg_backend_pid()")
            return cur.fetchone()[0]
    finally:
        c.close()


@pytest.mark.parametrize("sslmode", ["require", "verify-full"])
def test_tcp_sslmode(pg, make_db, migshim_lib, ssl_server, sslmode):
    """DATABASE_URL postgresql://postgres@127.0.0.1:PORT/db?sslmode=require
    (verify-full: plus sslrootcert=<the self-signed cert>), 8 workers, a
    slow migration; the fleet's environment has PGSSLMODE=disable, so a
    lock connection that took libpq's defaults instead of the app
    connection's parameters would not use SSL (or, for verify-full, not
    know the root certificate).  While the fleet waits, the leader's lock
    connection (application_name 'migshim lock ...') is ssl = true in
    pg_stat_ssl, and so is every other TCP backend of the fleet; the
    waiters open no lock connection at all."""
    assert _tcp_ssl(pg, "disable") is False
    assert _tcp_ssl(pg, "require") is True
    db = make_db()
    params = {"sslmode": sslmode}
    if sslmode == "verify-full":
        params["sslrootcert"] = str(ssl_server.cert)
    url = (f"postgresql://postgres@127.0.0.1:{pg.port}/{db.name}?"
           + urllib.parse.urlencode(params))
    sampler = BackendSampler(pg, db.name)
    fl = Fleet("flask-alembic", db.dsn, workers=SMALL, shim=True,
               env_extra={"DATABASE_URL": url, "MIGRATION_SLEEP": SLEEP,
                          "PGSSLMODE": "disable"},
               label=f"tcp sslmode={sslmode}")
    r = run_one(fl, sampler)
    d = describe(r, sampler)
    assert sampler.error is None, sampler.error
    assert_fleet_up(r, SMALL)
    leader, kinds = assert_one_leader(r)
    waited = [p for p, k in kinds.items() if k == "wait"]
    assert waited, f"nobody waited: {kinds}\n{d}"
    locks = sampler.lock_backends()
    assert lock_backends_of(sampler, leader), d
    # waiters wait on their own (SSL) connection and open none of their
    # own (lock = xact), however long they waited
    long_waits = [p for p, m in r.gate_lines("wait")
                  if WAITED_RE.search(m)
                  and float(WAITED_RE.search(m).group(1)) >= 0.5]
    assert long_waits, f"no waiter waited >= 0.5 s\n{d}"
    for p in waited:
        assert not lock_backends_of(sampler, p), f"{p}\n{d}"
    assert all(b.ssl is True for b in locks), d
    assert all(b.client_addr == "127.0.0.1" for b in locks), d
    tcp = [b for b in sampler.backends() if b.client_addr is not None]
    assert all(b.ssl is True for b in tcp), d
    versions = sorted({b.ssl_version for b in locks})
    print(f"\nsslmode={sslmode}: up in {r.elapsed:.2f}s; "
          f"{len(locks)} migshim lock backends seen, all SSL ({versions}); "
          f"{len(waited)} waited")


# ---------------------------------------------------------------------------
# 3. a password-protected (scram-sha-256) role

@pytest.fixture
def scram_role(pg):
    """A LOGIN role with a scram-sha-256 password, required over TCP from
    127.0.0.1 (tests/e2e/topo.password_role): (role, password, marker)."""
    with password_role(pg, "scram-sha-256") as r:
        yield r


CONNINFO_APP = (
    # app.py: a libpq keyword conninfo in DATABASE_URL
    ("engine = sa.create_engine(DATABASE_URL, pool_pre_ping=True)\n",
     "if '://' in DATABASE_URL:\n"
     "    engine = sa.create_engine(DATABASE_URL, pool_pre_ping=True)\n"
     "else:   # a libpq keyword conninfo (test variant)\n"
     "    import psycopg2\n"
     "    engine = sa.create_engine(\n"
     "        'postgresql+psycopg2://', pool_pre_ping=True,\n"
     "        creator=lambda: psycopg2.connect(DATABASE_URL))\n"),
)
CONNINFO_ENV = (
    ("    connectable = engine_from_config(\n"
     "        config.get_section(config.config_ini_section),\n"
     "        prefix=\"sqlalchemy.\",\n"
     "        poolclass=pool.NullPool,\n"
     "    )\n",
     "    conninfo = os.environ.get(\"DATABASE_URL\", \"\")\n"
     "    if conninfo and \"://\" not in conninfo:\n"
     "        # a libpq keyword conninfo (test variant)\n"
     "        import psycopg2\n"
     "        from sqlalchemy import create_engine\n"
     "        connectable = create_engine(\n"
     "            \"postgresql+psycopg2://\", poolclass=pool.NullPool,\n"
     "            creator=lambda: psycopg2.connect(conninfo))\n"
     "    else:\n"
     "        connectable = engine_from_config(\n"
     "            config.get_section(config.config_ini_section),\n"
     "            prefix=\"sqlalchemy.\",\n"
     "            poolclass=pool.NullPool,\n"
     "        )\n"),
)


def make_conninfo_app(tmp_path):
    """A copy of examples/flask-alembic whose app.py and env.py also accept
    a libpq keyword conninfo ("host=... password=...") in DATABASE_URL
    (SQLAlchemy URLs as before)."""
    dst = Path(tmp_path) / "flask-alembic-conninfo"
    shutil.copytree(EXAMPLES_DIR / "flask-alembic", dst,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for rel, edits in (("app.py", CONNINFO_APP),
                       ("migrations/env.py", CONNINFO_ENV)):
        f = dst / rel
        src = f.read_text()
        for old, new in edits:
            assert src.count(old) == 1, \
                f"examples/flask-alembic/{rel} changed: update " \
                f"make_conninfo_app()"
            src = src.replace(old, new)
        f.write_text(src)
    return dst


def conninfo_quote(v):
    """A libpq keyword conninfo value, single-quoted."""
    return "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"


def pgpass_escape(v):
    """A .pgpass field (':' and backslash escaped)."""
    return v.replace("\\", "\\\\").replace(":", "\\:")


@pytest.mark.parametrize("how", ["url", "conninfo", "PGPASSWORD", "pgpass",
                                 "url+ssl+channel_binding"])
def test_scram_password(request, pg, make_db, migshim_lib, scram_role,
                        tmp_path, how):
    """A database owned by a scram-sha-256 role, 8 workers connecting as
    that role over TCP with the password given `how`; MIGSHIM_LOG=debug.
    The fleet boots with one leader; the gate's lock connections (which
    reuse the app connection's parameters) logged in as the role from
    127.0.0.1 -- where pg_hba.conf demands its password; the password is in
    no migshim line.

    url+ssl+channel_binding: the server with ssl = on (as in 2.), the URL
    with sslmode=require&channel_binding=require (SCRAM-SHA-256-PLUS bound
    to the TLS channel) and PGSSLMODE=disable / PGCHANNELBINDING=disable in
    the environment: the lock connections are SSL too."""
    import psycopg2
    role, password, marker = scram_role
    # the rule holds: no password, no connection; with it, one
    with pytest.raises(psycopg2.OperationalError, match="password"):
        psycopg2.connect(host="127.0.0.1", port=pg.port, user=role,
                         dbname="postgres", connect_timeout=5).close()
    psycopg2.connect(host="127.0.0.1", port=pg.port, user=role,
                     password=password, dbname="postgres").close()

    db = make_db()
    query(pg, f'ALTER DATABASE "{db.name}" OWNER TO "{role}"')
    env = {"MIGRATION_SLEEP": SLEEP}
    app_dir = None
    quoted = urllib.parse.quote(password, safe="")
    bare_url = f"postgresql://{role}@127.0.0.1:{pg.port}/{db.name}"
    if how == "url":
        env["DATABASE_URL"] = (f"postgresql://{role}:{quoted}@127.0.0.1:"
                               f"{pg.port}/{db.name}")
    elif how == "url+ssl+channel_binding":
        request.getfixturevalue("ssl_server")
        env["DATABASE_URL"] = (f"postgresql://{role}:{quoted}@127.0.0.1:"
                               f"{pg.port}/{db.name}?sslmode=require"
                               f"&channel_binding=require")
        env["PGSSLMODE"] = "disable"
        env["PGCHANNELBINDING"] = "disable"
    elif how == "conninfo":
        app_dir = make_conninfo_app(tmp_path)
        env["DATABASE_URL"] = (f"host=127.0.0.1 port={pg.port} "
                               f"dbname={db.name} user={role} "
                               f"password={conninfo_quote(password)}")
    elif how == "PGPASSWORD":
        env["DATABASE_URL"] = bare_url
        env["PGPASSWORD"] = password
    else:
        passfile = tmp_path / "pgpass"
        passfile.write_text(f"127.0.0.1:{pg.port}:{db.name}:{role}:"
                            f"{pgpass_escape(password)}\n")
        os.chmod(passfile, 0o600)
        env["DATABASE_URL"] = bare_url
        env["PGPASSFILE"] = str(passfile)
    sampler = BackendSampler(pg, db.name)
    fl = Fleet("flask-alembic", db.dsn, workers=SMALL, shim=True,
               shim_env={"MIGSHIM_LOG": "debug"}, env_extra=env,
               app_dir=app_dir, label=f"scram role, password via {how}")
    r = run_one(fl, sampler)
    d = describe(r, sampler)
    assert sampler.error is None, sampler.error
    assert_fleet_up(r, SMALL)
    leader, kinds = assert_one_leader(r)
    locks = sampler.lock_backends()
    assert lock_backends_of(sampler, leader), d
    assert all(b.user == role and b.client_addr == "127.0.0.1"
               for b in locks), d
    # every backend of the fleet was the role over TCP (none could have
    # skipped the password)
    assert all(b.user == role and b.client_addr == "127.0.0.1"
               for b in sampler.backends()), d
    if "ssl" in how:
        assert all(b.ssl is True for b in sampler.backends()), d
    # the password in no migshim line, at debug level
    lines = [ln for ln in r.stderr.splitlines() if "migshim[" in ln]
    assert any(": debug: " in ln for ln in lines), \
        f"no debug line: MIGSHIM_LOG=debug not in effect?\n{d}"
    leaks = [ln for ln in lines if marker in ln]
    assert not leaks, "password in migshim lines:\n" + "\n".join(leaks)
    print(f"\npassword via {how}: up in {r.elapsed:.2f}s, leader {leader}, "
          f"{sum(k == 'wait' for k in kinds.values())} waited, "
          f"{len(locks)} lock backends as {role}; {len(lines)} migshim "
          f"lines, none with the password")
