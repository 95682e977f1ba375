#!/usr/bin/env bash
# tests/musl/check-build.sh — the musl library and command ($MUSL_B, built by
# `make musl`) load on musl: nothing but musl's libc in DT_NEEDED, every
# undefined symbol (a strong one: the weak _ITM_* of crtbegin.o may stay
# unresolved) defined by musl's libc.so, no glibc symbol version and no
# fortify (__*_chk) reference, and the same exports as the glibc build.
# Prints ok/FAIL lines; exits 1 on any failure.  Run by tests/musl/test_musl.py.
set -uo pipefail
cd "$(dirname "$0")/../.."
B=${B:-build}
MUSL_B=${MUSL_B:-build-musl}
# musl's libc is its dynamic loader: the musl command's interpreter
interp=$(readelf -l "$MUSL_B/migshim" 2>/dev/null | sed -n 's/.*interpreter: \(.*\)\]/\1/p')
MUSL_LIBC=${MUSL_LIBC:-$(readlink -f "${interp:-/lib/ld-musl-x86_64.so.1}")}
fail=0
ok()  { echo "  ok   $1"; }
bad() { echo "  FAIL $1"; shift; [ $# -gt 0 ] && printf '       %s\n' "$@"; fail=1; }

if [ ! -s "$MUSL_LIBC" ]; then
  bad "musl's libc found" "the musl command's interpreter: ${interp:-none} ($MUSL_LIBC)"
  exit 1
fi
defs=$(nm -D --defined-only "$MUSL_LIBC" | awk '{print $NF}' | sort -u)
for f in "$MUSL_B/libmigshim.so" "$MUSL_B/migshim"; do
  name=$(basename "$f")
  if [ ! -s "$f" ]; then bad "$name built" "no $f (make musl)"; continue; fi
  needed=$(readelf -d "$f" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | tr '\n' ' ')
  others=$(tr ' ' '\n' <<<"$needed" | grep -vE '^(libc\.so|libc\.musl-[a-z0-9_]+\.so\.1)?$' || true)
  if [ -z "$others" ] && [ -n "$needed" ]; then
    ok "$name (musl): DT_NEEDED is musl's libc only (NEEDED: ${needed% })"
  else
    bad "$name (musl): DT_NEEDED is musl's libc only" "NEEDED: $needed"
  fi
  undef=$(nm -D --undefined-only "$f" | awk '$1 == "U" {print $NF}' | sort -u)
  missing=$(comm -23 <(printf '%s\n' "$undef") <(printf '%s\n' "$defs") | tr '\n' ' ')
  if [ -n "$undef" ] && [ -z "${missing// /}" ]; then
    ok "$name (musl): all $(wc -l <<<"$undef") undefined symbols are musl libc's"
  else
    bad "$name (musl): all undefined symbols are musl libc's" "not in $MUSL_LIBC: $missing"
  fi
  glibcish=$(nm -D "$f" | grep -E '@GLIBC_|__[a-z0-9_]+_chk\b' || true)
  if [ -z "$glibcish" ]; then
    ok "$name (musl): no glibc symbol version, no fortify (__*_chk)"
  else
    bad "$name (musl): no glibc symbol version, no fortify (__*_chk)" \
        "$(wc -l <<<"$glibcish") such symbols, e.g. $(awk '{print $NF}' <<<"$glibcish" | head -n 5 | tr '\n' ' ')"
  fi
done
case $interp in
  */ld-musl-*) ok "migshim (musl): program interpreter $interp" ;;
  *) bad "migshim (musl): program interpreter is musl's" "PT_INTERP: ${interp:-none}" ;;
esac
if [ -s "$B/exports.list" ]; then
  want=$(sort "$B/exports.list" | tr '\n' ' ')
  got=$(nm -D --defined-only "$MUSL_B/libmigshim.so" | awk '{print $3}' | sort | tr '\n' ' ')
  if [ "$got" = "$want" ]; then
    ok "libmigshim.so (musl): exports exactly the glibc build's names ($(wc -w <<<"$got") symbols)"
  else
    bad "libmigshim.so (musl): exports exactly the glibc build's names" "got:  $got" "want: $want"
  fi
else
  bad "libmigshim.so (musl): exports exactly the glibc build's names" "no $B/exports.list (make)"
fi
exit $fail
