/*
 * lock — see include/lock.h.  The advisory-lock protocol: the key, the
 * try-then-wait step and its one-message wait slice, the hand-over from an
 * app's connection to the lock connection, the release and the server-side
 * idle limit.  Every statement goes through the connection's seam (dbconn.h).
 */
#include "lock.h"

#include <assert.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "dbconn.h"

int64_t lock_key_for(const struct config *cfg, const char *dbname)
{
    return lock_key_for_table(cfg, dbname, cfg->version_table_schema, cfg->version_table);
}

int64_t lock_key_for_table(const struct config *cfg, const char *dbname, const char *schema,
                           const char *table)
{
    assert(cfg && schema && table);
    if (cfg->lock_key_set)
        return cfg->lock_key;
    uint64_t h = 0xcbf29ce484222325ULL; /* FNV-1a */
    const char *parts[] = {"migshim", dbname ? dbname : "", schema, table};
    for (size_t i = 0; i < 4; i++) {
        for (const unsigned char *p = (const unsigned char *)parts[i]; *p; p++) {
            h ^= *p;
            h *= 0x100000001b3ULL;
        }
        h ^= 0xff; /* separator: ("ab","c") != ("a","bc") */
        h *= 0x100000001b3ULL;
    }
    return (int64_t)h;
}

/* Run `sql` (as PQexec: dbconn_exec); return the result if it is rows,
 * else NULL with the message in err. */
static struct dbres *run_rows(struct dbconn *c, const char *sql, char *err, size_t errsz)
{
    struct dbres *r = dbconn_exec(c, sql);
    if (r && dbres_kind(c, r) == DBRES_ROWS)
        return r;
    if (err)
        dbconn_error(c, r, err, errsz);
    if (r)
        dbres_free(c, r);
    return NULL;
}

/* End `c`'s transaction after a failure the caller reports itself (`what`
 * names it).  Should the ROLLBACK fail too, the connection is lost and the
 * server ends the transaction, and any lock in it, on its own: one debug
 * line then, nothing more to do. */
static void rollback_after(struct dbconn *c, const char *what)
{
    if (dbconn_run_ok(c, "ROLLBACK"))
        return;
    char why[256];
    dbconn_error(c, NULL, why, sizeof why);
    log_debug("ROLLBACK after %s failed too (the server ends the transaction): %s", what, why);
}

/* A server without PL/pgSQL (dropped by a DBA, or not usable by this
 * role): the wait slice falls back to a plain statement whose lock_timeout
 * is an error the server logs.  Set once, never cleared. */
static _Atomic bool no_plpgsql;

/*
 * The wait slice: wait up to LOCK_WAIT_SLICE_MS on the shared form, inside
 * the transaction `c` has open, then end it and read the version table,
 * all in one message.  Results, in order:
 *
 *   SET LOCAL lock_timeout      the slice
 *   DO $$ ... $$                the wait; a lock_timeout is caught in the
 *                               block's EXCEPTION clause, so the server
 *                               logs nothing (a caught error is not
 *                               reported) and the message goes on
 *   SELECT try_shared           t: the shared lock is held (the wait got
 *                               it: a re-entrant request, answered from
 *                               the backend's local lock table without
 *                               touching shared memory) or the lock came
 *                               free just after the slice; f: still held
 *   COMMIT                      ends the transaction, releasing it
 *   SELECT table_to_xml(...)    the version table, in a transaction of its
 *                               own (to_regclass() sees a table the leader
 *                               just created)
 *
 * No statement lasts longer than the slice, so a CREATE INDEX
 * CONCURRENTLY never waits more than that for a waiter's snapshot.
 * Malloc'ed (the caller frees it); NULL when out of memory.
 */
static char *slice_sql(const struct config *cfg, const char *expr, int64_t key, bool plpgsql)
{
    char *read = versions_idle_sql(cfg, expr);
    size_t n = (read ? strlen(read) : 0) + 512;
    char *sql = read ? malloc(n) : NULL;
    if (sql && plpgsql)
        snprintf(sql, n,
                 "SET LOCAL lock_timeout = '%dms'; "
                 "DO $migshim$BEGIN PERFORM pg_catalog.pg_advisory_xact_lock_shared(%lld); "
                 "EXCEPTION WHEN lock_not_available THEN NULL; END$migshim$; "
                 "SELECT pg_catalog.pg_try_advisory_xact_lock_shared(%lld); COMMIT; %s",
                 LOCK_WAIT_SLICE_MS, (long long)key, (long long)key, read);
    else if (sql)
        snprintf(sql, n,
                 "SET LOCAL lock_timeout = '%dms'; "
                 "SELECT pg_catalog.pg_advisory_xact_lock_shared(%lld); COMMIT; %s",
                 LOCK_WAIT_SLICE_MS, (long long)key, read);
    free(read);
    return sql;
}

/* Send `sql` (one message of several statements) and collect its results:
 * the number that succeeded before the first failure (*nok), the failure's
 * SQLSTATE and message, and the rows of results number `keep_a` and
 * `keep_b` (the caller clears them).  True when every statement succeeded. */
static bool run_many(struct dbconn *c, const char *sql, int keep_a,
                     int keep_b, struct dbres **ra, struct dbres **rb, int *nok, char state[6],
                     char *err, size_t errsz)
{
    *ra = *rb = NULL;
    *nok = 0;
    state[0] = '\0';
    bool failed = false;
    if (!dbconn_send(c, sql)) {
        dbconn_error(c, NULL, err, errsz);
        return false;
    }
    for (struct dbres *x; (x = dbconn_next(c)) != NULL;) {
        if (failed || dbres_kind(c, x) == DBRES_ERROR) {
            if (!failed) {
                snprintf(state, 6, "%s", dbres_sqlstate(c, x));
                dbconn_error(c, x, err, errsz);
            }
            failed = true;
            dbres_free(c, x);
            continue;
        }
        if (*nok == keep_a)
            *ra = x;
        else if (*nok == keep_b)
            *rb = x;
        else
            dbres_free(c, x);
        ++*nok;
    }
    if (!failed && *nok <= (keep_a > keep_b ? keep_a : keep_b)) {
        failed = true; /* the connection went away mid-message */
        dbconn_error(c, NULL, err, errsz);
    }
    return !failed;
}

enum lock_result lock_step(struct dbconn *c, const struct config *cfg,
                           const char *expr, int64_t key, void (*before_wait)(void *), void *arg,
                           struct versions *v, bool *have_v, char *err, size_t errsz)
{
    assert(c && cfg && v && have_v && err && errsz > 0);
    char sql[16 * CONFIG_NAME_MAX + 768], state[6] = "";
    bool xact = cfg->lock == LOCK_XACT;
    *have_v = false;
    snprintf(sql, sizeof sql,
             xact ? "BEGIN ISOLATION LEVEL READ COMMITTED; SELECT pg_catalog.pg_try_advisory_xact_lock(%lld)"
                  : "SELECT pg_catalog.pg_try_advisory_lock(%lld)",
             (long long)key);
    struct dbres *r = run_rows(c, sql, err, errsz);
    if (!r) {
        if (xact)
            rollback_after(c, "a failed try of the lock");
        return LOCK_ERROR;
    }
    bool taken = strcmp(dbres_value(c, r, 0, 0), "t") == 0;
    dbres_free(c, r);
    if (taken)
        return LOCK_TAKEN;

    /* Taken by another: wait on the shared form for one slice.  Session
     * mode waits the same way, in a transaction of its own on the lock
     * connection (nothing session-level to undo afterwards). */
    if (before_wait)
        before_wait(arg);
    if (!xact && !dbconn_run_ok(c, "BEGIN ISOLATION LEVEL READ COMMITTED")) {
        dbconn_error(c, NULL, err, errsz);
        return LOCK_ERROR;
    }
    bool plpgsql = !atomic_load_explicit(&no_plpgsql, memory_order_relaxed);
    char *slice = slice_sql(cfg, expr, key, plpgsql);
    if (!slice) {
        snprintf(err, errsz, "out of memory");
        rollback_after(c, "running out of memory");
        return LOCK_ERROR;
    }
    /* results: 0 SET, 1 DO, 2 try_shared, 3 COMMIT, 4 read (without
     * PL/pgSQL: 0 SET, 1 the wait, 2 COMMIT, 3 read) */
    int nok, i_got = plpgsql ? 2 : -1, i_read = plpgsql ? 4 : 3;
    struct dbres *got, *rd;
    bool ok = run_many(c, slice, i_got, i_read, &got, &rd, &nok, state, err, errsz);
    free(slice);
    if (ok) {
        bool fresh = !plpgsql || dbres_is_value(c, got, "t");
        /* the read's one row: the table as XML, or NULL when absent */
        bool good = versions_from_result(c, rd, v);
        if (got)
            dbres_free(c, got);
        if (rd)
            dbres_free(c, rd);
        if (!good) {
            snprintf(err, errsz, "unexpected answer to the version-table read");
            return LOCK_ERROR;
        }
        *have_v = true;
        return fresh ? LOCK_FREED : LOCK_BUSY;
    }
    if (got)
        dbres_free(c, got);
    if (rd)
        dbres_free(c, rd);
    enum lock_result res = LOCK_ERROR;
    if (!plpgsql && strcmp(state, "55P03") == 0)
        res = LOCK_BUSY;
    else if (plpgsql && nok == 1 &&
             (strcmp(state, "42704") == 0 || strcmp(state, "42501") == 0)) {
        /* the DO block itself was refused (42704: no PL/pgSQL in this
         * database; 42501: no USAGE on it): from now on the plain form,
         * whose timed-out slices the server logs */
        atomic_store(&no_plpgsql, true);
        res = LOCK_BUSY;
    }
    if (dbconn_txn(c) != DBCONN_IDLE && !dbconn_run_ok(c, "ROLLBACK") &&
        res != LOCK_ERROR) {
        dbconn_error(c, NULL, err, errsz);
        res = LOCK_ERROR;
    }
    return res;
}

enum lock_result lock_hand_over(struct dbconn *from, struct dbconn *to, int64_t key,
                                char *err, size_t errsz)
{
    assert(from && to && err && errsz > 0);
    char sql[256], state[6] = "";
    /* Bounded: should `from` fail to let go, `to` gives up after a slice
     * and the caller waits the normal way. */
    snprintf(sql, sizeof sql,
             "BEGIN ISOLATION LEVEL READ COMMITTED; SET LOCAL lock_timeout = '%dms'; "
             "SELECT pg_catalog.pg_advisory_xact_lock(%lld); SET LOCAL lock_timeout = 0",
             4 * LOCK_WAIT_SLICE_MS, (long long)key);
    bool sent = dbconn_send(to, sql);
    if (sent) {
        char q[256];
        snprintf(q, sizeof q,
                 "SELECT 1 FROM pg_catalog.pg_locks WHERE pid = %d AND locktype = 'advisory' "
                 "AND NOT granted",
                 dbconn_backend_pid(to));
        for (int i = 0; i < 2 * LOCK_WAIT_SLICE_MS; i++) { /* ~1 ms a try */
            struct dbres *r = run_rows(from, q, err, errsz);
            bool queued = r && dbres_nrows(from, r) > 0;
            dbres_free(from, r);
            if (!r || queued)
                break;
            struct timespec ts = {0, 1000000L};
            nanosleep(&ts, NULL);
        }
    }
    /* if `from` died, the server let go anyway */
    rollback_after(from, "handing the lock over");
    if (!sent) {
        dbconn_error(to, NULL, err, errsz);
        return LOCK_ERROR;
    }
    /* The statement's results (BEGIN, SET, SELECT, SET): taken when the
     * SELECT answered and nothing failed.  The last SET ends the bound, so
     * that it does not apply to the rest of the lock transaction. */
    enum dbres_kind last = DBRES_ERROR;
    bool any = false, selected = false;
    for (struct dbres *r; (r = dbconn_next(to)) != NULL;) {
        any = true;
        last = dbres_kind(to, r);
        selected |= last == DBRES_ROWS;
        if (last == DBRES_ERROR) {
            snprintf(state, sizeof state, "%s", dbres_sqlstate(to, r));
            dbconn_error(to, r, err, errsz);
        }
        dbres_free(to, r);
    }
    if (any && selected && last == DBRES_COMMAND && !state[0])
        return LOCK_TAKEN;
    if (!any)
        dbconn_error(to, NULL, err, errsz);
    bool clean = dbconn_run_ok(to, "ROLLBACK");
    return clean && strcmp(state, "55P03") == 0 ? LOCK_BUSY : LOCK_ERROR;
}

bool lock_release(struct dbconn *own, enum lock_mode mode, int64_t key)
{
    if (mode == LOCK_XACT)
        return dbconn_run_ok(own, "ROLLBACK");
    char sql[96];
    snprintf(sql, sizeof sql, "SELECT pg_catalog.pg_advisory_unlock(%lld)", (long long)key);
    return dbconn_run_ok(own, sql);
}

bool lock_limit_idle(struct dbconn *own, enum lock_mode mode, double seconds)
{
    char sql[96];
    long long ms = (long long)(seconds * 1000.0);
    if (ms > 2147483647LL)
        ms = 0; /* beyond the setting's range: no limit */
    /* xact: the lock transaction sits idle in transaction; session: the
     * connection sits idle outside one (idle_session_timeout, PostgreSQL 14+;
     * older servers refuse it and only the client-side checks remain). */
    snprintf(sql, sizeof sql,
             mode == LOCK_XACT ? "SET LOCAL idle_in_transaction_session_timeout = %lld"
                               : "SET idle_session_timeout = %lld",
             ms);
    return dbconn_run_ok(own, sql);
}
