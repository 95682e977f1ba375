#!/usr/bin/env bash
# tests/musl/prepare.sh — what tests/musl/test_musl.py needs besides
# `make all musl`: a musl libpq from Debian's postgresql-15 source
# (tests/musl/libpq.sh; built once, cached in $MUSL_B/libpq), a musl
# libconfig.so.9 from Debian's libconfig source (tests/musl/libconfig.sh,
# cached in $MUSL_B/libconfig) and the musl
# fleet clients against it ($MUSL_B/tests/client and client-dlopen, from
# tests/musl/client.c).  Run by tests/run.sh (suite musl: make check,
# make check-musl) before it starts the server.
set -uo pipefail
cd "$(dirname "$0")/../.."
MUSL_B=${MUSL_B:-build-musl}
start=$(date +%s)
tests/musl/libpq.sh "$MUSL_B/libpq" || { echo "musl: no musl libpq" >&2; exit 1; }
tests/musl/libconfig.sh "$MUSL_B/libconfig" || { echo "musl: no musl libconfig" >&2; exit 1; }
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
echo "musl: libpq, libconfig and the clients ready in $(( $(date +%s) - start )) s"
