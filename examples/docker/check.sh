#!/usr/bin/env bash
# examples/docker/check.sh — the Dockerfile, exercised for real without Docker.
#
#   tests/harness/with-pg.sh examples/docker/check.sh      (or with PGHOST/PGPORT set)
#
# No container engine is needed (or used).  The script reads
# examples/docker/Dockerfile and replays it on this machine, one directory
# per build stage under a temp dir standing in for each stage's "/":
#
#   FROM ... [AS name]   a new, empty stage root
#   COPY [--from=stage] SRC DEST
#                        copies from the checkout (the build context) or from
#                        an earlier stage root, with Docker's semantics (a
#                        directory's contents; DEST relative to WORKDIR)
#   RUN .../install.sh SRCDIR PREFIX DESTDIR
#                        runs that very script, SRCDIR and DESTDIR moved under
#                        the stage root, PREFIX unchanged (the run-time path)
#   RUN apt-get ...      not run: each package is checked to be installed
#                        here or known to apt
#   RUN pip install ...  no PyPI here: each package must have its Debian
#                        counterpart installed (flask -> python3-flask, ...),
#                        except psycopg2-binary, which is laid out in the
#                        stage's site-packages as its wheel installs it:
#                        Debian's psycopg2 with a renamed libpq copy beside
#                        it (tests/harness/wheel-like.py, as auditwheel does)
#   ENV, WORKDIR, EXPOSE recorded;  CMD ["exec", "form"]  run at the end
#
# Any other instruction or RUN line is an error, so the Dockerfile cannot
# drift away from what is checked.  A final stage FROM python:*-slim runs
# in a private mount namespace where libconfig.so.9 and the system
# libpq.so.5 cannot be loaded (tests/harness/slim-ns.sh; needs root), as in
# that image; its python is this machine's /usr/bin/python3 with the
# stage's site-packages on PYTHONPATH.  Then, in the final stage:
#
#   1. the file ENV LD_PRELOAD names exists there, is an ELF library whose
#      DT_NEEDED is libc only and that exports PQconnectdb;
#   2. the `migshim` command runs (the image's own, else the one the build
#      stage made): --version, and `migshim heads` in WORKDIR prints the
#      app's heads;
#   3. the image's CMD runs in WORKDIR with only the image's ENV (env -i), as
#      `docker run -e DATABASE_URL=... -e BIND=127.0.0.1:PORT` would, LD_PRELOAD
#      pointing into the stage root, against a fresh database of the harness
#      server: /ready answers 200, all WORKERS workers booted, exactly one
#      process logged "leading", no migshim warning or error, no worker
#      failed, alembic_version = heads, each revision ran once;
#   4. `migshim status CONNINFO` (with the image's PYTHONPATH) says "at
#      head: yes" (exit 0); in a slim image it names the wheel's libpq.
#
# Environment: PGHOST, PGPORT (PGUSER default postgres); KEEP=1 keeps the
# temp dir; CHECK_TIMEOUT seconds for the app to come up (default 60);
# DOCKERFILE another Dockerfile to replay (the build context is still this
# checkout; the tests use it to show that a broken file fails).
# Exit status 0: all checks passed.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
repo=$(cd "$here/../.." && pwd -P)
dockerfile=${DOCKERFILE:-$here/Dockerfile}
PY=/usr/bin/python3
timeout_s=${CHECK_TIMEOUT:-60}

# Nothing of ours runs under the shim except the app itself.
unset LD_PRELOAD
for v in $(compgen -e | grep '^MIGSHIM_' || true); do unset "$v"; done

say()  { printf 'check.sh: %s\n' "$*"; }
die()  { printf 'check.sh: FAIL: %s\n' "$*" >&2; exit 1; }

[ -n "${PGHOST:-}" ] && [ -n "${PGPORT:-}" ] ||
    die "PGHOST/PGPORT not set (run under tests/harness/with-pg.sh)"
export PGUSER=${PGUSER:-postgres}

T=$(mktemp -d "${TMPDIR:-/tmp}/migshim-docker-check.XXXXXX")
db=migshim_docker_check_$$
app_pid=
db_created=
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [ -n "$app_pid" ] && kill -0 "$app_pid" 2>/dev/null; then
        kill -TERM "$app_pid" 2>/dev/null || true
        for _ in $(seq 1 100); do kill -0 "$app_pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$app_pid" 2>/dev/null || true
        wait "$app_pid" 2>/dev/null || true
    fi
    if [ -n "$db_created" ]; then
        psql -X -q -d postgres -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null 2>&1 || true
    fi
    if [ "${KEEP:-0}" = 1 ]; then say "kept $T"; else rm -rf "$T"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- the Dockerfile, translated into calls of the do_* functions below ------
# (Python does the parsing -- line continuations, JSON, shell words -- and
# prints one shell-quoted call per instruction.)
"$PY" - "$dockerfile" >"$T/plan.sh" <<'PYEOF'
import json, re, shlex, sys

path = sys.argv[1]
lines, buf, start = [], "", 0
for n, raw in enumerate(open(path, encoding="utf-8"), 1):
    s = raw.rstrip("\n")
    if not buf and (not s.strip() or s.lstrip().startswith("#")):
        continue
    if buf and s.lstrip().startswith("#"):      # comment inside a continuation
        continue
    if not buf:
        start = n
    if s.endswith("\\"):
        buf += s[:-1] + " "
        continue
    lines.append((start, buf + s))
    buf = ""
if buf:
    sys.exit(f"{path}:{start}: unterminated line continuation")

q = shlex.quote
def out(*words):
    print(" ".join(q(str(w)) for w in words))

for n, line in lines:
    word, _, rest = line.strip().partition(" ")
    word, rest = word.upper(), rest.strip()
    where = f"{path}:{n}"
    if word == "FROM":
        m = re.match(r"^(\S+)(?:\s+AS\s+(\S+))?$", rest, re.I)
        if not m:
            sys.exit(f"{where}: cannot parse FROM {rest!r}")
        out("do_from", m.group(1), m.group(2) or "")
    elif word == "RUN":
        if rest.startswith("["):
            sys.exit(f"{where}: RUN in exec form is not supported here")
        cmds = [c.strip() for c in re.split(r"&&|;", rest) if c.strip()]
        for c in cmds:
            argv = shlex.split(c)
            if argv[0] == "apt-get" and "install" in argv:
                pkgs = [a for a in argv[argv.index("install") + 1:]
                        if not a.startswith("-")]
                out("do_apt_install", *pkgs)
            elif argv[:2] in (["pip", "install"], ["pip3", "install"]):
                pkgs = [a for a in argv[2:] if not a.startswith("-")]
                out("do_pip_install", *pkgs)
            elif argv[0] == "apt-get" or argv[:2] == ["rm", "-rf"]:
                out("do_skip", c)
            elif argv[0].endswith("/install.sh"):
                if len(argv) != 4:
                    sys.exit(f"{where}: install.sh needs SRCDIR PREFIX DESTDIR here, got {argv[1:]}")
                out("do_run_install", *argv)
            else:
                sys.exit(f"{where}: check.sh does not know how to run {c!r}")
    elif word == "COPY":
        argv = shlex.split(rest)
        frm = ""
        while argv and argv[0].startswith("--"):
            opt = argv.pop(0)
            if opt.startswith("--from="):
                frm = opt[len("--from="):]
            else:
                sys.exit(f"{where}: COPY option {opt} not supported here")
        if len(argv) != 2:
            sys.exit(f"{where}: COPY with one source and one destination only")
        out("do_copy", frm, argv[0], argv[1])
    elif word == "ENV":
        argv = shlex.split(rest)
        if not argv or any("=" not in a for a in argv):
            sys.exit(f"{where}: ENV in the KEY=VALUE form only")
        for a in argv:
            k, _, v = a.partition("=")
            out("do_env", k, v)
    elif word == "WORKDIR":
        out("do_workdir", rest)
    elif word == "EXPOSE":
        out("do_expose", rest)
    elif word == "CMD":
        try:
            argv = json.loads(rest)
        except ValueError:
            sys.exit(f"{where}: CMD must be in exec form (a JSON array)")
        out("do_cmd", *argv)
    else:
        sys.exit(f"{where}: instruction {word} not supported by check.sh")
PYEOF

# --- the interpreter ---------------------------------------------------------
declare -A stage_root=()
nstages=0
cur=           # current stage root
cur_name=
cur_image=     # its FROM image
site=          # where pip installed into, inside the stage ("" = no pip)
workdir=/
env_keys=()
declare -A env_val=()
cmd=()
exposed=

do_from() { # image [name]
    nstages=$((nstages + 1))
    cur_name=${2:-stage$nstages}
    cur=$T/stages/$cur_name
    mkdir -p "$cur"
    stage_root[$cur_name]=$cur
    stage_root[$((nstages - 1))]=$cur
    workdir=/
    env_keys=(); env_val=(); cmd=(); exposed=
    cur_image=$1 site=
    say "FROM $1 ${2:+AS $2}  -> $cur"
}

do_skip() { say "RUN (skipped here) $*"; }

do_apt_install() {
    local p missing=()
    for p in "$@"; do
        if dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q 'install ok installed'; then
            continue
        fi
        if apt-cache show "$p" >/dev/null 2>&1; then
            continue
        fi
        missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] || die "apt-get install names unknown packages: ${missing[*]}"
    say "RUN apt-get install (not run here; all $# packages known): $*"
}

do_pip_install() {
    local p name deb missing=() pyver
    # python:3.12-slim keeps pip's packages in /usr/local/lib/python3.12/site-packages
    pyver=$(sed -n 's/^python:\([0-9][0-9.]*\).*/\1/p' <<<"$cur_image")
    site=/usr/local/lib/python${pyver:-3}/site-packages
    mkdir -p "$cur$site"
    for p in "$@"; do
        name=$(sed 's/[][<>=!~;].*//' <<<"$p" | tr 'A-Z_' 'a-z-')
        case "$name" in
            psycopg2-binary)
                "$PY" "$repo/tests/harness/wheel-like.py" "$cur$site" >"$T/wheel.out" ||
                    die "pip install psycopg2-binary: tests/harness/wheel-like.py failed"
                say "RUN pip install psycopg2-binary: Debian's psycopg2 laid out as its wheel," \
                    "libpq copy $(basename "$(cat "$T/wheel.out")") beside it"
                continue ;;
            flask|sqlalchemy|alembic) deb=python3-$name ;;
            gunicorn) deb=gunicorn ;;
            *) die "pip install $p: check.sh knows no Debian counterpart of '$name'" ;;
        esac
        dpkg-query -W -f='${Status}\n' "$deb" 2>/dev/null | grep -q 'install ok installed' ||
            missing+=("$deb")
    done
    [ ${#missing[@]} -eq 0 ] || die "pip install: the Debian counterparts are not installed: ${missing[*]}"
    say "RUN pip install (the others from Debian's packages here): $*"
}

abs_in_stage() { # path -> absolute path inside the image (relative to WORKDIR)
    case "$1" in /*) printf '%s\n' "$1" ;; *) printf '%s/%s\n' "${workdir%/}" "$1" ;; esac
}

do_copy() { # from src dest
    local from=$1 src=$2 dest base
    dest=$cur$(abs_in_stage "$3")
    if [ -n "$from" ]; then
        base=${stage_root[$from]:-}
        [ -n "$base" ] || die "COPY --from=$from: no such stage"
        src=$base$src
    else
        src=$repo/$src
    fi
    [ -e "$src" ] || die "COPY: $src does not exist"
    if [ -d "$src" ]; then
        mkdir -p "$dest"
        cp -a "$src/." "$dest/"
    elif [ "${3%/}" != "$3" ]; then
        mkdir -p "$dest"; cp -a "$src" "$dest"
    else
        mkdir -p "$(dirname "$dest")"; cp -a "$src" "$dest"
    fi
    say "COPY ${from:+--from=$from }$2 $3"
}

do_run_install() { # script srcdir prefix destdir  (paths inside the stage)
    local script=$cur$1 src=$cur$2 prefix=$3 destdir=$cur$4
    [ -x "$script" ] || die "RUN $1: not an executable file in the stage (COPY it, chmod +x)"
    say "RUN $1 $2 $3 $4"
    ( cd "$cur" && JOBS=${JOBS:-4} "$script" "$src" "$prefix" "$destdir" ) >"$T/install.log" 2>&1 || {
        tail -n 40 "$T/install.log" >&2
        die "install.sh failed (log above)"
    }
    sed 's/^/    /' "$T/install.log" | grep -E 'install -m|install.sh:|^    migshim ' || true
}

do_env() {
    [ -n "${env_val[$1]+x}" ] || env_keys+=("$1")
    env_val[$1]=$2
    say "ENV $1=$2"
}
do_workdir() { workdir=$(abs_in_stage "$1"); mkdir -p "$cur$workdir"; say "WORKDIR $workdir"; }
do_expose()  { exposed=$1; say "EXPOSE $1"; }
do_cmd()     { cmd=("$@"); say "CMD $*"; }

# shellcheck source=/dev/null
. "$T/plan.sh"

root=$cur
final_image=$cur_image
[ ${#cmd[@]} -gt 0 ] || die "the final stage has no CMD"
preload=${env_val[LD_PRELOAD]:-}
[ -n "$preload" ] || die "the final stage sets no ENV LD_PRELOAD"

# --- 1. the library where LD_PRELOAD points -----------------------------------
lib=$root$preload
[ -f "$lib" ] || die "ENV LD_PRELOAD=$preload, but the image has no such file ($lib)"
# (grep >/dev/null, not grep -q: with pipefail, grep -q leaving early can
# kill readelf with SIGPIPE and fail the pipeline although the line is there)
readelf -h "$lib" | grep 'Type:.*DYN' >/dev/null || die "$preload is not a shared library"
needed=$(readelf -d "$lib" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | tr '\n' ' ')
[ "$needed" = "libc.so.6 " ] || die "$preload needs more than libc at load time: $needed"
readelf --dyn-syms -W "$lib" | grep -w 'PQconnectdb' >/dev/null || die "$preload does not export PQconnectdb"
say "ok: LD_PRELOAD=$preload is in the image, a shared library needing libc only, exporting the libpq wrappers"

# A slim Python image has neither libconfig9 nor libpq5: emulate it.
wrap=()
case "${final_image}" in
    python:*-slim*)
        wrap=("$repo/tests/harness/slim-ns.sh" --)
        say "FROM $final_image: the CMD runs where libconfig.so.9 and libpq.so.5 cannot be loaded" ;;
esac
pypath=()
[ -z "$site" ] || pypath=(PYTHONPATH="$root$site")

# --- 2. the command -------------------------------------------------------------
cli=
for d in /usr/local/bin /usr/bin; do
    if [ -x "$root$d/migshim" ]; then cli=$root$d/migshim; break; fi
done
if [ -z "$cli" ]; then  # the image has the library only: the build stage's command
    cli=$(find "$T/stages" -path "$root" -prune -o -type f -path '*/bin/migshim' -perm -u+x -print | head -n 1)
    [ -n "$cli" ] || die "no migshim command in the image or in a build stage"
    say "the image holds the library only: using the build stage's ${cli#"$T/stages/"}"
fi
"${wrap[@]}" "$cli" --version >/dev/null || die "migshim --version failed"
heads=$(cd "$root$workdir" && "${wrap[@]}" env -i PATH=/usr/bin:/bin "$cli" heads) ||
    die "migshim heads in $workdir failed"
say "ok: migshim runs; migshim heads in $workdir: $heads"

# --- 3. the CMD, against a fresh database -----------------------------------------
psql -X -q -d postgres -c "CREATE DATABASE \"$db\"" >/dev/null || die "cannot create database $db"
db_created=1
conninfo="host=$PGHOST port=$PGPORT user=$PGUSER dbname=$db"
database_url="postgresql+psycopg2://$PGUSER@/$db?host=$PGHOST&port=$PGPORT"
port=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

run_env=(PATH="$root/usr/local/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
         HOME=/root LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1)
for k in "${env_keys[@]}"; do
    v=${env_val[$k]}
    [ "$k" = LD_PRELOAD ] && v=$root$v      # the image's path, seen from the host
    run_env+=("$k=$v")
done
# what `docker run -e ...` adds: the database, and a loopback bind
run_env+=(DATABASE_URL="$database_url" BIND="127.0.0.1:$port")
workers=${env_val[WORKERS]:-1}

say "running CMD in $workdir: ${cmd[*]}  (-e DATABASE_URL=... -e BIND=127.0.0.1:$port)"
( cd "$root$workdir" && exec "${wrap[@]}" env -i "${run_env[@]}" "${pypath[@]}" "${cmd[@]}" ) \
    </dev/null >"$T/app.out" 2>"$T/app.err" &
app_pid=$!

show_log() { echo "--- app stderr (last 60 lines) ---" >&2; tail -n 60 "$T/app.err" >&2; }
deadline=$((SECONDS + timeout_s))
ready=
while [ $SECONDS -lt $deadline ]; do
    kill -0 "$app_pid" 2>/dev/null || { show_log; die "the app exited before it was ready"; }
    if body=$(curl -fsS --max-time 3 "http://127.0.0.1:$port/ready" 2>/dev/null); then
        ready=1; break
    fi
    sleep 0.2
done
[ -n "$ready" ] || { show_log; die "no 200 from /ready within ${timeout_s}s"; }
say "ok: GET /ready -> 200 $body"

# every worker decided: the leader and those that waited log exactly one
# decision line; a worker that found the database at head prints nothing
# (the gate did not act on it: the rule of silence)
decision_re='migshim\[[0-9]+\]: info: .*(leading|waited|before this process got the lock)'
while [ $SECONDS -lt $deadline ]; do
    n=$(grep -c 'Booting worker with pid' "$T/app.err" || true)
    [ "$n" -ge "$workers" ] && grep -qE 'migshim\[[0-9]+\]: info: .*\bleading\b' "$T/app.err" && break
    sleep 0.2
done
sleep 1     # let a late failure show

err=$T/app.err
booted=$(grep -c 'Booting worker with pid' "$err" || true)
leading=$(grep -cE 'migshim\[[0-9]+\]: info: .*\bleading\b' "$err" || true)
decisions=$(grep -cE "$decision_re" "$err" || true)
loud=$(grep -oE 'migshim\[[0-9]+\]: (info|warn|error)' "$err" | sort -u | wc -l)
problems=$(grep -E 'migshim\[[0-9]+\]: (error|warn)' "$err" || true)
failed=$(grep -E 'Worker failed to boot|Exception in worker process|migration failed' "$err" || true)
kill -0 "$app_pid" 2>/dev/null || { show_log; die "the app died after it was ready"; }
[ "$booted" -eq "$workers" ] || { show_log; die "$booted worker(s) booted, want $workers (ENV WORKERS)"; }
[ -z "$failed" ] || { show_log; die "a worker failed: $failed"; }
[ "$decisions" -eq "$loud" ] && [ "$decisions" -le "$workers" ] ||
    { show_log; die "$decisions gate decision line(s) from $loud process(es) that logged: want one each, at most one per worker ($workers)"; }
[ "$leading" -eq 1 ] || { show_log; die "$leading 'leading' line(s), want exactly 1"; }
[ -z "$problems" ] || { show_log; die "migshim warnings/errors: $problems"; }
say "ok: $workers workers booted; one leader, $((decisions - 1)) waited, $((workers - decisions)) found the database at head (silent)"

version=$(psql -X -At -d "$db" -c "SELECT string_agg(version_num, ',' ORDER BY version_num) FROM alembic_version")
[ "$version" = "$(echo "$heads" | sort | paste -sd, -)" ] || die "alembic_version is '$version', want '$heads'"
runs=$(psql -X -At -d "$db" -c "SELECT revision || '=' || count(*) FROM migration_runs GROUP BY revision ORDER BY revision" | paste -sd' ' -)
nrev=$(psql -X -At -d "$db" -c "SELECT count(DISTINCT revision) FROM migration_runs")
twice=$(psql -X -At -d "$db" -c "SELECT count(*) FROM (SELECT revision FROM migration_runs GROUP BY revision HAVING count(*) <> 1) x")
[ "$nrev" -ge 1 ] && [ "$twice" -eq 0 ] || die "migration_runs: $runs (want each revision once)"
say "ok: database at $version; migration_runs: $runs"

# --- 4. migshim status from the image ------------------------------------------------
status_rc=0
status=$(cd "$root$workdir" && "${wrap[@]}" env -i PATH=/usr/bin:/bin "${pypath[@]}" "$cli" status "$conninfo") ||
    status_rc=$?
printf '%s\n' "$status" | sed 's/^/    /'
[ "$status_rc" -eq 0 ] && printf '%s\n' "$status" | grep -q '^at head: *yes' ||
    die "migshim status: exit $status_rc, not at head"
if [ ${#wrap[@]} -gt 0 ]; then
    printf '%s\n' "$status" | grep -q "^libpq: .*/psycopg2_binary.libs/libpq-.*(the psycopg2_binary wheel's copy)$" ||
        die "migshim status in the slim image did not load the wheel's libpq"
fi
say "ok: migshim status: at head (exit 0)"

# --- stop the app ----------------------------------------------------------------------
kill -TERM "$app_pid"
for _ in $(seq 1 100); do kill -0 "$app_pid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$app_pid" 2>/dev/null; then kill -KILL "$app_pid"; fi
wait "$app_pid" 2>/dev/null || true
app_pid=
say "all checks passed"
