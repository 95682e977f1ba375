"""End to end: a lead ends when the leader's migration run ends (issue 19, section 2).

Real PostgreSQL, real Alembic (a throw-away script directory per test),
plain processes that run `command.upgrade()` at start-up and then live on
as a web worker would (they sleep).  Each scenario runs twice, without and
with the shim, and the time from the fleet's start to its last "READY" is
compared.

1. Two heads, no merge: one process upgrades `a@head` and lives on (its run
   ends short of the target, with no error); four processes then upgrade
   `heads`.  Before: nobody ever got the lock (0/4 after 15 s).
2. A leader whose migration trips its own lock_timeout (the test holds a
   lock on the table from a connection of its own), logs the error and
   lives on; replicas start later.  Before: they waited for hold_timeout.
   The bound lead_failures on serial retries is checked.
3. transaction_per_migration with a revision slower than lead_settle in the
   middle: still exactly one leader.

Interleavings are forced: the later processes start only once the leader
was seen (its ATTEMPT line or its "leading" line), so that they do wait.

Run: tests/harness/with-pg.sh /usr/bin/python3 -m pytest -q tests/e2e/test_lead_ends.py
"""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg2
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fleet import (PYTHON, clean_env, database_url, db_state,  # noqa: E402
                   migshim_lines_in, shim_path)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import shimbuild  # noqa: E402

SETTLE = 1.0          # lead_settle, the default
SLACK = 15.0          # a busy 2-core CI machine

ALEMBIC_INI = """[alembic]
script_location = %(here)s/migrations
"""

ENV_PY = '''import os
from sqlalchemy import create_engine, pool
from alembic import context

def run():
    engine = create_engine(os.environ["DATABASE_URL"], poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=None,
                          transaction_per_migration=os.environ.get("APP_TPM") == "1")
        with context.begin_transaction():
            context.run_migrations()

run()
'''

REVISION = '''import os, sys, time
from alembic import op
import sqlalchemy as sa

revision = {rev!r}
down_revision = {down!r}
branch_labels = {labels!r}
depends_on = None


def upgrade():
    sys.stderr.write("ATTEMPT %s %d %.3f\\n" % (revision, os.getpid(), time.time()))
    sys.stderr.flush()
{body}
    op.execute(sa.text("INSERT INTO migration_runs (revision, pid) VALUES (:r, :p)")
               .bindparams(r=revision, p=os.getpid()))


def downgrade():
    pass
'''

RUNS_TABLE = ('    op.execute("CREATE TABLE migration_runs (revision text, pid int, '
              'at timestamptz DEFAULT clock_timestamp())")\n'
              '    op.execute("CREATE TABLE items (id int)")')

# the app: migrate at start-up, best effort, then serve (sleep)
APP_PY = '''import os, sys, time
from alembic.config import Config
from alembic import command

target, stay = sys.argv[1], float(sys.argv[2])
try:
    command.upgrade(Config("alembic.ini"), target)
except Exception as e:
    sys.stderr.write("MIGRATION FAILED %d: %s\\n" % (os.getpid(), str(e).splitlines()[0]))
sys.stderr.write("READY %d %.3f\\n" % (os.getpid(), time.time()))
sys.stderr.flush()
time.sleep(stay)
'''


def make_project(where: Path, revisions):
    """An Alembic project: revisions = [(rev, down, labels, body)]."""
    (where / "migrations" / "versions").mkdir(parents=True)
    (where / "alembic.ini").write_text(ALEMBIC_INI)
    (where / "migrations" / "env.py").write_text(ENV_PY)
    (where / "app.py").write_text(APP_PY)
    for rev, down, labels, body in revisions:
        (where / "migrations" / "versions" / f"{rev}.py").write_text(
            REVISION.format(rev=rev, down=down, labels=labels, body=body or "    pass"))
    return where


class Proc:
    """One app process: `python app.py TARGET STAY` in the project."""

    def __init__(self, project: Path, dsn: str, target: str, shim: bool, name: str,
                 stay: float = 120.0, env=None):
        self.name = name
        self.log = project / f"{name}.log"
        e = clean_env()
        e["DATABASE_URL"] = database_url(dsn)
        if shim:
            e["LD_PRELOAD"] = shimbuild.preload(shim_path())
            e["MIGSHIM_LOG"] = "info"
        e.update(env or {})
        self.t0 = time.time()
        with open(self.log, "w") as out:
            self.p = subprocess.Popen([PYTHON, "app.py", target, str(stay)], cwd=str(project),
                                      env=e, stdin=subprocess.DEVNULL, stdout=out,
                                      stderr=subprocess.STDOUT)
        self.pid = self.p.pid

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, pattern: str, timeout: float):
        deadline = time.time() + timeout
        while time.time() < deadline:
            m = re.search(pattern, self.text(), re.M)
            if m:
                return m
            if self.p.poll() is not None:
                break
            time.sleep(0.02)
        raise AssertionError(f"{self.name} (pid {self.pid}): no /{pattern}/ within {timeout} s:\n"
                             + self.text())

    def ready_at(self):
        m = re.search(r"^READY \d+ ([\d.]+)$", self.text(), re.M)
        return float(m.group(1)) if m else None

    def failed(self) -> bool:
        return "MIGRATION FAILED" in self.text()

    def attempts(self):
        return re.findall(r"^ATTEMPT (\S+) (\d+)", self.text(), re.M)

    def lines(self):
        return [(lv, m) for _, lv, m in migshim_lines_in(self.text())]

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()


def wait_ready(procs, timeout: float):
    """Wait until every process printed READY (or exited); the time from the
    earliest start to the last READY, or None if some never got there."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if all(p.ready_at() is not None or p.p.poll() is not None for p in procs):
            break
        time.sleep(0.05)
    if any(p.ready_at() is None for p in procs):
        return None
    return max(p.ready_at() for p in procs) - min(p.t0 for p in procs)


def describe(procs) -> str:
    return "\n".join(f"--- {p.name} pid {p.pid}\n{p.text()}" for p in procs)


def kinds(p: Proc):
    """The gate's decisions in p's output."""
    out = []
    for lv, m in p.lines():
        if lv == "debug":  # (the heartbeat's debug lines say "while leading")
            continue
        if re.search(r": leading: ", m):
            out.append("lead")
        elif "waited" in m and "proceeding" in m and "without the gate" not in m:
            out.append("wait")
        elif "lead_failures" in m and "without the gate" in m:
            out.append("gave_up")
    return out


def wait_for_lock_waiters(cur, n: int, timeout: float, what: str):
    """Until n backends wait for an advisory lock (the gate's wait slices)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        cur.execute("SELECT count(DISTINCT pid) FROM pg_locks WHERE locktype = 'advisory' "
                    "AND NOT granted")
        if cur.fetchone()[0] >= n:
            return
        time.sleep(0.01)
    raise AssertionError(f"{n} waiters not seen waiting within {timeout} s:\n{what}")


def assert_no_lapse(ps):
    lapses = [m for p in ps for _, m in p.lines() if "lapse" in m or "gave the migration lock up" in m
              or "gave it up" in m]
    assert not lapses, describe(ps)


@pytest.fixture
def procs():
    started = []
    yield started
    for p in started:
        p.stop()


# ---------------------------------------------------------------------------
# 1. two heads, a partial upgrade that lives on

TWO_HEADS = [
    ("0001base", None, None, RUNS_TABLE),
    ("0002aaaa", "0001base", ("a",), '    op.execute("SELECT pg_sleep(1.5)")'),
    ("0002bbbb", "0001base", ("b",), '    op.execute("CREATE TABLE b_things (id int)")'),
    ("0003bbbb", "0002bbbb", None, '    op.execute("SELECT pg_sleep(0.5)")'),
]


def run_partial(tmp_path, make_db, procs, shim: bool, lock: str = "xact", when: str = "during"):
    project = make_project(tmp_path / ("shim" if shim else "plain"), TWO_HEADS)
    db = make_db()
    env = {"MIGSHIM_LOCK": lock} if lock != "xact" else {}
    first = Proc(project, db.dsn, "a@head", shim, "partial", env=env)
    procs.append(first)
    # the four start while the partial run is in its slow revision, or once
    # it is over (then, with the shim, inside its lead_settle)
    first.wait_for(r"^ATTEMPT 0002aaaa" if when == "during" else r"^READY", 60)
    fleet = [Proc(project, db.dsn, "heads", shim, f"w{i}", env=env) for i in range(4)]
    procs.extend(fleet)
    elapsed = wait_ready(fleet, 60)
    first.wait_for(r"^READY", 30)
    return db, first, fleet, elapsed


@pytest.mark.parametrize("lock,when", [("xact", "during"), ("session", "during"),
                                       ("xact", "after")])
def test_partial_upgrade_that_lives_on_releases_the_lock(tmp_path, make_db, procs, migshim_lib,
                                                         lock, when):
    _, _, plain, t_plain = run_partial(tmp_path, make_db, procs, shim=False, when=when)
    assert t_plain is not None, describe(plain)
    db, first, fleet, t_shim = run_partial(tmp_path, make_db, procs, shim=True, lock=lock,
                                           when=when)
    everyone = [first] + fleet
    assert t_shim is not None, "not all ready:\n" + describe(everyone)
    assert not any(p.failed() for p in everyone), describe(everyone)

    version, runs, pids = db_state(db.dsn)
    assert version == ["0002aaaa", "0003bbbb"], describe(everyone)
    assert runs == {"0001base": 1, "0002aaaa": 1, "0002bbbb": 1, "0003bbbb": 1}, runs
    # the partial process led and migrated its branch; exactly one of the
    # four led and migrated the other; the other three waited
    assert pids["0001base"] == [first.pid] and pids["0002aaaa"] == [first.pid], pids
    leaders = [p for p in fleet if "lead" in kinds(p)]
    assert len(leaders) == 1, describe(everyone)
    (leader,) = leaders
    assert pids["0002bbbb"] == [leader.pid] and pids["0003bbbb"] == [leader.pid], pids
    for p in fleet:
        if p is not leader:
            assert kinds(p) == ["wait"], describe([p])
            assert not p.attempts(), describe([p])
    # the log lines
    assert kinds(first) == ["lead"], describe([first])
    ended = [m for _, m in first.lines() if "the migration run ended" in m]
    assert len(ended) == 1, describe([first])
    assert re.search(r"the migration run ended at 0002aaaa, short of the target "
                     r"(0002aaaa,0003bbbb|0003bbbb,0002aaaa) \(.*lead_settle = 1 s\); migration lock released "
                     r"after [\d.]+ s", ended[0]), ended[0]
    assert [m for _, m in leader.lines() if "migrated to 0002aaaa,0003bbbb" in m or
            "migrated to 0003bbbb,0002aaaa" in m], describe([leader])
    assert not [m for p in fleet for lv, m in p.lines() if lv in ("warn", "error")], \
        describe(fleet)
    assert_no_lapse(everyone)

    lead_line = [m for _, m in leader.lines() if "leading" in m][0]
    lead_run = (float(re.search(r"^READY \d+ ([\d.]+)", leader.text(), re.M).group(1))
                - leader.t0)
    bound = t_plain + lead_run + SETTLE + SLACK
    print(f"\npartial upgrade (lock = {lock}), 4 x upgrade heads {when} it: all ready in {t_shim:.2f} s with the "
          f"shim, {t_plain:.2f} s without ({sum(p.failed() for p in plain)} of 4 failed; bound "
          f"{bound:.1f} s); leader: {lead_line}")
    assert t_shim <= bound, describe(everyone)


# ---------------------------------------------------------------------------
# 2. a leader that fails on its own lock_timeout and lives on

LOCK_TIMEOUT = 3.0
FAILING = [
    ("0001base", None, None, RUNS_TABLE),
    ("0002fail", "0001base", None,
     f'    op.execute("SET LOCAL lock_timeout = \'{int(LOCK_TIMEOUT * 1000)}ms\'")\n'
     '    op.execute("ALTER TABLE items ADD COLUMN extra int")'),
]


def run_failing(tmp_path, make_db, procs, shim: bool, failures: int, stagger: bool):
    project = make_project(tmp_path / f"{'shim' if shim else 'plain'}-{failures}-{stagger}",
                           FAILING)
    db = make_db()
    # the default is left unset (the same test then runs against a build
    # that does not know the key: it shows the stall)
    env = {} if failures == 1 else {"MIGSHIM_LEAD_FAILURES": str(failures)}
    Proc(project, db.dsn, "0001base", False, "setup", stay=0).p.wait(60)
    holder = psycopg2.connect(db.dsn)   # the lock the migration trips on
    cur = holder.cursor()
    cur.execute("LOCK TABLE items IN ACCESS SHARE MODE")
    try:
        first = Proc(project, db.dsn, "head", shim, "first", env=env)
        procs.append(first)
        first.wait_for(r"^READY", 60)
        assert first.failed(), describe([first])
        if shim:   # its lead ends lead_settle after its failure
            first.wait_for(r"migration run failed", 30)
        time.sleep(1.0)
        replicas = [Proc(project, db.dsn, "head", shim, "r0", env=env)]
        if stagger:   # the others start once one replica leads: they wait
            replicas[0].wait_for(r"\bleading\b", 60)
        replicas += [Proc(project, db.dsn, "head", shim, f"r{i}", env=env) for i in (1, 2)]
        procs.extend(replicas)
        if stagger:   # the interleaving this test is about: both wait on r0's lead
            wait_for_lock_waiters(cur, 2, LOCK_TIMEOUT, describe(replicas))
        elapsed = wait_ready(replicas, 120)
    finally:
        holder.rollback()
        holder.close()
    return db, first, replicas, elapsed


@pytest.mark.parametrize("failures", [1, 2, 0])
def test_failed_leader_that_lives_on_releases_and_retries_are_bounded(
        tmp_path, make_db, procs, migshim_lib, failures):
    _, _, plain, t_plain = run_failing(tmp_path, make_db, procs, False, failures, stagger=False)
    assert t_plain is not None and all(p.failed() for p in plain), describe(plain)
    db, first, replicas, t_shim = run_failing(tmp_path, make_db, procs, True, failures,
                                              stagger=True)
    everyone = [first] + replicas
    assert t_shim is not None, "not all ready:\n" + describe(everyone)
    # every process attempted the failing revision exactly once, and failed
    # with the app's own error
    for p in everyone:
        assert [a for a, _ in p.attempts()] == ["0002fail"], describe([p])
        assert p.failed() and "lock timeout" in p.text(), describe([p])
    version, runs, _ = db_state(db.dsn)
    assert version == ["0001base"] and runs == {"0001base": 1}, (version, runs)
    # the first process: led, its run failed, released after lead_settle
    released = [m for lv, m in first.lines() if "the migration run failed" in m]
    assert len(released) == 1 and re.search(
        r"the migration run failed at 0001base, short of the target 0002fail \(its transaction "
        r"ended in an error, .*lead_settle = 1 s\); migration lock released after [\d.]+ s",
        released[0]), describe([first])
    # replicas: `failures` of them led in turn, the others gave up after
    # seeing `failures` failed runs and went on without the gate (0: never
    # give up, each leads in turn)
    led = [p for p in replicas if "lead" in kinds(p)]
    gave_up = [p for p in replicas if kinds(p) == ["gave_up"]]
    serial = failures or 3
    assert len(led) == serial and len(gave_up) == 3 - serial, describe(replicas)
    for p in gave_up:
        (m,) = [m for _, m in p.lines() if "lead_failures" in m and "without the gate" in m]
        assert f"; {failures} leader{'s' if failures > 1 else ''} in turn failed to migrate it" in m, m
        assert f"(lead_failures = {failures})" in m and "still at 0001base" in m, m
    for p in led:   # (the last one's lead_settle may end after its READY)
        p.wait_for(r"the migration run failed at 0001base", 10)
    # the lock came free with the database unchanged, but the holder had been
    # seen migrating: no waiter took it for a lapse
    assert_no_lapse(everyone)
    bound = t_plain + serial * (LOCK_TIMEOUT + SETTLE) + SLACK
    print(f"\nfailed leader, 3 replicas (lead_failures = {failures}): all ready in {t_shim:.2f} s "
          f"with the shim, {t_plain:.2f} s without (bound {bound:.1f} s)")
    assert t_shim <= bound, describe(everyone)


# ---------------------------------------------------------------------------
# 3. transaction_per_migration, a revision slower than lead_settle

TPM = [
    ("0001base", None, None, RUNS_TABLE),
    ("0002slow", "0001base", None, f'    op.execute("SELECT pg_sleep({SETTLE * 2.5})")'),
    ("0003last", "0002slow", None, '    op.execute("CREATE TABLE last_things (id int)")'),
]


def test_transaction_per_migration_slow_revision_keeps_one_leader(tmp_path, make_db, procs,
                                                                  migshim_lib):
    results = {}
    for shim in (False, True):
        project = make_project(tmp_path / ("shim" if shim else "plain"), TPM)
        db = make_db()
        env = {"APP_TPM": "1"}
        first = Proc(project, db.dsn, "head", shim, "first", env=dict(env, MIGSHIM_LOG="debug"))
        procs.append(first)
        # the others start once the first one is in the slow revision, that
        # is after its first revision committed short of the target
        first.wait_for(r"^ATTEMPT 0002slow", 60)
        others = [Proc(project, db.dsn, "head", shim, f"o{i}", env=env) for i in range(3)]
        procs.extend(others)
        results[shim] = (db, first, others, wait_ready([first] + others, 60))
    t_plain = results[False][3]
    db, first, others, t_shim = results[True]
    everyone = [first] + others
    assert t_shim is not None, describe(everyone)
    assert not any(p.failed() for p in everyone), describe(everyone)
    version, runs, pids = db_state(db.dsn)
    assert version == ["0003last"], describe(everyone)
    assert runs == {"0001base": 1, "0002slow": 1, "0003last": 1}, runs
    assert all(v == [first.pid] for v in pids.values()), pids
    assert kinds(first) == ["lead"], describe([first])
    assert not [m for _, m in first.lines() if "migration run" in m], describe([first])
    # the settle did begin at each commit short of the target (Alembic 1.8
    # with transaction_per_migration also creates the version table in a
    # transaction of its own: 3 commits) and was called off by the next
    # revision's transaction
    settles = [m for lv, m in first.lines() if lv == "debug" and
               "version-table transaction ended short of the target" in m]
    assert len(settles) >= 2, describe([first])
    assert [m for _, m in first.lines() if "migrated to 0003last" in m], describe([first])
    for p in others:
        assert kinds(p) == ["wait"] and not p.attempts(), describe([p])
    print(f"\ntransaction_per_migration, slow middle revision: all ready in {t_shim:.2f} s with "
          f"the shim, {t_plain:.2f} s without" if t_plain else "")
