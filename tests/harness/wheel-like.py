#!/usr/bin/python3
"""Lay out psycopg2 the way the psycopg2-binary wheel installs it.

    tests/harness/wheel-like.py SITE_DIR

No PyPI here: the psycopg2 package Debian ships (python3-psycopg2) and the
system libpq are copied into SITE_DIR and renamed the way auditwheel does
when it builds a manylinux wheel:

    SITE_DIR/psycopg2/...                        the package (Python files)
    SITE_DIR/psycopg2/_psycopg.cpython-*.so      DT_NEEDED libpq-<hash>.so.<v>,
                                                 RUNPATH $ORIGIN/../psycopg2_binary.libs
    SITE_DIR/psycopg2_binary.libs/libpq-<hash>.so.<v>
                                                 the system libpq, DT_SONAME renamed

(patchelf --replace-needed / --set-rpath on the extension, --set-soname on
the copy).  With SITE_DIR on PYTHONPATH, `import psycopg2` loads that copy
and never libpq.so.5.  Prints the copy's path.
"""
import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

HASH = "5a1b2c3d"   # auditwheel puts a content hash here


def system_libpq() -> str:
    out = subprocess.run(["/sbin/ldconfig", "-p"], capture_output=True, text=True,
                         check=True).stdout
    for line in out.splitlines():
        parts = line.split()
        if parts and parts[0] == "libpq.so.5":
            return os.path.realpath(parts[-1])
    sys.exit("wheel-like.py: no libpq.so.5 on this system (ldconfig -p)")


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} SITE_DIR")
    site = Path(sys.argv[1]).resolve()
    import psycopg2  # Debian's, from the python running this script
    src = Path(psycopg2.__file__).parent
    dst = site / "psycopg2"
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))

    lib = system_libpq()                        # .../libpq.so.5.15
    version = os.path.basename(lib).split(".so", 1)[1]   # ".5.15"
    libs = site / "psycopg2_binary.libs"
    libs.mkdir(parents=True, exist_ok=True)
    copy = libs / f"libpq-{HASH}.so{version}"
    shutil.copyfile(lib, copy)
    subprocess.run(["patchelf", "--set-soname", copy.name, str(copy)], check=True)

    exts = glob.glob(str(dst / "_psycopg*.so"))
    if len(exts) != 1:
        sys.exit(f"wheel-like.py: want one _psycopg*.so in {dst}, found {exts}")
    # one change per call: patchelf 0.14 mixes up several in one
    subprocess.run(["patchelf", "--replace-needed", "libpq.so.5", copy.name, exts[0]],
                   check=True)
    subprocess.run(["patchelf", "--set-rpath", "$ORIGIN/../psycopg2_binary.libs", exts[0]],
                   check=True)
    needed = subprocess.run(["readelf", "-dW", exts[0]], capture_output=True, text=True,
                            check=True).stdout
    if "libpq.so.5]" in needed or copy.name not in needed:
        sys.exit(f"wheel-like.py: {exts[0]} still needs the system libpq:\n{needed}")
    print(copy)


if __name__ == "__main__":
    main()
