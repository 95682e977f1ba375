#!/usr/bin/env bash
# tests/musl/libconfig.sh DIR — a musl libconfig.so.9 (the soname, and the
# config_t layout, of the header `make musl` compiles against: Debian's
# libconfig 1.5), built with musl-gcc from Debian's libconfig source package
# (tests/musl/apt-src.sh) into DIR/lib (build-musl/libconfig by default), so
# a musl process with the shim preloaded can load it by dlopen when a
# configuration file is present.  Only the C library is built.  Cached: a
# second run with DIR/lib/libconfig.so.9 present costs nothing.
set -euo pipefail
dir=${1:-build-musl/libconfig}
mkdir -p "$dir"; dir=$(cd "$dir" && pwd)
cd "$(dirname "$0")/../.."
if [ -s "$dir/lib/libconfig.so.9" ]; then
  echo "musl libconfig: cached ($dir/lib/libconfig.so.9)"
  exit 0
fi
start=$(date +%s)
orig=$(tests/musl/apt-src.sh "$dir" libconfig) || exit 3
tree="$dir/src/tree"
rm -rf "$tree"; mkdir -p "$tree"
tar -C "$tree" --strip-components=1 -xf "$orig"
log="$dir/build.log"
(
  unset MAKELEVEL MAKEFLAGS MFLAGS
  cd "$tree"
  ./configure CC=musl-gcc CFLAGS='-O2' --prefix="$dir" --disable-cxx --disable-examples --disable-doc
  make -C lib -j2
  make -C lib install
) >"$log" 2>&1 || { tail -n 30 "$log" >&2; exit 1; }
rm -rf "$tree"
test -s "$dir/lib/libconfig.so.9"
echo "musl libconfig: built $dir/lib/libconfig.so.9 in $(( $(date +%s) - start )) s"
