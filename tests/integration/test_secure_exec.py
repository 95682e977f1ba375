"""The shim is inert in a secure-execution (AT_SECURE) process.

A setuid-root (or setgid-root) copy of tests/integration/c/secure_helper.c
is run by the unprivileged user `nobody` (setpriv), so the kernel sets
AT_SECURE.  The helper has libmigshim.so as its first DT_NEEDED, found
through an absolute RUNPATH -- the way a shim really gets into such a
process, since glibc ignores LD_PRELOAD paths there -- so every PQ* call
it makes goes through the shim's wrappers (it prints which object defines
the PQexec it calls).

Its environment asks for everything the shim can do: MIGSHIM_CONFIG names a
file (log = "debug", heads = a revision the empty database lacks, events
file), so an active shim would read that file, log, gate the connection
(open its lock connection, visible in pg_stat_activity) and write events.
The control is the same program, not setuid, run by root with the same
environment: it must show all of that, which is what proves each oracle
can fail.  In the secure process: no line on stderr, the configuration
file never opened (inotify), no events file, no lock connection, and the
same results and errors as without the shim.  With MIGSHIM_STRICT=true and
an unknown MIGSHIM_* variable a normal process exits 78; the secure one is
not affected.

Needs root (to chown/chmod the copy); fails, not skips, without it.
"""

import ctypes
import os
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

import pytest

import shimbuild
from conftest import child_base_env

HELPER_NAME = "secure_helper"
NOBODY = 65534

IN_ACCESS = 0x001
IN_OPEN = 0x020
IN_CREATE = 0x100
IN_NONBLOCK = 0o4000

_libc = ctypes.CDLL(None, use_errno=True)


class Inotify:
    """inotify(7) through ctypes: which watched paths were opened/created."""

    def __init__(self):
        self.fd = _libc.inotify_init1(IN_NONBLOCK)
        assert self.fd >= 0, os.strerror(ctypes.get_errno())
        self.wds = {}

    def watch(self, path, mask):
        wd = _libc.inotify_add_watch(self.fd, os.fsencode(str(path)), mask)
        assert wd >= 0, f"inotify_add_watch {path}: {os.strerror(ctypes.get_errno())}"
        self.wds[wd] = str(path)

    def events(self):
        """[(watched path, name or '', mask)] since the last call."""
        out = []
        while True:
            try:
                buf = os.read(self.fd, 65536)
            except BlockingIOError:
                return out
            i = 0
            while i < len(buf):
                wd, mask, _cookie, ln = struct.unpack_from("iIII", buf, i)
                name = buf[i + 16:i + 16 + ln].rstrip(b"\0").decode()
                out.append((self.wds.get(wd, "?"), name, mask))
                i += 16 + ln

    def close(self):
        os.close(self.fd)


def helper_path():
    p = shimbuild.build_dir() / "tests" / HELPER_NAME
    if not p.is_file():
        pytest.fail(f"{p} not built (`make tests`)", pytrace=False)
    return p


def parse(stdout):
    return dict(ln.split("=", 1) for ln in stdout.splitlines() if "=" in ln)


@pytest.fixture
def setup(db):
    if os.geteuid() != 0:
        pytest.fail("test_secure_exec needs root: it makes a setuid-root copy "
                    "of the helper and runs it as nobody", pytrace=False)
    # not pytest's tmp_path: its parents are 0700, and nobody must reach
    # the copies
    tmp_path = Path(tempfile.mkdtemp(prefix="migshim-secure.", dir="/tmp"))
    os.chmod(tmp_path, 0o755)
    for parent in tmp_path.parents:
        assert os.stat(parent).st_mode & 0o001, f"{parent} is not searchable by others"
    conf = tmp_path / "migshim.conf"
    events = tmp_path / "events.jsonl"
    conf.write_text('log = "debug";\nheads = "0009zzzz";\nwait_timeout = 5;\n'
                    f'events = "{events}";\n')
    env = child_base_env()
    env.update(db.env)
    env.update({"MIGSHIM_CONFIG": str(conf), "MIGSHIM_LOCK": "xact",
                "MIGSHIM_LEADER_GRACE": "30"})
    yield tmp_path, conf, events, env
    shutil.rmtree(tmp_path, ignore_errors=True)


def copy_helper(tmp_path, name, mode, gid=0):
    dst = tmp_path / name
    shutil.copy2(helper_path(), dst)
    os.chown(dst, 0, gid)
    os.chmod(dst, mode)
    return dst


def run(argv, env, cwd, as_nobody):
    if as_nobody:
        argv = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}",
                "--clear-groups", "--"] + argv
    return subprocess.run(argv, env=env, cwd=str(cwd), capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)


def run_watched(argv, env, cwd, conf, events, as_nobody):
    ino = Inotify()
    try:
        ino.watch(conf, IN_OPEN | IN_ACCESS)
        ino.watch(cwd, IN_CREATE)
        res = run(argv, env, cwd, as_nobody)
        seen = ino.events()
    finally:
        ino.close()
    opened = [e for e in seen if e[0] == str(conf) and e[2] & IN_OPEN]
    created = sorted(e[1] for e in seen if e[0] == str(cwd) and e[2] & IN_CREATE)
    return res, opened, created


def expected_results(db):
    # the same program's results without any shim in the process
    return {"status": "0", "lock_conns": "0", "select": "42",
            "error": "22012 division by zero"}


@pytest.mark.parametrize("kind", ["setuid", "setgid"])
def test_shim_inert_in_secure_execution(setup, db, kind):
    tmp_path, conf, events, env = setup
    dsn = db.dsn

    # control: the same helper, not privileged, run by root -- AT_SECURE=0
    plain = copy_helper(tmp_path, "plain_helper", 0o755)
    res, opened, created = run_watched([str(plain), dsn], env, tmp_path, conf,
                                       events, as_nobody=False)
    out = parse(res.stdout)
    assert res.returncode == 0, res.stdout + res.stderr
    assert (out["at_secure"], out["pqexec_from"]) == ("0", "libmigshim.so"), res.stdout
    assert out["lock_conns"] == "1", \
        f"control: the shim did not gate (lock connection missing)\n{res.stdout}{res.stderr}"
    assert "leading: this process holds the migration lock" in res.stderr, res.stderr
    assert "PQexec -> libpq.so.5 (first call)" in res.stderr, res.stderr
    assert opened, "control: the configuration file was not opened"
    assert created == ["events.jsonl"] and events.stat().st_size > 0, created
    events.unlink()

    # the secure process
    if kind == "setuid":
        helper = copy_helper(tmp_path, HELPER_NAME, 0o4755)
    else:
        helper = copy_helper(tmp_path, HELPER_NAME, 0o2755, gid=0)
    res, opened, created = run_watched([str(helper), dsn], env, tmp_path, conf,
                                       events, as_nobody=True)
    out = parse(res.stdout)
    assert res.returncode == 0, res.stdout + res.stderr
    assert out["at_secure"] == "1", f"{kind} copy did not run AT_SECURE\n{res.stdout}"
    assert out["ruid"] == str(NOBODY)
    assert out["euid"] == ("0" if kind == "setuid" else str(NOBODY))
    assert out["pqexec_from"] == "libmigshim.so", \
        f"the shim is not what the program calls\n{res.stdout}"
    assert res.stderr == "", f"the shim wrote in a secure process:\n{res.stderr}"
    assert opened == [], f"the configuration file was opened: {opened}"
    assert created == [], f"files were created: {created}"
    assert not events.exists()
    want = expected_results(db)
    assert {k: out[k] for k in want} == want, res.stdout


def test_strict_bad_configuration_ignored_in_secure_execution(setup, db):
    """A normal process exits 78 at its first libpq call; a secure one
    never reads the environment, so it runs exactly as without the shim."""
    tmp_path, conf, events, env = setup
    env = dict(env, MIGSHIM_STRICT="true", MIGSHIM_NO_SUCH_KEY="1")
    plain = copy_helper(tmp_path, "plain_helper", 0o755)
    res = run([str(plain), db.dsn], env, tmp_path, as_nobody=False)
    assert res.returncode == 78, res.stdout + res.stderr
    assert "MIGSHIM_NO_SUCH_KEY" in res.stderr and "exiting with status 78" in res.stderr, \
        res.stderr

    helper = copy_helper(tmp_path, HELPER_NAME, 0o4755)
    res = run([str(helper), db.dsn], env, tmp_path, as_nobody=True)
    out = parse(res.stdout)
    assert (res.returncode, res.stderr) == (0, ""), res.stdout + res.stderr
    assert out["at_secure"] == "1"
    want = expected_results(db)
    assert {k: out[k] for k in want} == want, res.stdout
