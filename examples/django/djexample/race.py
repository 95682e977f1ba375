"""Hooks that make a start-up race reproducible: off unless the environment asks.

The example's data migrations (and, once per process, Django's pre_migrate signal) call
``window(connection, point)`` after their writes, inside the migration's transaction:

  MIGRATION_SLEEP=S           SELECT pg_sleep(S) there (default 0: none)
  DJANGO_RENDEZVOUS_DIR=DIR   a rendezvous of DJANGO_RENDEZVOUS_N processes there: the
  DJANGO_RENDEZVOUS_N=N       process leaves DIR/<point>.<pid> and waits until every one of
  DJANGO_RENDEZVOUS_TIMEOUT=T the N processes is at the same point, or blocked on an
                              advisory lock of this database (pg_stat_activity), or gone (it
                              was at pre_migrate and has exited since), or until T seconds
                              (default 30) have passed.  One line on stderr:
    django-example[PID]: rendezvous POINT: I inside, W waiting on a lock, G gone
    django-example[PID]: rendezvous POINT incomplete after T s: I inside, W waiting ...

Without coordination the N processes all reach a point (each planned the same migrations
and none has committed), so each one's RunPython commits its rows: the race, forced.  With
migshim one process gets there and the N-1 others are blocked on its migration lock, which
the rendezvous verifies before the leader goes on: the interleaving in which they would
have raced, forced as well.  At the pre_migrate point every process has computed its plan
and nothing has been migrated yet.
"""
import os
import sys
import time

_WAITERS = ("SELECT count(*) FROM pg_catalog.pg_stat_activity "
            "WHERE datname = pg_catalog.current_database() "
            "AND wait_event_type = 'Lock' AND wait_event = 'advisory'")


def _say(msg):
    os.write(2, f"django-example[{os.getpid()}]: {msg}\n".encode())


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _arrivals(where, point):
    """(processes at `point`, processes that were at pre_migrate, never came to `point`
    and have exited since: they failed, or finished without this migration)."""
    here, started = set(), set()
    for f in os.listdir(where):
        p, _, pid = f.rpartition(".")
        if p == point:
            here.add(pid)
        elif p == "pre_migrate":
            started.add(pid)
    return len(here), sum(1 for pid in started - here if not _alive(int(pid)))


def window(connection, point):
    sleep = float(os.environ.get("MIGRATION_SLEEP") or 0)
    if sleep > 0:
        with connection.cursor() as cur:
            cur.execute("SELECT pg_catalog.pg_sleep(%s)", [sleep])
    where = os.environ.get("DJANGO_RENDEZVOUS_DIR")
    if not where:
        return
    n = int(os.environ["DJANGO_RENDEZVOUS_N"])
    timeout = float(os.environ.get("DJANGO_RENDEZVOUS_TIMEOUT") or 30)
    open(os.path.join(where, f"{point}.{os.getpid()}"), "w").close()
    deadline = time.monotonic() + timeout
    while True:
        inside, gone = _arrivals(where, point)
        with connection.cursor() as cur:
            # pg_stat_activity is read once per transaction unless told otherwise
            cur.execute("SELECT pg_catalog.pg_stat_clear_snapshot()")
            cur.execute(_WAITERS)
            waiting = cur.fetchone()[0]
        if inside + gone + waiting >= n:
            _say(f"rendezvous {point}: {inside} inside, {waiting} waiting on a lock, "
                 f"{gone} gone")
            return
        if time.monotonic() > deadline:
            _say(f"rendezvous {point} incomplete after {timeout:g} s: "
                 f"{inside} inside, {waiting} waiting on a lock, {gone} gone")
            return
        time.sleep(0.02)


def pre_migrate(sender, using, **kwargs):
    """Connected (for one app) in catalog's AppConfig.ready()."""
    from django.db import connections
    window(connections[using], "pre_migrate")


def note(msg):
    """A line on stderr, flushed, whatever the logging configuration; in one
    write, so the lines of several processes never run together."""
    sys.stderr.write(f"django-example[{os.getpid()}]: {msg}\n")
    sys.stderr.flush()
