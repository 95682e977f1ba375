"""migshim: one process of a fleet migrates, the others wait (a preloaded library).

This package is the C library libmigshim.so (it gates the process's libpq,
asyncpg and pg8000 connections) and the C `migshim` command, both next to
this file, and this launcher only: the `migshim` console script execs the
bundled command with its arguments unchanged, so `migshim -- gunicorn
app:app`, `status`, `heads`, `timeline`, `--version` and `--lib-path` (the
path of the library here, for a Dockerfile's ENV LD_PRELOAD=...) are the C
command's own.
"""
import os
import sys

__version__ = "@VERSION@"

_HERE = os.path.dirname(os.path.abspath(__file__))
COMMAND = os.path.join(_HERE, "migshim")
LIBRARY = os.path.join(_HERE, "libmigshim.so")


def main():
    """Replace this Python process with the bundled command."""
    try:
        os.execv(COMMAND, ["migshim"] + sys.argv[1:])
    except OSError as e:
        sys.stderr.write("migshim: cannot run the bundled command %s: %s\n"
                         % (COMMAND, e.strerror))
        return 126
