"""A host that vanishes mid-migration, and a partition that heals (issue 13).

Two "hosts" are network namespaces this test creates, each joined to the
root namespace by a veth pair whose addresses exist only on that link
(10.X.Y.1/30 <-> 10.X.Y.2/30 for A, .5 <-> .6 for B).  A PostgreSQL of the
test's own (tests/harness/pg.sh) listens on 127.0.0.1 and on the two
root-side addresses.  Each host runs a Gunicorn fleet of the flask-alembic
example under the shim, with default settings (`ip netns exec`):

* host A, 1 worker, leads a 30 s migration (3 revisions x MIGRATION_SLEEP=10
  in one transaction);
* host B, 4 workers, waits (MIGRATION_SLEEP=0.2: if B has to redo the
  migration, it is quick);
* 3 s into A's migration, A's link is deleted (`ip link del`: no FIN, no
  RST, as when a node loses power) -- or, in the partition test, set down
  and back up 40 s later.

Expected: the server notices the dead peer (the shim's keepalive and
user-timeout settings on its lock connection, and on the leader's migrating
connection with client_connection_check_interval), the lock and A's
uncommitted catalog rows go, a B worker leads and migrates, and every B
worker is ready within 30 s of the cut; each revision is committed exactly
once, by B's leader.  After the partition heals, A's transaction was ended
by the server: A's worker failed (its connection timed out) or proceeded,
nothing ran twice.

Runs in `make chaos` (not in make check: ~1.5 min, and root only).  Every
namespace, link and process it creates is removed in a finally block.

Run: tests/harness/with-pg.sh /usr/bin/python3 -m pytest -q -s tests/netns
"""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg2
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "e2e"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "chaos"))
from chaoslib import wait_until  # noqa: E402
from fleet import Fleet  # noqa: E402

REPO = Path(__file__).resolve().parent.parent.parent
PG_SH = REPO / "tests" / "harness" / "pg.sh"
REVISIONS = ["0001aaaa", "0002bbbb", "0003cccc"]
LEAD_RE = re.compile(r"migshim\[(\d+)\]: info: .*\bleading\b")
READY_RE = re.compile(r"^fleet: worker-ready pid=(\d+)$", re.M)
RECOVERY_BOUND = 30.0


def sh(*argv, check=True):
    r = subprocess.run(list(argv), capture_output=True, text=True, timeout=60)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: rc={r.returncode} {r.stderr.strip()}")
    return r


class Net:
    """Two namespaces, a veth pair each, addresses only on those links."""

    def __init__(self):
        tag = "ms%05d" % (os.getpid() % 100000)
        self.x, self.y = random.randrange(100, 250), random.randrange(1, 250)
        self.ns = {"a": tag + "a", "b": tag + "b"}
        self.root_if = {"a": tag + "a0", "b": tag + "b0"}
        self.ns_if = {"a": tag + "a1", "b": tag + "b1"}
        base = {"a": 0, "b": 4}
        self.root_ip = {h: "10.%d.%d.%d" % (self.x, self.y, base[h] + 1) for h in base}
        self.ns_ip = {h: "10.%d.%d.%d" % (self.x, self.y, base[h] + 2) for h in base}
        self.subnet = "10.%d.%d.0/24" % (self.x, self.y)

    def up(self):
        for h in ("a", "b"):
            ns, r, n = self.ns[h], self.root_if[h], self.ns_if[h]
            sh("ip", "netns", "add", ns)
            sh("ip", "link", "add", r, "type", "veth", "peer", "name", n, "netns", ns)
            sh("ip", "addr", "add", self.root_ip[h] + "/30", "dev", r)
            sh("ip", "link", "set", r, "up")
            sh("ip", "-n", ns, "addr", "add", self.ns_ip[h] + "/30", "dev", n)
            sh("ip", "-n", ns, "link", "set", n, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")

    def down(self):
        for h in ("a", "b"):
            sh("ip", "link", "del", self.root_if[h], check=False)
            sh("ip", "netns", "del", self.ns[h], check=False)


class Server:
    """A PostgreSQL of this test's own, listening on the veth addresses too."""

    def __init__(self, net: Net):
        self.dir = tempfile.mkdtemp(prefix="msnet.", dir="/tmp")
        os.chmod(self.dir, 0o755)
        r = subprocess.run(["bash", str(PG_SH), "start", self.dir], capture_output=True,
                           text=True, timeout=180)
        if r.returncode != 0:
            raise RuntimeError("pg.sh start: " + r.stderr)
        vals = dict(re.findall(r"^export (\w+)='([^']*)'$", r.stdout, re.M))
        self.port = vals["PGPORT"]
        data = Path(self.dir) / "data"
        auto = data / "postgresql.auto.conf"
        auto.write_text(re.sub(r"^listen_addresses = .*$",
                               "listen_addresses = '127.0.0.1,%s,%s'"
                               % (net.root_ip["a"], net.root_ip["b"]),
                               auto.read_text(), flags=re.M)
                        + "log_min_messages = warning\n")
        with open(data / "pg_hba.conf", "a") as f:
            f.write("host all all %s trust\n" % net.subnet)
        bindir = Path(subprocess.run(["bash", "-c", ". %s; pg_harness__bindir" % PG_SH],
                                     capture_output=True, text=True).stdout.strip())
        r = subprocess.run(["runuser", "-u", "postgres", "--", str(bindir / "pg_ctl"), "-D",
                            str(data), "-l", str(Path(self.dir) / "postgresql.log"), "-w",
                            "-t", "60", "restart"], capture_output=True, text=True,
                           cwd=self.dir, timeout=120)
        if r.returncode != 0:
            raise RuntimeError("pg_ctl restart: " + r.stdout + r.stderr)

    def dsn(self, db="postgres", host="127.0.0.1"):
        return f"host={host} port={self.port} user=postgres dbname={db}"

    def connect(self, db="postgres"):
        c = psycopg2.connect(self.dsn(db))
        c.autocommit = True
        return c

    def q(self, sql, args=None, db="postgres"):
        c = self.connect(db)
        try:
            cur = c.cursor()
            cur.execute(sql, args)
            return cur.fetchall() if cur.description else None
        finally:
            c.close()

    def stop(self):
        subprocess.run(["bash", str(PG_SH), "stop", self.dir], capture_output=True, timeout=120)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def world():
    if os.geteuid() != 0 or not shutil.which("ip"):
        pytest.fail("needs root and iproute2 (ip netns): run `make chaos` as root",
                    pytrace=False)
    net = Net()
    srv = None
    fleets = []
    try:
        net.up()
        srv = Server(net)
        yield net, srv, fleets
    finally:
        for f in fleets:
            try:
                f.stop()
                f.discard()
            except Exception:
                pass
        net.down()
        if srv is not None:
            srv.stop()
        leftover = sh("ip", "netns", "list").stdout
        assert net.ns["a"] not in leftover and net.ns["b"] not in leftover, leftover


def host_fleet(net, srv, db, h, workers, sleep):
    f = Fleet("flask-alembic", srv.dsn(db, host=net.root_ip[h]), workers=workers, shim=True,
              env_extra={"MIGRATION_SLEEP": str(sleep)}, gunicorn_timeout=120,
              wrapper=["ip", "netns", "exec", net.ns[h]], label="host " + h)
    return f


def until(pred, timeout, what):
    """chaoslib's wait_until, at this file's pace."""
    return wait_until(pred, timeout, what, interval=0.05)


def start_and_cut(net, srv, fleets, db, cut):
    """A leads a 30 s migration, B's four workers wait, `cut` 3 s in.
    Returns (A, B, monotonic time of the cut)."""
    a = host_fleet(net, srv, db, "a", 1, 10.0)
    fleets.append(a)
    a.start()
    lead = a.wait_for_line(LEAD_RE, timeout=60)
    # A's migration is running: a pg_sleep from A's address
    until(lambda: srv.q("SELECT 1 FROM pg_stat_activity WHERE client_addr = %s "
                        "AND query LIKE '%%pg_sleep%%' AND state = 'active'",
                        (net.ns_ip["a"],)), 30, "A's migration statement")
    t_mig = time.monotonic()
    b = host_fleet(net, srv, db, "b", 4, 0.2)
    fleets.append(b)
    b.start()
    until(lambda: srv.q("SELECT count(*) FROM pg_locks l JOIN pg_stat_activity s USING (pid) "
                        "WHERE l.locktype = 'advisory' AND NOT l.granted AND s.client_addr = %s",
                        (net.ns_ip["b"],))[0][0] >= 4, 30, "B's four workers waiting")
    time.sleep(max(0.0, t_mig + 3.0 - time.monotonic()))
    t_cut = time.monotonic()
    cut()
    return a, b, int(lead.group(1)), t_cut


def b_ready(net, b):
    """B's four workers imported the app, and B answers /ready (from inside B)."""
    text = b.stderr_text()
    if len(set(READY_RE.findall(text))) < 4:
        return False
    r = subprocess.run(["ip", "netns", "exec", net.ns["b"], "curl", "-fsS", "--max-time", "2",
                        f"http://127.0.0.1:{b.port}/ready"], capture_output=True, text=True)
    return r.returncode == 0


def check_once_by_b(srv, db, a_leader, b):
    version = [r[0] for r in srv.q("SELECT version_num FROM alembic_version", db=db)]
    runs = srv.q("SELECT revision, count(*), min(pid), max(pid) FROM migration_runs "
                 "GROUP BY revision ORDER BY revision", db=db)
    text = b.stderr_text()
    leads = [int(m.group(1)) for m in map(LEAD_RE.search, text.splitlines()) if m]
    assert version == ["0003cccc"], version
    assert len(leads) == 1, text[-3000:]
    assert [(r[0], r[1]) for r in runs] == [(rev, 1) for rev in REVISIONS], runs
    assert all(r[2] == r[3] == leads[0] for r in runs), (runs, leads)
    assert a_leader not in [r[2] for r in runs]
    return leads[0]


def test_leader_host_vanishes_survivors_serve_within_30_s(world):
    net, srv, fleets = world
    db = "hostloss"
    srv.q('CREATE DATABASE "%s"' % db)
    a, b, a_leader, t_cut = start_and_cut(
        net, srv, fleets, db, lambda: sh("ip", "link", "del", net.root_if["a"]))
    until(lambda: b_ready(net, b), 90, "B's workers ready\n" + b.stderr_text()[-3000:])
    recovery = time.monotonic() - t_cut
    b_leader = check_once_by_b(srv, db, a_leader, b)
    # nothing of A is left on the server
    assert srv.q("SELECT count(*) FROM pg_stat_activity WHERE client_addr = %s",
                 (net.ns_ip["a"],)) == [(0,)]
    print(f"\nhost A cut 3 s into its 30 s migration: B's 4 workers ready {recovery:.1f} s "
          f"after the cut (B's leader {b_leader})")
    assert recovery < RECOVERY_BOUND, f"recovery took {recovery:.1f} s"


def test_partition_heals_after_40_s_nothing_runs_twice(world):
    net, srv, fleets = world
    db = "partition"
    srv.q('CREATE DATABASE "%s"' % db)
    a, b, a_leader, t_cut = start_and_cut(
        net, srv, fleets, db, lambda: sh("ip", "link", "set", net.root_if["a"], "down"))
    until(lambda: b_ready(net, b), 90, "B's workers ready\n" + b.stderr_text()[-3000:])
    recovery = time.monotonic() - t_cut
    check_once_by_b(srv, db, a_leader, b)
    time.sleep(max(0.0, t_cut + 40.0 - time.monotonic()))
    sh("ip", "link", "set", net.root_if["a"], "up")
    t_heal = time.monotonic()
    # A's worker: its transaction was ended by the server; it fails (its
    # connection timed out: Gunicorn halts) or, restarted, finds the
    # database at head.  Either way within a bounded time, and it never
    # runs a revision again.
    def a_settled():
        text = a.stderr_text()
        if a.proc.poll() is not None:
            return "failed"
        if READY_RE.search(text):
            return "proceeded"
        return None
    outcome = until(a_settled, 60, "A's worker to fail or proceed\n" + a.stderr_text()[-3000:])
    check_once_by_b(srv, db, a_leader, b)
    text = a.stderr_text()
    assert "Running upgrade" not in text.split("leading", 1)[-1] or outcome == "failed"
    print(f"\npartition: B ready {recovery:.1f} s after the cut; after healing at 40 s, A's "
          f"worker {outcome} ({time.monotonic() - t_heal:.1f} s after the heal)")
