#!/usr/bin/python3
"""The Django example's fleets, K runs per scenario, with and without migshim: a table.

    tests/harness/with-pg.sh /usr/bin/python3 tests/e2e/django_race.py [-k 10] [-n 8]
        [--scenarios empty,behind,data_behind,squash] [--mode containers|workers]
        [--natural] [--no-baseline]
    make soak-django [K=10] [N=8]

Each run: a fresh database brought to the scenario (tests/e2e/djfleet.py: prepare),
then N processes started together -- `manage.py migrate` each (containers), or the N
workers of one Gunicorn calling call_command("migrate") (workers).  By default the
interleaving is forced (the rendezvous of examples/django/djexample/race.py: every
process has planned before any migrates); --natural leaves it to chance, as in
production.  Per run, the oracle of tests/e2e/test_django.py: failed processes, RunPython
rows beyond one copy, django_migrations rows beyond one per (app, name), the schema against
a serial run's, whether a following `migrate` still had work.  Fleet time: from the start
to the last process's end; serial: the same N processes one after another (no shim, no
rendezvous), once per scenario.

Exit status 0 when every run with the shim is clean (the claim), 1 otherwise.
"""

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import djfleet  # noqa: E402
from djfleet import Project, check, oracle, prepare, schema_dump  # noqa: E402


class Dbs:
    """Fresh databases on the server of PGHOST/PGPORT (dropped at the end)."""

    def __init__(self):
        import os
        self.base = (f"host={os.environ['PGHOST']} port={os.environ.get('PGPORT', '5432')} "
                     f"user={os.environ.get('PGUSER', 'postgres')}")
        self.names = []

    def _admin(self, sql):
        import psycopg2
        c = psycopg2.connect(self.base + " dbname=postgres")
        c.autocommit = True
        try:
            c.cursor().execute(sql)
        finally:
            c.close()

    def __call__(self):
        name = f"migshim_djrace_{uuid.uuid4().hex[:12]}"
        self._admin(f'CREATE DATABASE "{name}"')
        self.names.append(name)

        class D:
            dsn = f"{self.base} dbname={name}"
        return D()

    def drop(self):
        for n in self.names:
            self._admin(f'DROP DATABASE IF EXISTS "{n}" WITH (FORCE)')
        self.names = []


def one_run(proj, dbs, scenario, n, shim, mode, force, expected):
    d = dbs()
    prepare(proj, d.dsn, scenario)
    kw = dict(rendezvous=force, rendezvous_timeout=30 if shim else 10)
    if mode == "workers":
        r = djfleet.run_workers(proj, d.dsn, n, shim, **kw)
    else:
        r = djfleet.run_containers(proj, d.dsn, n, shim, **kw)
    exp_state, exp_schema = expected
    st = oracle(d.dsn)
    dup_mig = sum(v - 1 for v in st.duplicate_migrations.values())
    row = {
        "failed": r.failed,
        "dup_rows": st.duplicate_rows,
        "dup_migrations": dup_mig,
        "schema_differs": int(schema_dump(d.dsn) != exp_schema),
        "other": int(bool([b for b in check(st, exp_state)
                           if not b.startswith(("django_migrations duplicates",
                                                "seeded rows"))])),
        "pending": 0,
        "elapsed": r.elapsed,
        "leaders": len(r.leaders()) if shim else None,
        "problems": len(r.migshim_problems()) if shim else 0,
    }
    if r.failed == 0:
        row["pending"] = int(not djfleet.nothing_to_do(proj, d.dsn))
    return row


def serial_time(proj, dbs, scenario, n):
    d = dbs()
    prepare(proj, d.dsn, scenario)
    r = djfleet.run_containers(proj, d.dsn, n, shim=False, serial=True)
    assert r.failed == 0, r.describe()
    return r.elapsed


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-k", type=int, default=10, help="runs per scenario and side")
    ap.add_argument("-n", type=int, default=8, help="processes per fleet")
    ap.add_argument("--scenarios", default=",".join(djfleet.SCENARIOS))
    ap.add_argument("--mode", default="containers", choices=("containers", "workers"))
    ap.add_argument("--natural", action="store_true", help="no rendezvous")
    ap.add_argument("--no-baseline", action="store_true", help="only runs with the shim")
    a = ap.parse_args(argv)

    dbs = Dbs()
    tmp = tempfile.mkdtemp(prefix="migshim-djrace.")
    proj = Project.copy(tmp)
    rows = []
    try:
        d = dbs()
        proj.manage(d.dsn, "migrate", "--noinput")
        expected = (oracle(d.dsn), schema_dump(d.dsn))
        for scenario in a.scenarios.split(","):
            serial = serial_time(proj, dbs, scenario, a.n)
            for shim in ([True] if a.no_baseline else [False, True]):
                runs = []
                for i in range(a.k):
                    runs.append(one_run(proj, dbs, scenario, a.n, shim, a.mode,
                                        not a.natural, expected))
                    dbs.drop()
                    print(f"  {scenario} {'shim' if shim else 'no-shim'} run {i + 1}: "
                          f"{runs[-1]}", file=sys.stderr, flush=True)
                rows.append((scenario, shim, runs, serial))
    finally:
        dbs.drop()
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)

    hdr = (f"{'scenario':<12} {'shim':<5} {'runs':>4} {'failed procs':>13} {'runs w/ fail':>12} "
           f"{'dup rows':>8} {'dup mig rows':>12} {'schema !=':>9} {'pending':>7} "
           f"{'leaders':>7} {'fleet s':>8} {'serial s':>8}")
    print(f"\n{a.mode}, N={a.n}, " + ("natural interleaving" if a.natural else
                                        "interleaving forced (rendezvous)"))
    print(hdr)
    print("-" * len(hdr))
    clean = True
    for scenario, shim, runs, serial in rows:
        s = lambda k: sum(r[k] for r in runs)  # noqa: E731
        leaders = "-" if not shim else \
            ("1" if all(r["leaders"] == 1 for r in runs)
             else "/".join(str(r["leaders"]) for r in runs))
        print(f"{scenario:<12} {'yes' if shim else 'no':<5} {len(runs):>4} "
              f"{s('failed'):>6}/{a.n * len(runs):<6} {sum(1 for r in runs if r['failed']):>12} "
              f"{s('dup_rows'):>8} {s('dup_migrations'):>12} {s('schema_differs'):>9} "
              f"{s('pending'):>7} {leaders:>7} "
              f"{statistics.mean(r['elapsed'] for r in runs):>8.2f} {serial:>8.2f}")
        if shim and (s("failed") or s("dup_rows") or s("dup_migrations") or s("schema_differs")
                     or s("pending") or s("other") or s("problems")
                     or any(r["leaders"] != 1 for r in runs)):
            clean = False
    print("\nwith the shim: " + ("every run clean" if clean else "NOT CLEAN"))
    return 0 if clean else 1


if __name__ == "__main__":
    t0 = time.monotonic()
    rc = main()
    print(f"({time.monotonic() - t0:.0f} s)", file=sys.stderr)
    sys.exit(rc)
