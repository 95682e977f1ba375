/*
 * client — a musl libpq program that migrates like `alembic upgrade head`
 * (Alembic 1.8 with SQLAlchemy 1.4 and psycopg2: the statement sequence of
 * shared/alembic-statements.md), for the musl fleet test
 * (tests/musl/test_musl.py).  Built with musl-gcc against the musl libpq
 * of tests/musl/libpq.sh; run from tests/musl/project, whose Alembic
 * scripts name the same three revisions, so a preloaded libmigshim.so
 * computes the same target.
 *
 *   client        connection from the PG* variables
 *
 * Built twice: `client` links libpq (its PQ* calls bind to the preloaded
 * shim's wrappers, like psycopg2's); `client-dlopen` (-DCLIENT_DLOPEN)
 * links none, dlopen()s libpq (CLIENT_LIBPQ, default "libpq.so.5")
 * RTLD_LOCAL and takes every function from dlsym(), like ctypes or
 * psycopg 3's pure-Python driver: the shim's dlsym path on musl.
 *
 * Environment (all optional):
 *   FLEET_DIR       a directory shared by the fleet: two start lines.  Each
 *                   process drops <pid>.start and waits (at most 30 s) until
 *                   FLEET_N are there, then connects; then drops <pid>.ready
 *                   and waits until FLEET_N are there too, at most
 *                   FLEET_SYNC_MS (default 2000): all processes that got a
 *                   connection send their first statement at one instant.
 *                   (With the shim the waiters are still inside
 *                   PQconnectdb, so the leader goes on after FLEET_SYNC_MS.)
 *   FLEET_N         the fleet's size (default 1)
 *   MIGRATION_MS    each revision sleeps this long in its transaction
 *                   (default 100), so the transactions overlap
 *
 * Exit status: 0 the database is at 0003cccc; 1 a statement failed (the
 * SQLSTATE and message on stderr); 2 no connection; 3 an unknown version;
 * 4 (client-dlopen) no libpq.
 * stdout: one line, "migrated FROM -> 0003cccc" or "at head".
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <libpq-fe.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifdef CLIENT_DLOPEN
#include <dlfcn.h>
#define CLIENT_API(X)                                                           \
    X(PQclear) X(PQcmdTuples) X(PQconnectdb) X(PQerrorMessage) X(PQexec)        \
    X(PQfinish) X(PQgetvalue) X(PQntuples) X(PQresultErrorField)                \
    X(PQresultErrorMessage) X(PQresultStatus) X(PQstatus)
static struct {
#define CLIENT_MEMBER(n) __typeof__(n) *n;
    CLIENT_API(CLIENT_MEMBER)
#undef CLIENT_MEMBER
} api;
#define PQ(n) api.n

static void load_libpq(void)
{
    const char *file = getenv("CLIENT_LIBPQ") ? getenv("CLIENT_LIBPQ") : "libpq.so.5";
    void *h = dlopen(file, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        fprintf(stderr, "client: dlopen %s: %s\n", file, dlerror());
        exit(4);
    }
#define CLIENT_LOAD(n)                                                          \
    if (!(api.n = (__typeof__(api.n))dlsym(h, #n))) {                          \
        fprintf(stderr, "client: dlsym %s: %s\n", #n, dlerror());              \
        exit(4);                                                                \
    }
    CLIENT_API(CLIENT_LOAD)
#undef CLIENT_LOAD
}
#else
#define PQ(n) n
static void load_libpq(void) {}
#endif

static const char *const revisions[] = {"0001aaaa", "0002bbbb", "0003cccc"};
#define NREV 3

/* each revision's DDL, then its audit row (migration_runs: which process
 * ran which revision; a revision run twice shows as two rows) */
static const char *const ddl[NREV] = {
    "CREATE TABLE users (id SERIAL NOT NULL, name VARCHAR(50) NOT NULL, PRIMARY KEY (id));"
    "CREATE TABLE IF NOT EXISTS migration_runs (revision VARCHAR(32) NOT NULL, pid INTEGER NOT NULL,"
    " at TIMESTAMP WITH TIME ZONE DEFAULT now())",
    "CREATE TABLE posts (id SERIAL NOT NULL, user_id INTEGER REFERENCES users (id),"
    " title VARCHAR(200), PRIMARY KEY (id))",
    "ALTER TABLE users ADD COLUMN email VARCHAR(100)",
};

static const char *const has_table =
    "select relname from pg_class c join pg_namespace n on n.oid=c.relnamespace where "
    "pg_catalog.pg_table_is_visible(c.oid) and relname=%s";

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

static int count_suffix(const char *dir, const char *suffix)
{
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    int n = 0;
    size_t sl = strlen(suffix);
    for (struct dirent *e; (e = readdir(d));) {
        size_t l = strlen(e->d_name);
        if (l > sl && strcmp(e->d_name + l - sl, suffix) == 0)
            n++;
    }
    closedir(d);
    return n;
}

/* Drop <pid><suffix> into FLEET_DIR and wait until FLEET_N are there or
 * timeout_ms passed. */
static void start_line(const char *suffix, long timeout_ms)
{
    const char *dir = getenv("FLEET_DIR");
    if (!dir || !*dir)
        return;
    int n = atoi(getenv("FLEET_N") ? getenv("FLEET_N") : "1");
    char path[4096];
    snprintf(path, sizeof path, "%s/%ld%s", dir, (long)getpid(), suffix);
    FILE *f = fopen(path, "w");
    if (f)
        fclose(f);
    long deadline = now_ms() + timeout_ms;
    while (count_suffix(dir, suffix) < n && now_ms() < deadline) {
        struct timespec ts = {0, 2 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

static PGconn *conn;

/* One statement; exits 1 with its error when it fails. */
static PGresult *run(const char *sql)
{
    PGresult *r = PQ(PQexec)(conn, sql);
    ExecStatusType st = PQ(PQresultStatus)(r);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        const char *code = PQ(PQresultErrorField)(r, PG_DIAG_SQLSTATE);
        char msg[512];
        snprintf(msg, sizeof msg, "%s", PQ(PQresultErrorMessage)(r));
        msg[strcspn(msg, "\n")] = '\0';
        char stmt[61];
        snprintf(stmt, sizeof stmt, "%s", sql);
        for (char *p = stmt; *p; p++)
            if (*p == '\n')
                *p = ' ';
        fprintf(stderr, "client[%ld]: %s: %s (statement: %s)\n", (long)getpid(),
                code ? code : "no SQLSTATE", msg, stmt);
        PQ(PQclear)(r);
        PQ(PQclear)(PQ(PQexec)(conn, "ROLLBACK"));
        PQ(PQfinish)(conn);
        exit(1);
    }
    return r;
}

static void run_clear(const char *sql) { PQ(PQclear)(run(sql)); }

static bool table_exists(const char *name)
{
    char sql[512];
    char quoted[64];
    snprintf(quoted, sizeof quoted, "'%s'", name);
    snprintf(sql, sizeof sql, has_table, quoted);
    PGresult *r = run(sql);
    bool yes = PQ(PQntuples)(r) > 0;
    PQ(PQclear)(r);
    return yes;
}

int main(void)
{
    const char *ms = getenv("MIGRATION_MS");
    int sleep_ms = ms ? atoi(ms) : 100;
    load_libpq();
    start_line(".start", 30000);
    conn = PQ(PQconnectdb)("");
    if (PQ(PQstatus)(conn) != CONNECTION_OK) {
        fprintf(stderr, "client[%ld]: cannot connect: %s", (long)getpid(), PQ(PQerrorMessage)(conn));
        return 2;
    }
    const char *sync = getenv("FLEET_SYNC_MS");
    start_line(".ready", sync ? atol(sync) : 2000);

    /* SQLAlchemy's dialect initialisation: short transactions, rolled back */
    static const char *const init[] = {"select pg_catalog.version()", "select current_schema()",
                                       "show transaction isolation level",
                                       "show standard_conforming_strings"};
    for (size_t i = 0; i < sizeof init / sizeof init[0]; i++) {
        run_clear("BEGIN");
        run_clear(init[i]);
        run_clear("ROLLBACK");
    }

    /* the migration run: one connection, one transaction */
    run_clear("BEGIN");
    (void)table_exists("alembic_version");
    if (!table_exists("alembic_version"))
        run_clear("CREATE TABLE alembic_version (\n    version_num VARCHAR(32) NOT NULL, \n"
                  "    CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)\n)");
    PGresult *r = run("SELECT alembic_version.version_num FROM alembic_version");
    char from[64] = "";
    if (PQ(PQntuples)(r) == 1)
        snprintf(from, sizeof from, "%s", PQ(PQgetvalue)(r, 0, 0));
    PQ(PQclear)(r);
    int start = 0;
    if (from[0]) {
        start = -1;
        for (int i = 0; i < NREV; i++)
            if (strcmp(from, revisions[i]) == 0)
                start = i + 1;
        if (start < 0) {
            fprintf(stderr, "client[%ld]: unknown version %s\n", (long)getpid(), from);
            PQ(PQclear)(PQ(PQexec)(conn, "ROLLBACK"));
            PQ(PQfinish)(conn);
            return 3;
        }
    }
    for (int i = start; i < NREV; i++) {
        char sql[512];
        run_clear(ddl[i]);
        snprintf(sql, sizeof sql, "INSERT INTO migration_runs (revision, pid) VALUES ('%s', %ld)",
                 revisions[i], (long)getpid());
        run_clear(sql);
        if (sleep_ms > 0) {
            snprintf(sql, sizeof sql, "SELECT pg_sleep(%d / 1000.0)", sleep_ms);
            run_clear(sql);
        }
        if (i == 0)
            snprintf(sql, sizeof sql,
                     "INSERT INTO alembic_version (version_num) VALUES ('%s') "
                     "RETURNING alembic_version.version_num",
                     revisions[i]);
        else
            snprintf(sql, sizeof sql,
                     "UPDATE alembic_version SET version_num='%s' WHERE "
                     "alembic_version.version_num = '%s'",
                     revisions[i], revisions[i - 1]);
        r = run(sql);
        bool one = i == 0 || strcmp(PQ(PQcmdTuples)(r), "1") == 0;
        PQ(PQclear)(r);
        if (!one) {
            /* Alembic's own check */
            fprintf(stderr,
                    "client[%ld]: Online migration expected to match one row when updating "
                    "'%s' to '%s' in 'alembic_version'; 0 found\n",
                    (long)getpid(), revisions[i - 1], revisions[i]);
            PQ(PQclear)(PQ(PQexec)(conn, "ROLLBACK"));
            PQ(PQfinish)(conn);
            return 1;
        }
    }
    run_clear("COMMIT");
    PQ(PQfinish)(conn);
    if (start < NREV)
        printf("migrated %s -> %s\n", from[0] ? from : "(none)", revisions[NREV - 1]);
    else
        printf("at head\n");
    return 0;
}
