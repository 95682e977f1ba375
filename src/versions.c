/*
 * versions — see include/versions.h.  The version-table reads: their SQL
 * (the pg_class test that keeps an absent table from being an error, the
 * savepoint that keeps a read inside a transaction from holding anything)
 * and the decoding of query_to_xml's answer into a struct versions.
 */
#include "versions.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "dbconn.h"
#include "pgsql.h"

/* The savepoint around a read inside the app's (or the lock's) transaction:
 * an error in it must not abort that transaction, and rolling it back
 * releases the locks the read took. */
#define SP_OPEN "SAVEPOINT migshim_read; "
#define SP_CLOSE "; ROLLBACK TO SAVEPOINT migshim_read; RELEASE SAVEPOINT migshim_read"
#define SP_UNDO "ROLLBACK TO SAVEPOINT migshim_read; RELEASE SAVEPOINT migshim_read"

/* A read inside a transaction failed and skipped the rest of its message:
 * undo the savepoint now, or every later statement of that transaction
 * fails.  (A connection that fails here is lost: the caller's next
 * statement says so; the read's own failure is the caller's to log.) */
static void undo_savepoint(struct dbconn *c)
{
    if (dbconn_txn(c) != DBCONN_INERROR)
        return;
    if (!dbconn_run_ok(c, SP_UNDO)) {
        char why[256];
        dbconn_error(c, NULL, why, sizeof why);
        log_debug("cannot undo the version-table read's savepoint: %s", why);
    }
}

/* A version table's name as SQL: "schema"."table" or "table". */
static void table_sql_of(const char *schema, const char *table, char *out, size_t n)
{
    char t[2 * CONFIG_NAME_MAX + 3], s[2 * CONFIG_NAME_MAX + 3];
    pgsql_quote_ident(table, t, sizeof t);
    if (schema[0]) {
        pgsql_quote_ident(schema, s, sizeof s);
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

/* Collect the <tag> elements of `r`, a one-row, one-column XML result
 * (NULL: the table is absent) into `out`.  False when `r` is not that. */
static bool read_xml_result(const struct dbconn *c, const struct dbres *r, const char *tag,
                            struct versions *out)
{
    memset(out, 0, sizeof *out);
    if (!r || dbres_nrows(c, r) != 1 || dbres_ncols(c, r) < 1) /* the XML is column 0 */
        return false;
    if (!dbres_isnull(c, r, 0, 0)) {
        char open[32], close[32];
        int no = snprintf(open, sizeof open, "<%s>", tag);
        int nc = snprintf(close, sizeof close, "</%s>", tag);
        out->present = true;
        const char *x = dbres_value(c, r, 0, 0);
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

bool versions_from_result(const struct dbconn *c, const struct dbres *r, struct versions *out)
{
    assert(c && out);
    return read_xml_result(c, r, "version_num", out);
}

/* Send `sql` (maybe several statements) on `c` and collect its answer:
 * `*r` the last row set, `*bad` the first error (either NULL; the caller
 * clears both). */
static void last_rows(struct dbconn *c, const char *sql, struct dbres **r,
                      struct dbres **bad)
{
    *r = *bad = NULL;
    if (!dbconn_send(c, sql))
        return;
    for (struct dbres *x; (x = dbconn_next(c)) != NULL;) {
        enum dbres_kind k = dbres_kind(c, x);
        if (k == DBRES_ROWS && !*bad) {
            if (*r)
                dbres_free(c, *r);
            *r = x;
        } else if (k == DBRES_ERROR && !*bad) {
            *bad = x;
        } else {
            dbres_free(c, x);
        }
    }
}

/* Run the one-row, one-column XML query `sql` and collect its <tag>
 * elements: NULL means the table is absent. */
static bool read_xml(struct dbconn *c, const char *sql, const char *tag,
                     struct versions *out, struct server_id *id, char *err, size_t errsz)
{
    /* `sql` may be several statements: the answer is the last row set,
     * and any error fails the whole read. */
    memset(out, 0, sizeof *out);
    struct dbres *r = NULL, *bad = NULL;
    last_rows(c, sql, &r, &bad);
    if (bad || !r || dbres_nrows(c, r) != 1 || dbres_ncols(c, r) != (id ? 7 : 1)) {
        dbconn_error(c, bad, err, errsz);
        if (!err[0])
            snprintf(err, errsz, "unexpected answer to the version-table read");
        if (r)
            dbres_free(c, r);
        if (bad)
            dbres_free(c, bad);
        return false;
    }
    (void)read_xml_result(c, r, tag, out); /* one row, one column or more: true */
    if (id) { /* current_database(), pg_postmaster_start_time(), pg_is_in_recovery(),
               * current_schema(), the other schema's table, pg_backend_pid() */
        snprintf(id->db, sizeof id->db, "%s", dbres_value(c, r, 0, 1));
        snprintf(id->cluster, sizeof id->cluster, "%s", dbres_value(c, r, 0, 2));
        id->standby = strcmp(dbres_value(c, r, 0, 3), "t") == 0;
        snprintf(id->home, sizeof id->home, "%s",
                 dbres_isnull(c, r, 0, 4) ? "" : dbres_value(c, r, 0, 4));
        id->vt_elsewhere = strcmp(dbres_value(c, r, 0, 5), "t") == 0;
        id->backend_pid = dbres_isnull(c, r, 0, 6) ? 0 : strtol(dbres_value(c, r, 0, 6), NULL, 10);
    }
    dbres_free(c, r);
    return true;
}

static bool read_versions_expr(struct dbconn *c, const char *expr,
                               struct versions *out, char *err, size_t errsz);

bool versions_read(struct dbconn *c, const struct config *cfg,
                   const char *expr, struct versions *out, char *err, size_t errsz)
{
    assert(c && cfg && out && err && errsz > 0);
    if (expr)
        return read_versions_expr(c, expr, out, err, errsz);
    return versions_read_in(c, cfg->version_table_schema, cfg->version_table, out, err,
                            errsz);
}

bool versions_read_in(struct dbconn *c, const char *schema,
                      const char *vtable, struct versions *out, char *err, size_t errsz)
{
    assert(c && schema && vtable && out && err && errsz > 0);
    char table[4 * CONFIG_NAME_MAX + 8], select[4 * CONFIG_NAME_MAX + 64];
    table_sql_of(schema, vtable, table, sizeof table);
    snprintf(select, sizeof select, "SELECT version_num AS v FROM %s", table);
    char lt[2 * CONFIG_NAME_MAX + 8], ls[2 * CONFIG_NAME_MAX + 8], lq[2 * sizeof select + 8];
    pgsql_quote_literal(vtable, lt, sizeof lt);
    pgsql_quote_literal(schema, ls, sizeof ls);
    pgsql_quote_literal(select, lq, sizeof lq);
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
    bool in_txn = dbconn_txn(c) == DBCONN_INTRANS;
    snprintf(sql, sizeof sql,
             "%sSELECT CASE WHEN EXISTS (SELECT 1 FROM pg_catalog.pg_class c "
             "  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
             "  WHERE c.relname = %s AND c.relkind IN ('r', 'p') AND (n.nspname = %s OR "
             "    (%s = '' AND n.nspname = ANY (pg_catalog.current_schemas(false))))) "
             "THEN pg_catalog.query_to_xml(%s, false, false, '')::text END%s",
             in_txn ? SP_OPEN : "", lt, ls, ls, lq, in_txn ? SP_CLOSE : "");
    bool ok = read_xml(c, sql, "v", out, NULL, err, errsz);
    if (!ok && in_txn)
        undo_savepoint(c);
    return ok;
}

/* the last column of the read with the id: which backend answered */
#define PID_COL ", pg_catalog.pg_backend_pid()"
#define ID_COLS ", pg_catalog.current_database(), pg_catalog.pg_postmaster_start_time()::text, " \
                "pg_catalog.pg_is_in_recovery()"

/* "SELECT table_to_xml(...)" of the version table (malloc'ed): exact
 * outside a transaction block, NULL (no error) when it is absent. */
static char *read_idle_sql(const struct config *cfg, const char *expr, bool with_id)
{
    const char *id = with_id ? ID_COLS : "";
    if (expr) {
        size_t n = strlen(expr) + strlen(id) + 128;
        char *sql = malloc(n);
        if (sql)
            snprintf(sql, n, "SELECT %s%s%s", expr, id,
                     with_id ? ", pg_catalog.current_schema(), false" PID_COL : "");
        return sql;
    }
    char table[4 * CONFIG_NAME_MAX + 8], lt[8 * CONFIG_NAME_MAX + 24], ln[2 * CONFIG_NAME_MAX + 8];
    table_sql(cfg, table, sizeof table);
    pgsql_quote_literal(table, lt, sizeof lt);
    pgsql_quote_literal(cfg->version_table, ln, sizeof ln);
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
    size_t n = sizeof lt + sizeof where + 360;
    char *sql = malloc(n);
    if (sql)
        snprintf(sql, n,
                 "SELECT pg_catalog.table_to_xml(pg_catalog.to_regclass(%s), false, false, '')::text%s%s%s",
                 lt, id, where, with_id ? PID_COL : "");
    return sql;
}

char *versions_idle_sql(const struct config *cfg, const char *expr)
{
    assert(cfg);
    return read_idle_sql(cfg, expr, false);
}

bool versions_read_idle(struct dbconn *c, const struct config *cfg,
                        const char *expr, struct versions *out, struct server_id *id, char *err,
                        size_t errsz)
{
    assert(c && cfg && out && err && errsz > 0);
    /* Outside a transaction block each statement starts with a current
     * relation cache, so to_regclass() is exact here, and it is NULL (no
     * error) for an absent table; table_to_xml is strict.  On a brand-new
     * backend this costs about half of the pg_class join plus query_to_xml
     * above: fewer catalogs to load and no query text to parse and plan. */
    char *sql = read_idle_sql(cfg, expr, id != NULL);
    if (!sql) {
        memset(out, 0, sizeof *out);
        snprintf(err, errsz, "out of memory");
        return false;
    }
    bool ok = read_xml(c, sql, "version_num", out, id, err, errsz);
    free(sql);
    return ok;
}

/* versions_read for another tool's read: the same savepoint discipline
 * inside the lock transaction. */
static bool read_versions_expr(struct dbconn *c, const char *expr,
                               struct versions *out, char *err, size_t errsz)
{
    bool in_txn = dbconn_txn(c) == DBCONN_INTRANS;
    size_t n = strlen(expr) + 160;
    char *sql = malloc(n);
    if (!sql) {
        memset(out, 0, sizeof *out);
        snprintf(err, errsz, "out of memory");
        return false;
    }
    snprintf(sql, n, "%sSELECT %s%s", in_txn ? SP_OPEN : "", expr, in_txn ? SP_CLOSE : "");
    bool ok = read_xml(c, sql, "version_num", out, NULL, err, errsz);
    free(sql);
    if (!ok && in_txn)
        undo_savepoint(c);
    return ok;
}

bool versions_any_column(struct dbconn *c)
{
    
    /* in the lock transaction: in a savepoint rolled back at once, so that
     * no catalog lock stays held (see versions_read_in) */
    bool in_txn = dbconn_txn(c) == DBCONN_INTRANS;
    char sql[512];
    snprintf(sql, sizeof sql,
             "%sSELECT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a "
             "JOIN pg_catalog.pg_class c ON c.oid = a.attrelid "
             "WHERE a.attname = 'version_num' AND NOT a.attisdropped AND c.relkind IN ('r', 'p'))%s",
             in_txn ? SP_OPEN : "", in_txn ? SP_CLOSE : "");
    bool any = false, answered = false;
    if (dbconn_send(c, sql)) {
        for (struct dbres *x; (x = dbconn_next(c)) != NULL; dbres_free(c, x))
            if (dbres_kind(c, x) == DBRES_ROWS && dbres_nrows(c, x) == 1) {
                any = strcmp(dbres_value(c, x, 0, 0), "t") == 0;
                answered = true;
            }
    }
    if (!answered) {
        char why[256];
        dbconn_error(c, NULL, why, sizeof why);
        log_debug("cannot look for a version_num column (taken as none): %s", why);
    }
    if (in_txn)
        undo_savepoint(c);
    return any;
}

/* Send `sql` on `c` and keep the last row set when it has one row of
 * `ncols` columns; NULL (err set, the savepoint undone when `in_txn`)
 * on any error or another shape. */
static struct dbres *one_row(struct dbconn *c, const char *sql, int ncols,
                         bool in_txn, char *err, size_t errsz)
{
    struct dbres *r = NULL, *bad = NULL;
    last_rows(c, sql, &r, &bad);
    if (!bad && r && dbres_nrows(c, r) == 1 && dbres_ncols(c, r) == ncols)
        return r;
    dbconn_error(c, bad, err, errsz);
    if (r)
        dbres_free(c, r);
    if (bad)
        dbres_free(c, bad);
    if (in_txn)
        undo_savepoint(c);
    return NULL;
}

bool versions_resolve(struct dbconn *c, const char *table, char *schema,
                      size_t ssz, struct versions *out, char *err, size_t errsz)
{
    assert(c && table && schema && ssz > 0 && out && err && errsz > 0);
    char lt[2 * CONFIG_NAME_MAX + 8];
    pgsql_quote_literal(table, lt, sizeof lt);
    bool in_txn = dbconn_txn(c) == DBCONN_INTRANS;
    /* The schema: the first of the search_path's (current_schemas(false):
     * existing schemas only, pg_temp and pg_catalog left out) that has a
     * table of that name, else current_schema(), where a CREATE TABLE of
     * the unqualified name puts it.  pg_class is read with the statement's
     * snapshot (not to_regclass(): see versions_read_in).  The rows are
     * read only when the table exists (CASE is lazy for a volatile
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
    struct dbres *r = one_row(c, sql, 2, in_txn, err, errsz);
    if (!r)
        return false;
    (void)read_xml_result(c, r, "v", out); /* one_row checked the shape: true */
    if (!dbres_isnull(c, r, 0, 1))
        snprintf(schema, ssz, "%s", dbres_value(c, r, 0, 1));
    dbres_free(c, r);
    return true;
}
