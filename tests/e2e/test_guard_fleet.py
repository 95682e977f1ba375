"""End to end: the race guard (src/guard.c) in real Gunicorn fleets of the
example app (examples/flask-alembic), every worker running `alembic upgrade
head` as it imports the app.

* The guard alone (MIGSHIM_LOCK=off: no advisory lock, every worker
  migrates at once): 16 sync workers from an empty database, repeated 20
  times, and 16 from revision 0001aaaa, repeated 20 times.  Every run must
  boot cleanly (all 16 workers ready, none failed, no race error anywhere
  in the output), end at the head with each revision committed exactly
  once (migration_runs, a table with no unique key), and log only the
  guard's own warnings.  Teeth: the runs must actually race -- the guard's
  warnings are counted across the runs and must show up in at least
  MIN_RACED_RUNS of them; and the same fleet with MIGSHIM_GUARD=off must
  fail to boot (up to 3 attempts).
* An unshimmed racer: a plain `alembic upgrade head` (no preload) started
  in the same instant as an 8-worker shimmed fleet in the default lock
  mode (twice), then 0.15, 0.3 and 0.6 s after it, so that both outcomes
  show up: the racer wins (the fleet's leader then loses the race, and the
  guard answers it) or the leader wins (the racer, which has no shim,
  fails).  MIGRATION_SLEEP is 0.3 s here, to give them time to overlap.
  The fleet must boot with each revision committed once in every run; how
  the racer fared is reported (run pytest with -s or look at the output:
  one line per run), not asserted.

To keep 40 boots of 16 workers affordable on a small machine, these fleets
differ from tests/e2e/fleet.py's in two ways that change nothing the shim
or the app sees: the master imports the app's libraries (flask,
SQLAlchemy, Alembic, psycopg2 -- not the app) before forking, so the
workers start their migrations within a few milliseconds of each other
(which makes the race tighter, not looser); and a fleet that has booted is
stopped with SIGKILL instead of a graceful shutdown.  MIGRATION_SLEEP is
0.05 s per revision.

Run: tests/harness/with-pg.sh /usr/bin/python3 -m pytest -q tests/e2e/test_guard_fleet.py
"""

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fleet import (EXAMPLES_DIR, GUNICORN_CONF, PYTHON, Fleet,  # noqa: E402
                   FleetResult, clean_env, database_url, migrate, run_fleets)

HEADS = ["0003cccc"]
REVISIONS = ["0001aaaa", "0002bbbb", "0003cccc"]
ONCE_EACH = {rev: 1 for rev in REVISIONS}

RUNS = int(os.environ.get("GUARD_FLEET_RUNS", "20"))   # make check-today: fewer
MIN_RACED_RUNS = 3
WORKERS = 16
MIGRATION_SLEEP = "0.05"
TEETH_ATTEMPTS = 3
RACER_MIGRATION_SLEEP = "0.3"
RACER_DELAYS = (0.0, 0.0, 0.15, 0.3, 0.6)   # racer start after the fleet's, seconds

# The guard's warnings (src/guard.c); any other warning or error fails.
GUARD_WARN_PATTERNS = [
    re.compile(r"guard: (23505|42P07|42701|42710|42P06|42723|UPDATE 0) on [A-Z ]+ in a "
               r"migration transaction that started at [^;]*; verified the database at the "
               r"target \(0003cccc\); rolled this transaction back and answering the rest of "
               r"it up to COMMIT/ROLLBACK"),
]
ABSORB_RE = re.compile(r"answering the rest of it up to COMMIT/ROLLBACK")
ANSWERED = ("guard: COMMIT answered; this process's migration transaction was rolled back "
            "and the peer's migration stands")

# What the master imports before forking (see the module docstring).
PRE_IMPORT = ("flask", "sqlalchemy", "sqlalchemy.dialects.postgresql.psycopg2",
              "alembic.command", "alembic.config", "alembic.script",
              "alembic.runtime.migration", "psycopg2")


@pytest.fixture(scope="module")
def gunicorn_conf(tmp_path_factory):
    """fleet_gunicorn_conf.py's hooks, plus the libraries imported in the
    master."""
    d = tmp_path_factory.mktemp("guard-fleet-conf")
    conf = d / "guard_gunicorn_conf.py"
    conf.write_text(
        "import sys\n"
        "sys.path.insert(0, %r)\n"
        "from fleet_gunicorn_conf import *  # noqa: F401,F403 (the hooks)\n"
        "%s\n" % (str(GUNICORN_CONF.parent),
                  "\n".join("import %s  # noqa: F401" % m for m in PRE_IMPORT)))
    return conf


class GuardFleet(Fleet):
    """A Fleet with the master pre-importing the libraries and a quick stop
    once it has booted."""

    conf: Path = GUNICORN_CONF

    def argv(self):
        a = super().argv()
        a[a.index(str(GUNICORN_CONF))] = str(self.conf)
        return a

    def stop(self):
        if self.proc is not None and self.done and self.res.booted \
                and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
        super().stop()


def fleet(conf, dsn, workers=WORKERS, lock_off=True, guard_off=False, label=None,
          sleep=MIGRATION_SLEEP):
    shim_env = {}
    if lock_off:
        shim_env["MIGSHIM_LOCK"] = "off"
    if guard_off:
        shim_env["MIGSHIM_GUARD"] = "off"
    f = GuardFleet("flask-alembic", dsn, workers=workers, shim=True, shim_env=shim_env,
                   env_extra={"MIGRATION_SLEEP": sleep}, label=label)
    f.conf = conf
    return f


def run(f: Fleet) -> FleetResult:
    return run_fleets([f])[0]


# ---------------------------------------------------------------------------
# databases: fresh ones, and clones of a database migrated to 0001aaaa


class Dbs:
    def __init__(self, make_db, pg):
        self.make_db = make_db
        self.pg = pg

    def clone(self, template: str):
        """A new database copied from `template` (dropped with the test's
        other databases: it is registered with make_db's factory)."""
        factory = self.make_db.__self__
        name = "migshim_t_%s" % uuid.uuid4().hex[:16]
        conn = self.pg.connect()
        try:
            with conn.cursor() as cur:
                cur.execute('CREATE DATABASE "%s" TEMPLATE "%s"' % (name, template))
        finally:
            conn.close()
        factory.created.append(name)
        return self.pg.dsn(name), name

    def drop(self, name):
        self.make_db.__self__.drop(name)


# ---------------------------------------------------------------------------
# what a clean boot looks like


def guard_warnings(r: FleetResult):
    return [(p, m) for p, lv, m in r.migshim_lines("warn") if m.startswith("guard:")]


def assert_clean_boot(r: FleetResult, n: int, runs=None):
    assert r.booted, r.describe()
    assert r.master_alive_at_end, r.describe()
    assert r.workers_failed == 0, r.describe()
    assert len(r.worker_pids) == n, r.describe()
    assert set(r.worker_pids) <= set(r.ready_pids), r.describe()
    assert not r.race_errors(), "\n".join(r.race_errors()[:10]) + "\n" + r.describe()
    assert r.alembic_version == HEADS, r.describe()
    assert r.migration_runs == (runs or ONCE_EACH), r.describe()
    # only the guard's own warnings, each of a known shape
    for line in r.migshim_problems():
        msg = line.split(": ", 2)[2]
        assert line.split(": ")[1] == "warn" and \
            any(p.fullmatch(msg) for p in GUARD_WARN_PATTERNS), \
            "unexpected shim line %r\n%s" % (line, r.describe())
    # every absorbing worker saw its COMMIT answered, and none of them is
    # the one whose migration stands
    absorbed = {p for p, m in guard_warnings(r) if ABSORB_RE.search(m)}
    answered = {p for p, lv, m in r.migshim_lines("info") if m == ANSWERED}
    assert absorbed == answered, r.describe()
    winners = {p for pids in r.migration_pids.values() for p in pids}
    assert not (absorbed & winners), r.describe()


def report(capsys, text):
    with capsys.disabled():
        sys.stdout.write("\n" + text + "\n")


def repeat_guard_alone(conf, new_db, drop_db, capsys, what):
    """RUNS fleets of WORKERS on fresh databases; returns the per-run
    guard-warning counts."""
    counts = []
    for i in range(RUNS):
        dsn, name, runs = new_db()
        r = run(fleet(conf, dsn, label="%s run %d" % (what, i + 1)))
        assert_clean_boot(r, WORKERS, runs)
        counts.append(len(guard_warnings(r)))
        drop_db(name)
    raced = sum(1 for c in counts if c)
    report(capsys, "guard alone, %s: %d/%d runs raced; guard warnings per run: %s"
           % (what, raced, RUNS, counts))
    assert raced >= MIN_RACED_RUNS, \
        "only %d of %d runs raced (guard warnings per run: %s): the test has no " \
        "teeth" % (raced, RUNS, counts)
    return counts


# ---------------------------------------------------------------------------
# the guard alone (lock = off)


def test_teeth_guard_off_the_same_fleet_fails(make_db, gunicorn_conf, capsys):
    """The control: the same fleet with the guard off too (the shim then
    passes everything through) fails to boot with the race's errors in at
    least one of TEETH_ATTEMPTS runs."""
    seen = []
    for attempt in range(TEETH_ATTEMPTS):
        db = make_db()
        r = run(fleet(gunicorn_conf, db.dsn, guard_off=True,
                      label="guard off, attempt %d" % (attempt + 1)))
        seen.append(r.summary())
        assert not guard_warnings(r), r.describe()
        if (not r.booted or r.workers_failed) and r.race_errors():
            report(capsys, "guard off: failed as expected on attempt %d: %s"
                   % (attempt + 1, r.race_errors()[0][:160]))
            return
    pytest.fail("the race did not show in %d attempts without the guard:\n%s"
                % (TEETH_ATTEMPTS, "\n".join(seen)))


def test_guard_alone_16_workers_from_an_empty_database(make_db, gunicorn_conf, capsys):
    """16 sync workers, lock = off, empty database, RUNS times: each boots
    cleanly with every revision committed once."""
    def new_db():
        db = make_db()
        return db.dsn, db.name, None

    repeat_guard_alone(gunicorn_conf, new_db, make_db.__self__.drop, capsys,
                       "from an empty database")


def test_guard_alone_16_workers_from_an_intermediate_revision(make_db, pg, gunicorn_conf,
                                                              capsys):
    """16 sync workers, lock = off, the database at 0001aaaa (a clone of
    one migrated there by a plain `alembic upgrade 0001aaaa`), RUNS times:
    each boots cleanly; 0002bbbb and 0003cccc are committed once."""
    dbs = Dbs(make_db, pg)
    template = make_db()
    migrate("flask-alembic", template.dsn, target="0001aaaa")

    def new_db():
        dsn, name = dbs.clone(template.name)
        return dsn, name, None

    repeat_guard_alone(gunicorn_conf, new_db, dbs.drop, capsys,
                       "from 0001aaaa")


# ---------------------------------------------------------------------------
# an unshimmed racer next to a shimmed fleet (default lock mode)


def test_unshimmed_racer_does_not_break_a_shimmed_fleet(make_db, gunicorn_conf, capsys):
    """A plain `alembic upgrade head` (no preload) starts in the same
    instant as a shimmed 8-worker fleet in the default lock mode.  The
    fleet boots, each revision is committed once (by the fleet's leader or
    by the racer); how the racer fared is reported."""
    outcomes = []
    for i, delay in enumerate(RACER_DELAYS):
        db = make_db()
        f = fleet(gunicorn_conf, db.dsn, workers=8, lock_off=False,
                  label="racer run %d" % (i + 1), sleep=RACER_MIGRATION_SLEEP)
        env = clean_env()
        env["DATABASE_URL"] = database_url(db.dsn)
        env["MIGRATION_SLEEP"] = RACER_MIGRATION_SLEEP
        racer_out = tempfile.TemporaryFile()
        racer = None
        try:
            f.start()
            time.sleep(delay)
            racer = subprocess.Popen(
                [PYTHON, "-m", "alembic", "-c", "alembic.ini", "upgrade", "head"],
                cwd=str(EXAMPLES_DIR / "flask-alembic"), env=env,
                stdin=subprocess.DEVNULL, stdout=racer_out, stderr=subprocess.STDOUT,
                start_new_session=True)
            try:
                f.wait()
            finally:
                f.stop()
            try:
                racer.wait(60)
            except subprocess.TimeoutExpired:
                pass
            r = f.result()
        finally:
            f.discard()
            if racer is not None and racer.poll() is None:
                os.killpg(racer.pid, signal.SIGKILL)    # its own session
                racer.wait()
        rc = racer.returncode
        racer_out.seek(0)
        out = racer_out.read().decode("utf-8", "replace")
        racer_out.close()
        assert_clean_boot(r, 8)
        assert "migshim[" not in out, "the shim leaked into the racer:\n" + out
        by_racer = [rev for rev, pids in sorted(r.migration_pids.items())
                    if racer.pid in pids]
        err = [ln for ln in out.splitlines() if re.match(r"[\w.]+(Error|Exception)\b", ln)]
        if rc == 0:
            fared = ("migrated %s" % ",".join(by_racer)) if by_racer else "found nothing to do"
        else:
            fared = "failed: %s" % (err[-1][:160] if err else out.strip()[-160:])
        outcomes.append("run %d (racer started %.2f s after the fleet): racer rc=%s, %s; "
                        "fleet booted, %d guard warning(s)"
                        % (i + 1, delay, rc, fared, len(guard_warnings(r))))
    report(capsys, "unshimmed racer + shimmed 8-worker fleet:\n  " + "\n  ".join(outcomes))
