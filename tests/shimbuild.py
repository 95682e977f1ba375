"""Where the tests find the built shim, and how they preload it.

Used by tests/conftest.py, tests/e2e/fleet.py and the tests that start
processes themselves; it needs nothing from pytest.

    build_dir()        $MIGSHIM_BUILD_DIR, else build/ of this checkout
                       (tests/run.sh sets it to $(B): build-san/ for
                       `make check SANITIZE=...`)
    lib_path()         $MIGSHIM_LIB, else <build_dir>/libmigshim.so
    cli_path()         <build_dir>/migshim
    preload(lib)       the LD_PRELOAD value that loads `lib`: for a
                       sanitized build (`make SANITIZE=address,undefined`)
                       the sanitizer runtimes it links come first, since an
                       uninstrumented program (python3) must get them
                       before anything else, or ASan refuses to start.

MIGSHIM_LIB and MIGSHIM_BUILD_DIR are read by the test process only: every
child environment the tests build drops all MIGSHIM_* variables (the shim
would reject them as unknown keys).
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
from pathlib import Path
from typing import List, Optional, Union

REPO_ROOT = Path(__file__).resolve().parent.parent

# DT_NEEDED names of the sanitizer runtimes gcc links into a shared object.
SANITIZER_RUNTIME_RE = re.compile(r"^lib(asan|ubsan|tsan|lsan|hwasan)\.so(\.\d+)*$")


def build_dir() -> Path:
    d = os.environ.get("MIGSHIM_BUILD_DIR")
    if d:
        p = Path(d)
        return (p if p.is_absolute() else REPO_ROOT / p).resolve()
    return REPO_ROOT / "build"


def lib_path() -> Path:
    override = os.environ.get("MIGSHIM_LIB")
    if override:
        return Path(override).resolve()
    return build_dir() / "libmigshim.so"


def cli_path() -> Path:
    return build_dir() / "migshim"


def _needed(lib: Path) -> List[str]:
    out = subprocess.run(["readelf", "-dW", str(lib)], capture_output=True,
                         text=True, check=True).stdout
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out)


def _locate(soname: str) -> str:
    """Path of a shared library by soname, as the dynamic linker finds it."""
    out = subprocess.run(["/sbin/ldconfig", "-p"], capture_output=True,
                         text=True).stdout
    for line in out.splitlines():
        parts = line.split()
        if parts and parts[0] == soname and "=>" in line:
            return parts[-1]
    gcc = subprocess.run(["gcc", f"-print-file-name={soname}"],
                         capture_output=True, text=True).stdout.strip()
    if gcc and os.path.isabs(gcc) and os.path.exists(gcc):
        return gcc
    raise FileNotFoundError(f"sanitizer runtime {soname} not found "
                            f"(ldconfig -p, gcc -print-file-name)")


@functools.lru_cache(maxsize=None)
def _runtimes(lib: str, mtime: float) -> tuple:
    del mtime  # part of the cache key only
    return tuple(_locate(n) for n in _needed(Path(lib))
                 if SANITIZER_RUNTIME_RE.match(n))


def sanitizer_runtimes(lib: Union[str, Path]) -> List[str]:
    """Paths of the sanitizer runtimes `lib` needs ([] for a normal build)."""
    lib = Path(lib)
    return list(_runtimes(str(lib), lib.stat().st_mtime))


def preload(lib: Optional[Union[str, Path]] = None) -> str:
    """LD_PRELOAD value for the shim: [runtimes...:]lib."""
    lib = Path(lib) if lib is not None else lib_path()
    return ":".join(sanitizer_runtimes(lib) + [str(lib)])


def sanitized(lib: Optional[Union[str, Path]] = None) -> bool:
    lib = Path(lib) if lib is not None else lib_path()
    return bool(sanitizer_runtimes(lib))


# --- what the packaging and command tests look at -----------------------------

def needed(path) -> list:
    """The DT_NEEDED entries of an ELF file (readelf)."""
    out = subprocess.run(["readelf", "-dW", str(path)], capture_output=True, text=True,
                         check=True).stdout
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out)


def soname(path) -> str:
    """The DT_SONAME of a shared library (readelf)."""
    out = subprocess.run(["readelf", "-dW", str(path)], capture_output=True, text=True,
                         check=True).stdout
    (name,) = re.findall(r"\(SONAME\)\s+Library soname: \[([^\]]+)\]", out)
    return name


# A python3 child (-c) that connects with asyncpg (it bypasses libpq, PG*
# from its environment) and prints the shim libraries mapped into it, as
# /proc/self/maps names them (symlinks resolved), one a line.
ASYNCPG_MAPS = """
import asyncio, asyncpg
async def main():
    c = await asyncpg.connect()
    assert await c.fetchval('select 1') == 1
    await c.close()
asyncio.run(main())
print('\\n'.join(sorted({l.split(None, 5)[5].strip() for l in open('/proc/self/maps') if 'libmigshim' in l})))
"""
