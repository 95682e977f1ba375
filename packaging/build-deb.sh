#!/bin/sh
# packaging/build-deb.sh STAGE VERSION ARCH OUT.deb
#
# Turns a staged install (`make install DESTDIR=STAGE PREFIX=/usr
# LIBDIR=/usr/lib/<multiarch>`, done by `make deb`) into a Debian binary
# package with dpkg-deb: the library (mode 0644, stripped), the command
# (stripped), both man pages and the changelog (gzip -9n), the copyright
# file, lintian overrides (packaging/deb/lintian-overrides), md5sums, an ldconfig trigger, and DEBIAN/control from
# packaging/deb/control.in.  Depends is computed by dpkg-shlibdeps from the
# two ELF files (libc6 only: none links libconfig, libpq or libssl); libpq5 and
# libconfig9 are Recommends.  The top entry of packaging/deb/changelog must
# carry VERSION (the file VERSION is the one source of truth).
set -eu
[ $# -eq 4 ] || { echo "usage: $0 STAGE VERSION ARCH OUT.deb" >&2; exit 64; }
stage=$1 version=$2 arch=$3 out=$4
here=$(cd "$(dirname "$0")" && pwd -P)
die() { echo "build-deb.sh: $*" >&2; exit 1; }

top=$(sed -n '1s/^migshim (\([^)]*\)).*/\1/p' "$here/deb/changelog")
[ "$top" = "$version" ] ||
    die "packaging/deb/changelog's top entry is '$top', VERSION is '$version': add an entry"

lib=$(find "$stage/usr/lib" -name libmigshim.so -type f)
cli=$stage/usr/bin/migshim
[ -f "$lib" ] && [ -x "$cli" ] ||
    die "$stage holds no usr/lib/*/libmigshim.so or usr/bin/migshim"
doc=$stage/usr/share/doc/migshim

# Debian policy: shared libraries 0644 and stripped; docs compressed.
chmod 0644 "$lib"
strip --strip-unneeded --remove-section=.comment --remove-section=.note "$lib"
strip --strip-all --remove-section=.comment --remove-section=.note "$cli"
gzip -9nf "$stage"/usr/share/man/man1/migshim.1 "$stage"/usr/share/man/man5/migshim.conf.5
install -m 0644 "$here/deb/copyright" "$doc/copyright"
gzip -9nc "$here/deb/changelog" >"$doc/changelog.gz"
chmod 0644 "$doc/changelog.gz"
install -d "$stage/usr/share/lintian/overrides"
cp "$here/deb/lintian-overrides" "$stage/usr/share/lintian/overrides/migshim"
chmod 0644 "$stage/usr/share/lintian/overrides/migshim"

# Depends: what the ELF files need, as dpkg-shlibdeps reads it.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/debian"
printf 'Source: migshim\n\nPackage: migshim\nArchitecture: any\n' >"$work/debian/control"
abs_lib=$(cd "$(dirname "$lib")" && pwd -P)/libmigshim.so
abs_cli=$(cd "$(dirname "$cli")" && pwd -P)/migshim
depends=$(cd "$work" && dpkg-shlibdeps -O "$abs_lib" "$abs_cli" 2>/dev/null |
          sed -n 's/^shlibs:Depends=//p')
case "$depends" in
    libc6*) ;;
    *) die "dpkg-shlibdeps gave Depends '$depends' (want libc6 only)" ;;
esac
case "$depends" in *,*) die "Depends must be libc6 only, got '$depends'" ;; esac

mkdir -p "$stage/DEBIAN"
size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@DEPENDS@/$depends/" \
    -e "s/@INSTALLED_SIZE@/$size/" "$here/deb/control.in" >"$stage/DEBIAN/control"
# the library is in an ldconfig directory: refresh the cache on install/remove
echo "activate-noawait ldconfig" >"$stage/DEBIAN/triggers"
(cd "$stage" && find . -path ./DEBIAN -prune -o -type f -print | sed 's|^\./||' | sort |
    xargs md5sum) >"$stage/DEBIAN/md5sums"
chmod 0644 "$stage/DEBIAN/control" "$stage/DEBIAN/triggers" "$stage/DEBIAN/md5sums"

dpkg-deb --root-owner-group -Zxz --build "$stage" "$out" >/dev/null
echo "build-deb.sh: $out (Depends: $depends)"
