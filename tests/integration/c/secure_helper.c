/*
 * secure_helper — a libpq program with libmigshim.so as its first
 * DT_NEEDED (ahead of libpq, so the shim's PQ* wrappers are the ones it
 * calls) and an absolute RUNPATH to the build directory.  glibc ignores
 * LD_PRELOAD paths and $ORIGIN in a secure-execution (AT_SECURE) process,
 * but loads DT_NEEDED through an absolute RUNPATH: a setuid copy of this
 * program really runs the shim with AT_SECURE set
 * (tests/integration/test_secure_exec.py).
 *
 *   secure_helper CONNINFO
 *
 * Prints, one `key=value` per line on stdout:
 *   at_secure   getauxval(AT_SECURE)
 *   ruid, euid
 *   pqexec_from the file defining the PQexec this program calls
 *   status      PQstatus after PQconnectdb (0 = CONNECTION_OK)
 *   lock_conns  connections named 'migshim lock%' seen from this session
 *   select      the value of a plain SELECT
 *   error       SQLSTATE and primary message of a failing statement
 * Exit status 0 after a full run, 2 if it could not connect.
 */
#include <dlfcn.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <string.h>
#include <sys/auxv.h>
#include <unistd.h>

/* A sanitized build (make check-san): in a setgid process run by nobody,
 * /proc/self is not readable by the real user, so ASan can read neither
 * ASAN_OPTIONS nor run LeakSanitizer: its defaults must say so.  Unused
 * in a normal build. */
const char *__asan_default_options(void);
const char *__asan_default_options(void) { return "detect_leaks=0"; }

static void show_value(PGconn *pg, const char *key, const char *sql)
{
    PGresult *r = PQexec(pg, sql);
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
        printf("%s=%s\n", key, PQgetvalue(r, 0, 0));
    else
        printf("%s=FAILED %s", key, PQresultErrorMessage(r));
    PQclear(r);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: secure_helper CONNINFO\n");
        return 64;
    }
    printf("at_secure=%lu\n", getauxval(AT_SECURE));
    printf("ruid=%d\neuid=%d\n", (int)getuid(), (int)geteuid());
    Dl_info di;
    const char *from = "?";
    if (dladdr((void *)PQexec, &di) && di.dli_fname) {
        const char *slash = strrchr(di.dli_fname, '/');
        from = slash ? slash + 1 : di.dli_fname;
    }
    printf("pqexec_from=%s\n", from);
    fflush(stdout);

    PGconn *pg = PQconnectdb(argv[1]);
    printf("status=%d\n", (int)PQstatus(pg));
    if (PQstatus(pg) != CONNECTION_OK) {
        printf("connect_error=%s", PQerrorMessage(pg));
        PQfinish(pg);
        return 2;
    }
    show_value(pg, "lock_conns",
               "SELECT count(*) FROM pg_stat_activity "
               "WHERE application_name LIKE 'migshim lock%'");
    show_value(pg, "select", "SELECT 6 * 7");
    PGresult *r = PQexec(pg, "SELECT 1 / 0");
    printf("error=%s %s", PQresultErrorField(r, PG_DIAG_SQLSTATE) ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : "-",
           PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : "-");
    printf("\n");
    PQclear(r);
    PQfinish(pg);
    return 0;
}
