#!/usr/bin/env bash
# tests/today/apt.sh DIR ARGS... — apt-get against a private sources list
# (sid, experimental; deb-src for trixie) and private state/cache dirs
# under DIR (an empty sources.list.d of its own), never the machine's own apt state.  The mirror is the one the
# machine already uses, read at run time from /etc/apt/sources.list(.d):
# no host is written into the project.
set -euo pipefail
mkdir -p "$1"; dir=$(cd "$1" && pwd); shift
mkdir -p "$dir/lists/partial" "$dir/cache/archives/partial" "$dir/sources.list.d"
if [ ! -s "$dir/sources.list" ]; then
  mirror=$( { grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}';
              grep -hsE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list |
                sed -E 's/\[[^]]*\]//' | awk '{print $2}'; } |
            grep -E '/debian/?$' | head -n 1) || true
  if [ -z "$mirror" ]; then
    echo "today: no Debian mirror in /etc/apt/sources.list(.d) to take sid and experimental from" >&2
    exit 3
  fi
  key=/usr/share/keyrings/debian-archive-keyring.gpg
  { for s in sid experimental; do echo "deb [signed-by=$key] $mirror $s main"; done
    echo "deb-src [signed-by=$key] $mirror trixie main"; } >"$dir/sources.list.tmp"
  mv "$dir/sources.list.tmp" "$dir/sources.list"
fi
cmd=apt-get; case ${1:-} in policy|show|madison|showsrc) cmd=apt-cache ;; esac
exec $cmd -q \
  -o Dir::Etc::sourcelist="$dir/sources.list" -o Dir::Etc::sourceparts="$dir/sources.list.d" \
  -o Dir::State::Lists="$dir/lists" -o Dir::Cache="$dir/cache" \
  -o Dir::State::status=/var/lib/dpkg/status \
  -o APT::Architectures::=amd64 -o Acquire::Languages=none \
  -o APT::Sandbox::User=root -o Debug::NoLocking=1 "$@"
