"""Network topologies around the harness server, for tests/e2e/test_topologies.py.

Everything here talks to the harness server (the `pg` fixture of
tests/conftest.py) as its superuser through the Unix socket, with the test's
own psycopg2 (never the shim), and undoes what it changed:

    PgBouncer(pg, pool_mode="transaction").start() ... .stop()
        a real pgbouncer on 127.0.0.1:<free port> in front of the server
        (run as the server's OS user when we are root: it refuses root);
        .url(db) is a SQLAlchemy URL through it; .log() its log.
    server_settings(pg, ssl="on", ...)      (context manager)
        ALTER SYSTEM SET + pg_reload_conf(), checked with SHOW; restored
        (the previous postgresql.auto.conf value, or RESET) on exit.
    hba_prepended(pg, [line, ...])          (context manager)
        lines put before every line of pg_hba.conf (SHOW hba_file), reload,
        checked in pg_hba_file_rules; the file's exact bytes restored and
        reloaded on exit.
    password_role(pg, method="scram-sha-256")   (context manager)
        a LOGIN role whose password (stored for `method`) a pg_hba.conf
        line requires over TCP from 127.0.0.1; yields (role, password,
        marker); the role and the databases it owns dropped on exit.
    self_signed_cert(dirpath)
        openssl: a key + self-signed certificate for CN/SAN 127.0.0.1,
        owned by the server's OS user, key 0600.
    scratch_dir(prefix)
        a temp dir under /tmp that the server's OS user can enter.
    BackendSampler(pg, dbname)              (thread)
        polls pg_stat_activity LEFT JOIN pg_stat_ssl for the database's
        client backends; .seen: every distinct (pid, application_name) with
        user, client address, ssl.

Nothing here needs pytest.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.parse
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional

from fleet import free_port  # noqa: F401  (tests/e2e is on sys.path)

PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"
SAMPLER_APP = "migshim-topo-sampler"


# ---------------------------------------------------------------------------
# small things

def admin(pg):
    """An autocommit superuser connection (Unix socket, no shim)."""
    return pg.connect("postgres")


def query(pg, sql, args=(), dbname="postgres"):
    conn = pg.connect(dbname)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchall() if cur.description else None
    finally:
        conn.close()


def server_os_user(pg) -> pwd.struct_passwd:
    """The OS user the server runs as (owner of its data directory)."""
    (datadir,), = query(pg, "SHOW data_directory")
    return pwd.getpwuid(os.stat(datadir).st_uid)


def chown_to_server(pg, path) -> None:
    if os.geteuid() == 0:
        u = server_os_user(pg)
        os.chown(path, u.pw_uid, u.pw_gid)


def scratch_dir(pg, prefix: str) -> Path:
    """A temp dir under /tmp the server's OS user can enter and own
    (pytest's tmp_path is 0700 root: the server could not read a key
    there)."""
    d = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    os.chmod(d, 0o755)
    chown_to_server(pg, d)
    return d


def reload_conf(pg) -> None:
    query(pg, "SELECT pg_reload_conf()")
    # pg_reload_conf() only signals the postmaster: give it a moment so the
    # next new backend reads the new files.
    time.sleep(0.5)


# ---------------------------------------------------------------------------
# server settings

@contextmanager
def server_settings(pg, **settings):
    """ALTER SYSTEM SET each setting, reload, check with SHOW (new
    backends); on exit put back what postgresql.auto.conf had (ALTER
    SYSTEM SET/RESET, then the file's exact bytes), reload, and check that
    SHOW gives what it gave before."""
    before: Dict[str, Optional[str]] = {}
    (datadir,), = query(pg, "SHOW data_directory")
    auto_conf = Path(datadir) / "postgresql.auto.conf"
    auto_bytes = auto_conf.read_bytes()
    shown_before = {n: query(pg, f"SHOW {n}")[0][0] for n in settings}
    rows = query(pg, "SELECT name, setting FROM pg_file_settings "
                     "WHERE sourcefile LIKE '%%postgresql.auto.conf' "
                     "AND applied")
    auto = {n: s for n, s in rows}
    for name in settings:
        before[name] = auto.get(name)
    conn = admin(pg)
    try:
        with conn.cursor() as cur:
            for name, value in settings.items():
                cur.execute(f"ALTER SYSTEM SET {name} = %s", (str(value),))
    finally:
        conn.close()
    try:
        reload_conf(pg)
        deadline = time.monotonic() + 10
        while True:
            shown = {n: query(pg, f"SHOW {n}")[0][0] for n in settings}
            if all(shown[n] == str(v) for n, v in settings.items()):
                break
            if time.monotonic() > deadline:
                errs = query(pg, "SELECT sourcefile, sourceline, name, error "
                                 "FROM pg_file_settings WHERE error IS NOT NULL")
                raise RuntimeError(f"settings not applied after reload: "
                                   f"want {settings}, server shows {shown}; "
                                   f"pg_file_settings errors: {errs}")
            time.sleep(0.2)
        yield
    finally:
        conn = admin(pg)
        try:
            with conn.cursor() as cur:
                for name, old in before.items():
                    if old is None:
                        cur.execute(f"ALTER SYSTEM RESET {name}")
                    else:
                        cur.execute(f"ALTER SYSTEM SET {name} = %s", (old,))
        finally:
            conn.close()
        # ALTER SYSTEM rewrote the file (its comments gone): put back the
        # exact bytes, then check the server shows what it showed before
        st = os.stat(auto_conf)
        auto_conf.write_bytes(auto_bytes)
        os.chown(auto_conf, st.st_uid, st.st_gid)
        reload_conf(pg)
        shown = {n: query(pg, f"SHOW {n}")[0][0] for n in settings}
        if shown != shown_before:
            raise RuntimeError(f"server settings not restored: were "
                               f"{shown_before}, now {shown}")


# ---------------------------------------------------------------------------
# pg_hba.conf

@contextmanager
def hba_prepended(pg, lines: Iterable[str]):
    """Put `lines` before every line of the server's pg_hba.conf, reload;
    restore the file byte for byte (and reload) on exit."""
    lines = list(lines)
    (hba,), = query(pg, "SHOW hba_file")
    path = Path(hba)
    original = path.read_bytes()
    st = os.stat(path)
    rules_sql = ("SELECT type, database, user_name, address, netmask, "
                 "auth_method, options, error FROM pg_hba_file_rules "
                 "ORDER BY line_number")
    rules_before = query(pg, rules_sql)
    new = ("# --- added by tests/e2e/topo (restored after the test) ---\n"
           + "".join(ln + "\n" for ln in lines)
           + "# ---\n").encode() + original
    try:
        path.write_bytes(new)   # in place: owner and mode kept
        reload_conf(pg)
        rules = query(pg, "SELECT line_number, type, database, user_name, "
                          "address, auth_method, error "
                          "FROM pg_hba_file_rules ORDER BY line_number")
        bad = [r for r in rules if r[6]]
        if bad:
            raise RuntimeError(f"pg_hba.conf rejected: {bad}")
        # our lines are the first rules the server now uses
        first = rules[:len(lines)]
        if len(first) < len(lines) or any(
                r[1] != ln.split()[0] for r, ln in zip(first, lines)):
            raise RuntimeError(f"pg_hba.conf not reloaded as written: {rules}")
        yield rules
    finally:
        path.write_bytes(original)
        os.chown(path, st.st_uid, st.st_gid)
        os.chmod(path, st.st_mode & 0o7777)
        reload_conf(pg)
        rules_after = query(pg, rules_sql)
        if rules_after != rules_before:
            raise RuntimeError(f"pg_hba.conf not restored: rules were "
                               f"{rules_before}, now {rules_after}")


# ---------------------------------------------------------------------------
# a password-protected role

@contextmanager
def password_role(pg, method: str = "scram-sha-256"):
    """A LOGIN role with a password stored for `method` (scram-sha-256 or
    md5: password_encryption), required over TCP from 127.0.0.1 by a
    pg_hba.conf line for that role only, put before the harness's trust
    lines (a `host` line: with and without TLS).  Yields (role, password,
    marker).  The password has the characters each way of passing it must
    quote or escape (@ : / ? # % ' space backslash) around a random marker.
    Afterwards: the file restored and reloaded, the databases the role owns
    dropped, the role dropped."""
    prefix = {"scram-sha-256": "SCRAM-SHA-256$", "md5": "md5"}[method]
    role = f"migshim_pw_{uuid.uuid4().hex[:10]}"
    marker = uuid.uuid4().hex
    password = f"P@ss:w/rd?#%' {marker} \\end"
    conn = admin(pg)
    try:
        with conn.cursor() as cur:
            cur.execute(f"SET password_encryption = '{method}'")
            cur.execute(f'CREATE ROLE "{role}" LOGIN PASSWORD %s',
                        (password,))
            cur.execute("SELECT starts_with(rolpassword, %s) "
                        "FROM pg_authid WHERE rolname = %s", (prefix, role))
            assert cur.fetchone()[0] is True
    finally:
        conn.close()
    try:
        with hba_prepended(pg, [f"host all {role} 127.0.0.1/32 {method}"]):
            yield role, password, marker
    finally:
        conn = admin(pg)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT datname FROM pg_database d JOIN pg_roles r"
                            " ON r.oid = d.datdba WHERE r.rolname = %s",
                            (role,))
                for (name,) in cur.fetchall():
                    cur.execute(f'DROP DATABASE IF EXISTS "{name}" '
                                f"WITH (FORCE)")
                cur.execute(f'DROP ROLE IF EXISTS "{role}"')
        finally:
            conn.close()


# ---------------------------------------------------------------------------
# TLS

@dataclass
class Cert:
    dir: Path
    cert: Path
    key: Path


def self_signed_cert(pg, directory: Path) -> Cert:
    """A 2048-bit RSA key and a self-signed certificate for 127.0.0.1 (CN
    and subjectAltName IP), both owned by the server's OS user, the key
    0600 (PostgreSQL refuses a key others can read)."""
    cert = directory / "server.crt"
    key = directory / "server.key"
    res = subprocess.run(
        [OPENSSL, "req", "-x509", "-newkey", "rsa:2048", "-nodes",
         "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, timeout=60)
    if res.returncode != 0:
        raise RuntimeError(f"openssl req failed (rc={res.returncode}):\n"
                           f"{res.stdout}")
    for p in (cert, key):
        chown_to_server(pg, p)
    os.chmod(key, 0o600)
    os.chmod(cert, 0o644)
    return Cert(directory, cert, key)


@contextmanager
def tls_on(pg, prefix: str = "migshim-ssl."):
    """The harness server with ssl = on and a fresh self-signed certificate
    (in a scratch dir the server can read), for the block's length; the
    settings restored and the files removed afterwards.  Yields the Cert."""
    d = scratch_dir(pg, prefix)
    try:
        cert = self_signed_cert(pg, d)
        with server_settings(pg, ssl_cert_file=str(cert.cert), ssl_key_file=str(cert.key),
                             ssl="on"):
            yield cert
    finally:
        shutil.rmtree(d, ignore_errors=True)


# ---------------------------------------------------------------------------
# PgBouncer

class PgBouncer:
    """A pgbouncer process in front of the harness server.

    pool_mode: "transaction" or "session".  Clients authenticate with
    auth_type = trust (the user name must be listed in the auth_file:
    `users`); pgbouncer reaches the server on 127.0.0.1:$PGPORT (trust
    there too)."""

    def __init__(self, pg, pool_mode: str = "transaction",
                 users: Iterable[str] = ("postgres",),
                 default_pool_size: int = 60, max_client_conn: int = 400,
                 aliases: Optional[Dict[str, str]] = None):
        self.pg = pg
        self.aliases = dict(aliases or {})   # alias -> the server's dbname
        self.pool_mode = pool_mode
        self.users = list(users)
        self.default_pool_size = default_pool_size
        self.max_client_conn = max_client_conn
        self.dir: Optional[Path] = None
        self.port = 0
        self.proc: Optional[subprocess.Popen] = None

    @property
    def logfile(self) -> Path:
        return self.dir / "pgbouncer.log"

    def _write_config(self) -> Path:
        ini = self.dir / "pgbouncer.ini"
        aliases = "".join(f"{a} = host=127.0.0.1 port={self.pg.port} dbname={d}\n"
                          for a, d in self.aliases.items())
        ini.write_text(f"""\
; written by tests/e2e/topo for one test
[databases]
{aliases}* = host=127.0.0.1 port={self.pg.port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
auth_type = trust
auth_file = {self.dir}/userlist.txt
pool_mode = {self.pool_mode}
default_pool_size = {self.default_pool_size}
max_client_conn = {self.max_client_conn}
max_db_connections = 0
ignore_startup_parameters = extra_float_digits,options
server_tls_sslmode = disable
logfile = {self.logfile}
pidfile = {self.dir}/pgbouncer.pid
log_connections = 1
log_disconnections = 1
""")
        (self.dir / "userlist.txt").write_text(
            "".join(f'"{u}" ""\n' for u in self.users))
        for p in (ini, self.dir / "userlist.txt"):
            chown_to_server(self.pg, p)
        return ini

    def start(self, timeout: float = 15.0) -> "PgBouncer":
        if not os.access(PGBOUNCER, os.X_OK):
            # fail, not skip: `make deps` installs it (Debian's pgbouncer)
            raise RuntimeError(f"pgbouncer not found ({PGBOUNCER}): run "
                               f"`make deps` (apt-get install pgbouncer)")
        self.dir = scratch_dir(self.pg, "migshim-bouncer.")
        last = ""
        for _attempt in range(5):
            self.port = free_port()
            ini = self._write_config()
            kw = {}
            if os.geteuid() == 0:
                u = server_os_user(self.pg)
                kw = dict(user=u.pw_uid, group=u.pw_gid, extra_groups=[])
            out = open(self.dir / "stdout", "ab")
            try:
                self.proc = subprocess.Popen(
                    [PGBOUNCER, str(ini)], cwd=str(self.dir),
                    stdin=subprocess.DEVNULL, stdout=out,
                    stderr=subprocess.STDOUT, start_new_session=True, **kw)
            finally:
                out.close()
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                if self._accepts():
                    return self
                time.sleep(0.05)
            last = self.log()[-2000:] + self._stdout()[-2000:]
            self._terminate()
            if "Address already in use" not in last:
                break
        raise RuntimeError(f"pgbouncer did not start:\n{last}")

    def _accepts(self) -> bool:
        import psycopg2
        try:
            c = psycopg2.connect(host="127.0.0.1", port=self.port,
                                 user=self.users[0], dbname="postgres",
                                 connect_timeout=2,
                                 application_name=SAMPLER_APP)
        except psycopg2.Error:
            return False
        c.close()
        return True

    def _stdout(self) -> str:
        try:
            return (self.dir / "stdout").read_text(errors="replace")
        except OSError:
            return ""

    def log(self) -> str:
        try:
            return self.logfile.read_text(errors="replace")
        except OSError:
            return ""

    def url(self, dbname: str, user: str = "postgres",
            driver: str = "postgresql+psycopg2") -> str:
        return (f"{driver}://{urllib.parse.quote(user, safe='')}@127.0.0.1:"
                f"{self.port}/{urllib.parse.quote(dbname, safe='')}")

    def logins(self, dbname: str) -> int:
        """Client logins pgbouncer logged for this database."""
        return sum(1 for ln in self.log().splitlines()
                   if "login attempt:" in ln and f"db={dbname} " in ln)

    def _terminate(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)   # immediate shutdown
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def stop(self) -> str:
        """Stop it; return its log; remove its directory."""
        self._terminate()
        text = self.log() if self.dir else ""
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
        return text

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


# ---------------------------------------------------------------------------
# what the server sees

@dataclass(frozen=True)
class Backend:
    pid: int
    user: str
    client_addr: Optional[str]      # None: Unix socket
    application_name: str
    ssl: Optional[bool]
    ssl_version: Optional[str]

    @property
    def is_lock(self) -> bool:
        return self.application_name.startswith("migshim lock")


class BackendSampler(threading.Thread):
    """Polls the server's client backends of one database every `interval`
    seconds (pg_stat_activity LEFT JOIN pg_stat_ssl); .seen holds each
    distinct backend (by pid and application_name) once, .samples counts
    the polls."""

    SQL = ("SELECT a.pid, coalesce(a.usename, ''), host(a.client_addr), "
           "coalesce(a.application_name, ''), s.ssl, s.version "
           "FROM pg_stat_activity a LEFT JOIN pg_stat_ssl s ON s.pid = a.pid "
           "WHERE a.datname = %s AND a.backend_type = 'client backend' "
           "AND a.pid <> pg_backend_pid() "
           "AND coalesce(a.application_name, '') <> %s")

    def __init__(self, pg, dbname: str, interval: float = 0.03):
        super().__init__(daemon=True)
        self.pg, self.dbname, self.interval = pg, dbname, interval
        self.seen: Dict[tuple, Backend] = {}
        self.samples = 0
        self.error: Optional[BaseException] = None
        self._stop_evt = threading.Event()

    def run(self):
        try:
            import psycopg2
            conn = psycopg2.connect(self.pg.dsn("postgres"),
                                    application_name=SAMPLER_APP)
            conn.autocommit = True
            try:
                with conn.cursor() as cur:
                    while not self._stop_evt.is_set():
                        cur.execute(self.SQL, (self.dbname, SAMPLER_APP))
                        for row in cur.fetchall():
                            b = Backend(*row)
                            self.seen.setdefault((b.pid, b.application_name), b)
                        self.samples += 1
                        self._stop_evt.wait(self.interval)
            finally:
                conn.close()
        except BaseException as e:   # reported by the test
            self.error = e

    def stop(self):
        self._stop_evt.set()
        self.join(10)

    def backends(self) -> List[Backend]:
        return list(self.seen.values())

    def lock_backends(self) -> List[Backend]:
        return [b for b in self.seen.values() if b.is_lock]

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()
