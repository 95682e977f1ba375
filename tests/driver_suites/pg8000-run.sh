#!/usr/bin/env bash
# tests/driver_suites/pg8000-run.sh WORK env -i VAR=... CMD... — run under
# tests/harness/with-pg.sh by run.sh: sets the harness's server up as pg8000
# 1.10.6's tests expect it, then runs CMD from WORK/pg8000-1.10.6 with the
# tests' connection settings added to its environment.
#
# pg8000/tests/test_connection.py expects (its comments say so):
#   * pg_hba lines asking md5 for database pg8000_md5, password for
#     pg8000_password and gss for pg8000_gss (none of those databases
#     exists: the tests expect 3D000 after authentication, or pg8000's
#     "Authentication method 7 not supported");
#   * a password for the test user, stored as md5 (pg8000 1.10.6 knows no
#     SCRAM), and SSL on the server (testSsl).
# The tests connect over TCP to 127.0.0.1 as postgres, database pg8000_test.
set -euo pipefail
work=$1; shift
if [ "${1:-}" != env ] || [ "${2:-}" != -i ]; then echo "pg8000-run.sh: CMD must start with env -i" >&2; exit 2; fi
: "${PGHARNESS_DIR:?run under tests/harness/with-pg.sh}" "${PGPORT:?}"
bindir=${PG_BINDIR:-/usr/lib/postgresql/15/bin}
d=$PGHARNESS_DIR
as_pg=()
[ "$(id -u)" -eq 0 ] && as_pg=(runuser -u "${PG_HARNESS_USER:-postgres}" --)

# a throwaway self-signed certificate, in the server's own directory
openssl req -new -x509 -days 2 -nodes -subj /CN=localhost -newkey rsa:2048 \
    -keyout "$d/server.key" -out "$d/server.crt" >/dev/null 2>&1
chmod 600 "$d/server.key"
[ ${#as_pg[@]} -eq 0 ] || chown "$(stat -c %u "$d/data")" "$d/server.key" "$d/server.crt"

hba=$d/data/pg_hba.conf
{ printf '# pg8000 1.10.6 tests (tests/driver_suites/pg8000-run.sh)\n'
  printf 'host pg8000_md5 all 127.0.0.1/32 md5\n'
  printf 'host pg8000_password all 127.0.0.1/32 password\n'
  printf 'host pg8000_gss all 127.0.0.1/32 gss\n'
  cat "$hba"; } >"$hba.new"
cat "$hba.new" >"$hba" && rm -f "$hba.new"

psql=("$bindir/psql" -X -q -v ON_ERROR_STOP=1 -h "$d" -p "$PGPORT" -U postgres -d postgres)
"${psql[@]}" -c "ALTER SYSTEM SET ssl = on" \
    -c "ALTER SYSTEM SET ssl_cert_file = '$d/server.crt'" \
    -c "ALTER SYSTEM SET ssl_key_file = '$d/server.key'" \
    -c "ALTER SYSTEM SET password_encryption = 'md5'" \
    -c "SELECT pg_reload_conf()" >/dev/null
sleep 0.5
"${psql[@]}" -c "SET password_encryption = 'md5'" \
    -c "ALTER USER postgres PASSWORD 'pg8000-test'" \
    -c "CREATE DATABASE pg8000_test" >/dev/null
[ "$("${psql[@]}" -Atc 'SHOW ssl')" = on ] || { echo "pg8000-run.sh: ssl did not come on" >&2; exit 1; }

dsn="{'host': '127.0.0.1', 'port': $PGPORT, 'user': 'postgres', 'password': 'pg8000-test', 'database': 'pg8000_test'}"
cd "$work/pg8000-1.10.6"
"$1" "$2" PG8000_TEST_NAME=PG8000_TEST_DSN PG8000_TEST_DSN="$dsn" "${@:3}"
