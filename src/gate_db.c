/*
 * gate_db — the gate's databases and what every part of the gate does to
 * one (see include/gate_int.h; the state machine is gate.c): the table of
 * struct gdb, the mutex, each state change with the counters the wrappers
 * read (set_state, refresh_pending), a database's lock connection (close,
 * release, idle limit), its connections with a version-table transaction
 * open, the schema its waits read, and the held "leading" line.  It calls
 * no other part of the gate: every part calls down to it.
 */
#include "gate_int.h"

#include <assert.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "dbconn.h"
#include "events.h"
#include "heartbeat.h"
#include "lock.h"
#include "log.h"
#include "ownconn.h"
#include "shim.h"
#include "wait.h"

_Atomic int gate_watching;
_Atomic int gate_guarding;
_Atomic int gate_learning;

_Atomic int gate_pending;

struct gdb gate_dbs[MAX_DBS];
size_t gate_ndbs;
pthread_mutex_t gate_mu = PTHREAD_MUTEX_INITIALIZER;
pthread_cond_t gate_cv = PTHREAD_COND_INITIALIZER;
const struct migtool *gate_tool = &migtool_alembic; /* until gate.c loads the tool */

/* The states the per-statement hooks watch (gate_watching counts the dbs
 * in them). */
static bool watched(enum gstate s)
{
    return s == G_LEADING || s == G_LAPSED || s == G_UNKNOWN || s == G_UNGATED || s == G_SCHEMA;
}

/* The states of the guard's window (gate_guarding counts the dbs in them). */
static bool guarded(enum gstate s)
{
    return s == G_LEADING || s == G_LAPSED || s == G_UNGATED;
}

/* (shim_hooks / shim_hooks_sql: see refresh_pending) */
void set_state(struct gdb *g, enum gstate s)
{
    if (guarded(g->st) != guarded(s))
        atomic_fetch_add(&gate_guarding, guarded(s) ? 1 : -1);
    if (watched(g->st) != watched(s))
        atomic_fetch_add(&gate_watching, watched(s) ? 1 : -1);
    if ((g->st == G_LEADING) != (s == G_LEADING)) /* Gunicorn's worker timeout: heartbeat.h */
        s == G_LEADING ? heartbeat_begin("leading the migration", shim_config()->hold_timeout)
                       : heartbeat_end();
    g->st = s;
}

/* The invariant set_state keeps (mutex held): the counters the wrappers
 * read equal the states of the table. */
static bool counts_agree(void)
{
    int watching = 0, guarding = 0;
    for (size_t i = 0; i < gate_ndbs; i++) {
        watching += watched(gate_dbs[i].st);
        guarding += guarded(gate_dbs[i].st);
    }
    return watching == atomic_load(&gate_watching) && guarding == atomic_load(&gate_guarding);
}

void refresh_pending(void)
{
    /* what the gate asks of the wrappers: every call (something pending,
     * or a database in the guard's window), or only the statement texts
     * (target unknown, nothing pending) */
    static int hooks, hooks_sql;
    int any = 0, full = 0, sql = 0, learn = 0;
    assert(counts_agree());
    for (size_t i = 0; i < gate_ndbs; i++) {
        const struct gdb *g = &gate_dbs[i];
        if (g->pid != getpid())
            continue;
        /* (a Django leader: every statement is activity for the settler) */
        any |= g->holder || g->ndirty || (g->st == G_LEADING && (!g->saw_vt || ends_idle()));
        any |= g->st == G_LEADING && g->run.ended > 0; /* see run_ended */
        full |= guarded(g->st);
        sql |= g->st == G_UNKNOWN || g->st == G_SCHEMA;
        learn |= gate_tool->vt_statement && g->st == G_LEADING && (!g->vt.known || g->vt.learned);
    }
    full |= any;
    atomic_store_explicit(&gate_pending, any, memory_order_relaxed);
    atomic_store_explicit(&gate_learning, learn, memory_order_relaxed);
    if (full != hooks) {
        shim_hooks_add(full ? 1 : -1);
        hooks = full;
    }
    if (sql != hooks_sql) {
        if (sql) /* before the wrappers look at texts: they read it without a test */
            gate_vt_name_prepare();
        shim_hooks_sql_add(sql ? 1 : -1);
        hooks_sql = sql;
    }
}

void close_own(struct gdb *g)
{
    ownconn_close(g->own);
    g->own = NULL;
}

/* Release the migration lock g holds on `c` (its lock connection, or the
 * app's connection a waiter took it on).  A failure is logged: the lock
 * then ends with that connection, which the caller closes or gives back
 * failed. */
void release_lock(const struct gdb *g, struct dbconn *c)
{
    if (!lock_release(c, shim_config()->lock, g->key))
        log_warn("database \"%s\": releasing the migration lock failed; closing the %s "
                 "releases it", g->name, c == ownconn_db(g->own) ? "lock connection" : "connection");
}

/* Have the server end g's lock session `own` once it stays idle for
 * `seconds` (`setting`: leader_grace or hold_timeout, for the log).  A
 * failure is logged: only this process's own checks then bound the lead. */
void limit_idle(const struct gdb *g, struct dbconn *own, const char *setting,
                       double seconds)
{
    if (!lock_limit_idle(own, shim_config()->lock, seconds))
        log_warn("database \"%s\": cannot set the server-side idle limit on the lock connection "
                 "(%s = %g s); it is not in force, only this process's own checks are",
                 g->name, setting, seconds);
}

/* Make the app's connection fail (on_timeout = fail): its socket is shut
 * down, so libpq sees the server go away and reports CONNECTION_BAD. */
void fail_app_conn(const struct pq_copy *copy, PGconn *pg)
{
    struct dbconn_pq pc;
    dbconn_fail(seam(&pc, copy, pg));
}

bool is_dirty(const struct gdb *g, const PGconn *pg)
{
    return dirty_slot(g, pg) >= 0;
}

void mark_dirty(struct gdb *g, PGconn *pg)
{
    if (!is_dirty(g, pg) && g->ndirty < MAX_DIRTY) {
        g->dirty_wrote[g->ndirty] = false;
        g->dirty_failed[g->ndirty] = false;
        g->dirty[g->ndirty++] = pg;
    }
}

int dirty_slot(const struct gdb *g, const PGconn *pg)
{
    for (size_t i = 0; i < g->ndirty; i++)
        if (g->dirty[i] == pg)
            return (int)i;
    return -1;
}

void clear_dirty(struct gdb *g, const PGconn *pg)
{
    int i = dirty_slot(g, pg);
    if (i < 0)
        return;
    g->ndirty--;
    g->dirty[i] = g->dirty[g->ndirty];
    g->dirty_wrote[i] = g->dirty_wrote[g->ndirty];
    g->dirty_failed[i] = g->dirty_failed[g->ndirty];
}

/* When `pg` is one of g's dirty connections: no longer, and what its
 * transaction did (`wrote`, `failed`, each may be NULL); true.  Else false. */
bool take_dirty(struct gdb *g, const PGconn *pg, bool *wrote, bool *failed)
{
    int i = dirty_slot(g, pg);
    if (i < 0)
        return false;
    if (wrote)
        *wrote = g->dirty_wrote[i];
    if (failed)
        *failed = g->dirty_failed[i];
    clear_dirty(g, pg);
    return true;
}

/* The configuration with version_table_schema set to a database's
 * sp.schema, for the wait loop's reads while that is set (cfg_of). */
static struct config sp_cfg[MAX_DBS];

/* The settings a wait or a lead of `g` reads the version table with: the
 * configured ones, or (per-schema, sp.schema set) the same with
 * version_table_schema = sp.schema.  The lock key stays the database's
 * (key_of): one migration at a time per database, whichever schema. */
const struct config *cfg_of(const struct gdb *g)
{
    return g->sp.schema[0] ? &sp_cfg[g - gate_dbs] : shim_config();
}

/* Make `schema` ("" for none) the one g's waits and lead read. */
void sp_use(struct gdb *g, const char *schema)
{
    snprintf(g->sp.schema, sizeof g->sp.schema, "%s", schema);
    if (schema[0]) {
        sp_cfg[g - gate_dbs] = *shim_config();
        snprintf(sp_cfg[g - gate_dbs].version_table_schema,
                 sizeof sp_cfg[g - gate_dbs].version_table_schema, "%s", schema);
    }
}

/*
 * The "leading" line.  When the configured version table is absent, not
 * set in migshim's settings, and some other table has a version_num
 * column, the app may keep its
 * versions there (a name migshim could not read): a
 * process that takes the lock after the leader released it (it connected
 * late) would then "lead" only to find, in its migration's first read,
 * the real table at the target (gate_learn, gate_after).  So the line
 * waits for the leader's first write of a version table (or its lapse, or
 * its release); a read of another table found at the target replaces it
 * with a "proceed" line.
 */
void tell_lead(struct gdb *g)
{
    if (!g->untold.pending)
        return;
    g->untold.pending = false;
    const struct wait_message *m = wait_message(g->untold.msg);
    log_msg(m->level, "%s", g->untold.text);
    if (m->event)
        events_emit(m->event, g->name, m->versions ? g->untold.revs : NULL, NULL);
}
