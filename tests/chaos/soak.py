#!/usr/bin/python3
"""Soak: many randomized fleets under the shim, one after another, against
the server in PGHOST/PGPORT (make soak runs it inside
tests/harness/with-pg.sh).

    tests/chaos/soak.py [--runs N] [--seed S] [--only I] [--log DIR]

Each run, on a fresh database, draws (from random.Random("SEED-I"), so run
I of seed S is the same wherever it is replayed: --seed S --only I):

  masters       1-3 Gunicorn masters started at once on the same database
  workers       2-32 in total, split over the masters (each >= 1): the
                machine this runs on has 2 cores
  worker class  sync or gevent
  --preload     or not (the masters then migrate, the workers inherit)
  start         empty database, or at 0001aaaa / 0002bbbb (alembic CLI,
                without the shim)
  lock          xact or session
  sleep         MIGRATION_SLEEP 0.02-0.2 s per revision

and checks: every master booted (all its workers ready, master alive);
alembic_version = 0003cccc; each revision applied exactly once
(migration_runs); no race error in any output; no migshim warning or
error; exactly one `leading` line when the database started behind (none
when it did not); once every master is up, no advisory lock and no migshim
connection left in the database.  A tally table at the end; exit status 1
if any run failed.  A failing run's full output goes to --log DIR
(default build/soak).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from chaoslib import (HEADS, REVISIONS, Fleet, Watcher, advisory_holders,  # noqa: E402
                      lock_backends, migrate)

REPO = Path(__file__).resolve().parents[2]


def server_dsn(dbname):
    return (f"host={os.environ['PGHOST']} port={os.environ['PGPORT']} "
            f"user={os.environ.get('PGUSER') or 'postgres'} dbname={dbname}")


def admin(sql):
    import psycopg2
    c = psycopg2.connect(server_dsn(os.environ.get("PGDATABASE") or "postgres"))
    c.autocommit = True
    try:
        with c.cursor() as cur:
            cur.execute(sql)
    finally:
        c.close()


def draw(seed, i):
    rng = random.Random(f"{seed}-{i}")
    masters = rng.randint(1, 3)
    total = rng.randint(max(2, masters), 32)
    cuts = sorted(rng.sample(range(1, total), masters - 1)) if masters > 1 else []
    split = [b - a for a, b in zip([0] + cuts, cuts + [total])]
    return dict(masters=masters, workers=split, total=total,
                worker_class=rng.choice(["sync", "gevent"]),
                preload=rng.choice([False, True]),
                start=rng.choice([None, None, "0001aaaa", "0002bbbb"]),
                lock=rng.choice(["xact", "session"]),
                sleep=round(rng.uniform(0.02, 0.2), 3))


def describe(c):
    return (f"masters={c['masters']} workers={'+'.join(map(str, c['workers']))} "
            f"-k {c['worker_class']}{' --preload' if c['preload'] else ''} "
            f"start={c['start'] or 'empty'} lock={c['lock']} sleep={c['sleep']}")


def run_one(seed, i, logdir):
    c = draw(seed, i)
    name = f"soak_{uuid.uuid4().hex[:12]}"
    admin(f'CREATE DATABASE "{name}" TEMPLATE template0')
    dsn = server_dsn(name)
    problems = []
    fleets = []
    elapsed = None
    try:
        if c["start"]:
            migrate("flask-alembic", dsn, c["start"])
        fleets = [Fleet("flask-alembic", dsn, workers=n, worker_class=c["worker_class"],
                        preload=c["preload"], shim=True,
                        shim_env={"MIGSHIM_LOCK": c["lock"]},
                        env_extra={"MIGRATION_SLEEP": str(c["sleep"])},
                        timeout=90, label=f"run {i} master {k + 1}/{c['masters']}")
                  for k, n in enumerate(c["workers"])]
        t0 = time.monotonic()
        left = None
        try:
            for f in fleets:
                f.start()
            while not all([f.poll() for f in fleets]):
                time.sleep(0.05)
            elapsed = time.monotonic() - t0
            if all(f.res.booted for f in fleets):
                w = Watcher(dsn)
                try:
                    deadline = time.monotonic() + 5
                    while True:
                        left = (advisory_holders(w), lock_backends(w))
                        if not any(left) or time.monotonic() > deadline:
                            break
                        time.sleep(0.05)
                finally:
                    w.close()
        finally:
            for f in fleets:
                f.stop()
        results = [f.result(read_db=(k == 0)) for k, f in enumerate(fleets)]
        version, runs = results[0].alembic_version, results[0].migration_runs
        leads = sum(len(r.gate_lines("lead")) for r in results)
        cat = set()
        if not all(r.booted and r.master_alive_at_end for r in results):
            cat.add("boot failure")
        if any(n > 1 for n in runs.values()):
            cat.add("double-applied")
        if version != HEADS or sorted(runs) != REVISIONS or any(n != 1 for n in runs.values()):
            cat.add("wrong final state")
        if any(r.race_errors() for r in results):
            cat.add("race error shown")
        if any(r.migshim_problems() for r in results):
            cat.add("migshim warn/error")
        if leads != (1 if c["start"] != HEADS[0] else 0):
            cat.add("leaders != 1")
        if left and any(left):
            cat.add("lock/conn left")
        problems = sorted(cat)
        if problems:
            logdir.mkdir(parents=True, exist_ok=True)
            path = logdir / f"seed{seed}-run{i}.log"
            with open(path, "w") as fh:
                fh.write(f"SOAK_SEED={seed} run {i}: {describe(c)}\nproblems: {problems}\n"
                         f"version={version} runs={runs} leads={leads} left={left}\n")
                for r in results:
                    fh.write("\n==== " + r.summary() + "\n" + r.stderr)
            problems.append(f"log: {path}")
    finally:
        for f in fleets:
            f.discard()
        try:
            admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        except Exception as e:
            problems.append(f"drop failed: {e}")
    return c, elapsed, problems


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=int(os.environ.get("N", "50")))
    ap.add_argument("--seed", type=int,
                    default=int(os.environ["SOAK_SEED"]) if os.environ.get("SOAK_SEED")
                    else random.SystemRandom().randrange(1, 10**9))
    ap.add_argument("--only", type=int, default=None, help="replay run I of the seed")
    ap.add_argument("--log", default=str(REPO / "build" / "soak"))
    a = ap.parse_args()
    if not (os.environ.get("PGHOST") and os.environ.get("PGPORT")):
        sys.exit("soak.py: PGHOST/PGPORT not set (run it under tests/harness/with-pg.sh)")
    logdir = Path(a.log)
    indices = [a.only] if a.only is not None else list(range(1, a.runs + 1))
    print(f"SOAK_SEED={a.seed} runs={len(indices)} "
          f"(replay one: make soak SOAK_SEED={a.seed} SOAK_ONLY=I)", flush=True)
    cats = ["boot failure", "double-applied", "wrong final state", "race error shown",
            "migshim warn/error", "leaders != 1", "lock/conn left"]
    tally = {k: 0 for k in cats}
    times, failed, by = [], [], {}
    t_all = time.monotonic()
    for i in indices:
        c, el, problems = run_one(a.seed, i, logdir)
        ok = not problems
        print(f"[{i:4d}] {'ok  ' if ok else 'FAIL'} {el if el is not None else float('nan'):6.2f}s  "
              f"{describe(c)}" + ("" if ok else "  <- " + "; ".join(problems)), flush=True)
        for p in problems:
            if p in tally:
                tally[p] += 1
        if el is not None:
            times.append(el)
        if not ok:
            failed.append(i)
        key = f"{c['worker_class']}{' preload' if c['preload'] else ''}, {c['masters']} master(s)"
        b = by.setdefault(key, [0, 0, []])
        b[0] += 1
        b[1] += 0 if ok else 1
        if el is not None:
            b[2].append(el)
    wall = time.monotonic() - t_all
    print("\n== soak tally (SOAK_SEED=%d)" % a.seed)
    print(f"  {'runs':<22}{len(indices):6d}")
    print(f"  {'failed runs':<22}{len(failed):6d}" + (f"   {failed[:20]}" if failed else ""))
    for k in cats:
        print(f"  {k:<22}{tally[k]:6d}")
    if times:
        print(f"  {'time to all ready (s)':<22} min {min(times):.2f}  p50 {statistics.median(times):.2f}"
              f"  p90 {pct(times, 90):.2f}  max {max(times):.2f}")
    print(f"  {'wall (s)':<22}{wall:8.1f}")
    print(f"  {'by kind':<22}{'runs':>6}{'fail':>6}{'p50 s':>8}{'max s':>8}")
    for k in sorted(by):
        n, nf, ts = by[k]
        print(f"    {k:<20}{n:6d}{nf:6d}"
              + (f"{statistics.median(ts):8.2f}{max(ts):8.2f}" if ts else ""))
    print(f"soak: {len(indices)} runs, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
