"""End to end: Gunicorn's worker timeout and a migration longer than it
(issue 19 section 4; include/heartbeat.h).

Gunicorn's arbiter kills a worker that has not touched its heartbeat file
(WorkerTmp) for --timeout; a worker that migrates or waits at import sends
none.  Here --timeout is 4 s and each of the three revisions of
examples/flask-alembic sleeps 3 s (MIGRATION_SLEEP): ~9 s of migration.

* with the shim (gunicorn_heartbeat on, the default): every worker boots,
  exactly one leads, no "WORKER TIMEOUT" in the arbiter's log, and each
  worker logged that it kept its heartbeat (the leader while leading, the
  others while waiting);
* gunicorn_heartbeat = false (the teeth): the arbiter kills the leader and
  the waiters ("WORKER TIMEOUT"), the fleet does not boot;
* after the boot, a worker hung in a request (one that sleeps for ever) is
  still killed: the heartbeat ran only during the shim's wait and lead;
* hold_timeout still bounds a leader: with hold_timeout = 2 s and a longer
  migration, the leader's heartbeat stops after 2 s and the arbiter kills it.

Run: tests/harness/with-pg.sh /usr/bin/python3 -m pytest -q tests/e2e/test_heartbeat_fleet.py
"""

import re
import shutil
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fleet import EXAMPLES_DIR, Fleet, GUNICORN_LINE_RE  # noqa: E402

REVISIONS = ["0001aaaa", "0002bbbb", "0003cccc"]
GUNICORN_TIMEOUT = 4          # seconds: Gunicorn's --timeout
SLEEP = "3"                   # seconds each of the 3 revisions sleeps: ~9 s in all
KEPT_RE = re.compile(r"migshim\[(\d+)\]: debug: keeping Gunicorn's worker heartbeat alive "
                     r"while (waiting for|leading) the migration \(fd \d+ -> (\S+) \(deleted\), "
                     r"held by the arbiter (\d+) too\)$", re.M)
TIMEOUT_RE = re.compile(r"WORKER TIMEOUT \(pid:(\d+)\)")
LEAD_RE = re.compile(r"migshim\[(\d+)\]: info: .*\bleading\b")

HANG_APP = '''\
"""examples/flask-alembic's app, and a request that never ends."""
import os
import sys
import time

from app import app


@app.get("/hang")
def hang():
    sys.stderr.write("hang: pid=%d\\n" % os.getpid())
    sys.stderr.flush()
    time.sleep(3600)
    return "never"
'''


def app_copy(tmp_path) -> Path:
    dest = tmp_path / "flask-alembic"
    shutil.copytree(EXAMPLES_DIR / "flask-alembic", dest,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (dest / "hangapp.py").write_text(HANG_APP)
    return dest


def fleet(db, tmp_path, workers, shim_env=None, sleep=SLEEP, timeout=90.0):
    return Fleet("flask-alembic", db.dsn, workers=workers, shim=True,
                 shim_env=dict({"MIGSHIM_LOG": "debug"}, **(shim_env or {})),
                 env_extra={"MIGRATION_SLEEP": sleep}, timeout=timeout,
                 gunicorn_timeout=GUNICORN_TIMEOUT, app_dir=app_copy(tmp_path),
                 wsgi_app="hangapp:app")


def run(f: Fleet):
    try:
        f.start()
        f.wait()
        f.stop()
        return f.result()
    finally:
        f.stop()
        f.discard()


def test_a_migration_longer_than_the_worker_timeout_boots(db, tmp_path):
    r = run(fleet(db, tmp_path, workers=4))
    desc = r.describe()
    assert r.booted and r.workers_failed == 0, desc
    assert len(r.worker_pids) == 4 and set(r.worker_pids) <= set(r.ready_pids), desc
    assert not TIMEOUT_RE.search(r.stderr), desc
    assert not r.migshim_problems(), "\n".join(r.migshim_problems()) + "\n" + desc
    assert r.alembic_version == ["0003cccc"], desc
    assert r.migration_runs == {rev: 1 for rev in REVISIONS}, desc
    leaders = sorted({int(p) for p in LEAD_RE.findall(r.stderr)})
    assert len(leaders) == 1, desc
    leader = leaders[0]
    assert all(r.migration_pids[rev] == [leader] for rev in REVISIONS), desc
    assert r.elapsed > 2 * GUNICORN_TIMEOUT, f"the migration was not longer than --timeout\n{desc}"
    # each worker kept its own heartbeat: the leader while leading, the others while waiting
    kept = {}
    for pid, what, path, arbiter in KEPT_RE.findall(r.stderr):
        kept.setdefault(int(pid), set()).add(what)
        assert int(arbiter) == r.master_pid or r.master_pid == 0, (arbiter, r.master_pid)
        assert Path(path).name.startswith("wgunicorn-"), path
    assert set(kept) == set(r.worker_pids), f"{kept}\n{desc}"
    assert "leading" in kept[leader], f"{kept}\n{desc}"
    for pid in r.worker_pids:
        if pid != leader:
            assert kept[pid] == {"waiting for"}, f"{kept}\n{desc}"
    print(f"4 workers, --timeout {GUNICORN_TIMEOUT}, migration 3 x {SLEEP} s: booted in "
          f"{r.elapsed:.1f} s, leader {leader}")


def test_without_the_heartbeat_the_arbiter_kills_them(db, tmp_path):
    """The teeth: gunicorn_heartbeat = false, the same fleet is killed by its arbiter."""
    r = run(fleet(db, tmp_path, workers=4, shim_env={"MIGSHIM_GUNICORN_HEARTBEAT": "false"},
                  timeout=45.0))
    desc = r.describe()
    killed = {int(p) for p in TIMEOUT_RE.findall(r.stderr)}
    assert killed, desc
    assert not r.booted, desc
    assert not KEPT_RE.search(r.stderr), desc
    leaders = {int(p) for p in LEAD_RE.findall(r.stderr)}
    assert leaders & killed, f"leaders {leaders}, killed {killed}\n{desc}"
    print(f"heartbeat off: WORKER TIMEOUT for {sorted(killed)}; leaders {sorted(leaders)}")


def test_a_worker_hung_after_boot_is_still_killed(db, tmp_path):
    f = fleet(db, tmp_path, workers=2)
    try:
        f.start()
        f.wait()
        assert f.res.booted, f.stderr_text()
        assert not TIMEOUT_RE.search(f.stderr_text()), f.stderr_text()

        def hang():
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{f.port}/hang", timeout=60).read()
            except OSError:
                pass
        threading.Thread(target=hang, daemon=True).start()
        m = f.wait_for_line(re.compile(r"^hang: pid=(\d+)$", re.M), timeout=20)
        hung = int(m.group(1))
        t0 = time.monotonic()
        k = f.wait_for_line(re.compile(rf"WORKER TIMEOUT \(pid:{hung}\)"),
                            timeout=GUNICORN_TIMEOUT + 30)
        took = time.monotonic() - t0
        assert k, f.stderr_text()
        text = f.stderr_text()
        assert KEPT_RE.search(text), text      # the boot did need the heartbeat
        print(f"hung worker {hung} killed {took:.1f} s after its request began")
    finally:
        f.stop()
        f.discard()


def test_hold_timeout_still_bounds_a_leader(db, tmp_path):
    """hold_timeout = 2 s and a migration of 3 x 10 s: the leader keeps its heartbeat
    for 2 s only, then the arbiter's --timeout applies to it again."""
    f = fleet(db, tmp_path, workers=1, sleep="10", timeout=40.0,
              shim_env={"MIGSHIM_HOLD_TIMEOUT": "2"})
    try:
        f.start()
        m = f.wait_for_line(LEAD_RE, timeout=30)
        leader = int(m.group(1))
        t0 = time.monotonic()
        f.wait_for_line(re.compile(r"stopped keeping Gunicorn's worker heartbeat"), timeout=20)
        k = f.wait_for_line(re.compile(rf"WORKER TIMEOUT \(pid:{leader}\)"),
                            timeout=GUNICORN_TIMEOUT + 30)
        took = time.monotonic() - t0
        assert k, f.stderr_text()
        assert took < 2 + GUNICORN_TIMEOUT + 20, f"{took:.1f}s\n{f.stderr_text()}"
        print(f"leader {leader} killed {took:.1f} s after it began to lead")
    finally:
        f.stop()
        f.discard()
