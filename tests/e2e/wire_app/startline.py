"""The start line both wire apps' workers meet just before their first
statement (WIRE_BARRIER_DIR, WIRE_BARRIER_N workers, WIRE_BARRIER_TIMEOUT
seconds at most): each drops a file there and waits until all have, so the
race is forced.  The apps poll `still_waiting` with their own sleep (time's
or asyncio's)."""

import os
import time


def arrive():
    """Mark this process arrived; what `still_waiting` needs, or None when
    there is no start line."""
    where = os.environ.get("WIRE_BARRIER_DIR")
    if not where:
        return None
    n = int(os.environ.get("WIRE_BARRIER_N", "1"))
    timeout = float(os.environ.get("WIRE_BARRIER_TIMEOUT", "60"))
    open(os.path.join(where, f"{os.getpid()}.arrived"), "w").close()
    return where, n, timeout, time.monotonic() + timeout


def still_waiting(line, say) -> bool:
    """True while some worker has not arrived and the time is not up (said
    once it is)."""
    if line is None:
        return False
    where, n, timeout, deadline = line
    if len(os.listdir(where)) >= n:
        return False
    if time.monotonic() > deadline:
        say(f"barrier: {len(os.listdir(where))} of {n} arrived in {timeout:g} s; going on")
        return False
    return True
