#!/usr/bin/python3
"""make bench: migshim's performance figures against the targets of issue 6.

Run by bench/run.sh inside tests/harness/with-pg.sh (PGHOST/PGPORT/PGUSER
point at a throw-away PostgreSQL).  Every comparison runs the same work with
and without the shim, interleaved (A B B A ...), so that ratios survive a
noisy machine.  This process itself never has the shim preloaded; it starts
the measured programs with or without LD_PRELOAD.

    bench/run.sh                         the full run (~5-8 min on 2 cores)
    BENCH_QUICK=1 bench/run.sh           a smoke run (~1-2 min, figures are rough)
    BENCH_ONLY=steady,gate bench/run.sh  some measurements only:
                                         steady instr gate handoff fleet footprint big
    BENCH_ONLY=instr bench/run.sh        the callgrind counts alone (~1-2 min)

Writes build/bench/out/: results.csv (the table), table.txt, machine.txt,
handoff.png (gnuplot), and the raw samples of each measurement (*.csv).
"""

from __future__ import annotations

import csv
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / "build" / "bench"
OUT = Path(os.environ.get("BENCH_OUT", ROOT / "build" / "bench" / "out"))
WORK = OUT / "work"               # cwd of the measured processes: no migshim.conf
LIB = Path(os.environ.get("MIGSHIM_LIB", ROOT / "build" / "libmigshim.so")).resolve()
# The wire layer (issue 22) is part of the library: rows 1w/1p/1s measure it.
WIRE_LIB = LIB
PGBIN = Path(os.environ.get("PG_BINDIR", "/usr/lib/postgresql/15/bin"))
PGBENCH = PGBIN / "pgbench"

QUICK = os.environ.get("BENCH_QUICK", "") not in ("", "0")
ONLY = [s for s in os.environ.get("BENCH_ONLY", "").replace(" ", ",").split(",") if s]
ALL = ["steady", "instr", "gate", "handoff", "fleet", "footprint", "big"]

HEAD = "benchhead"                # the version a database "at head" holds
V1, V2 = "bench0001", "bench0002"  # behind / target, for the hand-off and the guard
HANDOFF_KEY = 7171717171          # MIGSHIM_LOCK_KEY of the hand-off
MB = 1 << 20

if QUICK:
    P = dict(pgbench_pairs=3, pgbench_T=1, loop_pairs=2, loop_n=3000,
             conn_runs=30, handoff_sizes=(8, 32, 64), handoff_reps={8: 1, 32: 1, 64: 1},
             fleet_rounds=1, rss_pairs=3, big_rounds=2, big_reps={MB: 6, 10 * MB: 3},
             handoff_settle=0.2)
else:
    P = dict(pgbench_pairs=30, pgbench_T=2, loop_pairs=16, loop_n=30000,
             conn_runs=200, handoff_sizes=(8, 32, 64), handoff_reps={8: 12, 32: 8, 64: 6},
             fleet_rounds=5, rss_pairs=10, big_rounds=10, big_reps={MB: 20, 10 * MB: 6},
             handoff_settle=0.2)

PGHOST = os.environ["PGHOST"]
PGPORT = os.environ["PGPORT"]
PGUSER = os.environ.get("PGUSER", "postgres")


# ---------------------------------------------------------------------------
# helpers

def log(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def conninfo(db: str) -> str:
    return f"host={PGHOST} port={PGPORT} user={PGUSER} dbname={db}"


def base_env() -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("LD_PRELOAD", "LD_AUDIT") and not k.startswith("MIGSHIM_")}
    env["MIGSHIM_CONFIG"] = str(WORK / "empty.conf")  # no /etc/migshim.conf surprises
    return env


def shim_env(**migshim) -> dict:
    env = base_env()
    env["LD_PRELOAD"] = str(LIB)
    env["MIGSHIM_LOG"] = "info"
    for k, v in migshim.items():
        env["MIGSHIM_" + k.upper()] = str(v)
    return env


def verify_at_head(db: str, env: dict, what: str) -> None:
    """The shim with `env` finds `db` at head: at the default level it then
    prints nothing (the rule of silence), so one connection with
    MIGSHIM_LOG=debug proves the decision before the measured runs (which
    must print nothing: see quiet_at_head)."""
    res = run([BIN / "connlat", conninfo(db)], dict(env, MIGSHIM_LOG="debug"))
    if "is at head" not in res.stderr:
        raise RuntimeError(f"{what}: the gate did not decide at head:\n{res.stderr[-2000:]}")


def quiet_at_head(res, what: str) -> None:
    """A measured run at head printed no migshim line."""
    if "migshim[" in res.stderr:
        raise RuntimeError(f"{what}: the shim printed at head:\n{res.stderr[-2000:]}")


def run(argv, env, timeout=600, check=True, cwd=None) -> subprocess.CompletedProcess:
    res = subprocess.run([str(a) for a in argv], env=env, cwd=str(cwd or WORK),
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, timeout=timeout)
    if check and res.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed (rc={res.returncode}):\n"
                           f"{res.stdout[-2000:]}\n{res.stderr[-2000:]}")
    return res


def kv(line: str) -> dict:
    """'a=1 b=x' -> {'a': '1', 'b': 'x'}"""
    return dict(p.split("=", 1) for p in line.split() if "=" in p)


def pct(xs, p: float) -> float:
    """Nearest-rank percentile."""
    s = sorted(xs)
    if not s:
        return float("nan")
    k = max(1, math.ceil(p / 100.0 * len(s)))
    return s[min(k, len(s)) - 1]


def med(xs) -> float:
    return statistics.median(xs) if xs else float("nan")


def ci_median(xs, level: float = 0.95, n: int = 2000):
    """Bootstrap confidence interval of the median (fixed seed: reproducible)."""
    import random
    if len(xs) < 3:
        return (float("nan"), float("nan"))
    rnd = random.Random(20261125)
    meds = sorted(statistics.median(rnd.choices(xs, k=len(xs))) for _ in range(n))
    lo = meds[int((1 - level) / 2 * n)]
    hi = meds[min(n - 1, int((1 + level) / 2 * n))]
    return (lo, hi)


def ab_order(i: int):
    """A B, B A, A B, ...: each pair alternates which runs first."""
    return ("bare", "shim") if i % 2 == 0 else ("shim", "bare")


def rotate(seq, i: int):
    i %= len(seq)
    return list(seq[i:]) + list(seq[:i])


def write_csv(name: str, header, rows) -> None:
    with open(OUT / name, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


class Admin:
    """A psycopg2 connection of the driver (never preloaded) to `postgres`."""

    def __init__(self):
        import psycopg2
        self.psycopg2 = psycopg2
        self.conn = psycopg2.connect(conninfo("postgres"))
        self.conn.autocommit = True

    def sql(self, q: str, args=None):
        with self.conn.cursor() as cur:
            cur.execute(q, args)
            return cur.fetchall() if cur.description else None

    def create_db(self, name: str) -> None:
        self.sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.sql(f'CREATE DATABASE "{name}"')

    def drop_db(self, name: str) -> None:
        self.sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def in_db(self, db: str, *statements: str) -> None:
        c = self.psycopg2.connect(conninfo(db))
        c.autocommit = True
        try:
            with c.cursor() as cur:
                for s in statements:
                    cur.execute(s)
        finally:
            c.close()

    def at_version(self, db: str, version: str) -> None:
        self.in_db(db, "CREATE TABLE IF NOT EXISTS alembic_version "
                       "(version_num varchar(32) NOT NULL PRIMARY KEY)",
                   "DELETE FROM alembic_version",
                   f"INSERT INTO alembic_version VALUES ('{version}')")

    def sessions(self, db: str) -> int:
        self.sql("SELECT pg_stat_clear_snapshot()")
        return int(self.sql("SELECT sessions FROM pg_stat_database WHERE datname = %s",
                            (db,))[0][0])


# ---------------------------------------------------------------------------
# the table

ROWS = []   # dicts: id, what, value, target, met (True/False/None), unit


def result(rid: str, what: str, value: str, target: str, met, raw=None, detail="") -> None:
    """One row: a short label, the figure, the target, met?; `detail` (the
    underlying numbers) is printed on its own line under the row."""
    ROWS.append(dict(id=rid, what=what, value=value, target=target, met=met,
                     raw="" if raw is None else raw, detail=detail))
    mark = {True: "yes", False: "NO", None: "-"}[met]
    log(f"[{rid}] {what}: {value} (target {target}) met={mark}" + (f"; {detail}" if detail else ""))


# ---------------------------------------------------------------------------
# 1. steady state

def loss_result(rid: str, what: str, ratios, samples: str, rest: str) -> None:
    """A throughput-loss row (target <= 0.5 %) from A/B throughput ratios
    (with the shim / without), with the median's 95% confidence interval."""
    loss = (1 - med(ratios)) * 100
    lo, hi = ci_median(ratios)
    result(rid, what, f"{loss:+.2f} %", "<= 0.5 %", loss <= 0.5, loss,
           f"median of {len(ratios)} {samples} (95% CI of the loss "
           f"{(1 - hi) * 100:+.2f} .. {(1 - lo) * 100:+.2f} %); {rest}")


def steady(admin: Admin) -> None:
    db = "steady"
    admin.create_db(db)
    run([PGBENCH, "-i", "-s", "1", "-q", "-h", PGHOST, "-p", PGPORT, "-U", PGUSER, db],
        base_env())
    admin.at_version(db, HEAD)
    senv = shim_env(heads=HEAD)
    verify_at_head(db, senv, "steady")

    # pgbench -S -c 1 over the Unix socket
    tps = {"bare": [], "shim": []}
    ratios = []
    rows = []
    for i in range(P["pgbench_pairs"]):
        got = {}
        for mode in ab_order(i):
            res = run([PGBENCH, "-n", "-S", "-c", "1", "-T", P["pgbench_T"], "-h", PGHOST,
                       "-p", PGPORT, "-U", PGUSER, db], senv if mode == "shim" else base_env())
            m = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", res.stdout)
            if not m:
                raise RuntimeError("pgbench: no tps line:\n" + res.stdout)
            if mode == "shim":
                quiet_at_head(res, "pgbench with the shim")
            got[mode] = float(m.group(1))
            tps[mode].append(got[mode])
            rows.append((i, mode, got[mode]))
        ratios.append(got["shim"] / got["bare"])
    write_csv("steady_pgbench.csv", ("pair", "mode", "tps"), rows)
    loss_result("1a", "steady: pgbench -S -c 1, Unix socket: throughput loss", ratios,
                f"A/B pair ratios of {P['pgbench_T']} s runs",
                f"median tps {med(tps['bare']):.0f} without, {med(tps['shim']):.0f} with")

    # a C loop of PQexec("SELECT 1")
    ns = {"bare": [], "shim": []}
    cpu = {"bare": [], "shim": []}
    ratios, rows = [], []
    for i in range(P["loop_pairs"]):
        got = {}
        for mode in ab_order(i):
            res = run([BIN / "selectloop", conninfo(db), P["loop_n"]],
                      senv if mode == "shim" else base_env())
            d = kv(res.stdout)
            got[mode] = float(d["ns_per_call"])
            ns[mode].append(got[mode])
            cpu[mode].append(float(d["cpu_ns_per_call"]))
            rows.append((i, mode, got[mode], d["cpu_ns_per_call"]))
        ratios.append(got["bare"] / got["shim"])   # throughput ratio
    write_csv("steady_loop.csv", ("pair", "mode", "ns_per_call", "client_cpu_ns_per_call"), rows)
    loss_result("1b", "steady: C loop of PQexec(\"SELECT 1\"): throughput loss", ratios,
                f"A/B pairs of {P['loop_n']} calls",
                f"{med(ns['bare'])/1e3:.2f} us/call without, {med(ns['shim'])/1e3:.2f} with")
    dc = med(cpu["shim"]) - med(cpu["bare"])
    share = dc / min(ns["bare"]) * 100
    result("1bc", "steady: C loop, client CPU added per call", f"{share:+.2f} %", "<= 0.5 %",
           share <= 0.5, share,
           f"the client process's CPU time per call (CLOCK_PROCESS_CPUTIME_ID, median of "
           f"{len(cpu['bare'])} runs): {med(cpu['bare']):.0f} ns without, {med(cpu['shim']):.0f} ns "
           f"with: {dc:+.0f} ns, as a share of the fastest bare round trip seen "
           f"({min(ns['bare'])/1e3:.2f} us): the loss a CPU-bound client would see, free of "
           "the server's noise")


# ---------------------------------------------------------------------------
# 1c/1u. instructions added per statement (callgrind, exact)
#
# selectloop's blocking PQexec("SELECT 1") loop, run whole under callgrind
# with N1 and N2 statements, with and without the shim: the difference of
# the two totals is N2-N1 statements and nothing else (process start-up and
# connection set-up, the gate's decision included, cancel out), so
#
#   added per statement = ((Ir_shim(N2) - Ir_shim(N1)) - (Ir_bare(N2) - Ir_bare(N1))) / (N2 - N1)
#
# No poll loop of its own and one connection: the counts are exact, and a
# repetition gives the same figure (each is run CG_REPS times and compared).
# Two cases, each in its own working directory (the shim looks for the
# Alembic project there):
#   head     a copy of examples/flask-alembic (alembic.ini + migrations/),
#            the database at its head: the gate decides at connect, then
#            every wrapper takes its fast path;
#   unknown  an empty directory (no alembic.ini, migrations/alembic.ini,
#            pyproject.toml; no DJANGO_SETTINGS_MODULE, no MIGSHIM_HEADS):
#            psql, cron jobs, any libpq program in an image with
#            ENV LD_PRELOAD=...; the gate watches for the first statement
#            naming the version table, so every statement's text is looked at.

CG_N = (2000, 20000)
CG_REPS = max(1, int(os.environ.get("BENCH_CG_REPS", "2")))
CG_TOLERANCE = 2.0        # instructions per statement between repetitions
CG_PROBE_PADS = (4, 12, 20, 28, 36)   # the 1ch/1uh rows: longer configuration paths
EXAMPLE = ROOT / "examples" / "flask-alembic"
EXAMPLE_HEAD = "0003cccc"
CG_CASES = {  # case: (row id, label, target, what the debug run must say)
    "head": ("1c", "instructions added per PQexec, at head (callgrind)", 60, "is at head"),
    "unknown": ("1u", "instructions added per PQexec, target unknown (callgrind)", 100,
                "target heads unknown"),
}


def cg_scratch() -> Path:
    """A directory whose path has the same length in every checkout
    (/tmp/migshim-bench.XXXXXXXX), holding copies of selectloop and the
    library, the empty configuration and the two cases' working
    directories.  The instruction counts depend on the heap's layout, which
    depends on the lengths of the paths the shim copies at start-up (see
    the 1ch/1uh rows): with fixed lengths the figures are the same wherever the
    repository lives."""
    import tempfile
    d = Path(tempfile.mkdtemp(prefix="migshim-bench.", dir="/tmp"))
    d.chmod(0o755)
    shutil.copy2(BIN / "selectloop", d / "selectloop")
    shutil.copy2(LIB, d / "libmigshim.so")
    (d / "empty.conf").write_text("# migshim bench: an empty configuration\n")
    for case in CG_CASES:
        (d / case).mkdir()
    shutil.copy2(EXAMPLE / "alembic.ini", d / "head" / "alembic.ini")
    shutil.copytree(EXAMPLE / "migrations", d / "head" / "migrations",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for f in ("alembic.ini", "migrations", "pyproject.toml", "manage.py"):
        if (d / "unknown" / f).exists():
            raise RuntimeError(f"instr: {d / 'unknown' / f} exists")
    return d


def cg_env(scratch: Path, shim: bool, config: str = "empty.conf") -> dict:
    """The same environment for both modes but LD_PRELOAD (and the log
    level): no DJANGO_SETTINGS_MODULE, no MIGSHIM_* but an empty config."""
    env = base_env()
    env.pop("DJANGO_SETTINGS_MODULE", None)
    env["MIGSHIM_CONFIG"] = str(scratch / config)
    if shim:
        env["LD_PRELOAD"] = str(scratch / "libmigshim.so")
        env["MIGSHIM_LOG"] = "info"
    return env


def cg_total(scratch: Path, case: str, db: str, n: int, env: dict, out) -> int:
    """Total instructions (Ir) of one selectloop run of `n` statements."""
    res = run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
               scratch / "selectloop", conninfo(db), n, 0], env, cwd=scratch / case)
    m = re.search(r"Collected : (\d+)", res.stderr)
    if not m:
        raise RuntimeError("callgrind: no 'Collected' line:\n" + res.stderr[-2000:])
    if "migshim[" in res.stderr:
        raise RuntimeError(f"instr {case}: the shim printed:\n{res.stderr[-2000:]}")
    return int(m.group(1))


def cg_functions(path: Path) -> dict:
    """Self instructions of each function of a callgrind file (all objects)."""
    if not shutil.which("callgrind_annotate"):
        return {}
    res = subprocess.run(["callgrind_annotate", "--inclusive=no", "--auto=no",
                          "--threshold=100", str(path)], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True)
    out, body = {}, False
    for ln in res.stdout.splitlines():
        if "file:function" in ln:
            body = True
            continue
        m = re.match(r"\s*([\d,]+)\s+\([^)]*\)\s+(\S.*?)\s*$", ln)
        if body and m:
            # one key per file:function (the object is named on some lines only)
            fn = re.sub(r"\s+\[[^]]*\]$", "", m.group(2))
            out[fn] = out.get(fn, 0) + int(m.group(1).replace(",", ""))
    return out


def cg_own(fn: str) -> bool:
    """A function (or inlined code) of the shim's own sources."""
    return fn.startswith(("src/", "include/")) or "/src/" in fn.split(":")[0] \
        or "/include/" in fn.split(":")[0]


def cg_breakdown(files: dict, dn: int):
    """Where the added instructions go: each function's self cost per
    statement with the shim minus without, (name, shim, bare, added)."""
    f = {k: cg_functions(v) for k, v in files.items()}
    per = {}
    for mode in ("bare", "shim"):
        a, b = f[(mode, CG_N[0])], f[(mode, CG_N[1])]
        per[mode] = {fn: (b.get(fn, 0) - a.get(fn, 0)) / dn for fn in set(a) | set(b)}
    rows = [(fn, per["shim"].get(fn, 0.0), per["bare"].get(fn, 0.0))
            for fn in set(per["shim"]) | set(per["bare"])]
    rows = [(fn, s, b, s - b) for fn, s, b in rows if abs(s - b) >= 0.5]
    return sorted(rows, key=lambda r: -abs(r[3]))


def instr(admin: Admin) -> None:
    if not shutil.which("valgrind"):
        for rid, what, target, _ in CG_CASES.values():
            result(rid, what, "valgrind missing", f"<= {target}", None)
        return
    db = "instr"
    admin.create_db(db)
    admin.at_version(db, EXAMPLE_HEAD)
    scratch = cg_scratch()
    try:
        instr_cases(scratch, db)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    instr_wire(db)


# 1w/1p. the wire layer (issue 22): instructions added per send/recv
#
# bench/c/wireloop under callgrind, loops of N1 and N2 iterations
# differenced as above, with and without the preload of the library
# (its libc and OpenSSL wrappers, in every process it is preloaded into),
# divided by the send/recv calls the loop made (it prints them):
#   other  a connect()ed Unix socket whose first bytes are not PostgreSQL's
#          (the fd's state is NONE: a test and a tail call);
#   pg     a raw protocol client (no libpq, as asyncpg and pg8000) on a
#          PostgreSQL connection the wire layer recognised and followed
#          until the gate decided at its first statement (target unknown
#          here: it lets it pass), then no longer follows: Query "SELECT 1",
#          then the recv calls up to ReadyForQuery (five messages an
#          iteration).  The steady state of a decided connection; a leading
#          one stays followed until its lock is released (performance.md).
#   ssl    (row 1s; bench/c/sslloop, not wireloop) the OpenSSL wrappers'
#          fast path: a TLS 1.3 connection between two SSL objects of one
#          process joined by a BIO pair (a self-signed P-256 certificate
#          made at start-up), no byte of it PostgreSQL's: one 16-byte
#          SSL_write_ex and one SSL_read_ex an iteration.  The calls
#          counted are those two.
WIRE_N = (1000, 5000)
WIRE_CASES = {  # case: (row id, label, target)
    "other": ("1w", "instructions added per send/recv, not PostgreSQL (callgrind)", 50),
    "pg": ("1p", "instructions added per send/recv, PostgreSQL once decided (callgrind)", 50),
    "ssl": ("1s", "instructions added per SSL_write_ex/SSL_read_ex, not PostgreSQL (callgrind)", 50),
}


def wire_prog(case: str, n) -> list:
    return [BIN / "sslloop", n] if case == "ssl" else [BIN / "wireloop", case, n]


def wire_total(case: str, db: str, n: int, shim: bool):
    env = dict(base_env(), PGDATABASE=db, PGHOST=PGHOST, PGPORT=PGPORT, PGUSER=PGUSER)
    if shim:
        env["LD_PRELOAD"] = str(WIRE_LIB)
        env["MIGSHIM_LOG"] = "info"
    res = run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
               *wire_prog(case, n)], env)
    m = re.search(r"Collected : (\d+)", res.stderr)
    c = re.search(r"sends=(\d+) recvs=(\d+)", res.stdout)
    if not m or not c:
        raise RuntimeError(f"wireloop {case}: no counts:\n{res.stdout[-1000:]}{res.stderr[-2000:]}")
    if "migshim[" in res.stderr:
        raise RuntimeError(f"wireloop {case}: the shim printed:\n{res.stderr[-2000:]}")
    return int(m.group(1)), int(c.group(1)) + int(c.group(2))


def instr_wire(db: str) -> None:
    if not (BIN / "wireloop").exists() or not WIRE_LIB.is_file():
        for rid, what, target in WIRE_CASES.values():
            result(rid, what, "wireloop or the library missing", f"<= {target}", None)
        return
    cases = dict(WIRE_CASES)
    if not (BIN / "sslloop").exists():
        rid, what, target = cases.pop("ssl")
        result(rid, what, "sslloop missing (libssl-dev: make bench-deps)", f"<= {target}", None)
    # the pg case must be recognised, followed, then let go at its first
    # statement (the gate decided): one debug run says so
    dbg = run([BIN / "wireloop", "pg", 1],
              dict(base_env(), PGDATABASE=db, LD_PRELOAD=str(WIRE_LIB), MIGSHIM_LOG="debug"))
    if ("), followed" not in dbg.stderr or "lost" in dbg.stderr
            or "the gate let it pass; not followed from here on" not in dbg.stderr):
        raise RuntimeError(f"wireloop pg: not followed until its first statement:\n"
                           f"{dbg.stderr[-2000:]}")
    rows = []
    for case, (rid, what, target) in cases.items():
        t = {}
        for shim in (False, True):
            for n in WIRE_N:
                t[(shim, n)] = wire_total(case, db, n, shim)
                rows.append((case, "shim" if shim else "bare", n, *t[(shim, n)]))
        calls = t[(True, WIRE_N[1])][1] - t[(True, WIRE_N[0])][1]
        per = {shim: (t[(shim, WIRE_N[1])][0] - t[(shim, WIRE_N[0])][0]) / calls
               for shim in (False, True)}
        added = per[True] - per[False]
        log(f"instr wire {case}: {per[False]:.1f} instructions per call without, "
            f"{per[True]:.1f} with: {added:+.1f}")
        detail = (f"{per[False]:.0f} per call without; loops of {WIRE_N[0]} and {WIRE_N[1]} "
                  f"iterations differenced, {calls} calls")
        if case == "pg":
            detail += f"; {added * calls / (WIRE_N[1] - WIRE_N[0]) / 5:+.0f} per message"
        result(rid, what, f"+{added:.0f} instr", f"<= {target} extra", added <= target, added,
               detail)
    write_csv("callgrind_wire.csv", ("case", "mode", "iterations", "instructions", "calls"), rows)


def instr_cases(scratch: Path, db: str) -> None:
    n1, n2 = CG_N
    dn = n2 - n1
    rows, report = [], []
    for case, (rid, what, target, says) in CG_CASES.items():
        dbg = run([scratch / "selectloop", conninfo(db), 1, 0],
                  dict(cg_env(scratch, True), MIGSHIM_LOG="debug"), cwd=scratch / case)
        if says not in dbg.stderr:
            raise RuntimeError(f"instr {case}: the gate did not say {says!r}:\n"
                               f"{dbg.stderr[-2000:]}")
        added, files = [], {}
        for rep in range(CG_REPS):
            ir = {}
            for mode in ("bare", "shim"):
                for n in CG_N:
                    out = OUT / f"callgrind.{case}.{mode}.{n}.{rep}.out"
                    ir[(mode, n)] = cg_total(scratch, case, db, n,
                                             cg_env(scratch, mode == "shim"), out)
                    rows.append((case, rep, mode, n, ir[(mode, n)]))
                    files[(mode, n)] = out
            per = {m: (ir[(m, n2)] - ir[(m, n1)]) / dn for m in ("bare", "shim")}
            added.append(per["shim"] - per["bare"])
            log(f"instr {case} repetition {rep + 1}: {per['bare']:.2f} without, "
                f"{per['shim']:.2f} with: {added[-1]:+.2f} per statement")
        spread = max(added) - min(added)
        if spread > CG_TOLERANCE:
            log(f"warning: instr {case}: repetitions differ by {spread:.2f} instructions")
        report.append(f"{case}: instructions per PQexec(\"SELECT 1\"): without {per['bare']:.2f}, "
                      f"with the shim {per['shim']:.2f}, added "
                      + " / ".join(f"{a:+.2f}" for a in added) + " (repetitions)")
        report.append("  self cost per statement, by function:   with  without    added")
        brk = cg_breakdown(files, dn)   # (the last repetition's files)
        for fn, s, b, d in brk:
            report.append(f"  {s:8.1f} {b:8.1f} {d:+8.1f}  {fn}")
        own = sum(d for fn, _, _, d in brk if cg_own(fn))
        report.append(f"  the shim's own code {own:+.1f}, elsewhere (libc, libpq) "
                      f"{added[-1] - own:+.1f}")
        report.append("")
        worst = max(added)
        result(rid, what, f"+{worst:.0f} instr", f"<= {target} extra", worst <= target, worst,
               f"{CG_REPS} repetitions: " + ", ".join(f"{a:+.1f}" for a in added)
               + f" (spread {spread:.1f}); of the last, the shim's own code {own:+.1f}, "
               f"elsewhere {added[-1] - own:+.1f}; {per['bare']:.0f} instructions without; "
               f"whole runs of {n1} and {n2} statements differenced; "
               "breakdown in callgrind_functions.txt")

        # The same with the configuration file's path longer: nothing on the
        # statement path changes, only where the shim's start-up left free
        # chunks in the heap, and so what libc's malloc does for libpq's
        # per-result 2 KiB block (split off the top, or out of a hole and
        # coalesced back).  A range here is the heap layout, not the shim's
        # code; the rows above are measured at one fixed layout, and the
        # target holds only if it holds at every layout probed.
        probe = []
        for pad in CG_PROBE_PADS:
            conf = "c" * pad + ".conf"
            (scratch / conf).write_text("# migshim bench: an empty configuration\n")
            env = cg_env(scratch, True, conf)
            t = [cg_total(scratch, case, db, n, env, "/dev/null") for n in CG_N]
            probe.append((t[1] - t[0]) / dn - per["bare"])
            rows.append((case, f"pad{pad}", "shim", "", t[1] - t[0]))
        result(f"{rid}h", f"the same, MIGSHIM_CONFIG's path +{min(CG_PROBE_PADS)}..+"
               f"{max(CG_PROBE_PADS)} chars (heap layout)",
               f"+{min(probe):.0f}..+{max(probe):.0f}", f"<= {target} extra",
               max(probe) <= target, max(probe),
               "path padding " + ", ".join(f"+{p}: {v:+.0f}" for p, v in zip(CG_PROBE_PADS, probe))
               + f" (loops of {n1} and {n2}, the shim side only)")
    write_csv("callgrind.csv", ("case", "repetition", "mode", "statements", "instructions"), rows)
    (OUT / "callgrind_functions.txt").write_text("\n".join(report))


# ---------------------------------------------------------------------------
# 2. gate at head: first-connection latency, connections opened

C_RSS = {}   # mode -> [rss_kb] of connlat, for the footprint
# What Alembic 1.8 sends first on a connection at head: has_table, then the read
APP_FIRST_SQL = (
    "select relname from pg_class c join pg_namespace n on n.oid=c.relnamespace "
    "where pg_catalog.pg_table_is_visible(c.oid) and relname='alembic_version'",
    "SELECT alembic_version.version_num FROM alembic_version",
)


def gate(admin: Admin) -> None:
    dbs = {"bare": "gate_bare", "shim": "gate_shim"}
    for db in dbs.values():
        admin.create_db(db)
        admin.at_version(db, HEAD)
    senv = shim_env(heads=HEAD)
    envs = {"bare": base_env(), "shim": senv}
    verify_at_head(dbs["shim"], senv, "gate")
    for mode, db in dbs.items():       # warm the server's caches for both
        for _ in range(5):
            run([BIN / "connlat", conninfo(db)], envs[mode])
    time.sleep(0.5)
    before = {m: admin.sessions(db) for m, db in dbs.items()}
    lat = {"bare": [], "shim": []}
    then = {"bare": [], "shim": []}
    rss = {"bare": [], "shim": []}
    rows = []
    for i in range(P["conn_runs"]):
        for mode in ab_order(i):
            res = run([BIN / "connlat", conninfo(dbs[mode]), *APP_FIRST_SQL], envs[mode])
            if mode == "shim":
                quiet_at_head(res, "connlat with the shim")
            d = kv(res.stdout)
            lat[mode].append(float(d["latency_us"]) / 1e3)
            then[mode].append(float(d["then_us"]) / 1e3)
            rss[mode].append(int(d["rss_kb"]))
            rows.append((i, mode, d["latency_us"], d["then_us"], d["rss_kb"]))
    time.sleep(1.0)   # backends report their session at exit
    opened = {m: admin.sessions(db) - before[m] for m, db in dbs.items()}
    write_csv("gate_latency.csv", ("run", "mode", "latency_us", "then_us", "rss_kb"), rows)
    C_RSS.update(rss)
    n = P["conn_runs"]
    dmed = med(lat["shim"]) - med(lat["bare"])
    result("2a", "gate at head: first-connection latency added, median",
           f"+{dmed:.2f} ms", "<= +0.5 ms", dmed <= 0.5, dmed,
           f"{n} processes each, A/B alternated: median {med(lat['bare']):.2f} ms without, "
           f"{med(lat['shim']):.2f} ms with")
    dp99 = pct(lat["shim"], 99) - pct(lat["bare"], 99)
    result("2b", "gate at head: first-connection latency added, p99",
           f"+{dp99:.2f} ms", "(reported)", None, dp99,
           f"p99 {pct(lat['bare'], 99):.2f} ms without, {pct(lat['shim'], 99):.2f} ms with")
    dthen = med(then["shim"]) - med(then["bare"])
    result("2d", "gate at head: connect + the app's first queries, added, median",
           f"+{dthen:.2f} ms", "(reported)", None, dthen,
           f"until Alembic's first two statements at head (its has_table query on pg_class, "
           f"then the version read) returned: median {med(then['bare']):.2f} ms without, "
           f"{med(then['shim']):.2f} ms with; the gate's read warms the fresh backend's "
           f"catalog caches that these statements would otherwise load")
    per = {m: opened[m] / n for m in opened}
    extra = per["shim"] - per["bare"]
    result("2c", "gate at head: connections opened per process, extra",
           f"+{extra:.2f}", "0 extra", abs(extra) < 1e-9, extra,
           f"pg_stat_database.sessions: {opened['bare']} without, {opened['shim']} with, "
           f"for {n} processes each")


# ---------------------------------------------------------------------------
# 3. hand-off

HANDOFF = {}   # filled for the footprint: during/after per process


def handoff(admin: Admin) -> None:
    db = "handoff"
    admin.create_db(db)
    admin.at_version(db, V1)
    env = base_env()      # the holder is never preloaded; its waiters may be
    env.update({"MIGSHIM_HEADS": V2, "MIGSHIM_LOCK_KEY": str(HANDOFF_KEY),
                "MIGSHIM_LOG": "info"})
    samples = []          # (mode, n, trial, pid, ms_after, ms_before)
    trials = []           # (mode, n, trial, during, after, ready_s, complete, waited_lines)
    t = 0
    for n in P["handoff_sizes"]:
        for rep in range(P["handoff_reps"][n]):
            for mode in ab_order(rep):
                t += 1
                res = run([BIN / "handoff", "holder", "--conninfo", conninfo(db), "--n", n,
                           "--key", HANDOFF_KEY, "--from", V1, "--to", V2, "--mode", mode,
                           "--lib", LIB, "--settle", P["handoff_settle"]], env, timeout=300)
                lines = res.stdout.splitlines()
                head = kv(lines[0])
                waited = len(re.findall(r"\bwaited [0-9.]+ s\b", res.stderr))
                t_after, t_before = float(head["t_after"]), float(head["t_before"])
                got = 0
                for ln in lines[1:]:
                    w = kv(ln)
                    if w.get("ok") != "1":
                        raise RuntimeError(f"hand-off waiter failed: {ln}\n{res.stderr[-2000:]}")
                    ts = float(w["t"])
                    samples.append((mode, n, t, int(w["pid"]), (ts - t_after) * 1e3,
                                    (ts - t_before) * 1e3))
                    got += 1
                if got != n or head["complete"] != "1":
                    raise RuntimeError(f"hand-off trial incomplete: {lines[0]}\n{res.stderr[-2000:]}")
                if mode == "shim" and waited != n:
                    log(f"warning: hand-off n={n}: {waited} of {n} shim waiters logged a wait")
                trials.append((mode, n, t, int(head["during"]), int(head["after"]),
                               float(head["ready_s"]), float(head["commit_ms"]), waited))
    write_csv("handoff.csv", ("mode", "n", "trial", "pid", "ms_after_commit",
                              "ms_after_commit_sent"), samples)
    write_csv("handoff_trials.csv", ("mode", "n", "trial", "conns_during", "conns_after",
                                     "ready_s", "commit_ms", "shim_waited_lines"), trials)
    summary = []
    for n in P["handoff_sizes"]:
        st, sent = {}, {}
        for mode in ("bare", "shim"):
            xs = [s[4] for s in samples if s[0] == mode and s[1] == n]
            ys = [s[5] for s in samples if s[0] == mode and s[1] == n]
            st[mode] = (pct(xs, 50), pct(xs, 99), max(xs), len(xs))
            sent[mode] = (pct(ys, 50), pct(ys, 99), max(ys), len(ys))
        ratio = xratio(st["shim"][1], st["bare"][1])
        ratio_s = xratio(sent["shim"][1], sent["bare"][1])
        cms = med([tr[6] for tr in trials if tr[1] == n])
        summary.append((n, st, ratio))
        result(f"3-{n}", f"hand-off, {n} waiters: p99 vs floor, from COMMIT returned",
               f"x{ratio:.2f}", "<= 1.25 x floor", ratio <= 1.25, ratio,
               f"ms after the leader's COMMIT returned, p50/p99/max: shim "
               f"{st['shim'][0]:.1f}/{st['shim'][1]:.1f}/{st['shim'][2]:.1f}, floor "
               f"{st['bare'][0]:.1f}/{st['bare'][1]:.1f}/{st['bare'][2]:.1f} "
               f"({st['shim'][3]} waiters each, {P['handoff_reps'][n]} trials pooled)")
        result(f"3-{n}s", f"hand-off, {n} waiters: p99 vs floor, from COMMIT sent",
               f"x{ratio_s:.2f}", "<= 1.25 x floor", ratio_s <= 1.25, ratio_s,
               f"ms after COMMIT was sent, p50/p99/max: shim {sent['shim'][0]:.1f}/"
               f"{sent['shim'][1]:.1f}/{sent['shim'][2]:.1f}, floor {sent['bare'][0]:.1f}/"
               f"{sent['bare'][1]:.1f}/{sent['bare'][2]:.1f}; the COMMIT round trip itself: "
               f"{cms:.1f} ms median")
    plot_handoff(samples, summary)
    sh = [tr for tr in trials if tr[0] == "shim"]
    HANDOFF["during"] = max(tr[3] / tr[1] for tr in sh) - 1
    HANDOFF["after"] = max(tr[4] / tr[1] for tr in sh) - 1


def xratio(a: float, b: float) -> float:
    """a / b for latencies; a floor at or below 0 (waiters woke before the
    leader's COMMIT returned) makes any positive shim figure infinitely worse."""
    if b > 0:
        return a / b
    return 1.0 if a <= b else float("inf")


def plot_handoff(samples, summary) -> None:
    """CDF of the hand-off latencies, one panel per size: shim vs floor."""
    dat = OUT / "handoff_cdf.dat"
    blocks = []
    with open(dat, "w") as f:
        for n, _, _ in summary:
            for mode in ("shim", "bare"):
                xs = sorted(s[4] for s in samples if s[0] == mode and s[1] == n)
                ys = sorted(s[5] for s in samples if s[0] == mode and s[1] == n)
                f.write(f"# n={n} mode={mode}: ms after COMMIT returned, "
                        "ms after COMMIT sent, cumulative fraction\n")
                for i, (x, y) in enumerate(zip(xs, ys)):
                    f.write(f"{x:.4f} {y:.4f} {(i + 1) / len(xs):.5f}\n")
                f.write("\n\n")
                blocks.append((n, mode))
    if not shutil.which("gnuplot"):
        log("gnuplot not found (apt-get install gnuplot-nox): no handoff.png")
        return
    gp = [
        "set terminal pngcairo noenhanced size 1500,900 font 'sans,10'",
        f"set output '{OUT / 'handoff.png'}'",
        f"set multiplot layout 2,{len(summary)} title \"migshim hand-off: when each waiter "
        "proceeds, CDF of pooled trials (solid: migshim waiters, PQconnectdb returns; dashed: "
        "floor, bare libpq waiters blocked in pg_advisory_xact_lock_shared)\"",
        "set grid", "set key bottom right", "set yrange [0:1.02]",
        "set ylabel 'fraction of waiters'",
    ]
    for col, ref in ((1, "returned"), (2, "sent")):
        for n, st, ratio in summary:
            ib = blocks.index((n, "shim"))
            xs = {m: sorted(s[3 + col] for s in samples if s[0] == m and s[1] == n)
                  for m in ("shim", "bare")}
            r = xratio(pct(xs["shim"], 99), pct(xs["bare"], 99))
            gp.append(f"set title \"{n} waiters: p99 {pct(xs['shim'], 99):.1f} ms vs floor "
                      f"{pct(xs['bare'], 99):.1f} ms (x{r:.2f})\"")
            gp.append(f"set xlabel \"ms after the leader's COMMIT {ref}\"")
            gp.append(f"plot '{dat}' index {ib} using {col}:3 with steps lw 2 lc rgb '#c0392b' "
                      f"title 'migshim', '' index {ib + 1} using {col}:3 with steps lw 2 dt 2 "
                      f"lc rgb '#2c3e50' title 'floor'")
    gp.append("unset multiplot")
    res = subprocess.run(["gnuplot"], input="\n".join(gp) + "\n", text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if res.returncode != 0:
        log("gnuplot failed: " + res.stderr[-1000:])
    else:
        log(f"wrote {OUT / 'handoff.png'}")


# ---------------------------------------------------------------------------
# 4. fleet

def fleet(admin: Admin) -> None:
    sys.path.insert(0, str(ROOT / "tests" / "e2e"))
    import fleet as fl   # tests/e2e/fleet.py

    def boot(dsn, **kw):
        f = fl.Fleet("flask-alembic", dsn, workers=16, timeout=120, **kw).start()
        try:
            while not f.poll():
                time.sleep(0.02)
        finally:
            f.stop()
        r = f.result()
        if not r.booted or r.alembic_version != ["0003cccc"] or \
                any(v != 1 for v in r.migration_runs.values()):
            raise RuntimeError("fleet did not boot cleanly:\n" + r.describe())
        return r

    # separate: `alembic upgrade head`, then start without migrating (the target's baseline)
    # separate+noop: the same, but every worker still runs its (now empty) upgrade at
    #   import, as the shimmed fleet's workers do: splits the app's own per-worker Alembic
    #   cost from the shim's coordination
    modes = ["shim", "separate", "preload", "separate+noop"]
    times = {m: [] for m in modes}
    rows = []
    for r in range(P["fleet_rounds"]):
        got = {}
        for mode in rotate(modes, r):
            db = f"fleet_{r}_{mode.replace('+', '_')}"
            admin.create_db(db)
            dsn = conninfo(db)
            if mode == "shim":
                res = boot(dsn, shim=True)
                el = res.elapsed
                if not res.gate_lines("lead"):
                    raise RuntimeError("shim fleet: no leader logged:\n" + res.describe())
            elif mode.startswith("separate"):
                t0 = time.monotonic()
                fl.migrate("flask-alembic", dsn)
                tm = time.monotonic() - t0
                on_start = "true" if mode.endswith("noop") else "false"
                res = boot(dsn, shim=False, env_extra={"RUN_DB_MIGRATIONS_ON_STARTUP": on_start})
                el = tm + res.elapsed
            else:
                res = boot(dsn, shim=False, preload=True)
                el = res.elapsed
            admin.drop_db(db)
            got[mode] = el
            times[mode].append(el)
            rows.append((r, mode, f"{el:.3f}"))
            log(f"fleet round {r} {mode}: {el:.2f} s")
    write_csv("fleet.csv", ("round", "mode", "seconds_to_all_ready"), rows)
    ratio = med(times["shim"]) / med(times["separate"])
    result("4a", "fleet, 16 workers, empty DB: time to all ready vs separate step",
           f"x{ratio:.3f}", "<= 1.05 x", ratio <= 1.05, ratio,
           f"median of {len(times['shim'])} rounds: shim {med(times['shim']):.2f} s, "
           f"`alembic upgrade head` then start {med(times['separate']):.2f} s")
    ratio_p = med(times["shim"]) / med(times["preload"])
    result("4b", "fleet: shim vs --preload", f"x{ratio_p:.3f}", "(reported)", None, ratio_p,
           f"--preload (the master migrates, then forks): {med(times['preload']):.2f} s")
    ratio_n = med(times["shim"]) / med(times["separate+noop"])
    result("4c", "fleet: shim vs separate step + workers' no-op upgrade", f"x{ratio_n:.3f}",
           "(diagnostic)", None, ratio_n,
           f"separate step, then every worker still runs its (empty) `upgrade head` at import "
           f"as the shimmed workers do: {med(times['separate+noop']):.2f} s")


# ---------------------------------------------------------------------------
# 5. footprint

PY_RSS = r"""
import sys, psycopg2
c = psycopg2.connect(sys.argv[1])
for ln in open('/proc/self/status'):
    if ln.startswith('VmRSS:'):
        print('rss_kb=%d' % int(ln.split()[1]))
c.close()
"""


def footprint(admin: Admin) -> None:
    db = "footprint"
    admin.create_db(db)
    admin.at_version(db, HEAD)
    envs = {"bare": base_env(), "shim": shim_env(heads=HEAD)}
    verify_at_head(db, envs["shim"], "footprint")
    rss = {"bare": [], "shim": []}
    rows = []
    for i in range(P["rss_pairs"]):
        for mode in ab_order(i):
            res = run(["/usr/bin/python3", "-c", PY_RSS, conninfo(db)], envs[mode])
            if mode == "shim":
                quiet_at_head(res, "python with the shim")
            v = int(kv(res.stdout)["rss_kb"])
            rss[mode].append(v)
            rows.append((i, mode, "python3+psycopg2", v))
    if not C_RSS:   # the C program's figure comes from the gate runs; else measure here
        for i in range(P["rss_pairs"]):
            for mode in ab_order(i):
                res = run([BIN / "connlat", conninfo(db)], envs[mode])
                C_RSS.setdefault(mode, []).append(int(kv(res.stdout)["rss_kb"]))
    for mode in ("bare", "shim"):
        rows += [(-1, mode, "connlat (C)", v) for v in C_RSS[mode]]
    write_csv("footprint_rss.csv", ("pair", "mode", "program", "rss_kb"), rows)
    d = med(rss["shim"]) - med(rss["bare"])
    result("5a", "footprint: RSS added, python3 + psycopg2", f"+{d:.0f} KiB",
           "<= 256 KiB", d <= 256, d,
           f"VmRSS after the first connection, median of {len(rss['bare'])}: "
           f"{med(rss['bare']):.0f} KiB without, {med(rss['shim']):.0f} KiB with")
    dc = med(C_RSS["shim"]) - med(C_RSS["bare"])
    result("5b", "footprint: RSS added, C libpq program", f"+{dc:.0f} KiB", "<= 256 KiB",
           dc <= 256, dc,
           f"VmRSS after the first connection, median of {len(C_RSS['bare'])}: "
           f"{med(C_RSS['bare']):.0f} KiB without, {med(C_RSS['shim']):.0f} KiB with")
    if HANDOFF:
        dur, aft = HANDOFF["during"], HANDOFF["after"]
        result("5c", "footprint: connections per process while waiting, extra",
               f"+{dur:.2f}", "<= 1 extra", dur <= 1 + 1e-9, dur,
               "pg_stat_activity, all waiters blocked, worst hand-off trial")
        result("5d", "footprint: connections per process after the gate, extra",
               f"+{aft:.2f}", "0 extra", aft <= 1e-9, aft,
               "pg_stat_activity once every waiter's PQconnectdb returned, worst hand-off trial")
    else:
        result("5c", "footprint: connections during/after the gate", "needs handoff",
               "<= 1 / 0 extra", None)


# ---------------------------------------------------------------------------
# 6. big statements

def big(admin: Admin) -> None:
    db = "big"
    admin.create_db(db)
    admin.at_version(db, V1)
    admin.in_db(db, "CREATE UNLOGGED TABLE bigt (v text)",
                "ALTER TABLE bigt ALTER COLUMN v SET STORAGE EXTERNAL")
    envs = {
        "bare": base_env(),
        # behind the target, lock = off: the gate lets it through ungated and
        # the race guard classifies every statement
        "watch": shim_env(heads=V2, lock="off"),
        # at head: the gate is done
        "done": shim_env(heads=V1),
    }
    expect = {"watch": "the race guard watches", "done": ""}  # at head: silent
    verify_at_head(db, envs["done"], "bigins at head")
    rows = []
    for size in sorted(P["big_reps"]):
        reps = P["big_reps"][size]
        ratios = {"watch": [], "done": []}
        pooled = {m: [] for m in envs}
        cpu = {m: [] for m in envs}
        for r in range(P["big_rounds"]):
            got = {}
            for mode in rotate(list(envs), r):
                res = run([BIN / "bigins", conninfo(db), size, reps + 1, "bigt"], envs[mode])
                if mode in expect and (expect[mode] not in res.stderr or
                                       (not expect[mode] and "migshim[" in res.stderr)):
                    raise RuntimeError(f"bigins {mode}: unexpected gate decision:\n{res.stderr}")
                samples = [kv(ln) for ln in res.stdout.splitlines()][1:]  # 1st: warm-up
                us = [float(d["us"]) for d in samples]
                cu = [float(d["cpu_us"]) for d in samples]
                got[mode] = med(us)
                pooled[mode] += us
                cpu[mode] += cu
                rows += [(size, r, mode, u, c) for u, c in zip(us, cu)]
            for m in ratios:
                ratios[m].append(got[m] / got["bare"])
        label = f"{size // MB} MB"
        for m, what in (("watch", "guard watching (behind, lock = off)"),
                        ("done", "gate done (at head)")):
            rt = med(ratios[m])
            lo, hi = ci_median(ratios[m])
            result(f"6-{size // MB}{m[0]}", f"big INSERT {label}, {what}",
                   f"x{rt:.4f}", "<= 1.01", rt <= 1.01, rt,
                   f"median of {len(ratios[m])} per-round ratios, 95% CI x{lo:.4f} .. x{hi:.4f} "
                   f"({reps} statements per process "
                   f"and mode per round); pooled medians {med(pooled['bare'])/1e3:.2f} ms "
                   f"without, {med(pooled[m])/1e3:.2f} ms with; pooled minima "
                   f"{min(pooled['bare'])/1e3:.2f} / {min(pooled[m])/1e3:.2f} ms")
            dc = med(cpu[m]) - med(cpu["bare"])
            share = 1 + dc / med(pooled["bare"])
            result(f"6-{size // MB}{m[0]}c", f"big INSERT {label}, {what}: client CPU",
                   f"x{share:.4f}", "<= 1.01", share <= 1.01, share,
                   f"the client process's CPU time per statement (CLOCK_PROCESS_CPUTIME_ID, "
                   f"median): {med(cpu['bare']):.0f} us without, {med(cpu[m]):.0f} us with: "
                   f"{dc:+.0f} us added to a {med(pooled['bare'])/1e3:.2f} ms statement "
                   "(what the shim adds, free of the server's noise)")
    write_csv("big.csv", ("bytes", "round", "mode", "us", "client_cpu_us"), rows)

    # the same, in instructions: what the client spends per 1 MB INSERT
    if not shutil.which("valgrind"):
        return
    r1, r2 = 2, 6
    per = {}
    for mode in envs:
        ir = []
        for reps in (r1, r2):
            res = run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={OUT}/callgrind.big.{mode}.{reps}.out",
                       BIN / "bigins", conninfo(db), MB, reps, "bigt"], envs[mode])
            ir.append(int(re.search(r"Collected : (\d+)", res.stderr).group(1)))
        per[mode] = (ir[1] - ir[0]) / (r2 - r1)
    result("6-cg", "big INSERT 1 MB: client instructions added (callgrind)",
           f"{(per['watch'] - per['bare']) / 1e6:+.2f}M/{abs(per['done'] - per['bare']) / 1e6:+.2f}M",
           "(diagnostic)", None, per["watch"] - per["bare"],
           f"per statement: {per['bare'] / 1e6:.2f} M without; added while the guard watches / "
           "once the gate is done")


# ---------------------------------------------------------------------------

def machine() -> str:
    model = "?"
    try:
        for ln in open("/proc/cpuinfo"):
            if ln.startswith("model name"):
                model = ln.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    pgv = subprocess.run([str(PGBIN / "postgres"), "--version"], stdout=subprocess.PIPE,
                         text=True).stdout.strip()
    return (f"nproc {os.cpu_count()}; CPU {model}; kernel {platform.release()}; {pgv}; "
            f"load average at start {os.getloadavg()[0]:.2f}")


def main() -> int:
    for what in ONLY:
        if what not in ALL:
            print(f"bench: unknown measurement {what!r} (have: {' '.join(ALL)})", file=sys.stderr)
            return 64
    which = ONLY or ALL
    OUT.mkdir(parents=True, exist_ok=True)
    WORK.mkdir(parents=True, exist_ok=True)
    (WORK / "empty.conf").write_text("# migshim bench: an empty configuration\n")
    if not LIB.is_file():
        print(f"bench: {LIB} not built", file=sys.stderr)
        return 1
    mach = machine()
    (OUT / "machine.txt").write_text(mach + "\n")
    log(mach + (" (BENCH_QUICK: rough figures)" if QUICK else ""))
    if os.getloadavg()[0] > 1.0:
        log("warning: the machine is busy (load average > 1); ratios are interleaved, "
            "absolute figures will be noisy")
    admin = Admin()
    t_all = time.monotonic()
    timing = []
    # footprint reads what gate and handoff measured: keep the order
    for name in ALL:
        if name not in which:
            continue
        t0 = time.monotonic()
        log(f"== {name}")
        globals()[name](admin)
        timing.append((name, time.monotonic() - t0))
    total = time.monotonic() - t_all

    # the table
    w = max([len(r["what"]) for r in ROWS] + [20])
    lines = [f"migshim bench — {mach}", ""]
    lines.append(f"{'#':6} {'measurement':{w}}  {'value':>15}  {'target':17} met")
    lines.append("-" * (w + 48))
    for r in ROWS:
        met = {True: "yes", False: "NO", None: "-"}[r["met"]]
        lines.append(f"{r['id']:6} {r['what']:{w}}  {r['value']:>15}  {r['target']:17} {met}")
        if r["detail"]:
            lines.append(f"{'':6}   {r['detail']}")
    lines.append("")
    lines.append("time: " + ", ".join(f"{n} {s:.0f} s" for n, s in timing)
                 + f"; total {total:.0f} s; load average at end {os.getloadavg()[0]:.2f}")
    table = "\n".join(lines)
    print(table)
    (OUT / "table.txt").write_text(table + "\n")
    with open(OUT / "results.csv", "w", newline="") as f:
        cw = csv.writer(f)
        cw.writerow(("id", "measurement", "value", "target", "met", "raw", "detail"))
        cw.writerow(("machine", mach, "", "", "", "", "QUICK" if QUICK else "full"))
        for r in ROWS:
            cw.writerow((r["id"], r["what"], r["value"], r["target"],
                         {True: "yes", False: "no", None: ""}[r["met"]], r["raw"], r["detail"]))
    cg = OUT / "callgrind_functions.txt"
    if cg.exists() and "instr" in which:
        print("\n" + cg.read_text().rstrip())
    print(f"\nresults: {OUT}/results.csv, plot: {OUT}/handoff.png, raw samples: {OUT}/*.csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
