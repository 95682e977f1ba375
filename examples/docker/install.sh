#!/bin/sh
# Build and install migshim from a source tree, then check the result.
#
#   examples/docker/install.sh SRCDIR PREFIX [DESTDIR]
#
# The Dockerfile next to this script runs it in its build stage
# (`RUN /src/migshim/examples/docker/install.sh /src/migshim /usr/local /staging`);
# examples/docker/check.sh runs the very same script on this machine, with
# SRCDIR and DESTDIR moved under a temp directory.
#
#   SRCDIR   a migshim checkout (Makefile, src/, include/)
#   PREFIX   where the files live at run time: PREFIX/lib/libmigshim.so and
#            PREFIX/bin/migshim.  The `migshim` command has PREFIX/lib
#            compiled in (it finds the library there), so PREFIX must be the
#            run-time path even when staging with DESTDIR.
#   DESTDIR  staging root (default: none, i.e. install for real); the files
#            land in DESTDIR/PREFIX/...
#
# Build dependencies (Debian/Ubuntu): gcc libc6-dev make libpq-dev libconfig-dev
# (headers only: neither file links libpq or libconfig).
# Run-time dependencies: libc.  libconfig9 only to read a configuration
# file; `migshim status` loads the system's libpq5 or the app's wheel's copy.
# Environment: MAKE (default make), JOBS (parallel jobs, default: nproc).
set -eu

if [ $# -lt 2 ] || [ $# -gt 3 ]; then
    echo "usage: $0 SRCDIR PREFIX [DESTDIR]" >&2
    exit 64
fi
src=$1
prefix=$2
destdir=${3:-}
make=${MAKE:-make}
jobs=${JOBS:-$(nproc 2>/dev/null || echo 1)}

case "$prefix" in
    /*) ;;
    *) echo "install.sh: PREFIX must be an absolute path, got '$prefix'" >&2; exit 64 ;;
esac
if [ ! -f "$src/Makefile" ] || [ ! -d "$src/src" ]; then
    echo "install.sh: $src is not a migshim source tree (no Makefile or src/)" >&2
    exit 66
fi

say() { printf 'install.sh: %s\n' "$*"; }

say "building in $src"
"$make" -C "$src" -j"$jobs" all
say "installing into ${destdir:-/}, PREFIX=$prefix"
"$make" -C "$src" install PREFIX="$prefix" DESTDIR="$destdir"

lib=$destdir$prefix/lib/libmigshim.so
cli=$destdir$prefix/bin/migshim

# The checks an image build should fail on.
[ -f "$lib" ] || { echo "install.sh: $lib missing after make install" >&2; exit 1; }
[ -x "$cli" ] || { echo "install.sh: $cli missing after make install" >&2; exit 1; }
# Nothing but libc at load time: the app's own libpq is used at run time,
# libconfig is loaded only when a configuration file is present.
if command -v readelf >/dev/null 2>&1; then
    if readelf -d "$lib" | grep 'NEEDED' | grep -qvE '\[(libc\.so\.6|libdl\.so\.2|libpthread\.so\.0)\]'; then
        echo "install.sh: $lib needs more than libc at load time:" >&2
        readelf -d "$lib" | grep NEEDED >&2
        exit 1
    fi
fi
"$cli" --version
say "ok: $prefix/lib/libmigshim.so  (set LD_PRELOAD=$prefix/lib/libmigshim.so)"
say "ok: $prefix/bin/migshim"
