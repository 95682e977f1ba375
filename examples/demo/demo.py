"""The migshim demo (run by examples/demo/run.sh, i.e. `make demo`).

Against the PostgreSQL server named by PGHOST/PGPORT/PGUSER (run.sh starts a
throw-away one), runs the flask-alembic example under Gunicorn twice, each
time on a fresh empty database: without the shim, then with
LD_PRELOAD=build/libmigshim.so.  Prints what happened side by side.  Then the
same for Django (examples/django, --no-django to skip): 8 containers each
running `manage.py migrate` on a database one data migration behind.

The interleaving is forced, not left to chance (issue 23): the Gunicorn
workers wait at a start line in the example's env.py (MIGRATION_BARRIER_DIR)
until all of them are there, so their migrations start together; the Django
processes meet at the example's rendezvous (djexample/race.py: every process
has planned its migrations, or is blocked on the shim's lock, before any
goes on).  Without the shim the fleet then races every time; with it, the
same start line leaves one process migrating and the others waiting.

Exit status: 0 when the runs with the shim were clean (every worker up,
the database at head, every revision applied exactly once; for Django, every
process exited 0, one led, nothing recorded or seeded twice), else 1.
"""

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(REPO / "tests" / "e2e"))
import fleet  # noqa: E402
import djfleet  # noqa: E402

REVISIONS = ["0001aaaa", "0002bbbb", "0003cccc"]


def on_term(signum, frame):
    # Ctrl-C (SIGINT, and with-pg.sh's SIGTERM right after): unwind once, so
    # that the running fleet's `finally` stops its Gunicorn master; a second
    # signal must not interrupt that clean-up.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


def server_dsn(dbname):
    return (f"host={os.environ.get('PGHOST', '/var/run/postgresql')} "
            f"port={os.environ.get('PGPORT', '5432')} "
            f"user={os.environ.get('PGUSER', 'postgres')} dbname={dbname}")


def admin(sql):
    import psycopg2
    conn = psycopg2.connect(server_dsn(os.environ.get("PGDATABASE",
                                                      "postgres")))
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
    finally:
        conn.close()


def fresh_db(tag):
    name = f"migshim_demo_{tag}_{uuid.uuid4().hex[:8]}"
    admin(f'CREATE DATABASE "{name}" TEMPLATE template0')
    return name


def drop_db(name):
    try:
        admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    except Exception as e:  # the server is thrown away anyway
        print(f"demo: could not drop {name}: {e}", file=sys.stderr)


BARRIER_TIMEOUT = 20     # s; below Gunicorn's worker timeout (30 s)
BARRIER_MISSED = "barrier: "   # examples/flask-alembic/migrations/env.py's line


def run(label, shim, args):
    name = fresh_db("shim" if shim else "noshim")
    bdir = tempfile.mkdtemp(prefix="migshim-demo-barrier.")
    try:
        print(f"demo: {label}: {args.workers} {args.worker_class} workers, "
              f"empty database {name} ...", flush=True)
        # the start line: every worker's migration starts once all are there
        barrier = {"MIGRATION_BARRIER_DIR": bdir,
                   "MIGRATION_BARRIER_N": str(args.workers),
                   "MIGRATION_BARRIER_TIMEOUT": str(BARRIER_TIMEOUT)}
        r = fleet.run_fleet("flask-alembic", server_dsn(name),
                            workers=args.workers,
                            worker_class=args.worker_class,
                            shim=shim, timeout=args.timeout, label=label,
                            env_extra=barrier)
        print(f"demo: {label}: "
              + ("all workers ready" if r.booted else f"FAILED: {r.reason}"),
              flush=True)
        r.start_line = len(os.listdir(bdir))    # the workers that reached it
        missed = [ln for ln in r.stderr.splitlines()
                  if "flask-alembic[" in ln and BARRIER_MISSED in ln]
        if missed:
            print(f"demo: {label}: the start line was not complete: {missed[0]}",
                  flush=True)
        return r
    finally:
        shutil.rmtree(bdir, ignore_errors=True)
        drop_db(name)


def cells(r):
    n = r.workers
    if r.booted:
        master = "running"
    elif r.master_alive_at_end:
        master = "running (workers died)"
    else:
        master = f"exited (rc {r.master_rc})"
    runs = " ".join(f"{rev[:4]}:{r.migration_runs.get(rev, 0)}"
                    for rev in REVISIONS)
    if r.booted and r.elapsed is not None:
        ready = f"{r.elapsed:.2f} s"
    else:
        ready = f"never ({r.reason.split(',')[0]}, {r.wall:.1f} s)"
    kinds = []
    for ln in r.race_errors():
        for key in ("UniqueViolation", "DuplicateTable", "DuplicateColumn",
                    "DuplicateObject", "expected to match one row"):
            if key in ln and key not in kinds:
                kinds.append(key)
    errors = ", ".join(kinds) if kinds else (
        "other" if r.race_errors() else "none")
    if r.shim:
        gate = (f"{len(r.gate_lines('lead'))} led, "
                f"{len(r.gate_lines('wait'))} waited, "
                f"{sum(k == ['at_head'] for k in r.gate_decisions().values()) + len(r.gate_lines('found_head'))}"
                f" at head")
    else:
        gate = "-"
    return [
        ("met at the start line", f"{r.start_line}/{n}"),
        ("workers booted", f"{len(set(r.ready_pids) & set(r.worker_pids))}/{n}"),
        ("workers failed", str(r.workers_failed)),
        ("race errors", errors),
        ("gunicorn master", master),
        ("rows per revision", runs),
        ("alembic_version", ",".join(r.alembic_version or ["(none)"])),
        ("time to all ready", ready),
        ("gate decisions", gate),
    ]


def table(a, b):
    ca, cb = cells(a), cells(b)
    w0 = max(len(k) for k, _ in ca)
    w1 = max([len("without shim")] + [len(v) for _, v in ca])
    w2 = max([len("with migshim")] + [len(v) for _, v in cb])
    line = f"+-{'-' * w0}-+-{'-' * w1}-+-{'-' * w2}-+"
    out = [line, f"| {'':{w0}} | {'without shim':{w1}} | {'with migshim':{w2}} |",
           line]
    for (k, va), (_, vb) in zip(ca, cb):
        out.append(f"| {k:{w0}} | {va:{w1}} | {vb:{w2}} |")
    out.append(line)
    return "\n".join(out)


def clean(r):
    return (r.booted and r.workers_failed == 0
            and r.alembic_version == ["0003cccc"]
            and r.migration_runs == {rev: 1 for rev in REVISIONS}
            and not r.race_errors())


def django_run(label, shim, proj, n):
    """n `manage.py migrate` started together on a database one data migration behind
    (catalog.0004_seed_products), meeting at the example's rendezvous (as
    tests/e2e/django_race.py forces it: 10 s without the shim, 30 s with it)."""
    name = fresh_db("dj_shim" if shim else "dj_noshim")
    try:
        dsn = server_dsn(name)
        djfleet.prepare(proj, dsn, "data_behind")
        print(f"demo: django, {label}: {n} x manage.py migrate, database {name} one data "
              f"migration behind ...", flush=True)
        r = djfleet.run_containers(proj, dsn, n, shim=shim, rendezvous=True,
                                   rendezvous_timeout=30 if shim else 10, label=label)
        late = [x for x in r.rendezvous() if not x[2]]
        if late:
            print(f"demo: django, {label}: the rendezvous was not complete in "
                  f"{len(late)} place(s)", flush=True)
        return r, djfleet.oracle(dsn)
    finally:
        drop_db(name)


DATA_MIGRATION = "catalog.0004_seed_products"   # the one the database is behind


def django_cells(r, st):
    dup = st.duplicate_migrations
    leaders = r.leaders()
    # the rendezvous inside the data migration: the most complete line any process printed
    meet = max(((x[3] + x[4], x[3], x[4]) for x in r.rendezvous() if x[1] == DATA_MIGRATION),
               default=(0, 0, 0))
    return [
        ("inside 0004 at once", f"{meet[1]}, {meet[2]} waiting on a lock"),
        ("processes exited 0", f"{r.n - r.failed}/{r.n}"),
        ("products seeded (want 3)", str(st.seeded.get("catalog_product", 0))),
        ("0004 rows in django_migrations",
         str(st.migrations.get(("catalog", "0004_seed_products"), 0))),
        ("duplicate django_migrations", str(sum(v - 1 for v in dup.values()))),
        ("processes that led", str(len(leaders)) if r.shim else "-"),
        ("time to all done", f"{r.elapsed:.2f} s"),
    ]


def django_demo(n):
    tmp = tempfile.mkdtemp(prefix="migshim-demo-django.")
    try:
        proj = djfleet.Project.copy(tmp)
        a, sa = django_run("without shim", False, proj, n)
        b, sb = django_run("with migshim", True, proj, n)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    ca, cb = django_cells(a, sa), django_cells(b, sb)
    w0 = max(len(k) for k, _ in ca)
    w1 = max([len("without shim")] + [len(v) for _, v in ca])
    w2 = max([len("with migshim")] + [len(v) for _, v in cb])
    line = f"+-{'-' * w0}-+-{'-' * w1}-+-{'-' * w2}-+"
    out = [line, f"| {'':{w0}} | {'without shim':{w1}} | {'with migshim':{w2}} |", line]
    for (k, va), (_, vb) in zip(ca, cb):
        out.append(f"| {k:{w0}} | {va:{w1}} | {vb:{w2}} |")
    out.append(line)
    print()
    print("\n".join(out))
    lead = djfleet.RunResult.migshim_lines(b, "info")
    lead = [(p, m) for p, _, m in lead if "leading" in m]
    if lead:
        print("\nwith migshim, the one process that migrated said:")
        print(f"    migshim[{lead[0][0]}]: info: {lead[0][1][:160]}")
    if a.failed == 0 and not sa.duplicate_migrations and sa.seeded == djfleet.SEEDED:
        print("\ndemo: note: the Django processes without the shim did not race this time")
    ok = (b.failed == 0 and len(b.leaders()) == 1 and not sb.duplicate_migrations
          and sb.seeded == djfleet.SEEDED)
    return ok


def main():
    ap = argparse.ArgumentParser(description="migshim demo")
    ap.add_argument("--workers", "-w", type=int, default=16)
    ap.add_argument("--worker-class", "-k", default="sync")
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--verbose", "-v", action="store_true",
                    help="print the runs' migshim lines")
    ap.add_argument("--no-django", action="store_true",
                    help="skip the Django half (examples/django)")
    ap.add_argument("--django-processes", type=int, default=8)
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    if not fleet.shim_path().is_file():
        print(f"demo: {fleet.shim_path()} not built (run make)",
              file=sys.stderr)
        return 1

    print("demo: the demo forces the workers to start their migrations together "
          "(a start line), so the race shows every time", flush=True)
    t0 = time.monotonic()
    try:
        without = run("without shim", False, args)
        with_ = run("with migshim", True, args)
    except KeyboardInterrupt:
        print("\ndemo: interrupted; fleets stopped", file=sys.stderr)
        return 130

    print()
    print(table(without, with_))
    errs = without.race_errors()
    if errs:
        print("\nwithout the shim, for example:")
        for ln in errs[:2]:
            print("   ", ln[:160])
    if not without.raced:
        print("\ndemo: note: the run without the shim did not race this time")
    lead = with_.gate_lines("lead")
    if lead:
        print("\nwith migshim, the one process that migrated said:")
        print(f"    migshim[{lead[0][0]}]: info: {lead[0][1][:160]}")
    if args.verbose:
        for r in (without, with_):
            print(f"\n--- {r.label}: migshim lines ---")
            for p, lv, m in r.migshim_lines():
                print(f"migshim[{p}]: {lv}: {m}")
    ok = clean(with_)
    if not ok:
        print(with_.describe(), file=sys.stderr)
    dj_ok = True
    if not args.no_django:
        print(f"\n== Django: `manage.py migrate` in each of {args.django_processes} containers, "
              "one data migration behind")
        try:
            dj_ok = django_demo(args.django_processes)
        except KeyboardInterrupt:
            print("\ndemo: interrupted; processes stopped", file=sys.stderr)
            return 130
    print(f"\ndemo: {'OK' if ok and dj_ok else 'FAILED'}: the run with migshim "
          f"{'booted cleanly' if ok else 'did not boot cleanly'}"
          + ("" if args.no_django else
             f"; the Django fleet with migshim {'was clean' if dj_ok else 'was NOT clean'}")
          + f" ({time.monotonic() - t0:.0f} s in all)")
    return 0 if ok and dj_ok else 1


if __name__ == "__main__":
    sys.exit(main())
