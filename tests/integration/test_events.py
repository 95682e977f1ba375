"""MIGSHIM_EVENTS and `migshim timeline`: every process of a racing start
appends JSON-lines events; the timeline draws one lane per process.

Four processes import the flask-alembic example (which runs `alembic
upgrade head` at import) at once against an empty database.
"""

import json
import subprocess
import xml.etree.ElementTree as ET

import shimbuild
from conftest import REPO_ROOT, child_base_env

EXAMPLE = REPO_ROOT / "examples" / "flask-alembic"
MIGSHIM = shimbuild.cli_path()
SVG = "{http://www.w3.org/2000/svg}"


def start_fleet(db, pg, events, n=4):
    env = child_base_env()
    env.update(db.env)
    env.update({
        "LD_PRELOAD": shimbuild.preload(),
        "MIGSHIM_EVENTS": str(events),
        "RUN_DB_MIGRATIONS_ON_STARTUP": "true",
        "MIGRATION_SLEEP": "0.2",
        "DATABASE_URL": f"postgresql:///{db.name}?host={pg.host}&port={pg.port}&user={pg.user}",
    })
    procs = [subprocess.Popen(["/usr/bin/python3", "-c", "import app"], cwd=EXAMPLE, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(n)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * n, [o[1] for o in outs]
    return {p.pid for p in procs}


def test_events_and_timeline(tmp_path, db, pg, migshim_lib):
    events = tmp_path / "events.jsonl"
    pids = start_fleet(db, pg, events)
    rows = [json.loads(line) for line in events.read_text().splitlines()]
    assert {r["pid"] for r in rows} == pids
    for r in rows:
        assert set(r) == {"pid", "time", "host", "event", "db", "lock", "versions", "detail"}
        assert r["db"] == db.name and r["lock"] == "xact"
    by_pid = {pid: [r["event"] for r in rows if r["pid"] == pid] for pid in pids}
    assert all(ev[0] == "connect" for ev in by_pid.values()), by_pid
    leaders = [pid for pid, ev in by_pid.items() if "leading" in ev]
    assert len(leaders) == 1, by_pid
    assert by_pid[leaders[0]] == ["connect", "leading", "migrated"]
    for pid, ev in by_pid.items():
        if pid != leaders[0]:
            assert ev in (["connect", "waiting", "proceed"], ["connect", "at_head"],
                          ["connect", "proceed"]), ev
    times = [r["time"] for r in rows]
    assert max(times) - min(times) < 60

    out = tmp_path / "start.svg"
    r = subprocess.run([str(MIGSHIM), "timeline", str(events), "-o", str(out)],
                       capture_output=True, text=True, timeout=30)
    assert (r.returncode, r.stderr) == (0, "")
    root = ET.parse(out).getroot()  # well-formed
    assert root.tag == SVG + "svg"
    lanes = [g for g in root.iter(SVG + "g") if g.get("class") == "lane"]
    assert sorted(int(g.get("data-pid")) for g in lanes) == sorted(pids)
    lane = {int(g.get("data-pid")): g for g in lanes}
    kinds = {pid: {e.get("class") for e in g if e.tag == SVG + "rect"} for pid, g in lane.items()}
    assert kinds[leaders[0]] == {"connecting", "leading", "proceeding"}
    for pid in pids - {leaders[0]}:
        assert "proceeding" in kinds[pid] and "leading" not in kinds[pid]
    # lanes in order of their first event: the leader connected first
    assert int(lanes[0].get("data-pid")) == min(pids, key=lambda p: min(
        x["time"] for x in rows if x["pid"] == p))


def test_timeline_errors(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"pid":1,"time":2.0,"event":"connect"}\nnot json\n')
    r = subprocess.run([str(MIGSHIM), "timeline", str(bad), "-o", str(tmp_path / "x.svg")],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 3
    assert r.stderr == f"migshim: {bad}:2: not a migshim event (needs pid, time, event)\n"
    r = subprocess.run([str(MIGSHIM), "timeline", str(tmp_path / "none.jsonl"), "-o", "x.svg"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 3 and "No such file or directory" in r.stderr
    r = subprocess.run([str(MIGSHIM), "timeline", str(bad)], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 64
