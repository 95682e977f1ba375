#!/usr/bin/python3
"""Per fleet scenario, with and without the shim: failures, duplicates, time
to ready -- on the stack E2E_PYTHON names (tests/today's venvs, or Debian's
/usr/bin/python3 when unset).  Prints a Markdown table (docs/compatibility.md).

    tests/harness/with-pg.sh tests/today/measure.py [--repeat N] [--only S] [--skip S]

Alembic scenarios (examples/flask-alembic, 8 sync Gunicorn workers, each
running `upgrade head` at import; MIGRATION_SLEEP=0.05):
  empty / behind (from 0001aaaa) / psycopg 3 / transaction_per_migration /
  Flask-Migrate layout, each without the shim and with it (lock on), and the
  guard alone (lock = off).
Django scenarios (examples/django): 4 `manage.py migrate` containers from an
empty database, and 4 Gunicorn workers each calling call_command('migrate')
one data migration behind; without the shim and with it.  No rendezvous:
the processes race as they would (the e2e tests force the race; this
measures it).

Columns: runs that failed (a worker or process failed, or the fleet never
became ready) / runs; duplicates (Alembic: revisions whose upgrade() ran more
than once, from migration_runs; Django: duplicate django_migrations rows plus
rows seeded beyond the expected count), summed over the runs; time to ready
(median over the runs that booted: start -> every worker ready).
"""

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "e2e"))
sys.path.insert(0, str(HERE.parent))
import fleet  # noqa: E402
from fleet import EXAMPLES_DIR, Fleet, run_fleets, migrate  # noqa: E402

import psycopg2  # noqa: E402  (Debian's, in this process only)


def admin_dsn(db="postgres"):
    return "host=%s port=%s user=%s dbname=%s" % (
        os.environ["PGHOST"], os.environ["PGPORT"], os.environ.get("PGUSER", "postgres"), db)


def sql(q):
    c = psycopg2.connect(admin_dsn())
    c.autocommit = True
    try:
        c.cursor().execute(q)
    finally:
        c.close()


def new_db():
    name = "today_%s" % uuid.uuid4().hex[:12]
    sql('CREATE DATABASE "%s"' % name)
    return name, admin_dsn(name)


def drop_db(name):
    sql('DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % name)


def tpm_copy(tmp):
    d = Path(tmp) / "flask-alembic-tpm"
    shutil.copytree(EXAMPLES_DIR / "flask-alembic", d)
    env = d / "migrations" / "env.py"
    s = env.read_text()
    old = "connection=connection, target_metadata=target_metadata\n"
    env.write_text(s.replace(old, "connection=connection, target_metadata=target_metadata,\n"
                                  "            transaction_per_migration=True\n"))
    return d


def alembic_run(example, shim, lock_off=False, behind=False, driver=None, app_dir=None):
    name, dsn = new_db()
    try:
        if behind:
            migrate("flask-alembic", dsn, target="0001aaaa")
        old = fleet.DRIVER
        if driver:
            fleet.DRIVER = driver
        try:
            f = Fleet(example, dsn, workers=8, shim=shim,
                      shim_env={"MIGSHIM_LOCK": "off"} if lock_off else {},
                      env_extra={"MIGRATION_SLEEP": "0.05"}, app_dir=app_dir)
            r = run_fleets([f])[0]
        finally:
            fleet.DRIVER = old
        dup = sum(1 for n in r.migration_runs.values() if n > 1)
        ok = r.booted and not r.failed_pids and r.alembic_version == ["0003cccc"]
        return ok, dup, r.elapsed if r.booted else None
    finally:
        drop_db(name)


def django_run(mode, shim):
    import djfleet
    tmp = tempfile.mkdtemp(prefix="today-dj.")
    try:
        proj = djfleet.Project.copy(tmp)
        name, dsn = new_db()
        try:
            if mode == "containers":
                r = djfleet.run_containers(proj, dsn, 4, shim=shim, gunicorn=True,
                                           rendezvous=False)
            else:
                djfleet.prepare(proj, dsn, "data_behind")
                r = djfleet.run_workers(proj, dsn, 4, shim=shim, rendezvous=False)
            st = djfleet.oracle(dsn)
            dup = sum(v - 1 for v in st.duplicate_migrations.values()) + st.duplicate_rows
            ok = r.failed == 0 and all(r.booted or [True])
            return ok, dup, r.elapsed if ok else None
        finally:
            drop_db(name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def scenarios(tmp):
    tpm = tpm_copy(tmp)
    rows = []
    for label, kw in [
            ("Alembic, empty, psycopg2", {}),
            ("Alembic, behind (0001aaaa), psycopg2", {"behind": True}),
            ("Alembic, empty, psycopg 3", {"driver": "psycopg"}),
            ("Alembic, transaction_per_migration", {"app_dir": tpm}),
            ("Flask-Migrate, empty", {"example": "flask-migrate"})]:
        kw = dict(kw)
        ex = kw.pop("example", "flask-alembic")
        rows.append((label, "no shim", lambda ex=ex, kw=kw: alembic_run(ex, False, **kw)))
        rows.append((label, "shim", lambda ex=ex, kw=kw: alembic_run(ex, True, **kw)))
    rows.append(("Alembic, empty, psycopg2", "guard only (lock = off)",
                 lambda: alembic_run("flask-alembic", True, lock_off=True)))
    rows.append(("Alembic, transaction_per_migration", "guard only (lock = off)",
                 lambda: alembic_run("flask-alembic", True, lock_off=True, app_dir=tpm)))
    for mode, label in [("containers", "Django, 4 x manage.py migrate && gunicorn, empty"),
                        ("workers", "Django, 4 Gunicorn workers call_command, data behind")]:
        rows.append((label, "no shim", lambda mode=mode: django_run(mode, False)))
        rows.append((label, "shim", lambda mode=mode: django_run(mode, True)))
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", default="", help="only the rows whose label has this")
    ap.add_argument("--skip", default="", help="not the rows whose label has this (e.g. 'psycopg 3'"
                    " on Debian 12, whose SQLAlchemy 1.4 has no psycopg 3 dialect)")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="today-measure.")
    print("python: %s" % fleet.PYTHON)
    print()
    print("| scenario | shim | failed runs | duplicates | time to ready (median) |")
    print("|---|---|---|---|---|")
    for label, how, fn in scenarios(tmp):
        if a.only and a.only not in f"{label} {how}":
            continue
        if a.skip and a.skip in f"{label} {how}":
            continue
        fails = dups = 0
        times = []
        for _ in range(a.repeat):
            ok, dup, t = fn()
            fails += 0 if ok else 1
            dups += dup
            if t is not None:
                times.append(t)
        med = "%.2f s" % statistics.median(times) if times else "-"
        print(f"| {label} | {how} | {fails}/{a.repeat} | {dups} | {med} |", flush=True)
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
