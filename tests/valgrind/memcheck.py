#!/usr/bin/python3
"""valgrind memcheck over a shimmed fleet (`make valgrind`).

Run inside tests/harness/with-pg.sh (PGHOST/PGPORT set).  Two workloads,
each on a fresh, empty database:

1. fleet   a real Gunicorn fleet of examples/flask-alembic (WORKERS sync
           workers, default 3) whose master runs under
           `valgrind --tool=memcheck --trace-children=yes` -- the workers
           are forks of it, so each runs under memcheck too -- with
           LD_PRELOAD=build/libmigshim.so and PYTHONMALLOC=malloc.  One
           worker leads the migration, the others wait: the gate, the lock
           connection, the guard and the at-head path all run.
2. helper  tests/integration/c/secure_helper (a plain C libpq program with
           the shim as its first DT_NEEDED), not setuid, with heads the
           database lacks: it gates, leads and exits holding the lock.

Every process writes one XML file (`--xml-file=.../vg.%p.xml`).  An error
(or a definitely-lost block) is attributed to libmigshim when any frame of
its stack is in libmigshim.so; the others (CPython, libpq, libc) are
counted as noise.  tests/valgrind/python.supp silences CPython's own leaks
at exit (each entry matches the frame that called malloc, so a block the
shim allocates cannot match) and names no libmigshim frame (checked below).
VALGRIND_OUT=DIR keeps the XML reports; VALGRIND_EXTRA adds valgrind options.  Exit status 1 when any
error or definitely-lost block is attributed to libmigshim, or when a
workload did not run as it must (fleet not booted, not one leader, the
database not at head, a process without its XML report).
"""

import glob
import os
import re
import subprocess
import sys
import tempfile
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
import shimbuild  # noqa: E402
from fleet import LEAD_LINE_RE, Fleet  # noqa: E402

SUPP = ROOT / "tests" / "valgrind" / "python.supp"
WORKERS = int(os.environ.get("WORKERS", "3"))
SHIM_OBJ = "libmigshim.so"


def valgrind_argv(outdir: Path):
    return ["valgrind", "--tool=memcheck", "--trace-children=yes",
            "--leak-check=full", "--show-leak-kinds=definite",
            "--errors-for-leak-kinds=definite", "--num-callers=40",
            "--track-origins=no", f"--suppressions={SUPP}",
            "--xml=yes", f"--xml-file={outdir}/vg.%p.xml"] \
        + os.environ.get("VALGRIND_EXTRA", "").split()


def server_dsn(dbname):
    return (f"host={os.environ['PGHOST']} port={os.environ['PGPORT']} "
            f"user={os.environ.get('PGUSER') or 'postgres'} dbname={dbname}")


def create_db():
    import psycopg2
    name = f"migshim_vg_{uuid.uuid4().hex[:12]}"
    conn = psycopg2.connect(server_dsn("postgres"))
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
    conn.close()
    return name


def drop_db(name):
    import psycopg2
    conn = psycopg2.connect(server_dsn("postgres"))
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    conn.close()


def text(el, path):
    x = el.find(path)
    return x.text if x is not None and x.text else ""


def parse(outdir: Path):
    """[(pid, exe, [(kind, bytes, shim?, summary)]), ...] per XML file."""
    procs = []
    for f in sorted(glob.glob(str(outdir / "vg.*.xml"))):
        try:
            root = ET.parse(f).getroot()
        except ET.ParseError as e:
            # a process killed before valgrind closed its XML
            procs.append((f, "?", None, f"unparsable: {e}"))
            continue
        pid = text(root, "pid")
        exe = text(root, "args/argv/exe")
        errs = []
        for e in root.findall("error"):
            kind = text(e, "kind")
            frames = e.findall("stack/frame")
            shim = any(SHIM_OBJ in text(fr, "obj") for fr in frames)
            nbytes = int(text(e, "xwhat/leakedbytes") or 0)
            what = text(e, "what") or text(e, "xwhat/text")
            top = "; ".join(
                f"{text(fr, 'fn') or '?'} ({os.path.basename(text(fr, 'obj'))}"
                + (f" {text(fr, 'file')}:{text(fr, 'line')}" if text(fr, 'file') else "")
                + ")" for fr in frames[:12])
            errs.append((kind, nbytes, shim, f"{kind}: {what}\n      {top}"))
        procs.append((pid, exe, errs, ""))
    return procs


def report(label, procs):
    total = shim_errs = shim_lost = noise = 0
    bad = []
    kinds = {}
    for pid, exe, errs, problem in procs:
        if errs is None:
            bad.append(f"{pid}: {problem}")
            continue
        for kind, nbytes, shim, desc in errs:
            total += 1
            if shim:
                if kind.startswith("Leak_"):
                    shim_lost += nbytes
                shim_errs += 1
                bad.append(f"pid {pid}: {desc}")
            else:
                noise += 1
                kinds[kind] = kinds.get(kind, 0) + 1
    print(f"  {label}: {len(procs)} process(es) under memcheck; {total} error(s) "
          f"reported, {shim_errs} with a libmigshim frame "
          f"({shim_lost} bytes definitely lost there), {noise} elsewhere "
          f"(CPython/libpq/libc, not counted"
          + (": " + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())) if kinds else "")
          + ")")
    for b in bad[:20]:
        print("    " + b)
    return shim_errs, bad


def run_fleet(outdir: Path):
    db = create_db()
    try:
        dsn = server_dsn(db)
        env = {"PYTHONMALLOC": "malloc"}
        f = Fleet("flask-alembic", dsn, workers=WORKERS, shim=True,
                  env_extra=env, timeout=900, gunicorn_timeout=900,
                  wrapper=valgrind_argv(outdir), stop_grace=300,
                  extra_args=["--graceful-timeout", "240"],
                  label=f"valgrind fleet {WORKERS}x sync")
        f.start()
        f.wait()
        f.stop()
        r = f.result()
        print("  " + r.summary())
        leaders = [p for p, _ in r.gate_lines("lead")]
        ok = (r.booted and r.alembic_version == ["0003cccc"]
              and r.migration_runs == {"0001aaaa": 1, "0002bbbb": 1, "0003cccc": 1}
              and len(leaders) == 1 and not r.migshim_problems())
        if not ok:
            print("  the fleet did not start as it must:\n" + r.describe(40))
        return ok, 1 + WORKERS
    finally:
        drop_db(db)


def run_helper(outdir: Path):
    helper = shimbuild.build_dir() / "tests" / "secure_helper"
    if not helper.is_file():
        print(f"  {helper} not built (make tests)")
        return False
    db = create_db()
    try:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("MIGSHIM_") and k != "LD_PRELOAD"}
        env.update({"MIGSHIM_HEADS": "0009zzzz", "MIGSHIM_LOG": "debug",
                    "MIGSHIM_CONFIG": "/dev/null"})
        res = subprocess.run(valgrind_argv(outdir) + [str(helper), server_dsn(db)],
                             env=env, capture_output=True, text=True, timeout=600)
        out = dict(ln.split("=", 1) for ln in res.stdout.splitlines() if "=" in ln)
        ok = (res.returncode == 0 and out.get("lock_conns") == "1"
              and out.get("select") == "42" and LEAD_LINE_RE.search(res.stderr))
        print(f"  helper: rc={res.returncode} lock_conns={out.get('lock_conns')} "
              f"select={out.get('select')} leading={'yes' if LEAD_LINE_RE.search(res.stderr) else 'no'}")
        if not ok:
            print(res.stdout + res.stderr[-3000:])
        return ok
    finally:
        drop_db(db)


def main():
    if not (os.environ.get("PGHOST") and os.environ.get("PGPORT")):
        sys.exit("run under tests/harness/with-pg.sh")
    supp = [ln for ln in SUPP.read_text().splitlines()
            if not ln.lstrip().startswith("#")]
    if any("migshim" in ln for ln in supp):
        sys.exit(f"{SUPP} must not name libmigshim")
    lib = shimbuild.lib_path()
    if shimbuild.sanitized(lib):
        sys.exit(f"{lib} is a sanitized build: valgrind needs the plain one (make)")
    failures = 0
    keep = os.environ.get("VALGRIND_OUT")   # keep the XML reports there
    with tempfile.TemporaryDirectory(prefix="migshim-vg.") as tmp:
        if keep:
            tmp = keep
        for label in ("fleet", "helper"):
            outdir = Path(tmp) / label
            outdir.mkdir()
            print(f"== valgrind memcheck: {label}")
            if label == "fleet":
                ran, expect = run_fleet(outdir)
            else:
                ran, expect = run_helper(outdir), 1
            procs = parse(outdir)
            shim_errs, bad = report(label, procs)
            if len(procs) < expect:
                print(f"  only {len(procs)} XML report(s), want at least {expect}")
                ran = False
            if not ran or shim_errs or any(p[2] is None for p in procs):
                failures += 1
    print("valgrind: " + ("FAILED" if failures else
                          "0 errors and 0 bytes definitely lost in libmigshim"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
