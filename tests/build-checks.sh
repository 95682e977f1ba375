#!/usr/bin/env bash
# Build-level guarantees of the preload library, checked on the built file:
# clean under clang too, nothing but libc in DT_NEEDED, only the intercepted names
# exported, no call of a PQ* name from inside the shim (no object but
# interpose.o references one, and no relocation names one).  The
# intercepted names are libpq's, and the wire layer's libc and OpenSSL ones
# (issue 22), each defined by one object.
set -uo pipefail
cd "$(dirname "$0")/.."
B=${B:-build}
LIB=$B/libmigshim.so
out=$B/build-checks.out
: >"$out"
pass=0; fail=0
ok()  { echo "  ok   $1" | tee -a "$out"; pass=$((pass + 1)); }
bad() { echo "  FAIL $1" | tee -a "$out"; shift; [ $# -gt 0 ] && printf '       %s\n' "$@" | tee -a "$out"; fail=$((fail + 1)); }

if make -s B="$B/clang" CC=clang all >"$B/clang-build.log" 2>&1; then
  ok "clang -Wall -Wextra -Werror build"
else
  bad "clang -Wall -Wextra -Werror build" "$(tail -n 5 "$B/clang-build.log")"
fi

# Nothing but libc at load time (a drop-in copied into an image that has
# no libconfig, no libpq): libc, the libdl/libpthread stubs of older glibc,
# and a sanitized build's runtimes.
for f in "$LIB" "$B/migshim"; do
  needed=$(readelf -d "$f" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | tr '\n' ' ')
  others=$(tr ' ' '\n' <<<"$needed" | grep -vE '^(libc\.so\.6|libdl\.so\.2|libpthread\.so\.0|lib(a|ub|t|l)san\.so\.[0-9]+)?$' || true)
  if [ -z "$others" ]; then
    ok "${f#"$B"/}: DT_NEEDED is libc only (NEEDED: ${needed% })"
  else
    bad "${f#"$B"/}: DT_NEEDED is libc only" "NEEDED: $needed"
  fi
done

# The expected exports: $B/exports.list, which make generates from
# PQ_WRAPPED_LIST (include/resolve.h), LIBC_WRAPPED_LIST (include/sysapi.h)
# and SSL_WRAPPED_LIST (include/sslapi.h) and links the version script from.
exports_of() { nm -D --defined-only "$1" | awk '{print $3}' | sort | tr '\n' ' ' | sed 's/ $//'; }
if make -s B="$B" "$B/exports.list" >/dev/null 2>&1 && [ -s "$B/exports.list" ]; then
  want=$(sort "$B/exports.list" | tr '\n' ' ' | sed 's/ $//')
  exported=$(exports_of "$LIB")
  if [ "$exported" = "$want" ]; then
    ok "libmigshim.so exports exactly the intercepted names (libpq, libc, OpenSSL) and dlsym ($(wc -w <<<"$exported") symbols)"
  else
    bad "libmigshim.so exports exactly the intercepted names (libpq, libc, OpenSSL) and dlsym" \
        "got:  $exported" "want: $want"
  fi
  # The libc and OpenSSL names: the list's names that are neither PQ* nor dlsym.
  want_libc=$(grep -vE '^(PQ|dlsym$)' "$B/exports.list" | sort | tr '\n' ' ' | sed 's/ $//')
  # ... and every PQ* function interpose.o defines is on the list: a
  # wrapper left off it would silently not be exported.
  defined=$(nm -g --defined-only "$B/obj/interpose.o" | awk '$3 ~ /^PQ/ {print $3}' | sort | tr '\n' ' ' | sed 's/ $//')
  want_pq=$(grep '^PQ' "$B/exports.list" | sort | tr '\n' ' ' | sed 's/ $//')
  if [ "$defined" = "$want_pq" ]; then
    ok "interpose.o defines exactly the listed PQ* wrappers ($(wc -w <<<"$defined"))"
  else
    bad "interpose.o defines exactly the listed PQ* wrappers" "defined: $defined" "listed:  $want_pq"
  fi
  # ... and interpose_libc.o defines exactly the listed libc wrappers
  # (LIBC_WRAPPED_LIST, include/sysapi.h), interpose_ssl.o exactly the
  # listed OpenSSL ones (SSL_WRAPPED_LIST, include/sslapi.h), no other
  # object any of them.
  want_c=$(tr ' ' '\n' <<<"$want_libc" | grep -v '^SSL_' | tr '\n' ' ' | sed 's/ $//')
  want_ssl=$(tr ' ' '\n' <<<"$want_libc" | grep '^SSL_' | tr '\n' ' ' | sed 's/ $//')
  defined=$(nm -g --defined-only "$B/obj/interpose_libc.o" | awk '{print $3}' | sort | tr '\n' ' ' | sed 's/ $//')
  defined_ssl=$(nm -g --defined-only "$B/obj/interpose_ssl.o" | awk '{print $3}' | sort | tr '\n' ' ' | sed 's/ $//')
  others=""
  for o in "$B"/obj/*.o; do
    case "$(basename "$o")" in interpose_libc.o|interpose_ssl.o) continue ;; esac
    d=$(nm -g --defined-only "$o" | awk '{print $3}' | grep -xF -f <(tr ' ' '\n' <<<"$want_libc") | tr '\n' ' ')
    [ -n "$d" ] && others="$others $(basename "$o"): $d"
  done
  if [ -n "$want_c" ] && [ -n "$want_ssl" ] && [ "$defined" = "$want_c" ] && \
     [ "$defined_ssl" = "$want_ssl" ] && [ -z "$others" ]; then
    ok "interpose_libc.o and interpose_ssl.o alone define exactly the listed libc and OpenSSL wrappers ($(wc -w <<<"$defined") + $(wc -w <<<"$defined_ssl"))"
  else
    bad "interpose_libc.o and interpose_ssl.o alone define exactly the listed libc and OpenSSL wrappers" \
        "defined: $defined | $defined_ssl" "listed:  $want_c | $want_ssl" "elsewhere:${others:- none}"
  fi
else
  bad "exports exactly the intercepted names and dlsym" "make $B/exports.list failed"
fi

# No module but interpose.o calls a PQ* name directly: under -Bsymbolic
# such a call would bind to the shim's own wrapper, with no relocation
# and no link error (the Makefile checks the same before each link).
refs=""; nobj=0
for o in "$B"/obj/*.o; do
  [ "$(basename "$o")" = interpose.o ] && continue
  nobj=$((nobj + 1))
  r=$(nm -u "$o" | awk '$NF ~ /^PQ/ { print $NF }' | tr '\n' ' ')
  [ -n "$r" ] && refs="$refs $(basename "$o"): $r"
done
if [ "$nobj" -gt 0 ] && [ -z "$refs" ]; then
  ok "no PQ* reference in any object but interpose.o ($nobj objects, nm -u)"
else
  bad "no PQ* reference in any object but interpose.o" "${refs:-no objects in $B/obj}"
fi

relocs=$(readelf -rW "$LIB" | grep -E ' PQ[A-Za-z]+' || true)
if [ -z "$relocs" ]; then
  ok "libmigshim.so: no relocation against a PQ* name (the shim never calls libpq by name)"
else
  bad "libmigshim.so: no relocation against a PQ* name" "$relocs"
fi

echo "build-checks: $pass passed, $fail failed" | tee -a "$out"
[ "$fail" = 0 ]
