#!/usr/bin/env bash
# tests/today/build.sh [DIR] — the second test stack, "today's releases"
# (issue 21), into DIR (default build/today):
#
#   DIR/venv-dj5, DIR/venv-dj6   Python 3.13 venvs (pyenv's, without Debian's
#                 site-packages) with SQLAlchemy 2, Alembic, psycopg 3 (its
#                 pure-Python/ctypes implementation), psycopg2 (compiled here),
#                 gunicorn, Flask, Flask-SQLAlchemy, Flask-Migrate, and
#                 Django 5.2 LTS (venv-dj5) or Django 6.x (venv-dj6)
#   DIR/venv-dj5-pg2   venv-dj5 without psycopg 3: Django prefers psycopg 3
#                 whenever it imports, so a psycopg2-only Django needs a venv
#                 where it does not
#   DIR/versions.out   the versions the venvs import (printed by every run)
#
# Everything is pinned in tests/today/versions.txt.  No PyPI: the packages
# are Debian's sid/experimental .debs, fetched through a private sources list
# and private apt state (tests/today/apt.sh), cached in DIR/debs; their
# pure-Python files are unpacked into the venvs; compiled parts are dropped
# (markupsafe then uses its pure-Python fallback).  psycopg2 has no
# pure-Python variant: its source (Debian's trixie tarball, the one that
# was served; 2.9.10 is the first with Python 3.13) is compiled with gcc
# against pyenv's Python headers and libpq-dev, without setuptools (pyenv's
# 3.13 has none, and Debian's is patched for Debian's layout).
#
# Idempotent: a stamp (the hash of versions.txt and of this script) skips
# everything when nothing changed.  Exit status 77 with one line "today:
# skipped: ..." when a piece is missing (no pyenv, no Python 3.13, no mirror).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
D=${1:-$ROOT/build/today}
mkdir -p "$D"; D=$(cd "$D" && pwd)
VERS=$HERE/versions.txt
APT="$HERE/apt.sh $D/apt"

pin() { sed -n "s/^$1=//p" "$VERS" | head -n 1; }
skip() { echo "today: skipped: $*"; exit 77; }

# --- Python ------------------------------------------------------------------
pyver=$(pin python)
if [ -n "${TODAY_PYTHON:-}" ]; then
  PYBASE=$TODAY_PYTHON
else
  command -v pyenv >/dev/null 2>&1 || [ -x "${PYENV_ROOT:-$HOME/.pyenv}/bin/pyenv" ] ||
    skip "no pyenv (command pyenv, \$PYENV_ROOT or ~/.pyenv) to take Python $pyver from; set TODAY_PYTHON=/path/to/python$pyver"
  proot=$( (pyenv root || "${PYENV_ROOT:-$HOME/.pyenv}/bin/pyenv" root) 2>/dev/null)
  PYBASE=$(ls -d "$proot"/versions/"$pyver".* 2>/dev/null | sort -V | tail -n 1) || true
  [ -n "$PYBASE" ] || skip "no Python $pyver under pyenv's root $proot/versions (pyenv install $pyver, or set TODAY_PYTHON)"
  PYBASE=$PYBASE/bin/python$pyver
fi
[ -x "$PYBASE" ] || skip "no Python at $PYBASE"
command -v pg_config >/dev/null || skip "no pg_config (libpq-dev) to build psycopg2 against"

stamp=$(cat "$VERS" "$0" "$HERE/apt.sh" | sha256sum | cut -c1-16)-$("$PYBASE" -c 'import sys; print(sys.version.split()[0])')
if [ -f "$D/stamp" ] && [ "$(cat "$D/stamp")" = "$stamp" ] &&
   [ -x "$D/venv-dj5/bin/python" ] && [ -x "$D/venv-dj6/bin/python" ] &&
   [ -x "$D/venv-dj5-pg2/bin/python" ] && [ -s "$D/versions.out" ]; then
  echo "today: stack up to date in $D"
  exit 0
fi
rm -f "$D/stamp"

# --- downloads (cached in $D/debs and $D/src) ----------------------------------
mkdir -p "$D/debs" "$D/src"
debfile() { # PKG VERSION -> the cached .deb's path, or nothing
  local v=${2/:/%3a}   # apt-get download writes an epoch as %3a
  ls "$D/debs/$1_${v}_"*.deb 2>/dev/null | head -n 1
}
updated=
fetch_deb() { # PKG VERSION
  [ -n "$(debfile "$1" "$2")" ] && return 0
  if [ -z "$updated" ] && { [ ! -d "$D/apt/lists" ] || [ -z "$(ls "$D/apt/lists" | grep -v partial)" ]; }; then
    $APT update -qq >/dev/null; updated=1
  fi
  if ! (cd "$D/debs" && $APT download "$1=$2" >/dev/null 2>&1); then
    [ -n "$updated" ] || { $APT update -qq >/dev/null; updated=1; }
    (cd "$D/debs" && $APT download "$1=$2" >/dev/null) ||
      { echo "today: $1=$2 is not in sid or experimental any more: update tests/today/versions.txt" >&2; exit 1; }
  fi
}
pkgs=$(grep -E '^python3-[^=]+=' "$VERS")
for pv in $pkgs; do fetch_deb "${pv%%=*}" "${pv#*=}"; done
fetch_deb python3-django "$(pin django5)"
fetch_deb python3-django "$(pin django6)"
psrc=$(pin psycopg2-source); pup=${psrc%-*}
if [ ! -s "$D/src/psycopg2_$pup.orig.tar.gz" ]; then
  [ -n "$updated" ] || { $APT update -qq >/dev/null; updated=1; }
  (cd "$D/src" && $APT source --download-only --tar-only "psycopg2=$psrc" >/dev/null)
fi

# --- psycopg2, compiled against this Python and libpq --------------------------
pyinc=$("$PYBASE" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
soext=$("$PYBASE" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
pgv=$(pg_config --version | awk '{print $2}')
pgnum=$(( ${pgv%%.*} * 10000 + $(cut -d. -f2 <<<"$pgv" | tr -dc 0-9) ))
P2=$D/psycopg2-$pup-$(basename "$PYBASE")
if [ ! -f "$P2/psycopg2/_psycopg$soext" ]; then
  rm -rf "$D/src/psycopg2-$pup" "$P2"
  tar -xzf "$D/src/psycopg2_$pup.orig.tar.gz" -C "$D/src"
  mkdir -p "$P2"
  cp -r "$D/src/psycopg2-$pup/lib" "$P2/psycopg2"
  (cd "$D/src/psycopg2-$pup" &&
   gcc -O2 -fPIC -shared -fno-strict-aliasing -w \
     -DPSYCOPG_VERSION="$pup (dt dec pq3 ext lo64)" -DPG_VERSION_NUM="$pgnum" -DHAVE_LO64=1 \
     -I. -I"$pyinc" -I"$(pg_config --includedir)" -I"$(pg_config --includedir-server)" \
     psycopg/psycopgmodule.c psycopg/green.c psycopg/pqpath.c psycopg/utils.c psycopg/bytes_format.c \
     psycopg/libpq_support.c psycopg/win32_support.c psycopg/solaris_support.c psycopg/aix_support.c \
     psycopg/connection_int.c psycopg/connection_type.c psycopg/cursor_int.c psycopg/cursor_type.c \
     psycopg/column_type.c psycopg/replication_connection_type.c psycopg/replication_cursor_type.c \
     psycopg/replication_message_type.c psycopg/diagnostics_type.c psycopg/error_type.c \
     psycopg/conninfo_type.c psycopg/lobject_int.c psycopg/lobject_type.c psycopg/notify_type.c \
     psycopg/xid_type.c psycopg/adapter_asis.c psycopg/adapter_binary.c psycopg/adapter_datetime.c \
     psycopg/adapter_list.c psycopg/adapter_pboolean.c psycopg/adapter_pdecimal.c psycopg/adapter_pint.c \
     psycopg/adapter_pfloat.c psycopg/adapter_qstring.c psycopg/microprotocols.c \
     psycopg/microprotocols_proto.c psycopg/typecast.c \
     -L"$(pg_config --libdir)" -lpq -o "$P2/psycopg2/_psycopg$soext.tmp")
  mv "$P2/psycopg2/_psycopg$soext.tmp" "$P2/psycopg2/_psycopg$soext"
fi

# --- the venvs ----------------------------------------------------------------
unpack() { # DEB SITE
  local x; x=$(mktemp -d "$D/x.XXXXXX")
  dpkg-deb -x "$1" "$x"
  if [ -d "$x/usr/lib/python3/dist-packages" ]; then
    cp -a "$x/usr/lib/python3/dist-packages/." "$2/"
  fi
  rm -rf "$x"
}
make_venv() { # NAME DJANGO_VERSION [PACKAGE-TO-LEAVE-OUT]
  local v=$D/$1 tmp=$D/$1.tmp
  rm -rf "$tmp"
  "$PYBASE" -m venv --without-pip "$tmp"   # include-system-site-packages = false
  local site; site=$("$tmp/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  for pv in $pkgs; do
    [ "${pv%%=*}" = "${3:-}" ] || unpack "$(debfile "${pv%%=*}" "${pv#*=}")" "$site"
  done
  unpack "$(debfile python3-django "$2")" "$site"
  # compiled for sid's Python (3.14) and glibc: they would not load here
  find "$site" -name '*.so' -delete
  cp -a "$P2/psycopg2" "$site/"
  # the venv's own paths in its scripts: relocate from .tmp
  rm -rf "$v"; mv "$tmp" "$v"
  sed -i "s|$tmp|$v|g" "$v"/bin/activate* "$v/pyvenv.cfg" 2>/dev/null || true
}
make_venv venv-dj5 "$(pin django5)"
make_venv venv-dj6 "$(pin django6)"
make_venv venv-dj5-pg2 "$(pin django5)" python3-psycopg

# --- what they import -----------------------------------------------------------
for v in venv-dj5 venv-dj6 venv-dj5-pg2; do
  echo "$v: $("$D/$v/bin/python" -I -W ignore - <<'PY'
import sys, importlib
out = ["python " + sys.version.split()[0]]
for mod in ("sqlalchemy", "alembic", "psycopg", "psycopg2", "django", "gunicorn",
            "flask", "flask_sqlalchemy", "flask_migrate", "werkzeug", "markupsafe"):
    try:
        m = importlib.import_module(mod)
    except ImportError:
        out.append(f"{mod} absent")
        continue
    v = getattr(m, "__version__", None)
    if v is None:
        from importlib.metadata import version
        try:
            v = version(mod.replace("_", "-"))
        except Exception:
            v = "?"
    if mod == "psycopg":
        from psycopg import pq
        v += f" (impl {pq.__impl__}, libpq {pq.version()})"
    if mod == "markupsafe":
        v += " (pure Python)"
    out.append(f"{mod} {v}")
from django.db.backends.postgresql.psycopg_any import is_psycopg3
out.append("Django's driver " + ("psycopg 3" if is_psycopg3 else "psycopg2"))
print(", ".join(out))
PY
)"
done >"$D/versions.out.tmp"
mv "$D/versions.out.tmp" "$D/versions.out"
echo "$stamp" >"$D/stamp"
echo "today: stack built in $D"
