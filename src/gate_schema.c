/*
 * gate_schema — per-schema version tables (see include/gate.h, "Per-schema",
 * and include/gate_int.h; the gate's state machine is gate.c).
 *
 * The first connection's read looks for the version table where that
 * connection's search_path finds it; an app that sets search_path later
 * (Alembic's multi-tenant recipe: SET search_path in env.py, one version
 * table per tenant schema) keeps its tables elsewhere.  With
 * version_table_schema not set, when the same round trip says that another
 * schema has a table of that name with a version_num column
 * (id->vt_elsewhere), the database is decided per statement (G_SCHEMA,
 * schema_decide), whether the table read is absent, behind or at the
 * target (a new tenant next to an at-head shared one is still serialized).
 * When no other schema has one (a fresh deploy), the process leads or
 * waits as usual; with the table absent, the leader's first statement on
 * it says which schema its migration is about (lead_resolve, sp.home).
 */
#include "gate_int.h"

#include <assert.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "clock.h"
#include "config.h"
#include "dbconn.h"
#include "events.h"
#include "log.h"
#include "shim.h"
#include "versions.h"


bool schema_mode(struct gdb *g, const struct versions *v, const struct server_id *id)
{
    const struct config *cfg = shim_config();
    if (!gate_tool->decision_point || cfg->version_table_schema[0])
        return false;
    if (!v->present) {
        g->sp.home_known = true;
        snprintf(g->sp.home, sizeof g->sp.home, "%s", id->home);
    }
    if (!id->vt_elsewhere)
        return false;
    g->sp.on = true;
    log_debug("database \"%s\": other schemas than this connection's (\"%s\") have a \"%s\" "
              "table: deciding at each of the migration's statements on it, in the schema its "
              "session resolves the table to", g->name, id->home, cfg->version_table);
    return true;
}

/* Read the configured version table as the app's statement on `pg` will
 * find it: in `qual` when the statement names a schema, else where the
 * session's search_path resolves it (versions_resolve); `schema`
 * says which.  On the app's connection, blocking for the one round trip;
 * false (err set) when the connection cannot take a statement now. */
static bool read_as_app(const struct pq_copy *copy, PGconn *pg, const char *qual, char *schema,
                        size_t ssz, struct versions *v, char *err, size_t errsz) MUSTCHECK;
static bool read_as_app(const struct pq_copy *copy, PGconn *pg, const char *qual, char *schema,
                        size_t ssz, struct versions *v, char *err, size_t errsz)
{
    struct dbconn_pq pc;
    struct dbconn *c = seam(&pc, copy, pg);
    const char *table = shim_config()->version_table;
    enum dbconn_txn ts = dbconn_txn(c);
    if (ts != DBCONN_IDLE && ts != DBCONN_INTRANS) {
        snprintf(err, errsz, "the connection is %s",
                 ts == DBCONN_INERROR ? "in a failed transaction" : "busy");
        return false;
    }
    if (dbconn_pipelined(c)) {
        snprintf(err, errsz, "the connection is in pipeline mode");
        return false;
    }
    bool nb = dbconn_block(c);
    bool ok;
    if (qual[0]) {
        snprintf(schema, ssz, "%s", qual);
        ok = versions_read_in(c, qual, table, v, err, errsz);
    } else {
        ok = versions_resolve(c, table, schema, ssz, v, err, errsz);
    }
    dbconn_unblock(c, nb);
    return ok;
}

/* A lead of g follows `schema`'s version table (the configured name): it
 * re-reads that table at each commit (gate_after, read_lead_table), and
 * gives no advice about the settings, which are right. */
static void follow_schema(struct gdb *g, const char *schema)
{
    memset(&g->vt, 0, sizeof g->vt);
    g->vt.known = g->vt.learned = true;
    g->vt.warned = true;
    snprintf(g->vt.schema, sizeof g->vt.schema, "%s", schema);
    snprintf(g->vt.table, sizeof g->vt.table, "%s", shim_config()->version_table);
}

/*
 * G_SCHEMA: the app is about to send `sql` on `pg` (mutex held).  Only
 * the decision points of alembic_vt_schema decide: SQLAlchemy's has_table
 * query, the first thing Alembic's migration sends on the table, before
 * anything else of the migration (deciding later would let a waiter go on
 * from a transaction that already saw no table), and Alembic's own
 * version-table statements.  The app's other reads of the table (a
 * /ready) cost nothing.  The table is read where the statement finds it
 * (read_as_app): at the target or ahead, the statement goes on with no
 * lock; behind, the process takes the database's migration lock or waits
 * for the holder, reading that schema's table (sp.schema, cfg_of), and
 * either leads that schema's migration (LEADING following that table,
 * back to G_SCHEMA when it holds the target) or goes on once a peer
 * brought it to the target.
 */
void schema_decide(const struct pq_copy *copy, PGconn *pg, struct gdb *g, const char *sql)
{
    const struct config *cfg = shim_config();
    char qual[CONFIG_NAME_MAX], schema[CONFIG_NAME_MAX], err[256], revs[512];
    char name[2 * CONFIG_NAME_MAX + 8], why[2 * CONFIG_NAME_MAX + 96];
    struct versions v;
    assert(g->st == G_SCHEMA);
    if (!gate_tool->decision_point(cfg, sql, qual, sizeof qual))
        return;
    pthread_mutex_unlock(&gate_mu); /* a round trip on the app's own connection */
    bool read = read_as_app(copy, pg, qual, schema, sizeof schema, &v, err, sizeof err);
    pthread_mutex_lock(&gate_mu);
    while (g->st == G_DECIDING)
        pthread_cond_wait(&gate_cv, &gate_mu);
    if (!read) {
        log_warn("database \"%s\": cannot read the version table \"%s\" as this connection "
                 "resolves it (%s); this statement goes on without the gate",
                 g->name, cfg->version_table, err);
        return;
    }
    if (g->st != G_SCHEMA) /* another thread of this process leads meanwhile */
        return;
    if (!schema[0]) {
        log_debug("database \"%s\": this connection's search_path names no existing schema; "
                  "nothing to gate", g->name);
        return;
    }
    vt_text(schema, cfg->version_table, name, sizeof name);
    describe(&v, revs, sizeof revs);
    enum cmp c = compare(&v);
    if (c == AT_TARGET) {
        log_debug("database \"%s\": %s is at head (%s); proceeding", g->name, name, revs);
        events_emit("at_head", g->name, revs, name);
        return;
    }
    if (c == AHEAD) {
        log_warn("database \"%s\": %s holds revisions the local scripts do not know (%s): a "
                 "newer deploy migrated it; proceeding", g->name, name, revs);
        events_emit("ahead", g->name, revs, name);
        return;
    }
    snprintf(why, sizeof why, "in %s, %s", name,
             qual[0] ? "the table its statement names" : "where its search_path puts the table");
    log_info("database \"%s\": %s is at %s, behind the target: taking the migration lock, or "
             "waiting for its holder up to wait_timeout (%g s)", g->name, name, revs,
             cfg->wait_timeout);
    sp_use(g, schema);
    enum outcome o = reacquire(copy, pg, g, why);
    if (o == OUT_LEADING) {
        set_state(g, G_LEADING);
        g->grace_deadline = clock_now() + cfg->leader_grace;
        g->saw_vt = false; /* gate_before's LEADING branch: hold_timeout, the mark */
        follow_schema(g, schema);
        g->sp.checked = true;
        g->sp.wrote = false;
        return;
    }
    sp_use(g, "");
    if (o == OUT_FAILED || o == OUT_INTERRUPTED)
        fail_app_conn(copy, pg); /* the statement fails; the app's handler runs */
}

/*
 * A leader whose first connection found no version table (sp.home_known)
 * is about to send its first Alembic statement on the configured table,
 * unqualified (a qualified one is gate_learn's): where does the session
 * resolve it?  In the first connection's schema (sp.home): as the lock
 * connection, made like it, reads it; nothing to do.  Elsewhere (search_path
 * set since): the lead follows that schema's table and the database is
 * decided per statement from then on (sp.on); if that table is already at
 * the target, a peer migrated it before this process got the lock: release
 * and go on (true: the lead ended here).  Mutex held.
 */
bool lead_resolve(const struct pq_copy *copy, PGconn *pg, struct gdb *g, const char *sql)
{
    const struct config *cfg = shim_config();
    char qual[CONFIG_NAME_MAX], schema[CONFIG_NAME_MAX], err[256], revs[512];
    char name[2 * CONFIG_NAME_MAX + 8];
    struct versions v;
    assert(g->st == G_LEADING);
    if (!gate_tool->decision_point(cfg, sql, qual, sizeof qual) || qual[0])
        return false;
    g->sp.checked = true;
    if (!read_as_app(copy, pg, qual, schema, sizeof schema, &v, err, sizeof err)) {
        log_warn("database \"%s\": cannot read the version table \"%s\" as the migration's "
                 "connection resolves it (%s); the lead follows the configured one",
                 g->name, cfg->version_table, err);
        return false;
    }
    if (!schema[0] || strcmp(schema, g->sp.home) == 0)
        return false;
    g->sp.on = true;
    g->sp.wrote = false;
    follow_schema(g, schema);
    vt_text(schema, cfg->version_table, name, sizeof name);
    describe(&v, revs, sizeof revs);
    if (compare(&v) == BEHIND) {
        size_t l = strlen(g->untold.text);
        if (g->untold.pending)
            snprintf(g->untold.text + l, sizeof g->untold.text - l, " in %s, where its "
                     "search_path puts the table", name);
        else
            log_info("database \"%s\": the migration's version table is %s (its search_path); "
                     "the lead follows it", g->name, name);
        return false;
    }
    lead_let_go(copy, g, NULL);
    set_state(g, G_SCHEMA);
    bool told = !g->untold.pending;
    g->untold.pending = false;
    NOTE(LOG_LVL_INFO, "proceed", g->name, revs, "database \"%s\": %s is at %s: a peer migrated "
         "it before this process got the lock%s; proceeding", g->name, name, revs,
         told ? " (released it)" : "");
    return true;
}
