/*
 * holder — see include/holder.h.  The application_name marks a leader
 * publishes on its lock connection, their text form, and the reads of the
 * lock holder's backend (pg_locks joined to pg_stat_activity).
 */
#include "holder.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "dbconn.h"
#include "pgsql.h"

/* "SELECT <cols> FROM the holder of `key`'s backend" (simple protocol: see
 * versions.h). */
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

bool holder_vt_format(const char *schema, const char *table, char *out, size_t n)
{
    assert(schema && table && (out || n == 0));
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

bool holder_vt_parse(const char *text, char *schema, size_t ssz, char *table, size_t tsz)
{
    assert(text && schema && table && tsz > 0);
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

bool holder_state(struct dbconn *c, int64_t key, double *idle,
                  bool *migrating, struct holder_vt *vt)
{
    return holder_state_run(c, key, idle, migrating, vt, NULL);
}

bool holder_state_run(struct dbconn *c, int64_t key, double *idle,
                      bool *migrating, struct holder_vt *vt, enum holder_run *run)
{
    assert(c && idle && migrating);
    char sql[1024];
    holder_sql(key, "extract(epoch FROM now() - a.state_change)::float8, a.application_name",
               sql, sizeof sql);
    struct dbres *r = dbconn_exec(c, sql);
    bool ok = r && dbres_kind(c, r) == DBRES_ROWS && dbres_nrows(c, r) > 0 &&
              !dbres_isnull(c, r, 0, 0);
    if (vt)
        vt->known = false;
    if (run)
        *run = HOLDER_RUN_GOING;
    if (ok) {
        *idle = strtod(dbres_value(c, r, 0, 0), NULL);
        const char *app = dbres_value(c, r, 0, 1);
        const char *m = strstr(app, " " HOLDER_MIGRATING_MARK);
        size_t ml = strlen(" " HOLDER_MIGRATING_MARK);
        *migrating = m && (m[ml] == '\0' || m[ml] == ' ');
        const char *v = *migrating ? strstr(m + ml, " " HOLDER_VT_MARK) : NULL;
        if (vt && v)
            vt->known = holder_vt_parse(v + strlen(" " HOLDER_VT_MARK), vt->schema,
                                        sizeof vt->schema, vt->table, sizeof vt->table);
        /* the token follows the mark directly (holder_mark_run) */
        const char *t = *migrating ? m + ml : NULL;
        size_t tl = strlen(" " HOLDER_RUN_MARK);
        if (run && t && strncmp(t, " " HOLDER_RUN_MARK, tl) == 0) {
            if (strncmp(t + tl, "failed", 6) == 0 && (t[tl + 6] == '\0' || t[tl + 6] == ' '))
                *run = HOLDER_RUN_FAILED;
            else if (strncmp(t + tl, "ended", 5) == 0 && (t[tl + 5] == '\0' || t[tl + 5] == ' '))
                *run = HOLDER_RUN_ENDED;
        }
    }
    if (r)
        dbres_free(c, r);
    return ok;
}

/* Set `own`'s application_name to `app` (session-wide). */
static bool set_app_name(struct dbconn *own, const char *app)
{
    char lit[2 * 64 + 8], sql[sizeof lit + 96];
    pgsql_quote_literal(app, lit, sizeof lit);
    snprintf(sql, sizeof sql, "SELECT pg_catalog.set_config('application_name', %s, false)", lit);
    return dbconn_run_ok(own, sql);
}

bool holder_mark_run(struct dbconn *own, enum holder_run run,
                     const char *schema, const char *table)
{
    assert(own && run >= HOLDER_RUN_GOING && run <= HOLDER_RUN_FAILED);
    static const char *const token[] = {"", " " HOLDER_RUN_MARK "ended",
                                        " " HOLDER_RUN_MARK "failed"};
    char name[64] = "", host[64] = "", app[64];
    bool vt = table && table[0] && holder_vt_format(schema ? schema : "", table, name, sizeof name);
    int n = -1;
    if (vt) {
        n = snprintf(app, sizeof app,
                     "migshim lock pid=%ld " HOLDER_MIGRATING_MARK "%s " HOLDER_VT_MARK "%s",
                     (long)getpid(), token[run], name);
        if (n < 0 || (size_t)n >= sizeof app) /* the name first: see holder.h */
            n = snprintf(app, sizeof app,
                         "migshim lock pid=%ld " HOLDER_MIGRATING_MARK " " HOLDER_VT_MARK "%s",
                         (long)getpid(), name);
    } else {
        /* as ownconn_open names it, plus the marks; a host name too long
         * for both is cut short (the marks first) */
        gethostname(host, sizeof host - 1); /* "" (or cut short) when it fails */
        char mark[32];
        snprintf(mark, sizeof mark, " " HOLDER_MIGRATING_MARK "%s", token[run]);
        int room = (int)(sizeof app) - 1 - (int)strlen(mark) -
                   snprintf(NULL, 0, "migshim lock pid=%ld host=", (long)getpid());
        n = snprintf(app, sizeof app, "migshim lock pid=%ld host=%.*s%s", (long)getpid(),
                     room > 0 ? room : 0, host, mark);
    }
    if (n < 0 || (size_t)n >= sizeof app) {
        log_warn("cannot publish the migration run's state on the lock connection (name too long)");
        return false;
    }
    if (set_app_name(own, app))
        return true;
    log_warn("cannot publish the migration run's state on the lock connection: %s",
             dbconn_last_error(own));
    return false;
}

bool holder_mark_migrating(struct dbconn *own)
{
    
    return dbconn_run_ok(own,
                        "SELECT pg_catalog.set_config('application_name', "
                        "pg_catalog.current_setting('application_name') || ' " HOLDER_MIGRATING_MARK
                        "', false)");
}

bool holder_mark_migrating_vt(struct dbconn *own, const char *schema,
                              const char *table)
{
    assert(own && schema && table);
    /* application_name keeps 63 bytes of printable ASCII: the host is
     * left out to make room; a name that still does not fit is not
     * published (waiters then find out by leading briefly themselves) */
    char name[64], app[64];
    int n = -1;
    if (holder_vt_format(schema, table, name, sizeof name))
        n = snprintf(app, sizeof app,
                     "migshim lock pid=%ld " HOLDER_MIGRATING_MARK " " HOLDER_VT_MARK "%s",
                     (long)getpid(), name);
    if (n < 0 || (size_t)n >= sizeof app)
        return holder_mark_migrating(own);
    return set_app_name(own, app);
}

void holder_describe(struct dbconn *own, int64_t key, char *buf, size_t n)
{
    assert(own && buf && n > 0);
    char sql[1024];
    holder_sql(key, "a.pid, coalesce(pg_catalog.host(a.client_addr), 'local'), a.application_name, "
                    "to_char(coalesce(a.xact_start, a.backend_start), 'YYYY-MM-DD HH24:MI:SS TZ')",
               sql, sizeof sql);
    struct dbres *r = dbconn_exec(own, sql);
    if (r && dbres_kind(own, r) == DBRES_ROWS && dbres_nrows(own, r) > 0)
        snprintf(buf, n, "backend pid %s from %s, application_name '%s', since %s",
                 dbres_value(own, r, 0, 0), dbres_value(own, r, 0, 1), dbres_value(own, r, 0, 2),
                 dbres_value(own, r, 0, 3));
    else
        snprintf(buf, n, "nobody (it was just released)");
    if (r)
        dbres_free(own, r);
}
