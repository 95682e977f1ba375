#!/usr/bin/env bash
# tests/musl/run.sh — make check-musl: the musl variant on real musl
# processes.  Builds (once, cached in $MUSL_B/libpq) a musl libpq from
# Debian's postgresql-15 source (tests/musl/libpq.sh), the musl fleet clients
# (tests/musl/client.c, linked and dlopen) against it, and runs tests/musl/test_musl.py against
# a throwaway PostgreSQL (tests/harness/with-pg.sh): the musl build checks,
# the libc mismatch refusal both ways, and an 8-process musl fleet with and
# without the shim.  Expects `make all musl` done (the Makefile's
# check-musl does it).  Closes with pytest's "N passed" line.
set -uo pipefail
cd "$(dirname "$0")/../.."
B=${B:-build}
MUSL_B=${MUSL_B:-build-musl}
start=$(date +%s)
tests/musl/libpq.sh "$MUSL_B/libpq" || { echo "check-musl: no musl libpq" >&2; exit 1; }
pq=$(cd "$MUSL_B/libpq" && pwd)
mkdir -p "$MUSL_B/tests"
cflags=(-std=c11 -O2 -Wall -Wextra -Werror -I"$pq/include")
if [ ! "$MUSL_B/tests/client" -nt tests/musl/client.c ] || [ ! "$MUSL_B/tests/client" -nt "$pq/lib/libpq.so.5" ]; then
  musl-gcc "${cflags[@]}" -o "$MUSL_B/tests/client" tests/musl/client.c \
      -L"$pq/lib" -lpq -Wl,-rpath,"$pq/lib" || exit 1
fi
if [ ! "$MUSL_B/tests/client-dlopen" -nt tests/musl/client.c ]; then
  musl-gcc "${cflags[@]}" -DCLIENT_DLOPEN -o "$MUSL_B/tests/client-dlopen" tests/musl/client.c || exit 1
fi
echo "check-musl: musl libpq and clients ready in $(( $(date +%s) - start )) s"
MIGSHIM_BUILD_DIR=$(cd "$B" && pwd) MUSL_B=$(cd "$MUSL_B" && pwd) \
  tests/harness/with-pg.sh /usr/bin/python3 -m pytest -q -p no:cacheprovider -rxXfE tests/musl
