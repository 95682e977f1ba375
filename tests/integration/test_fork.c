/*
 * The shim's own connection across fork(): linked from the library's module
 * objects (no interpose.o, so PQ* here is the system libpq itself).
 *
 * The copy comes from resolve_for_caller() on an address of this binary;
 * ownconn_open() makes the shim's connection, which takes an advisory
 * lock (and registers ownconn's fork handlers).  After fork():
 *   - hostile_child: the child calls ownconn_close(), abuses the raw
 *     PGconn (a query that would release the lock, then PQfinish, which
 *     would end the session) and opens connections of its own; the
 *     parent's session, backend pid and lock must be untouched;
 *   - quiet_child: the child only waits; when the parent closes its
 *     connection the lock must go although the child is alive;
 *   - owner_dies: the process that opened the connection dies without
 *     closing it while its child lives on: the lock must go too (the child
 *     must not keep the parent's socket, hence the session, alive).
 *
 * Needs a server: PGHOST/PGPORT/PGUSER/PGDATABASE (tests/harness/with-pg.sh).
 */
#include <criterion/criterion.h>

/* cr_assert_str_eq that shows both strings when it fails. */
#define ASSERT_STR(got, want)                                                                   \
    do {                                                                                        \
        const char *got_ = (got), *want_ = (want);                                              \
        cr_assert_str_eq(got_, want_, "got:  \"%s\"\nwant: \"%s\"", got_, want_);                \
    } while (0)

#include <errno.h>
#include <libpq-fe.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ownconn.h"
#include "resolve.h"
#include "shim.h"

extern char **environ;

/* An address inside this test binary, for resolve_for_caller(). */
static void anchor(void) {}

static void setup(void)
{
    cr_assert(getenv("PGHOST") || getenv("PGPORT"),
              "needs a server: run under tests/harness/with-pg.sh (PGHOST/PGPORT unset)");
    /* Only the configuration this test chooses: a harness's MIGSHIM_TEST_*
     * variables would be unknown variables to config_load(). */
    for (size_t i = 0; environ[i];) {
        if (strncmp(environ[i], "MIGSHIM_", 8) == 0) {
            char name[128];
            size_t n = strcspn(environ[i], "=");
            snprintf(name, sizeof name, "%.*s", (int)n, environ[i]);
            unsetenv(name);
            continue;
        }
        i++;
    }
    setenv("MIGSHIM_CONFIG", "/dev/null", 1); /* an empty file: no ./migshim.conf, no /etc */
}

TestSuite(fork, .init = setup, .timeout = 120);

/* --- helpers ------------------------------------------------------------------- */

static PGconn *connect_fresh(const char *appname)
{
    char ci[128];
    snprintf(ci, sizeof ci, "application_name='%s'", appname);
    PGconn *c = PQconnectdb(ci);
    cr_assert_eq(PQstatus(c), CONNECTION_OK, "connect: %s", PQerrorMessage(c));
    return c;
}

/* Run `sql` (one row, one column) and copy the value into buf; false when
 * the query did not return exactly that. */
static bool query1(PGconn *c, const char *sql, char *buf, size_t n)
{
    PGresult *r = PQexec(c, sql);
    bool ok = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 && PQnfields(r) == 1;
    if (ok)
        snprintf(buf, n, "%s", PQgetvalue(r, 0, 0));
    else
        snprintf(buf, n, "%s", PQerrorMessage(c));
    PQclear(r);
    return ok;
}

static void must_query1(PGconn *c, const char *sql, const char *want)
{
    char got[512];
    cr_assert(query1(c, sql, got, sizeof got), "%s: %s", sql, got);
    cr_assert_str_eq(got, want, "%s", sql);
}

/* The backend pids holding advisory lock `key` (single bigint form) in this
 * database, comma-separated, "" for none; asked on a fresh connection. */
static void lock_holders(long long key, char *buf, size_t n)
{
    PGconn *c = connect_fresh("migshim-test observer");
    char sql[512];
    snprintf(sql, sizeof sql,
             "SELECT coalesce(string_agg(pid::text, ',' ORDER BY pid), '') FROM pg_locks "
             "WHERE locktype = 'advisory' AND granted AND mode = 'ExclusiveLock' "
             "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
             "AND classid = %lld AND objid = %lld AND objsubid = 1",
             (key >> 32) & 0xffffffffLL, key & 0xffffffffLL);
    cr_assert(query1(c, sql, buf, n), "pg_locks: %s", buf);
    PQfinish(c);
}

static void assert_held_by(long long key, int pid)
{
    char got[256], want[32];
    lock_holders(key, got, sizeof got);
    snprintf(want, sizeof want, "%d", pid);
    cr_assert_str_eq(got, want, "advisory lock %lld: holders '%s', want backend %d", key, got, pid);
}

/* Poll (10 s at most) until nobody holds lock `key`: a backend releases its
 * locks while it exits, just after the client's connection goes away. */
static void assert_released(long long key)
{
    char got[256] = "";
    struct timespec t = {0, 50 * 1000 * 1000};
    for (int i = 0; i < 200; i++) {
        lock_holders(key, got, sizeof got);
        if (!got[0])
            return;
        nanosleep(&t, NULL);
    }
    cr_assert_fail("advisory lock %lld still held by backend %s after 10 s", key, got);
}

/* The shim with its copy, an app connection, and the shim's own connection
 * holding advisory lock `key`. */
struct world {
    const struct pq_copy *copy;
    PGconn *app;
    struct ownconn *oc;
    PGconn *own;
    int backend;
};

/* No Criterion assertion here: the owner_dies test runs it in a child.
 * Returns NULL, or what went wrong. */
static const char *world_open(struct world *w, long long key, char *why, size_t n)
{
    memset(w, 0, sizeof *w);
    if (!shim_active())
        return "the shim is inactive under MIGSHIM_CONFIG=/dev/null";
    w->app = PQconnectdb("application_name='migshim-test app'");
    if (PQstatus(w->app) != CONNECTION_OK) {
        snprintf(why, n, "app connect: %s", PQerrorMessage(w->app));
        return why;
    }
    w->copy = resolve_for_caller((const void *)&anchor);
    if (!w->copy)
        return "resolve_for_caller found no libpq copy";
    if (strcmp(w->copy->soname, "libpq.so.5") != 0) {
        snprintf(why, n, "copy soname '%s', want 'libpq.so.5'", w->copy->soname);
        return why;
    }
    if (!w->copy->complete)
        return "the copy is not complete";
    char err[256] = "";
    w->oc = ownconn_open(w->copy, w->app, "test", err, sizeof err);
    if (!w->oc) {
        snprintf(why, n, "ownconn_open: %s", err);
        return why;
    }
    w->own = ownconn_pg(w->oc);
    if (!w->own || w->own == w->app || ownconn_copy(w->oc) != w->copy)
        return "ownconn_pg/ownconn_copy disagree with ownconn_open";
    w->backend = PQbackendPID(w->own);
    if (w->backend <= 0 || w->backend == PQbackendPID(w->app))
        return "the shim's connection has no backend of its own";

    char host[64] = "", want[256], got[256];
    gethostname(host, sizeof host - 1);
    snprintf(want, sizeof want, "migshim test pid=%ld host=%s", (long)getpid(), host);
    if (!query1(w->own, "SELECT current_setting('application_name')", got, sizeof got) ||
        strcmp(got, want) != 0) {
        snprintf(why, n, "application_name %.200s, want %.200s", got, want);
        return why;
    }
    /* never hang on a stray holder of the key (a shared dev server) */
    if (!query1(w->own, "SELECT set_config('lock_timeout', '30s', false)", got, sizeof got))
        return "SET lock_timeout failed";
    char sql[64];
    snprintf(sql, sizeof sql, "SELECT pg_advisory_lock(%lld)", key);
    if (!query1(w->own, sql, got, sizeof got) || got[0]) {
        snprintf(why, n, "%s: %s", sql, got);
        return why;
    }
    return NULL;
}

static void world_open_locked(struct world *w, long long key)
{
    char why[512];
    const char *e = world_open(w, key, why, sizeof why);
    cr_assert_null(e, "%s", e);
    assert_held_by(key, w->backend);
}

static void wait_exit0(pid_t pid, const char *const *why)
{
    int st;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    cr_assert(WIFEXITED(st), "child died: status 0x%x", st);
    int code = WEXITSTATUS(st);
    cr_assert_eq(code, 0, "child exit %d: %s", code,
                 code >= 10 && code < 30 && why[code - 10] ? why[code - 10] : "?");
}

static bool is_dev_null(int fd)
{
    struct stat a, b;
    return fstat(fd, &a) == 0 && stat("/dev/null", &b) == 0 && S_ISCHR(a.st_mode) &&
           a.st_rdev == b.st_rdev;
}

/* --- hostile child ---------------------------------------------------------------- */

static const char *const hostile_why[20] = {
    /* 10 */ "ownconn_pg() is not NULL in the child",
    /* 11 */ "the inherited socket descriptor does not point at /dev/null",
    /* 12 */ "a query on the inherited PGconn reached the parent's session",
    /* 13 */ "a new connection in the child does not work",
    /* 14 */ "the child could take the parent's advisory lock (the parent lost it)",
    /* 15 */ "ownconn_open in the child failed",
    /* 16 */ "the child's own ownconn does not work",
};

static int hostile_child(struct world *w, int sock, long long key)
{
    if (ownconn_pg(w->oc) != NULL)
        return 10;
    if (!is_dev_null(sock))
        return 11;

    /* Abuse the raw PGconn the child inherited: if this reached the
     * server, it would drop the parent's lock ... */
    PGresult *r = PQexec(w->own, "SELECT pg_advisory_unlock_all()");
    bool reached = PQresultStatus(r) == PGRES_TUPLES_OK;
    PQclear(r);
    if (reached)
        return 12;
    /* ... and this would end the parent's session. */
    PQfinish(w->own);
    /* The documented way: releases only the child's descriptor. */
    ownconn_close(w->oc);

    /* New connections of the child's own work normally. */
    PGconn *c = PQconnectdb("application_name='migshim-test child'");
    char v[256];
    if (PQstatus(c) != CONNECTION_OK || !query1(c, "SELECT 1", v, sizeof v) || strcmp(v, "1"))
        return 13;
    char sql[64];
    snprintf(sql, sizeof sql, "SELECT pg_try_advisory_lock(%lld)", key);
    if (!query1(c, sql, v, sizeof v) || strcmp(v, "f") != 0)
        return 14;
    PQfinish(c);

    char err[256];
    struct ownconn *mine = ownconn_open(w->copy, w->app, "child", err, sizeof err);
    if (!mine)
        return 15;
    PGconn *pg = ownconn_pg(mine);
    if (!pg || !query1(pg, "SELECT 2", v, sizeof v) || strcmp(v, "2") != 0)
        return 16;
    ownconn_close(mine);
    return 0;
}

Test(fork, hostile_child_cannot_touch_the_parents_session)
{
    const long long key = 4242;
    struct world w;
    world_open_locked(&w, key);
    int sock = PQsocket(w.own);
    cr_assert_geq(sock, 0);

    fflush(NULL);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0)
        _exit(hostile_child(&w, sock, key));
    wait_exit0(pid, hostile_why);

    /* the parent: same connection, same backend, lock still held */
    cr_assert_eq(ownconn_pg(w.oc), w.own);
    cr_assert(!is_dev_null(sock), "the parent's descriptor was replaced");
    must_query1(w.own, "SELECT 1", "1");
    cr_assert_eq(PQbackendPID(w.own), w.backend);
    char bp[32];
    snprintf(bp, sizeof bp, "%d", w.backend);
    must_query1(w.own, "SELECT pg_backend_pid()", bp);
    assert_held_by(key, w.backend);

    /* closing it in the parent releases the lock */
    ownconn_close(w.oc);
    assert_released(key);
    PQfinish(w.app);
}

/* --- quiet child -------------------------------------------------------------------- */

static const char *const quiet_why[20] = {
    /* 10 */ "ownconn_pg() is not NULL in the child",
    /* 11 */ "the inherited socket descriptor does not point at /dev/null",
};

Test(fork, parent_close_releases_the_lock_while_the_child_lives)
{
    const long long key = 4243;
    struct world w;
    world_open_locked(&w, key);
    int sock = PQsocket(w.own);

    int p[2];
    cr_assert_eq(pipe(p), 0);
    fflush(NULL);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        close(p[1]);
        int code = ownconn_pg(w.oc) != NULL ? 10 : !is_dev_null(sock) ? 11 : 0;
        char c;
        while (read(p[0], &c, 1) < 0 && errno == EINTR)
            ; /* until the parent closes its end */
        _exit(code);
    }
    close(p[0]);

    /* the child is alive and did nothing: the lock is still the parent's */
    must_query1(w.own, "SELECT 1", "1");
    assert_held_by(key, w.backend);

    ownconn_close(w.oc);
    assert_released(key);
    cr_assert_eq(waitpid(pid, NULL, WNOHANG), 0, "the child was to stay alive until now");

    close(p[1]);
    wait_exit0(pid, quiet_why);
    PQfinish(w.app);
}

/* --- the owner dies, its child lives on ------------------------------------------ */

static const char *const owner_why[20] = {
    /* 10 */ "the owner could not write its backend pid",
    /* 11 */ "the owner could not fork",
    /* 12 */ "the owner could not open its connection or take the lock (see stderr)",
};

Test(fork, owner_dies_without_closing_and_its_child_does_not_keep_the_lock)
{
    const long long key = 4244;
    /* the grandchild is reparented to us when the owner dies */
    cr_assert_eq(prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0), 0);

    int info[2], hold[2];
    cr_assert_eq(pipe(info), 0);
    cr_assert_eq(pipe(hold), 0);
    fflush(NULL);
    pid_t owner = fork();
    cr_assert_geq(owner, 0);
    if (owner == 0) {
        close(info[0]);
        close(hold[1]);
        struct world w;
        char why[512];
        if (world_open(&w, key, why, sizeof why)) {
            dprintf(STDERR_FILENO, "owner: %s\n", why);
            _exit(12);
        }
        pid_t g = fork();
        if (g < 0)
            _exit(11);
        if (g == 0) {
            /* the grandchild: lives until the test closes `hold` */
            close(info[1]);
            char c;
            while (read(hold[0], &c, 1) < 0 && errno == EINTR)
                ;
            _exit(0);
        }
        int msg[2] = {w.backend, (int)g};
        if (write(info[1], msg, sizeof msg) != (ssize_t)sizeof msg)
            _exit(10);
        /* die without PQfinish, as a crashed worker would */
        _exit(0);
    }
    close(info[1]);
    close(hold[0]);
    int msg[2] = {0, 0};
    ssize_t n = read(info[0], msg, sizeof msg);
    close(info[0]);
    wait_exit0(owner, owner_why);
    cr_assert_eq(n, (ssize_t)sizeof msg, "the owner reported nothing");
    int backend = msg[0];
    pid_t grandchild = (pid_t)msg[1];
    cr_assert_gt(backend, 0);
    cr_assert_gt(grandchild, 0);

    assert_released(key);
    /* and the backend itself is gone */
    PGconn *c = connect_fresh("migshim-test observer");
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM pg_stat_activity WHERE pid = %d", backend);
    struct timespec t = {0, 50 * 1000 * 1000};
    char got[64] = "";
    for (int i = 0; i < 200; i++) {
        cr_assert(query1(c, sql, got, sizeof got), "%s", got);
        if (strcmp(got, "0") == 0)
            break;
        nanosleep(&t, NULL);
    }
    cr_assert_str_eq(got, "0", "backend %d of the dead owner is still there", backend);
    PQfinish(c);

    cr_assert_eq(waitpid(grandchild, NULL, WNOHANG), 0, "the grandchild was to be alive");
    close(hold[1]);
    int st;
    cr_assert_eq(waitpid(grandchild, &st, 0), grandchild);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}
