"""migshim: one process of a fleet migrates, the others wait (libpq preload).

This package is the C library libmigshim.so, its opt-in wire variant
libmigshim-wire.so (which also gates asyncpg and pg8000), and the C `migshim`
command, all next to this file, and this launcher only: the `migshim` console
script execs the bundled command with its arguments unchanged, so `migshim --
gunicorn app:app`, `migshim --wire -- uvicorn app:app` (the wire variant
preloaded instead), `status`, `heads`, `timeline`, `--version` and
`--lib-path` (the path of the library here, for a Dockerfile's ENV
LD_PRELOAD=...; `--wire --lib-path`: the wire variant's) are the C command's
own.
"""
import os
import sys

__version__ = "@VERSION@"

_HERE = os.path.dirname(os.path.abspath(__file__))
COMMAND = os.path.join(_HERE, "migshim")
LIBRARY = os.path.join(_HERE, "libmigshim.so")
WIRE_LIBRARY = os.path.join(_HERE, "libmigshim-wire.so")


def main():
    """Replace this Python process with the bundled command."""
    try:
        os.execv(COMMAND, ["migshim"] + sys.argv[1:])
    except OSError as e:
        sys.stderr.write("migshim: cannot run the bundled command %s: %s\n"
                         % (COMMAND, e.strerror))
        return 126
