/*
 * migtool_alembic — Alembic (and Flask-Migrate) behind include/migtool.h.
 *
 * The target is the heads of the app's revision files (heads.h); the state
 * is the rows of the version table (version_num); a table holding a
 * revision the scripts do not know is ahead.  The lead ends with the
 * leader's run (MIGTOOL_END_RUN).  Alembic's statements on a version table
 * have exact shapes (sqlclass.h), so a leader learns the table its
 * migration uses, per-schema tables are decided at each migration's
 * statements, and the race guard applies.
 */
#include <stdio.h>
#include <string.h>

#include "heads.h"
#include "lock.h"
#include "migtool.h"
#include "sqlclass.h"

static struct heads target;

static void load(const struct config *cfg) { heads_load(cfg, &target); }

static bool known(void) { return target.known; }

static const char *where(void) { return target.known ? target.where : ""; }

static const char *table(const struct config *cfg) { return cfg->version_table; }

static int64_t key(const struct config *cfg, const char *db) { return lock_key_for(cfg, db); }

/* AHEAD when the table holds a revision the local scripts do not know
 * (only with the whole graph known: a `heads` key knows no graph). */
static enum migtool_cmp compare(const struct versions *v)
{
    if (target.graph)
        for (size_t i = 0; i < v->n; i++)
            if (!heads_has_rev(&target, v->v[i]))
                return MIGTOOL_AHEAD;
    if (!v->present || v->n != target.nheads || v->truncated)
        return MIGTOOL_BEHIND;
    for (size_t i = 0; i < target.nheads; i++) {
        bool found = false;
        for (size_t j = 0; j < v->n && !found; j++)
            found = strcmp(target.heads[i], v->v[j]) == 0;
        if (!found)
            return MIGTOOL_BEHIND;
    }
    return MIGTOOL_AT_TARGET;
}

/* "a,b", or "(none)". */
static void list_revs(const char (*revs)[HEADS_REV_MAX], size_t n, const char *sep, char *buf,
                      size_t sz)
{
    size_t o = 0;
    buf[0] = '\0';
    if (n == 0) {
        snprintf(buf, sz, "(none)");
        return;
    }
    for (size_t i = 0; i < n && o < sz; i++)
        o += (size_t)snprintf(buf + o, sz - o, "%s%s", i ? sep : "", revs[i]);
}

static void describe(const struct versions *v, char *buf, size_t n)
{
    list_revs(v->v, v->n, ",", buf, n);
}

static void describe_target(char *buf, size_t n)
{
    list_revs((const char (*)[HEADS_REV_MAX])target.heads, target.nheads, ",", buf, n);
}

static void print_target(FILE *out)
{
    char revs[2048];
    if (!target.known) {
        fprintf(out, "target heads:    unknown\n");
        return;
    }
    list_revs((const char (*)[HEADS_REV_MAX])target.heads, target.nheads, ", ", revs, sizeof revs);
    fprintf(out, "target heads:    %s  (from %s)\n", revs, target.where);
}

static void print_state(FILE *out, const struct config *cfg, const struct versions *v)
{
    char revs[2048];
    list_revs(v->v, v->n, ", ", revs, sizeof revs);
    fprintf(out, "version table:   %s%s%s: %s\n", cfg->version_table_schema,
            cfg->version_table_schema[0] ? "." : "", cfg->version_table,
            v->present ? revs : "absent");
}

static bool writes(const struct config *cfg, const char *sql)
{
    struct sqlclass k;
    sqlclass_classify(sql, cfg->version_table_schema, cfg->version_table, &k);
    return k.kind == SQL_VT_CREATE || k.kind == SQL_VT_INSERT || k.kind == SQL_VT_UPDATE ||
           k.kind == SQL_VT_DELETE;
}

static bool vt_statement(const char *sql, char *schema, size_t ssz, char *tbl, size_t tsz,
                         bool *writes)
{
    struct sqlclass k;
    if (!sqlclass_vt_statement(sql, schema, ssz, tbl, tsz, &k))
        return false;
    *writes = k.kind != SQL_VT_READ;
    return true;
}

/* One of Alembic's version-table statements on the configured table (`qual`
 * its schema qualifier, "" when unqualified), or SQLAlchemy's has_table
 * query of it, the first thing Alembic's migration asks (`qual` the schema
 * it names, "" for the search_path's).  Anything else (the app's own
 * reads) is not. */
static bool decision_point(const struct config *cfg, const char *sql, char *qual, size_t n)
{
    char tbl[CONFIG_NAME_MAX];
    struct sqlclass k;
    if (!sql)
        return false;
    if (sqlclass_vt_statement(sql, qual, n, tbl, sizeof tbl, &k))
        return strcmp(tbl, cfg->version_table) == 0;
    sqlclass_classify(sql, "", cfg->version_table, &k);
    return k.kind == SQL_VT_EXISTS && sqlclass_has_table_schema(sql, qual, n);
}

static bool guards(void) { return target.known; }

const struct migtool migtool_alembic = {
    .name = "alembic",
    .run_label = "",
    .lead_end = MIGTOOL_END_RUN,
    .unknown_leads_to_exit = false,
    .relock_after_lapse = false,
    .state_needs_target = false,
    .load = load,
    .known = known,
    .state_expr = NULL, /* the configured version table */
    .where = where,
    .table = table,
    .key = key,
    .compare = compare,
    .describe = describe,
    .describe_target = describe_target,
    .print_target = print_target,
    .print_state = print_state,
    .writes = writes,
    .vt_statement = vt_statement,
    .decision_point = decision_point,
    .guards = guards,
};
