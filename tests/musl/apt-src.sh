#!/usr/bin/env bash
# tests/musl/apt-src.sh DIR PACKAGE — the upstream tarball of Debian's source
# package PACKAGE, downloaded (once) into DIR/src through a private apt
# sources list and state (DIR/../apt, shared by the packages built side by
# side in build-musl/: a deb-src line for this machine's suite,
# on the mirror the machine already uses, read at run time), never the
# machine's own apt state.  Prints the tarball's path.  Used by
# tests/musl/libpq.sh and tests/musl/libconfig.sh.
set -euo pipefail
dir=$1 pkg=$2
mkdir -p "$dir"; dir=$(cd "$dir" && pwd)
orig=$(ls "$dir/src/${pkg}"_*.orig.tar.* 2>/dev/null | head -n 1 || true)
if [ -n "$orig" ]; then echo "$orig"; exit 0; fi
apt="$(dirname "$dir")/apt"
mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$apt/sources.list.d" "$dir/src"
if [ ! -s "$apt/sources.list" ]; then
  mirror=$( { grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}';
              grep -hsE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list |
                sed -E 's/\[[^]]*\]//' | awk '{print $2}'; } |
            grep -E '/debian/?$' | head -n 1) || true
  suite=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
  if [ -z "$mirror" ] || [ -z "$suite" ]; then
    echo "apt-src: no Debian mirror in /etc/apt/sources.list(.d), or no VERSION_CODENAME in /etc/os-release" >&2
    exit 3
  fi
  echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $suite main" >"$apt/sources.list.tmp"
  mv "$apt/sources.list.tmp" "$apt/sources.list"
fi
aptq() {
  apt-get -q -o Dir::Etc::sourcelist="$apt/sources.list" -o Dir::Etc::sourceparts="$apt/sources.list.d" \
    -o Dir::State::Lists="$apt/lists" -o Dir::Cache="$apt/cache" \
    -o Dir::State::status=/var/lib/dpkg/status -o Acquire::Languages=none \
    -o APT::Sandbox::User=root -o Debug::NoLocking=1 "$@"
}
log="$dir/apt.log"
if ! ls "$apt/lists/"*_Sources* >/dev/null 2>&1; then
  aptq update >>"$log" 2>&1 || { tail -n 20 "$log" >&2; exit 3; }
fi
(cd "$dir/src" && aptq source --download-only "$pkg") >>"$log" 2>&1 || { tail -n 20 "$log" >&2; exit 3; }
ls "$dir/src/${pkg}"_*.orig.tar.* | head -n 1
