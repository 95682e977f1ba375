"""Helpers shared by the transparency workloads.

Every workload prints exactly one JSON document on stdout: everything it
observed, normalised so that two runs against two fresh databases give the
same bytes (no pids, OIDs, timestamps, database names). Diagnostics go to
stderr, starting with one "migshim-workload:" line that the tests use to
check the pid of migshim's log lines and whether the shim is mapped.
"""

import base64
import datetime
import decimal
import ipaddress
import json
import os
import sys
import uuid


def dsn():
    """libpq conninfo of the test database (falls back to PG* variables)."""
    return os.environ.get("WORKLOAD_DSN", "")


def dbname():
    return os.environ.get("PGDATABASE", "")


def _shim_mapped():
    try:
        with open("/proc/self/maps") as f:
            return any("migshim" in line for line in f)
    except OSError:
        return False


def announce(name):
    """First stderr line: pid and whether libmigshim is in our address space."""
    sys.stderr.write("migshim-workload: name=%s pid=%d shim_mapped=%d\n"
                     % (name, os.getpid(), 1 if _shim_mapped() else 0))
    sys.stderr.flush()


def tv(v):
    """Type-tagged, JSON-safe, deterministic rendering of a value."""
    if v is None or isinstance(v, (bool, str)):
        return v
    if isinstance(v, int):
        return v
    if isinstance(v, float):
        return ["float", repr(v)]
    if isinstance(v, decimal.Decimal):
        return ["Decimal", str(v)]
    if isinstance(v, (bytes, bytearray, memoryview)):
        return ["bytes", bytes(v).hex()]
    if isinstance(v, datetime.datetime):
        return ["datetime", v.isoformat()]
    if isinstance(v, (datetime.date, datetime.time, datetime.timedelta)):
        return [type(v).__name__, str(v)]
    if isinstance(v, uuid.UUID):
        return ["UUID", str(v)]
    if isinstance(v, (ipaddress.IPv4Address, ipaddress.IPv6Address,
                      ipaddress.IPv4Interface, ipaddress.IPv6Interface,
                      ipaddress.IPv4Network, ipaddress.IPv6Network)):
        return [type(v).__name__, str(v)]
    if isinstance(v, dict):
        return {"dict": {str(k): tv(x) for k, x in sorted(v.items(),
                                                          key=lambda i: str(i[0]))}}
    if isinstance(v, (list, tuple)):
        return [type(v).__name__, [tv(x) for x in v]]
    return [type(v).__name__, str(v)]


def _is_row(r):
    return (not isinstance(r, (str, bytes, bytearray, memoryview, dict))
            and hasattr(r, "__iter__") and hasattr(r, "__len__"))


def rows(seq):
    """Rows (tuples, lists, SQLAlchemy Row...) rendered as tagged tuples."""
    return [tv(tuple(r)) if _is_row(r) else tv(r) for r in seq]


def scrub(text, extra=()):
    """Replace run-specific strings (database name...) in free text."""
    if text is None:
        return None
    out = text
    name = dbname()
    if name:
        out = out.replace(name, "<db>")
    for s in extra:
        if s:
            out = out.replace(s, "<x>")
    return out


DIAG_FIELDS = (
    "column_name", "constraint_name", "context", "datatype_name",
    "internal_position", "internal_query", "message_detail", "message_hint",
    "message_primary", "schema_name", "severity", "severity_nonlocalized",
    "source_file", "source_function", "source_line", "sqlstate",
    "statement_position", "table_name",
)


def diag(d):
    return {f: scrub(getattr(d, f, None)) for f in DIAG_FIELDS}


def wait_until_active(connect, backend_pid, timeout=30.0):
    """Block until backend_pid is running a pg_sleep() query (so that a
    cancel request cannot arrive before the query it should cancel).
    `connect` opens a new connection of the workload's own driver."""
    import time
    deadline = time.monotonic() + timeout
    c = connect()
    try:
        while time.monotonic() < deadline:
            cur = c.cursor()
            cur.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s "
                        "AND state = 'active' AND query LIKE %s",
                        (backend_pid, "%pg_sleep%"))
            n = cur.fetchone()[0]
            c.rollback()
            if n:
                return True
            time.sleep(0.02)
        return False
    finally:
        c.close()


def emit(result):
    text = json.dumps(result, sort_keys=True, indent=1, ensure_ascii=True)
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


class Recorder:
    """Collects named steps; an unexpected exception becomes data too, so a
    difference shows up in the JSON diff instead of a bare traceback."""

    def __init__(self):
        self.result = {}
        self.on_error = None  # e.g. conn.rollback, to isolate the next step

    def step(self, name):
        rec = self

        class _Step:
            def __enter__(self):
                return self

            def __exit__(self, et, ev, tb):
                if ev is not None and isinstance(ev, Exception):
                    rec.result.setdefault("_unexpected", {})[name] = \
                        "%s: %s" % (et.__name__, scrub(str(ev)))
                    if rec.on_error is not None:
                        try:
                            rec.on_error()
                        except Exception:
                            pass
                    return True
                return False
        return _Step()

    def __setitem__(self, k, v):
        self.result[k] = v

    def __getitem__(self, k):
        return self.result[k]
