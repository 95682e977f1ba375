#!/usr/bin/env bash
# tests/musl/libpq.sh DIR — a musl libpq, built with musl-gcc from Debian's
# postgresql-15 source package (tests/musl/apt-src.sh), into DIR
# (build-musl/libpq by default):
#   DIR/lib/libpq.so.5   DIR/include/libpq-fe.h, postgres_ext.h, pg_config_ext.h
# Debian ships no musl libpq; its source package is the one it builds its own
# libpq5 from.  The source comes through a private apt sources list and state
# (DIR/../apt), never the machine's own apt state.  Only
# libpq is built (no readline, zlib, ICU, OpenSSL, GSSAPI, LDAP: a Unix-socket
# and plain-TCP libpq is all the test needs).  Cached: a second run with
# DIR/lib/libpq.so.5 present costs nothing; delete DIR to rebuild.
set -euo pipefail
dir=${1:-build-musl/libpq}
mkdir -p "$dir"; dir=$(cd "$dir" && pwd)
cd "$(dirname "$0")/../.."
if [ -s "$dir/lib/libpq.so.5" ] && [ -s "$dir/include/libpq-fe.h" ]; then
  echo "musl libpq: cached ($dir/lib/libpq.so.5)"
  exit 0
fi
command -v musl-gcc >/dev/null || { echo "musl libpq: no musl-gcc (make musl-deps installs musl-tools)" >&2; exit 3; }
start=$(date +%s)
orig=$(tests/musl/apt-src.sh "$dir" postgresql-15) || exit 3
ver=$(basename "$orig" | sed -E 's/^postgresql-15_([^.]+\.[^.]+)\.orig.*/\1/')
tree="$dir/src/postgresql-$ver"
rm -rf "$tree"
tar -C "$dir/src" -xf "$orig"
log="$dir/build.log"
echo "musl libpq: PostgreSQL $ver, configure and build (log: $log)"
(
  # PostgreSQL generates its headers (utils/errcodes.h, ...) only in a
  # top-level make: not under the make that runs this script
  unset MAKELEVEL MAKEFLAGS MFLAGS
  cd "$tree"
  ./configure CC=musl-gcc CFLAGS='-O2' --prefix="$dir" --without-readline --without-zlib --without-icu \
      --without-openssl --without-gssapi --without-ldap --without-lz4 --without-zstd --without-llvm \
      --without-libxml --without-libxslt --without-systemd --without-selinux --without-pam \
      --without-perl --without-python --without-tcl --disable-nls
  make -C src/backend generated-headers
  make -C src/interfaces/libpq -j2
  make -C src/interfaces/libpq install
  install -m 644 src/include/postgres_ext.h src/include/pg_config_ext.h "$dir/include/"
) >"$log" 2>&1 || { tail -n 30 "$log" >&2; exit 1; }
rm -rf "$tree"   # the build tree is not needed again (the orig tarball stays)
test -s "$dir/lib/libpq.so.5"
echo "musl libpq: built $dir/lib/libpq.so.5 in $(( $(date +%s) - start )) s"
