/*
 * lock — see include/lock.h.  Every statement here goes through the real
 * libpq table `pq`; identifiers from the configuration are always quoted
 * (quote_ident below) and passed as parameters where SQL allows.
 */
#include "lock.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

/* "name" with embedded quotes doubled, as PostgreSQL's quote_ident. */
static void quote_ident(const char *name, char *out, size_t n)
{
    size_t o = 0;
    if (n < 3) {
        if (n)
            out[0] = '\0';
        return;
    }
    out[o++] = '"';
    for (const char *p = name; *p && o + 3 < n; p++) {
        if (*p == '"')
            out[o++] = '"';
        out[o++] = *p;
    }
    out[o++] = '"';
    out[o] = '\0';
}

/* The read of another tool (lock_set_read_expr), or NULL: Alembic's. */
static const char *read_expr;

void lock_set_read_expr(const char *expr) { read_expr = expr; }

/* A version table's name as SQL: "schema"."table" or "table". */
static void table_sql_of(const char *schema, const char *table, char *out, size_t n)
{
    char t[2 * CONFIG_NAME_MAX + 3], s[2 * CONFIG_NAME_MAX + 3];
    quote_ident(table, t, sizeof t);
    if (schema[0]) {
        quote_ident(schema, s, sizeof s);
        snprintf(out, n, "%s.%s", s, t);
    } else {
        snprintf(out, n, "%s", t);
    }
}

/* The configured version table's name as SQL. */
static void table_sql(const struct config *cfg, char *out, size_t n)
{
    table_sql_of(cfg->version_table_schema, cfg->version_table, out, n);
}

int64_t lock_key_for(const struct config *cfg, const char *dbname)
{
    return lock_key_for_table(cfg, dbname, cfg->version_table_schema, cfg->version_table);
}

int64_t lock_key_for_table(const struct config *cfg, const char *dbname, const char *schema,
                           const char *table)
{
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

static void first_line(const char *msg, char *err, size_t errsz)
{
    if (!msg)
        msg = "";
    snprintf(err, errsz, "%.*s", (int)strcspn(msg, "\n"), msg);
}

/* The reason a statement failed: the server's message, else libpq's own
 * (a lost connection leaves an error result without fields). */
static void error_text(const struct pq_api *pq, PGconn *c, const PGresult *r, char *err,
                       size_t errsz)
{
    const char *m = r ? pq->PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    first_line(m && *m ? m : pq->PQerrorMessage(c), err, errsz);
    if (!err[0])
        snprintf(err, errsz, "the connection was lost");
}

/* Decode the text of one <v>...</v> element of query_to_xml's output. */
static void xml_unescape(const char *s, size_t len, char *out, size_t n)
{
    static const struct {
        const char *ent;
        char c;
    } ents[] = {{"&amp;", '&'}, {"&lt;", '<'}, {"&gt;", '>'}, {"&quot;", '"'}, {"&apos;", '\''}};
    size_t o = 0;
    for (size_t i = 0; i < len && o + 1 < n;) {
        bool done = false;
        for (size_t e = 0; e < 5 && s[i] == '&'; e++) {
            size_t el = strlen(ents[e].ent);
            if (i + el <= len && strncmp(s + i, ents[e].ent, el) == 0) {
                out[o++] = ents[e].c;
                i += el;
                done = true;
                break;
            }
        }
        if (!done)
            out[o++] = s[i++];
    }
    out[o] = '\0';
}

/* 'text' as an SQL literal, right whatever standard_conforming_strings
 * says: E'' with both quotes and backslashes doubled. */
static void quote_literal(const char *text, char *out, size_t n)
{
    size_t o = 0;
    if (n < 4) {
        if (n)
            out[0] = '\0';
        return;
    }
    out[o++] = 'E';
    out[o++] = '\'';
    for (const char *p = text; *p && o + 3 < n; p++) {
        if (*p == '\'' || *p == '\\')
            out[o++] = *p;
        out[o++] = *p;
    }
    out[o++] = '\'';
    out[o] = '\0';
}

/* Collect the <tag> elements of `r`, a one-row, one-column XML result
 * (NULL: the table is absent) into `out`.  False when `r` is not that. */
static bool read_xml_result(const struct pq_api *pq, const PGresult *r, const char *tag,
                            struct versions *out)
{
    memset(out, 0, sizeof *out);
    if (!r || pq->PQntuples(r) != 1 || pq->PQnfields(r) < 1) /* the XML is column 0 */
        return false;
    if (!pq->PQgetisnull(r, 0, 0)) {
        char open[32], close[32];
        int no = snprintf(open, sizeof open, "<%s>", tag);
        int nc = snprintf(close, sizeof close, "</%s>", tag);
        out->present = true;
        const char *x = pq->PQgetvalue(r, 0, 0);
        for (const char *p = strstr(x, open); p; p = strstr(p, open)) {
            p += no;
            const char *e = strstr(p, close);
            if (!e)
                break;
            if (out->n == sizeof out->v / sizeof out->v[0]) {
                out->truncated = true;
                break;
            }
            xml_unescape(p, (size_t)(e - p), out->v[out->n++], HEADS_REV_MAX);
            p = e + nc;
        }
    }
    return true;
}

static bool run_ok(const struct pq_api *pq, PGconn *c, const char *sql);

/* Send `sql` (maybe several statements) on `c` and collect its answer:
 * `*r` the last row set, `*bad` the first error (either NULL; the caller
 * clears both). */
static void last_rows(const struct pq_api *pq, PGconn *c, const char *sql, PGresult **r,
                      PGresult **bad)
{
    *r = *bad = NULL;
    if (!pq->PQsendQuery(c, sql))
        return;
    for (PGresult *x; (x = pq->PQgetResult(c)) != NULL;) {
        ExecStatusType st = pq->PQresultStatus(x);
        if (st == PGRES_TUPLES_OK && !*bad) {
            if (*r)
                pq->PQclear(*r);
            *r = x;
        } else if (st != PGRES_COMMAND_OK && !*bad) {
            *bad = x;
        } else {
            pq->PQclear(x);
        }
    }
}

/* Run the one-row, one-column XML query `sql` and collect its <tag>
 * elements: NULL means the table is absent. */
static bool read_xml(const struct pq_api *pq, PGconn *c, const char *sql, const char *tag,
                     struct versions *out, struct server_id *id, char sqlstate[6], char *err,
                     size_t errsz)
{
    /* `sql` may be several statements: the answer is the last row set,
     * and any error fails the whole read. */
    memset(out, 0, sizeof *out);
    PGresult *r = NULL, *bad = NULL;
    last_rows(pq, c, sql, &r, &bad);
    if (bad || !r || pq->PQntuples(r) != 1 || pq->PQnfields(r) != (id ? 6 : 1)) {
        if (sqlstate) {
            const char *st = bad ? pq->PQresultErrorField(bad, PG_DIAG_SQLSTATE) : NULL;
            snprintf(sqlstate, 6, "%s", st ? st : "");
        }
        error_text(pq, c, bad, err, errsz);
        if (!err[0])
            snprintf(err, errsz, "unexpected answer to the version-table read");
        if (r)
            pq->PQclear(r);
        if (bad)
            pq->PQclear(bad);
        return false;
    }
    read_xml_result(pq, r, tag, out);
    if (id) { /* current_database(), pg_postmaster_start_time(), pg_is_in_recovery() */
        snprintf(id->db, sizeof id->db, "%s", pq->PQgetvalue(r, 0, 1));
        snprintf(id->cluster, sizeof id->cluster, "%s", pq->PQgetvalue(r, 0, 2));
        id->standby = strcmp(pq->PQgetvalue(r, 0, 3), "t") == 0;
        snprintf(id->home, sizeof id->home, "%s",
                 pq->PQgetisnull(r, 0, 4) ? "" : pq->PQgetvalue(r, 0, 4));
        id->vt_elsewhere = strcmp(pq->PQgetvalue(r, 0, 5), "t") == 0;
    }
    pq->PQclear(r);
    return true;
}

static bool read_versions_expr(const struct pq_api *pq, PGconn *c, struct versions *out,
                               char *err, size_t errsz);

bool lock_read_versions(const struct pq_api *pq, PGconn *c, const struct config *cfg,
                        struct versions *out, char *err, size_t errsz)
{
    if (read_expr)
        return read_versions_expr(pq, c, out, err, errsz);
    return lock_read_versions_in(pq, c, cfg->version_table_schema, cfg->version_table, out, err,
                                 errsz);
}

bool lock_read_versions_in(const struct pq_api *pq, PGconn *c, const char *schema,
                           const char *vtable, struct versions *out, char *err, size_t errsz)
{
    char table[4 * CONFIG_NAME_MAX + 8], select[4 * CONFIG_NAME_MAX + 64];
    table_sql_of(schema, vtable, table, sizeof table);
    snprintf(select, sizeof select, "SELECT version_num AS v FROM %s", table);
    char lt[2 * CONFIG_NAME_MAX + 8], ls[2 * CONFIG_NAME_MAX + 8], lq[2 * sizeof select + 8];
    quote_literal(vtable, lt, sizeof lt);
    quote_literal(schema, ls, sizeof ls);
    quote_literal(select, lq, sizeof lq);
    /* query_to_xml runs only when the table exists (CASE is lazy for a
     * volatile function), so an absent table costs no server error.  The
     * existence test reads pg_class with the statement's own snapshot, not
     * to_regclass(): inside the lock connection's long transaction the
     * relation cache would keep answering "absent" after a peer created it.
     *
     * Simple protocol on purpose: an extended-protocol portal stays open
     * until the next statement, and with it a snapshot (backend_xmin) that
     * a CREATE INDEX CONCURRENTLY of the leader's own migration would wait
     * for forever while the lock connection sits idle in its transaction. */
    char sql[sizeof lt + 2 * sizeof ls + sizeof lq + 640];
    /* Inside the lock transaction (xact mode) the read runs in a savepoint
     * that is rolled back at once: that releases the ACCESS SHARE lock it
     * took on the table, which a leader's own migration altering the
     * version table (ALTER, TRUNCATE, DROP) would otherwise wait for,
     * behind its own process's idle lock transaction, forever. */
    bool in_txn = pq->PQtransactionStatus(c) == PQTRANS_INTRANS;
    snprintf(sql, sizeof sql,
             "%sSELECT CASE WHEN EXISTS (SELECT 1 FROM pg_catalog.pg_class c "
             "  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
             "  WHERE c.relname = %s AND c.relkind IN ('r', 'p') AND (n.nspname = %s OR "
             "    (%s = '' AND n.nspname = ANY (pg_catalog.current_schemas(false))))) "
             "THEN pg_catalog.query_to_xml(%s, false, false, '')::text END%s",
             in_txn ? "SAVEPOINT migshim_read; " : "", lt, ls, ls, lq,
             in_txn ? "; ROLLBACK TO SAVEPOINT migshim_read; RELEASE SAVEPOINT migshim_read" : "");
    bool ok = read_xml(pq, c, sql, "v", out, NULL, NULL, err, errsz);
    /* A failed read skipped the rest of the message: undo the savepoint
     * now, or every later statement of the lock transaction fails. */
    if (!ok && in_txn && pq->PQtransactionStatus(c) == PQTRANS_INERROR)
        run_ok(pq, c, "ROLLBACK TO SAVEPOINT migshim_read; RELEASE SAVEPOINT migshim_read");
    return ok;
}

#define ID_COLS ", pg_catalog.current_database(), pg_catalog.pg_postmaster_start_time()::text, " \
                "pg_catalog.pg_is_in_recovery()"

/* "SELECT table_to_xml(...)" of the version table (malloc'ed): exact
 * outside a transaction block, NULL (no error) when it is absent. */
static char *read_idle_sql(const struct config *cfg, bool with_id)
{
    const char *id = with_id ? ID_COLS : "";
    if (read_expr) {
        size_t n = strlen(read_expr) + strlen(id) + 64;
        char *sql = malloc(n);
        if (sql)
            snprintf(sql, n, "SELECT %s%s%s", read_expr, id,
                     with_id ? ", pg_catalog.current_schema(), false" : "");
        return sql;
    }
    char table[4 * CONFIG_NAME_MAX + 8], lt[8 * CONFIG_NAME_MAX + 24], ln[2 * CONFIG_NAME_MAX + 8];
    table_sql(cfg, table, sizeof table);
    quote_literal(table, lt, sizeof lt);
    quote_literal(cfg->version_table, ln, sizeof ln);
    /* with the server's identity, the session's current_schema() and
     * whether a table of that name with a version_num column exists in a
     * schema other than the one read (per-schema version tables, gate.h) */
    char where[sizeof lt + sizeof ln + 320] = "";
    if (with_id)
        snprintf(where, sizeof where,
                 ", pg_catalog.current_schema(), EXISTS (SELECT 1 FROM pg_catalog.pg_class c "
                 "JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid WHERE c.relname = %s AND "
                 "c.relkind IN ('r', 'p') AND a.attname = 'version_num' AND NOT a.attisdropped "
                 "AND c.oid IS DISTINCT FROM pg_catalog.to_regclass(%s))",
                 ln, lt);
    size_t n = sizeof lt + sizeof where + 320;
    char *sql = malloc(n);
    if (sql)
        snprintf(sql, n,
                 "SELECT pg_catalog.table_to_xml(pg_catalog.to_regclass(%s), false, false, '')::text%s%s",
                 lt, id, where);
    return sql;
}

bool lock_read_versions_idle(const struct pq_api *pq, PGconn *c, const struct config *cfg,
                             struct versions *out, struct server_id *id, char *err,
                             size_t errsz)
{
    /* Outside a transaction block each statement starts with a current
     * relation cache, so to_regclass() is exact here, and it is NULL (no
     * error) for an absent table; table_to_xml is strict.  On a brand-new
     * backend this costs about half of the pg_class join plus query_to_xml
     * above: fewer catalogs to load and no query text to parse and plan. */
    char *sql = read_idle_sql(cfg, id != NULL);
    if (!sql) {
        memset(out, 0, sizeof *out);
        snprintf(err, errsz, "out of memory");
        return false;
    }
    bool ok = read_xml(pq, c, sql, "version_num", out, id, NULL, err, errsz);
    free(sql);
    return ok;
}

/* lock_read_versions for another tool's read: the same savepoint
 * discipline inside the lock transaction. */
static bool read_versions_expr(const struct pq_api *pq, PGconn *c, struct versions *out,
                               char *err, size_t errsz)
{
    bool in_txn = pq->PQtransactionStatus(c) == PQTRANS_INTRANS;
    size_t n = strlen(read_expr) + 160;
    char *sql = malloc(n);
    if (!sql) {
        memset(out, 0, sizeof *out);
        snprintf(err, errsz, "out of memory");
        return false;
    }
    snprintf(sql, n, "%sSELECT %s%s", in_txn ? "SAVEPOINT migshim_read; " : "", read_expr,
             in_txn ? "; ROLLBACK TO SAVEPOINT migshim_read; RELEASE SAVEPOINT migshim_read" : "");
    bool ok = read_xml(pq, c, sql, "version_num", out, NULL, NULL, err, errsz);
    free(sql);
    if (!ok && in_txn && pq->PQtransactionStatus(c) == PQTRANS_INERROR)
        run_ok(pq, c, "ROLLBACK TO SAVEPOINT migshim_read; RELEASE SAVEPOINT migshim_read");
    return ok;
}

/* Run `sql`; return the result if its status is `want`, else NULL with the
 * SQLSTATE in sqlstate (when there is one) and the message in err. */
static PGresult *run(const struct pq_api *pq, PGconn *c, const char *sql, ExecStatusType want,
                     char sqlstate[6], char *err, size_t errsz)
{
    PGresult *r = pq->PQexec(c, sql);
    if (r && pq->PQresultStatus(r) == want)
        return r;
    if (sqlstate) {
        const char *s = r ? pq->PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
        snprintf(sqlstate, 6, "%s", s ? s : "");
    }
    if (err)
        error_text(pq, c, r, err, errsz);
    if (r)
        pq->PQclear(r);
    return NULL;
}

static bool run_ok(const struct pq_api *pq, PGconn *c, const char *sql)
{
    PGresult *r = pq->PQexec(c, sql);
    bool ok = r && (pq->PQresultStatus(r) == PGRES_COMMAND_OK ||
                    pq->PQresultStatus(r) == PGRES_TUPLES_OK);
    if (r)
        pq->PQclear(r);
    return ok;
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
 */
static char *slice_sql(const struct config *cfg, int64_t key, bool plpgsql)
{
    char *read = read_idle_sql(cfg, false);
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
static bool run_many(const struct pq_api *pq, PGconn *c, const char *sql, int keep_a,
                     int keep_b, PGresult **ra, PGresult **rb, int *nok, char state[6],
                     char *err, size_t errsz)
{
    *ra = *rb = NULL;
    *nok = 0;
    state[0] = '\0';
    bool failed = false;
    if (!pq->PQsendQuery(c, sql)) {
        error_text(pq, c, NULL, err, errsz);
        return false;
    }
    for (PGresult *x; (x = pq->PQgetResult(c)) != NULL;) {
        ExecStatusType st = pq->PQresultStatus(x);
        if (failed || (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)) {
            if (!failed) {
                const char *s = pq->PQresultErrorField(x, PG_DIAG_SQLSTATE);
                snprintf(state, 6, "%s", s ? s : "");
                error_text(pq, c, x, err, errsz);
            }
            failed = true;
            pq->PQclear(x);
            continue;
        }
        if (*nok == keep_a)
            *ra = x;
        else if (*nok == keep_b)
            *rb = x;
        else
            pq->PQclear(x);
        ++*nok;
    }
    if (!failed && *nok <= (keep_a > keep_b ? keep_a : keep_b)) {
        failed = true; /* the connection went away mid-message */
        error_text(pq, c, NULL, err, errsz);
    }
    return !failed;
}

/* The text of one-row, one-column result `r` is exactly `want`. */
static bool one_value(const struct pq_api *pq, const PGresult *r, const char *want)
{
    return r && pq->PQntuples(r) == 1 && pq->PQnfields(r) == 1 &&
           strcmp(pq->PQgetvalue(r, 0, 0), want) == 0;
}

enum lock_result lock_step(const struct pq_api *pq, PGconn *c, const struct config *cfg,
                           int64_t key, void (*before_wait)(void *), void *arg,
                           struct versions *v, bool *have_v, char *err, size_t errsz)
{
    char sql[16 * CONFIG_NAME_MAX + 768], state[6] = "";
    bool xact = cfg->lock == LOCK_XACT;
    *have_v = false;
    snprintf(sql, sizeof sql,
             xact ? "BEGIN ISOLATION LEVEL READ COMMITTED; SELECT pg_catalog.pg_try_advisory_xact_lock(%lld)"
                  : "SELECT pg_catalog.pg_try_advisory_lock(%lld)",
             (long long)key);
    PGresult *r = run(pq, c, sql, PGRES_TUPLES_OK, NULL, err, errsz);
    if (!r) {
        if (xact)
            run_ok(pq, c, "ROLLBACK");
        return LOCK_ERROR;
    }
    bool taken = strcmp(pq->PQgetvalue(r, 0, 0), "t") == 0;
    pq->PQclear(r);
    if (taken)
        return LOCK_TAKEN;

    /* Taken by another: wait on the shared form for one slice.  Session
     * mode waits the same way, in a transaction of its own on the lock
     * connection (nothing session-level to undo afterwards). */
    if (before_wait)
        before_wait(arg);
    if (!xact && !run_ok(pq, c, "BEGIN ISOLATION LEVEL READ COMMITTED")) {
        error_text(pq, c, NULL, err, errsz);
        return LOCK_ERROR;
    }
    bool plpgsql = !atomic_load_explicit(&no_plpgsql, memory_order_relaxed);
    char *slice = slice_sql(cfg, key, plpgsql);
    if (!slice) {
        run_ok(pq, c, "ROLLBACK");
        snprintf(err, errsz, "out of memory");
        return LOCK_ERROR;
    }
    /* results: 0 SET, 1 DO, 2 try_shared, 3 COMMIT, 4 read (without
     * PL/pgSQL: 0 SET, 1 the wait, 2 COMMIT, 3 read) */
    int nok, i_got = plpgsql ? 2 : -1, i_read = plpgsql ? 4 : 3;
    PGresult *got, *rd;
    bool ok = run_many(pq, c, slice, i_got, i_read, &got, &rd, &nok, state, err, errsz);
    free(slice);
    if (ok) {
        bool fresh = !plpgsql || one_value(pq, got, "t");
        /* the read's one row: the table as XML, or NULL when absent */
        bool good = read_xml_result(pq, rd, "version_num", v);
        if (got)
            pq->PQclear(got);
        if (rd)
            pq->PQclear(rd);
        if (!good) {
            snprintf(err, errsz, "unexpected answer to the version-table read");
            return LOCK_ERROR;
        }
        *have_v = true;
        return fresh ? LOCK_FREED : LOCK_BUSY;
    }
    if (got)
        pq->PQclear(got);
    if (rd)
        pq->PQclear(rd);
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
    if (pq->PQtransactionStatus(c) != PQTRANS_IDLE && !run_ok(pq, c, "ROLLBACK") &&
        res != LOCK_ERROR) {
        error_text(pq, c, NULL, err, errsz);
        res = LOCK_ERROR;
    }
    return res;
}

enum lock_result lock_hand_over(const struct pq_api *pq, PGconn *from, PGconn *to, int64_t key,
                                char *err, size_t errsz)
{
    char sql[256], state[6] = "";
    /* Bounded: should `from` fail to let go, `to` gives up after a slice
     * and the caller waits the normal way. */
    snprintf(sql, sizeof sql,
             "BEGIN ISOLATION LEVEL READ COMMITTED; SET LOCAL lock_timeout = '%dms'; "
             "SELECT pg_catalog.pg_advisory_xact_lock(%lld); SET LOCAL lock_timeout = 0",
             4 * LOCK_WAIT_SLICE_MS, (long long)key);
    bool sent = pq->PQsendQuery(to, sql);
    if (sent) {
        char q[256];
        snprintf(q, sizeof q,
                 "SELECT 1 FROM pg_catalog.pg_locks WHERE pid = %d AND locktype = 'advisory' "
                 "AND NOT granted",
                 pq->PQbackendPID(to));
        for (int i = 0; i < 2 * LOCK_WAIT_SLICE_MS; i++) { /* ~1 ms a try */
            PGresult *r = run(pq, from, q, PGRES_TUPLES_OK, NULL, err, errsz);
            bool queued = r && pq->PQntuples(r) > 0;
            if (r)
                pq->PQclear(r);
            if (!r || queued)
                break;
            struct timespec ts = {0, 1000000L};
            nanosleep(&ts, NULL);
        }
    }
    run_ok(pq, from, "ROLLBACK"); /* if `from` died, the server let go anyway */
    if (!sent) {
        error_text(pq, to, NULL, err, errsz);
        return LOCK_ERROR;
    }
    /* The statement's results (BEGIN, SET, SELECT, SET): taken when the
     * SELECT answered and nothing failed.  The last SET ends the bound, so
     * that it does not apply to the rest of the lock transaction. */
    ExecStatusType last = PGRES_FATAL_ERROR;
    bool any = false, selected = false;
    for (PGresult *r; (r = pq->PQgetResult(to)) != NULL;) {
        any = true;
        last = pq->PQresultStatus(r);
        selected |= last == PGRES_TUPLES_OK;
        if (last == PGRES_FATAL_ERROR) {
            const char *s = pq->PQresultErrorField(r, PG_DIAG_SQLSTATE);
            snprintf(state, sizeof state, "%s", s ? s : "");
            error_text(pq, to, r, err, errsz);
        }
        pq->PQclear(r);
    }
    if (any && selected && last == PGRES_COMMAND_OK && !state[0])
        return LOCK_TAKEN;
    if (!any)
        error_text(pq, to, NULL, err, errsz);
    bool clean = run_ok(pq, to, "ROLLBACK");
    return clean && strcmp(state, "55P03") == 0 ? LOCK_BUSY : LOCK_ERROR;
}

bool lock_release(const struct pq_api *pq, PGconn *own, enum lock_mode mode, int64_t key)
{
    if (mode == LOCK_XACT)
        return run_ok(pq, own, "ROLLBACK");
    char sql[96];
    snprintf(sql, sizeof sql, "SELECT pg_catalog.pg_advisory_unlock(%lld)", (long long)key);
    return run_ok(pq, own, sql);
}

bool lock_tune_conn(const struct pq_api *pq, PGconn *c, bool local, bool reset)
{
    char sql[768];
    if (reset)
        snprintf(sql, sizeof sql,
                 "SELECT count(pg_catalog.set_config(name, reset_val, false)) FROM pg_catalog.pg_settings "
                 "WHERE name IN ('tcp_keepalives_idle', 'tcp_keepalives_interval', "
                 "'tcp_keepalives_count', 'tcp_user_timeout', 'client_connection_check_interval')");
    else
        snprintf(sql, sizeof sql,
                 "SELECT count(pg_catalog.set_config(name, CASE name "
                 "WHEN 'tcp_keepalives_idle' THEN '%d' WHEN 'tcp_keepalives_interval' THEN '%d' "
                 "WHEN 'tcp_keepalives_count' THEN '%d' WHEN 'tcp_user_timeout' THEN '%d' "
                 "ELSE '%d' END, %s)) FROM pg_catalog.pg_settings "
                 "WHERE name IN ('tcp_keepalives_idle', 'tcp_keepalives_interval', "
                 "'tcp_keepalives_count', 'tcp_user_timeout', 'client_connection_check_interval')",
                 PEER_KEEPALIVE_IDLE, PEER_KEEPALIVE_INTERVAL, PEER_KEEPALIVE_COUNT,
                 PEER_USER_TIMEOUT_MS, PEER_CHECK_INTERVAL_MS, local ? "true" : "false");
    return run_ok(pq, c, sql);
}

bool lock_limit_idle(const struct pq_api *pq, PGconn *own, enum lock_mode mode, double seconds)
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
    return run_ok(pq, own, sql);
}

/* "SELECT <cols> FROM the holder of `key`'s backend" (simple protocol: see
 * lock_read_versions). */
static void holder_sql(int64_t key, const char *cols, char *sql, size_t n)
{
    char hi[24], lo[24];
    snprintf(hi, sizeof hi, "%llu", (unsigned long long)(((uint64_t)key >> 32) & 0xffffffffu));
    snprintf(lo, sizeof lo, "%llu", (unsigned long long)((uint64_t)key & 0xffffffffu));
    snprintf(sql, n,
             "SELECT %s "
             "FROM pg_catalog.pg_locks l JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid "
             "WHERE l.locktype = 'advisory' AND l.granted AND l.mode = 'ExclusiveLock' "
             "  AND l.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database()) "
             "  AND l.classid = %s::pg_catalog.oid AND l.objid = %s::pg_catalog.oid AND l.objsubid = 1",
             cols, hi, lo);
}

bool lock_any_version_column(const struct pq_api *pq, PGconn *c)
{
    /* in the lock transaction: in a savepoint rolled back at once, so that
     * no catalog lock stays held (see lock_read_versions) */
    bool in_txn = pq->PQtransactionStatus(c) == PQTRANS_INTRANS;
    char sql[512];
    snprintf(sql, sizeof sql,
             "%sSELECT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a "
             "JOIN pg_catalog.pg_class c ON c.oid = a.attrelid "
             "WHERE a.attname = 'version_num' AND NOT a.attisdropped AND c.relkind IN ('r', 'p'))%s",
             in_txn ? "SAVEPOINT migshim_read; " : "",
             in_txn ? "; ROLLBACK TO SAVEPOINT migshim_read; RELEASE SAVEPOINT migshim_read" : "");
    bool any = false;
    if (pq->PQsendQuery(c, sql)) {
        for (PGresult *x; (x = pq->PQgetResult(c)) != NULL; pq->PQclear(x))
            if (pq->PQresultStatus(x) == PGRES_TUPLES_OK && pq->PQntuples(x) == 1)
                any = strcmp(pq->PQgetvalue(x, 0, 0), "t") == 0;
    }
    if (in_txn && pq->PQtransactionStatus(c) == PQTRANS_INERROR)
        run_ok(pq, c, "ROLLBACK TO SAVEPOINT migshim_read; RELEASE SAVEPOINT migshim_read");
    return any;
}

/* One part of the published name: plain when it is a lower-case
 * identifier, else "quoted" ("" doubled).  False when it does not fit or
 * holds a byte application_name would not keep (non-ASCII, control). */
static bool put_part(const char *name, char *out, size_t n, size_t *o)
{
    bool plain = (name[0] >= 'a' && name[0] <= 'z') || name[0] == '_';
    for (const char *p = name; *p; p++) {
        unsigned char ch = (unsigned char)*p;
        if (ch < 0x20 || ch > 0x7e)
            return false;
        plain &= (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '_';
    }
    size_t need = strlen(name) + (plain ? 0 : 2);
    for (const char *p = name; !plain && *p; p++)
        need += *p == '"';
    if (*o + need >= n)
        return false;
    if (!plain)
        out[(*o)++] = '"';
    for (const char *p = name; *p; p++) {
        if (!plain && *p == '"')
            out[(*o)++] = '"';
        out[(*o)++] = *p;
    }
    if (!plain)
        out[(*o)++] = '"';
    out[*o] = '\0';
    return true;
}

bool lock_vt_format(const char *schema, const char *table, char *out, size_t n)
{
    size_t o = 0;
    if (!n || !table[0])
        return false;
    out[0] = '\0';
    if (schema[0]) {
        if (!put_part(schema, out, n, &o) || o + 1 >= n)
            return false;
        out[o++] = '.';
        out[o] = '\0';
    }
    return put_part(table, out, n, &o);
}

/* Read one part at *p (see put_part) into out; false when malformed. */
static bool get_part(const char **p, char *out, size_t n)
{
    size_t o = 0;
    const char *s = *p;
    if (*s == '"') {
        for (s++;; s++) {
            if (!*s)
                return false;
            if (*s == '"') {
                if (s[1] != '"')
                    break;
                s++;
            }
            if (o + 1 >= n)
                return false;
            out[o++] = *s;
        }
        s++;
    } else {
        while ((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_') {
            if (o + 1 >= n)
                return false;
            out[o++] = *s++;
        }
    }
    out[o] = '\0';
    *p = s;
    return o > 0;
}

bool lock_vt_parse(const char *text, char *schema, size_t ssz, char *table, size_t tsz)
{
    const char *p = text;
    char first[CONFIG_NAME_MAX];
    if (!get_part(&p, first, sizeof first))
        return false;
    if (*p == '.') {
        p++;
        if (!get_part(&p, table, tsz) || (*p && *p != ' ') || strlen(first) >= ssz)
            return false;
        snprintf(schema, ssz, "%s", first);
        return true;
    }
    if ((*p && *p != ' ') || strlen(first) >= tsz || !ssz)
        return false;
    schema[0] = '\0';
    snprintf(table, tsz, "%s", first);
    return true;
}

bool lock_holder_state(const struct pq_api *pq, PGconn *c, int64_t key, double *idle,
                       bool *migrating, struct lock_vt *vt)
{
    return lock_holder_state_run(pq, c, key, idle, migrating, vt, NULL);
}

bool lock_holder_state_run(const struct pq_api *pq, PGconn *c, int64_t key, double *idle,
                           bool *migrating, struct lock_vt *vt, enum lock_run *run)
{
    char sql[1024];
    holder_sql(key, "extract(epoch FROM now() - a.state_change)::float8, a.application_name",
               sql, sizeof sql);
    PGresult *r = pq->PQexec(c, sql);
    bool ok = r && pq->PQresultStatus(r) == PGRES_TUPLES_OK && pq->PQntuples(r) > 0 &&
              !pq->PQgetisnull(r, 0, 0);
    if (vt)
        vt->known = false;
    if (run)
        *run = LOCK_RUN_GOING;
    if (ok) {
        *idle = strtod(pq->PQgetvalue(r, 0, 0), NULL);
        const char *app = pq->PQgetvalue(r, 0, 1);
        const char *m = strstr(app, " " LOCK_MIGRATING_MARK);
        size_t ml = strlen(" " LOCK_MIGRATING_MARK);
        *migrating = m && (m[ml] == '\0' || m[ml] == ' ');
        const char *v = *migrating ? strstr(m + ml, " " LOCK_VT_MARK) : NULL;
        if (vt && v)
            vt->known = lock_vt_parse(v + strlen(" " LOCK_VT_MARK), vt->schema,
                                      sizeof vt->schema, vt->table, sizeof vt->table);
        /* the token follows the mark directly (lock_mark_run) */
        const char *t = *migrating ? m + ml : NULL;
        size_t tl = strlen(" " LOCK_RUN_MARK);
        if (run && t && strncmp(t, " " LOCK_RUN_MARK, tl) == 0) {
            if (strncmp(t + tl, "failed", 6) == 0 && (t[tl + 6] == '\0' || t[tl + 6] == ' '))
                *run = LOCK_RUN_FAILED;
            else if (strncmp(t + tl, "ended", 5) == 0 && (t[tl + 5] == '\0' || t[tl + 5] == ' '))
                *run = LOCK_RUN_ENDED;
        }
    }
    if (r)
        pq->PQclear(r);
    return ok;
}

bool lock_mark_run(const struct pq_api *pq, PGconn *own, enum lock_run run, const char *schema,
                   const char *table)
{
    static const char *const token[] = {"", " " LOCK_RUN_MARK "ended", " " LOCK_RUN_MARK "failed"};
    char name[64] = "", host[64] = "", app[64], lit[2 * sizeof app + 8], sql[sizeof lit + 96];
    bool vt = table && table[0] && lock_vt_format(schema ? schema : "", table, name, sizeof name);
    int n = -1;
    if (vt) {
        n = snprintf(app, sizeof app, "migshim lock pid=%ld " LOCK_MIGRATING_MARK "%s " LOCK_VT_MARK "%s",
                     (long)getpid(), token[run], name);
        if (n < 0 || (size_t)n >= sizeof app) /* the name first: see lock.h */
            n = snprintf(app, sizeof app, "migshim lock pid=%ld " LOCK_MIGRATING_MARK " " LOCK_VT_MARK "%s",
                         (long)getpid(), name);
    } else {
        /* as ownconn_open names it, plus the marks; a host name too long
         * for both is cut short (the marks first) */
        gethostname(host, sizeof host - 1);
        char mark[32];
        snprintf(mark, sizeof mark, " " LOCK_MIGRATING_MARK "%s", token[run]);
        int room = (int)(sizeof app) - 1 - (int)strlen(mark) -
                   snprintf(NULL, 0, "migshim lock pid=%ld host=", (long)getpid());
        n = snprintf(app, sizeof app, "migshim lock pid=%ld host=%.*s%s", (long)getpid(),
                     room > 0 ? room : 0, host, mark);
    }
    if (n < 0 || (size_t)n >= sizeof app) {
        log_warn("cannot publish the migration run's state on the lock connection (name too long)");
        return false;
    }
    quote_literal(app, lit, sizeof lit);
    snprintf(sql, sizeof sql, "SELECT pg_catalog.set_config('application_name', %s, false)", lit);
    if (run_ok(pq, own, sql))
        return true;
    log_warn("cannot publish the migration run's state on the lock connection: %s",
             pq->PQerrorMessage(own));
    return false;
}

bool lock_mark_migrating(const struct pq_api *pq, PGconn *own)
{
    return run_ok(pq, own, "SELECT pg_catalog.set_config('application_name', "
                           "pg_catalog.current_setting('application_name') || ' " LOCK_MIGRATING_MARK
                           "', false)");
}

bool lock_mark_migrating_vt(const struct pq_api *pq, PGconn *own, const char *schema,
                            const char *table)
{
    /* application_name keeps 63 bytes of printable ASCII: the host is
     * left out to make room; a name that still does not fit is not
     * published (waiters then find out by leading briefly themselves) */
    char name[64], app[64], lit[2 * sizeof app + 8], sql[sizeof lit + 96];
    int n = -1;
    if (lock_vt_format(schema, table, name, sizeof name))
        n = snprintf(app, sizeof app, "migshim lock pid=%ld " LOCK_MIGRATING_MARK " " LOCK_VT_MARK "%s",
                     (long)getpid(), name);
    if (n < 0 || (size_t)n >= sizeof app)
        return lock_mark_migrating(pq, own);
    quote_literal(app, lit, sizeof lit);
    snprintf(sql, sizeof sql, "SELECT pg_catalog.set_config('application_name', %s, false)", lit);
    return run_ok(pq, own, sql);
}

void lock_describe_holder(const struct pq_api *pq, PGconn *own, int64_t key, char *buf, size_t n)
{
    char sql[1024];
    holder_sql(key, "a.pid, coalesce(pg_catalog.host(a.client_addr), 'local'), a.application_name, "
                    "to_char(coalesce(a.xact_start, a.backend_start), 'YYYY-MM-DD HH24:MI:SS TZ')",
               sql, sizeof sql);
    PGresult *r = pq->PQexec(own, sql);
    if (r && pq->PQresultStatus(r) == PGRES_TUPLES_OK && pq->PQntuples(r) > 0)
        snprintf(buf, n, "backend pid %s from %s, application_name '%s', since %s",
                 pq->PQgetvalue(r, 0, 0), pq->PQgetvalue(r, 0, 1), pq->PQgetvalue(r, 0, 2),
                 pq->PQgetvalue(r, 0, 3));
    else
        snprintf(buf, n, "nobody (it was just released)");
    if (r)
        pq->PQclear(r);
}

/* The savepoint around a read inside the app's (or the lock's) transaction:
 * an error in it must not abort that transaction. */
#define SP_OPEN "SAVEPOINT migshim_read; "
#define SP_CLOSE "; ROLLBACK TO SAVEPOINT migshim_read; RELEASE SAVEPOINT migshim_read"

/* Send `sql` on `c` and keep the last row set when it has one row of
 * `ncols` columns; false (err set, the savepoint undone when `in_txn`)
 * on any error or another shape. */
static PGresult *one_row(const struct pq_api *pq, PGconn *c, const char *sql, int ncols,
                         bool in_txn, char *err, size_t errsz)
{
    PGresult *r = NULL, *bad = NULL;
    last_rows(pq, c, sql, &r, &bad);
    if (!bad && r && pq->PQntuples(r) == 1 && pq->PQnfields(r) == ncols)
        return r;
    error_text(pq, c, bad, err, errsz);
    if (r)
        pq->PQclear(r);
    if (bad)
        pq->PQclear(bad);
    if (in_txn && pq->PQtransactionStatus(c) == PQTRANS_INERROR)
        run_ok(pq, c, "ROLLBACK TO SAVEPOINT migshim_read; RELEASE SAVEPOINT migshim_read");
    return NULL;
}

bool lock_resolve_versions(const struct pq_api *pq, PGconn *c, const char *table, char *schema,
                           size_t ssz, struct versions *out, char *err, size_t errsz)
{
    char lt[2 * CONFIG_NAME_MAX + 8];
    quote_literal(table, lt, sizeof lt);
    bool in_txn = pq->PQtransactionStatus(c) == PQTRANS_INTRANS;
    /* The schema: the first of the search_path's (current_schemas(false):
     * existing schemas only, pg_temp and pg_catalog left out) that has a
     * table of that name, else current_schema(), where a CREATE TABLE of
     * the unqualified name puts it.  pg_class is read with the statement's
     * snapshot (not to_regclass(): see lock_read_versions_in).  The rows
     * are read only when the table exists (CASE is lazy for a volatile
     * function: no error for an absent one), the name quoted by format's
     * %I on the server.  In a transaction: inside a savepoint rolled back
     * at once, so that neither an error nor a lock stays in it. */
    char sql[2 * sizeof lt + 1200];
    snprintf(sql, sizeof sql,
             "%sSELECT CASE WHEN s.found THEN pg_catalog.query_to_xml(pg_catalog.format("
             "'SELECT version_num AS v FROM %%I.%%I', s.nsp, %s), false, false, '')::text END, "
             "s.nsp FROM (SELECT COALESCE(f.nspname, pg_catalog.current_schema()) AS nsp, "
             "f.nspname IS NOT NULL AS found FROM (SELECT 1) AS one LEFT JOIN LATERAL ("
             "SELECT n.nspname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
             "ON n.oid = c.relnamespace WHERE c.relname = %s AND c.relkind IN ('r', 'p') "
             "AND n.nspname = ANY (pg_catalog.current_schemas(false)) ORDER BY "
             "pg_catalog.array_position(pg_catalog.current_schemas(false), n.nspname) LIMIT 1) "
             "AS f ON true) AS s%s",
             in_txn ? SP_OPEN : "", lt, lt, in_txn ? SP_CLOSE : "");
    memset(out, 0, sizeof *out);
    schema[0] = '\0';
    PGresult *r = one_row(pq, c, sql, 2, in_txn, err, errsz);
    if (!r)
        return false;
    read_xml_result(pq, r, "v", out);
    if (!pq->PQgetisnull(r, 0, 1))
        snprintf(schema, ssz, "%s", pq->PQgetvalue(r, 0, 1));
    pq->PQclear(r);
    return true;
}
