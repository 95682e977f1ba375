/*
 * gate — see include/gate.h; the gate's files and their locking rule are
 * in include/gate_int.h.
 *
 * This file is the state machine: which database a connection belongs to
 * (the server's name, and the client's address as an alias), each
 * database's state and the counters the wrappers read (set_state,
 * refresh_pending), the public entry points of gate.h, and fork safety.
 * Waiting is gate_wait.c's, the lead and its end gate_lead.c's, per-schema
 * decisions gate_schema.c's, the learned version table gate_learn.c's.
 */
#include "gate.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "atfork.h"
#include "clock.h"
#include "conn.h"
#include "dbconn.h"
#include "events.h"
#include "gate_int.h"
#include "heartbeat.h"
#include "lock.h"
#include "log.h"
#include "migtool.h"
#include "ownconn.h"
#include "resolve.h"
#include "shim.h"
#include "versions.h"
#include "waitsig.h"

_Atomic int gate_watching;
_Atomic int gate_guarding;
_Atomic int gate_learning;

/* Non-zero while gate_after has something to look at: a connection whose
 * version-table transaction holds the lock (UNKNOWN) or must be checked at
 * its end (LEADING, UNGATED), or a leader still inside leader_grace.  Kept
 * by refresh_pending() under the mutex; read without it. */
static _Atomic int gate_pending;

struct gdb gate_dbs[MAX_DBS];
size_t gate_ndbs;
pthread_mutex_t gate_mu = PTHREAD_MUTEX_INITIALIZER;
pthread_cond_t gate_cv = PTHREAD_COND_INITIALIZER;
const struct migtool *gate_tool = &migtool_alembic; /* until load_tool */

static void fork_init(void); /* before the mutex is first taken (see the end) */
static pthread_once_t tool_once = PTHREAD_ONCE_INIT;

static void load_tool(void)
{
    const struct config *cfg = shim_config();
    const struct migtool *t = migtool_pick(cfg, false);
    t->load(cfg);
    gate_tool = t;
}
static struct gdb *find_db(const char *name, const char *cluster, bool add)
{
    /* names are kept truncated to the slot: compare what fits (a longer
     * name would otherwise never match and be gated at every connection) */
    for (size_t i = 0; i < gate_ndbs; i++)
        if (strncmp(gate_dbs[i].name, name, sizeof gate_dbs[i].name - 1) == 0 &&
            strcmp(gate_dbs[i].cluster, cluster) == 0)
            return &gate_dbs[i];
    if (!add || gate_ndbs == MAX_DBS)
        return NULL;
    struct gdb *g = &gate_dbs[gate_ndbs++];
    memset(g, 0, sizeof *g);
    snprintf(g->name, sizeof g->name, "%s", name);
    snprintf(g->cluster, sizeof g->cluster, "%s", cluster);
    g->pid = getpid();
    return g;
}

/* Which gate state a connection belongs to: set when it connected (the
 * server told which database it reached), else by the client's name. */
#define MAX_CONNS 256
static struct {
    const PGconn *pg;
    struct gdb *g;
} cmap[MAX_CONNS];

static void map_conn(const PGconn *pg, struct gdb *g)
{
    size_t free_slot = MAX_CONNS;
    for (size_t i = 0; i < MAX_CONNS; i++) {
        if (cmap[i].pg == pg) {
            cmap[i].g = g;
            return;
        }
        if (!cmap[i].pg && free_slot == MAX_CONNS)
            free_slot = i;
    }
    if (free_slot < MAX_CONNS) {
        cmap[free_slot].pg = pg;
        cmap[free_slot].g = g;
    }
}

static void unmap_conn(const PGconn *pg)
{
    for (size_t i = 0; i < MAX_CONNS; i++)
        if (cmap[i].pg == pg)
            cmap[i].pg = NULL;
}

/* The state of `pg`'s database (mutex held), or NULL. */
static struct gdb *db_of(const struct pq_copy *copy, const PGconn *pg)
{
    for (size_t i = 0; i < MAX_CONNS; i++)
        if (cmap[i].pg == pg)
            return cmap[i].g;
    struct dbconn_pq pc;
    const char *db = dbconn_dbname(seam(&pc, copy, pg));
    return db ? find_db(db, "", false) : NULL;
}

static bool watched(enum gstate s)
{
    return s == G_LEADING || s == G_LAPSED || s == G_UNKNOWN || s == G_UNGATED || s == G_SCHEMA;
}
/* The states of the guard's window (gate_guarding counts the dbs in them). */
static bool guarded(enum gstate s)
{
    return s == G_LEADING || s == G_LAPSED || s == G_UNGATED;
}

/* Change state, keeping gate_watching equal to the number of watched dbs
 * and gate_guarding to the number of guarded ones, and the heartbeat kept
 * while leading.  (shim_hooks / shim_hooks_sql: see refresh_pending) */
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

/* Recompute gate_pending (mutex held), after any change of holders,
 * dirty connections or states. */
void refresh_pending(void)
{
    /* what the gate asks of the wrappers: every call (something pending,
     * or a database in the guard's window), or only the statement texts
     * (target unknown, nothing pending) */
    static int hooks, hooks_sql;
    int any = 0, full = 0, sql = 0, learn = 0;
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
        shim_hooks_sql_add(sql ? 1 : -1);
        hooks_sql = sql;
    }
}

/* A child of a forked process: the lock connection is the parent's. */
static void adopt_after_fork(struct gdb *g)
{
    if (g->pid == getpid())
        return;
    g->pid = getpid();
    ownconn_close(g->own); /* releases only the (neutralised) descriptor */
    g->own = NULL;
    g->holder = NULL;
    g->ndirty = 0;
    memset(&g->run, 0, sizeof g->run);
    g->ntuned = 0; /* the parent's connections */
    if (g->st == G_LEADING || g->st == G_LAPSED || g->st == G_DECIDING)
        set_state(g, G_NEW);
    refresh_pending();
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
/* The client's address for a database, "host:port/dbname": connections
 * made the same way reach the same database, so only the first of them
 * asks the server which one it is. */
#define MAX_ALIASES 32
static struct {
    char key[2 * CONFIG_NAME_MAX + 300];
    struct gdb *g;
} aliases[MAX_ALIASES];
static size_t naliases;

static struct gdb *find_alias(const char *key)
{
    for (size_t i = 0; i < naliases; i++)
        if (strcmp(aliases[i].key, key) == 0)
            return aliases[i].g;
    return NULL;
}

static void add_alias(const char *key, struct gdb *g)
{
    if (find_alias(key) || naliases == MAX_ALIASES)
        return;
    snprintf(aliases[naliases].key, sizeof aliases[naliases].key, "%s", key);
    aliases[naliases++].g = g;
}

/* Wait for another thread's decision on `g` (mutex held) and note `pg`
 * as one of its connections.  True when `g` is decided. */
static bool decided(struct gdb *g, const PGconn *pg)
{
    adopt_after_fork(g);
    while (g->st == G_DECIDING)
        pthread_cond_wait(&gate_cv, &gate_mu);
    map_conn(pg, g);
    return g->st != G_NEW;
}
bool gate_connected(const struct pq_copy *copy, PGconn *pg)
{
    const struct config *cfg = shim_config();
    if (cfg->lock == LOCK_OFF && !cfg->guard)
        return true;
    if (!copy->complete) {
        log_warn("%s lacks functions the gate needs; passing through", copy->soname);
        return true;
    }
    struct dbconn_pq pc;
    struct dbconn *ac = seam(&pc, copy, pg);
    const char *cdb = dbconn_dbname(ac);
    if (!cdb)
        return true;
    char key[sizeof aliases[0].key]; /* made the same way: the same database */
    dbconn_address(ac, key, sizeof key);
    fork_init();
    pthread_mutex_lock(&gate_mu);
    struct gdb *g = find_alias(key);
    if (g && decided(g, pg)) { /* nothing to ask the server */
        if (g->st == G_LEADING && g->pid == getpid()) {
            /* the migration may run on it: see tune_app */
            bool nb = dbconn_block(ac);
            tune_app(copy, g, pg);
            dbconn_unblock(ac, nb);
        }
        pthread_mutex_unlock(&gate_mu);
        return true;
    }
    pthread_mutex_unlock(&gate_mu);

    pthread_once(&tool_once, load_tool);
    char db[CONFIG_NAME_MAX], err[256] = "", revs[512];
    snprintf(db, sizeof db, "%s", cdb);
    const char *cluster = "";
    struct versions v;
    struct server_id id;
    bool read = false;
    /* The read and the wait block; an app may have set non-blocking mode
     * already. */
    bool nb = dbconn_block(ac);
    if (gate_tool->known() || gate_tool->unknown_leads_to_exit) {
        read = versions_read_idle(ac, cfg, state_expr(), &v, &id, err, sizeof err);
        if (read && id.standby) {
            log_debug("database \"%s\" on a standby (pg_is_in_recovery()); not gated", id.db);
            goto out_nb;
        }
        if (read) { /* the server's names: an alias and a direct connection meet */
            snprintf(db, sizeof db, "%s", id.db);
            cluster = id.cluster;
        }
    }
    if (cfg->database[0] && strcmp(cdb, cfg->database) != 0 && strcmp(db, cfg->database) != 0)
        goto out_nb;

    pthread_mutex_lock(&gate_mu);
    g = find_db(db, cluster, true);
    if (!g) {
        pthread_mutex_unlock(&gate_mu);
        log_warn("database \"%s\": more than %d databases; not gated", db, MAX_DBS);
        goto out_nb;
    }
    if (read)
        add_alias(key, g);
    if (decided(g, pg)) {
        if (g->st == G_LEADING && g->pid == getpid())
            tune_app(copy, g, pg); /* the migration may run on it */
        pthread_mutex_unlock(&gate_mu);
        goto out_nb;
    }
    g->st = G_DECIDING; /* this thread decides */
    memset(&g->sp, 0, sizeof g->sp);
    pthread_mutex_unlock(&gate_mu);
    events_emit("connect", db, NULL, NULL);

    enum gstate next = G_DONE;
    bool ok = true;
    if (!gate_tool->known() && !gate_tool->unknown_leads_to_exit) {
        if (cfg->lock != LOCK_OFF) {
            NOTE(LOG_LVL_DEBUG, "unknown", db, NULL, "database \"%s\": target heads unknown; the migration lock is taken at the first "
                     "version-table statement", db);
            next = G_UNKNOWN;
        } else {
            NOTE(LOG_LVL_DEBUG, "unknown", db, NULL, "database \"%s\": target heads unknown and lock = off; passing through", db);
        }
    } else if (!read) {
        NOTE(LOG_LVL_WARN, "ungated", db, NULL, "database \"%s\": cannot read the version table (%s); proceeding without the gate",
                 db, err);
    } else {
        enum cmp c = compare(&v);
        describe(&v, revs, sizeof revs);
        if (c != AHEAD && cfg->lock != LOCK_OFF && schema_mode(g, &v, &id)) {
            next = G_SCHEMA;
        } else if (c == AT_TARGET) {
            NOTE(LOG_LVL_DEBUG, "at_head", db, revs, "database \"%s\" is at head (%s); proceeding", db, revs);
        } else if (c == AHEAD) {
            NOTE(LOG_LVL_WARN, "ahead", db, revs, "database \"%s\" holds revisions the local scripts do not know (%s): a newer "
                     "deploy migrated it; proceeding", db, revs);
        } else if (cfg->lock == LOCK_OFF) {
            NOTE(LOG_LVL_INFO, "ungated", db, revs, "database \"%s\" is at %s, behind the target; lock = off: proceeding%s",
                     db, revs, gate_tool->guards() ? ", the race guard watches" : "");
            next = gate_tool->guards() ? G_UNGATED : G_DONE;
        } else {
            enum outcome o = wait_loop(copy, pg, g, NULL, cfg->lock == LOCK_XACT, true);
            if (o == OUT_UNGATED || o == OUT_LAPSED) {
                if (o == OUT_LAPSED && gate_tool->relock_after_lapse)
                    next = G_LAPSED; /* the lock again at its first statement on the table */
                else
                    next = cfg->guard && gate_tool->guards() ? G_UNGATED : G_DONE;
            } else if (o == OUT_LEADING) {
                next = G_LEADING;
                g->grace_deadline = clock_now() + cfg->leader_grace;
                g->saw_vt = false;
                memset(&g->vt, 0, sizeof g->vt);
                tune_app(copy, g, pg);
            } else if (o == OUT_FAILED || o == OUT_INTERRUPTED) {
                fail_app_conn(copy, pg);
                next = G_NEW; /* the app's retry is gated again */
                ok = false;
            }
        }
    }
    dbconn_unblock(ac, nb);
    pthread_mutex_lock(&gate_mu);
    g->st = G_DECIDING; /* set_state counts from here */
    set_state(g, next);
    if (ends_idle() && next == G_LEADING)
        start_settler(copy);
    refresh_pending();
    pthread_cond_broadcast(&gate_cv);
    pthread_mutex_unlock(&gate_mu);
    waitsig_redeliver();
    return ok;
out_nb:
    dbconn_unblock(ac, nb);
    return true;
}
static bool is_dirty(const struct gdb *g, const PGconn *pg)
{
    for (size_t i = 0; i < g->ndirty; i++)
        if (g->dirty[i] == pg)
            return true;
    return false;
}

void mark_dirty(struct gdb *g, PGconn *pg)
{
    if (!is_dirty(g, pg) && g->ndirty < MAX_DIRTY) {
        g->dirty_wrote[g->ndirty] = false;
        g->dirty_failed[g->ndirty] = false;
        g->dirty[g->ndirty++] = pg;
    }
}

/* The slot of a dirty connection, or -1. */
int dirty_slot(const struct gdb *g, const PGconn *pg)
{
    for (size_t i = 0; i < g->ndirty; i++)
        if (g->dirty[i] == pg)
            return (int)i;
    return -1;
}

static void clear_dirty(struct gdb *g, const PGconn *pg)
{
    int i = dirty_slot(g, pg);
    if (i < 0)
        return;
    g->ndirty--;
    g->dirty[i] = g->dirty[g->ndirty];
    g->dirty_wrote[i] = g->dirty_wrote[g->ndirty];
    g->dirty_failed[i] = g->dirty_failed[g->ndirty];
}
/* Take the lock again (LAPSED, or UNKNOWN) with the mutex released. */
enum outcome reacquire(const struct pq_copy *copy, PGconn *pg, struct gdb *g,
                              const char *why)
{
    enum gstate was = g->st;
    set_state(g, G_DECIDING);
    pthread_mutex_unlock(&gate_mu);
    enum outcome o = wait_loop(copy, pg, g, why, false, false); /* pg may be mid-transaction */
    pthread_mutex_lock(&gate_mu);
    set_state(g, was); /* from DECIDING: restores the watch count */
    pthread_cond_broadcast(&gate_cv);
    return o;
}
void gate_before(const struct pq_copy *copy, PGconn *pg, const char *sql)
{
    const struct config *cfg = shim_config();
    bool writes = gate_tool->writes(cfg, sql); /* one of the tool's writes of its table */
    if (ends_idle())
        note_activity();
    fork_init();
    pthread_mutex_lock(&gate_mu);
    struct gdb *g = db_of(copy, pg);
    if (!g || g->pid != getpid()) {
        pthread_mutex_unlock(&gate_mu);
        return;
    }
    while (g->st == G_DECIDING)
        pthread_cond_wait(&gate_cv, &gate_mu);
    if (g->st == G_LEADING && !g->saw_vt && clock_now() > g->grace_deadline) {
        tell_lead(g);
        close_own(g); /* the server ended its idle session */
        untune_all(copy, g, NULL);
        set_state(g, G_LAPSED);
    }
    if (g->st == G_LAPSED) {
        enum outcome o = reacquire(copy, pg, g, "(again, for a late migration)");
        if (o == OUT_LEADING) {
            set_state(g, G_LEADING);
            g->grace_deadline = clock_now() + cfg->leader_grace;
            tune_app(copy, g, pg);
            if (ends_idle())
                start_settler(copy);
        } else if (o == OUT_FAILED || o == OUT_INTERRUPTED) {
            fail_app_conn(copy, pg); /* the statement fails; a reconnect is gated anew */
            set_state(g, G_NEW);
            refresh_pending();
            pthread_mutex_unlock(&gate_mu);
            waitsig_redeliver();
            return;
        } else {
            set_state(g, (o == OUT_UNGATED || o == OUT_LAPSED) && cfg->guard && gate_tool->guards()
                             ? G_UNGATED : G_DONE);
            if (g->st == G_UNGATED)
                mark_dirty(g, pg);
            refresh_pending();
            pthread_mutex_unlock(&gate_mu);
            return;
        }
    }
    if (g->st == G_SCHEMA)
        schema_decide(copy, pg, g, sql);
    if (g->st == G_LEADING && g->sp.home_known && !g->sp.checked && gate_tool->decision_point &&
        lead_resolve(copy, pg, g, sql)) {
        refresh_pending();
        pthread_mutex_unlock(&gate_mu);
        return;
    }
    if (g->st == G_LEADING) {
        g->sp.wrote |= writes;
        if (writes)
            tell_lead(g);
        if (!g->saw_vt) {
            g->saw_vt = true;
            struct dbconn *own = ownconn_db(g->own);
            if (own) {
                limit_idle(g, own, "hold_timeout", cfg->hold_timeout);
                if (!holder_mark_migrating(own)) /* not a lapse */
                    log_warn("database \"%s\": cannot mark the lock connection migrating (waiters may "
                             "take this lead for a lapse): %s",
                             g->name, dbconn_last_error(own));
            }
        }
        if (gate_tool->lead_end == MIGTOOL_END_RUN) /* else: held until idle (settler) */
            lead_activity(g, pg, writes);
    } else if (g->st == G_UNGATED) {
        mark_dirty(g, pg);
    } else if (g->st == G_UNKNOWN) {
        if (!g->holder) {
            enum outcome o = reacquire(copy, pg, g, NULL);
            bool failed = o == OUT_FAILED || o == OUT_INTERRUPTED;
            g->holder = failed ? NULL : pg; /* to the end of this transaction */
            g->holder_locked = o == OUT_LEADING && g->own;
            g->holder_wrote = false;
            if (g->holder_locked)
                NOTE(LOG_LVL_INFO, "leading", g->name, NULL, "database \"%s\": took the migration lock for this version-table transaction",
                         g->name);
            if (failed)
                fail_app_conn(copy, pg);
        }
        /* another connection of this process holds it: never wait on ourselves */
        if (g->holder == pg)
            g->holder_wrote |= writes;
    }
    refresh_pending();
    pthread_mutex_unlock(&gate_mu);
    waitsig_redeliver();
}
/* Learning the version table: gate_learn.c (learn_statement). */
void gate_learn(const struct pq_copy *copy, PGconn *pg, const char *sql)
{
    char schema[CONFIG_NAME_MAX], table[CONFIG_NAME_MAX];
    bool writes;
    if (!gate_tool->vt_statement ||
        !gate_tool->vt_statement(sql, schema, sizeof schema, table, sizeof table, &writes))
        return;
    fork_init();
    pthread_mutex_lock(&gate_mu);
    struct gdb *g = db_of(copy, pg);
    if (g && g->pid == getpid() && g->st == G_LEADING) {
        learn_statement(g, pg, schema, table, writes);
        refresh_pending();
    }
    pthread_mutex_unlock(&gate_mu);
}

void gate_after(const struct pq_copy *copy, PGconn *pg)
{
    const struct config *cfg = shim_config();
    if (!atomic_load_explicit(&gate_pending, memory_order_relaxed))
        return; /* the common case: one load */
    if (ends_idle())
        note_activity();
    fork_init();
    pthread_mutex_lock(&gate_mu);
    struct gdb *g = db_of(copy, pg);
    if (!g || g->pid != getpid() || g->st == G_DECIDING) {
        pthread_mutex_unlock(&gate_mu);
        return;
    }
    /* as the app sees it: the server's (a guard's stand-in for a failed
     * transaction is a real transaction, and giving up fails it for real) */
    struct dbconn_pq pc;
    enum dbconn_txn ts = dbconn_txn(seam(&pc, copy, pg));
    bool idle = ts == DBCONN_IDLE;
    if (g->st == G_LEADING && ts == DBCONN_INERROR)
        lead_saw_error(g, pg); /* the migration failed: its transaction's end is the run's end */
    if (g->st == G_UNKNOWN && g->holder == pg && idle) {
        bool locked = g->holder_locked;
        if (locked && g->own)
            release_lock(g, ownconn_db(g->own));
        g->holder = NULL;
        g->holder_locked = false;
        close_own(g);
        if (locked)
            NOTE(LOG_LVL_INFO, "migrated", g->name, NULL, "database \"%s\": version-table transaction ended; migration lock released",
                     g->name);
        if (!g->holder_wrote) {
            /* A version-table transaction that only read: whatever this
             * process migrates is done (Alembic reads and writes in one
             * transaction).  Its later reads -- a /health endpoint -- must
             * not take the fleet's lock for the rest of its life. */
            set_state(g, G_DONE);
            log_debug("database \"%s\": a version-table transaction that only read; the gate "
                      "stops watching", g->name);
        }
    } else if (g->st == G_LEADING && idle && is_dirty(g, pg)) {
        int slot = dirty_slot(g, pg);
        bool wrote = g->dirty_wrote[slot], failed = g->dirty_failed[slot];
        clear_dirty(g, pg);
        struct versions v;
        char err[256], revs[512];
        struct dbconn *own = ownconn_db(g->own);
        bool read = own && (read_lead_table(g, own, &v, err, sizeof err) ||
                            read_lead_table(g, own, &v, err, sizeof err));
        if (own && !read) {
            /* Never hold the fleet on a failed read: release, and let the
             * waiters read the version themselves (one of them leads again
             * if the database is still behind). */
            log_warn("database \"%s\": cannot re-read the version table on the lock connection "
                     "(%s); releasing the migration lock, the waiters check for themselves",
                     g->name, err);
            release_lock(g, own);
            close_own(g);
            untune_all(copy, g, pg);
            g->ndirty = 0;
            memset(&g->run, 0, sizeof g->run);
            set_state(g, g->sp.on ? G_SCHEMA : cfg->guard ? G_UNGATED : G_DONE);
            sp_use(g, "");
        } else if (read && (g->vt.learned ? compare(&v) == AT_TARGET : compare(&v) != BEHIND)) {
            describe(&v, revs, sizeof revs);
            release_lock(g, own);
            close_own(g);
            untune_all(copy, g, pg);
            g->ndirty = 0;
            set_state(g, g->sp.on ? G_SCHEMA : G_DONE); /* per-schema: the next one decides */
            sp_use(g, "");
            if (g->untold.pending && g->vt.learned) { /* it only read: see tell_lead */
                char name[2 * CONFIG_NAME_MAX + 8];
                g->untold.pending = false;
                vt_text(g->vt.schema, g->vt.table, name, sizeof name);
                NOTE(LOG_LVL_INFO, "proceed", g->name, revs, "database \"%s\": a peer migrated it to %s (in %s, the version table "
                     "its migration reads) before this process got the lock; proceeding", g->name, revs, name);
            } else {
                tell_lead(g);
                NOTE(LOG_LVL_INFO, "migrated", g->name, revs, "database \"%s\": migrated to %s; migration lock released after %.3f s", g->name,
                     revs, clock_now() - g->since);
            }
            memset(&g->run, 0, sizeof g->run);
        } else if (read && g->sp.on && !g->sp.wrote) {
            /* A per-schema lead whose transaction only read its table
             * (a schema with none, looked at without migrating: `alembic
             * current`, a check): nothing migrates here, and holding the
             * fleet's lock until hold_timeout would stall every other
             * schema.  Alembic reads and writes in one transaction. */
            describe(&v, revs, sizeof revs);
            release_lock(g, own);
            close_own(g);
            untune_all(copy, g, pg);
            g->ndirty = 0;
            g->untold.pending = false;
            memset(&g->run, 0, sizeof g->run);
            set_state(g, G_SCHEMA);
            NOTE(LOG_LVL_INFO, "migrated", g->name, revs, "database \"%s\": the transaction on \"%s\".\"%s\" "
                 "(%s) only read it; migration lock released after %.3f s", g->name, g->vt.schema,
                 g->vt.table, revs, clock_now() - g->since);
            sp_use(g, "");
        } else if (read && (wrote || failed)) {
            run_ended(copy, g, pg, failed); /* short of the target: the settle begins */
        }
    } else if (g->st == G_UNGATED && idle && is_dirty(g, pg)) {
        clear_dirty(g, pg);
        struct versions v;
        char err[256], revs[512];
        if (versions_read_idle(seam(&pc, copy, pg), cfg, state_expr(), &v, NULL, err, sizeof err) &&
            compare(&v) != BEHIND) {
            describe(&v, revs, sizeof revs);
            g->ndirty = 0;
            set_state(g, G_DONE);
            NOTE(LOG_LVL_INFO, "at_target", g->name, revs, "database \"%s\": now at %s; the race guard stops watching", g->name, revs);
        }
    } else if (g->st == G_LEADING && !g->saw_vt && clock_now() > g->grace_deadline) {
        tell_lead(g);
        close_own(g);
        untune_all(copy, g, idle ? pg : NULL);
        set_state(g, G_LAPSED);
        if (gate_tool->relock_after_lapse)
            NOTE(LOG_LVL_WARN, "lapsed", g->name, NULL, "database \"%s\": no statement on django_migrations within "
                     "leader_grace (%g s); gave the migration lock up (this process does not migrate; "
                     "it takes the lock again if it does)", g->name, cfg->leader_grace);
        else
            NOTE(LOG_LVL_WARN, "lapsed", g->name, NULL, "database \"%s\": no statement on the version table %s%s%s within "
                     "leader_grace (%g s); gave the migration lock up.  If this process migrates, set "
                     "version_table (MIGSHIM_VERSION_TABLE) to the table its migrations use",
                     g->name, cfg->version_table_schema, cfg->version_table_schema[0] ? "." : "",
                     cfg->version_table, cfg->leader_grace);
    }
    refresh_pending();
    pthread_mutex_unlock(&gate_mu);
}

bool gate_guards(const struct pq_copy *copy, PGconn *pg)
{
    if (!gate_tool->guards()) /* the guard knows Alembic's statements only */
        return false;
    fork_init();
    pthread_mutex_lock(&gate_mu);
    struct gdb *g = db_of(copy, pg);
    /* Per-schema version tables (g->sp.on): the guard classifies and proves
     * against the configured table as the home search_path finds it, which
     * is not the tenant's table the app migrates -- a shared table at the
     * target there would "prove" a tenant's race.  It stays out: the app's
     * errors pass through unchanged. */
    bool on = g && g->pid == getpid() && !g->sp.on &&
              (g->st == G_LEADING || g->st == G_LAPSED || g->st == G_UNGATED);
    pthread_mutex_unlock(&gate_mu);
    return on;
}

bool gate_read_committed(const struct pq_copy *copy, PGconn *pg, const char *schema,
                         struct versions *v)
{
    char err[256];
    const struct config *cfg = shim_config();
    fork_init();
    pthread_mutex_lock(&gate_mu);
    struct gdb *g = db_of(copy, pg);
    struct dbconn *own = g && g->pid == getpid() && g->st == G_LEADING ? ownconn_db(g->own) : NULL;
    bool ok = own && (schema ? versions_read_in(own, schema, cfg->version_table, v, err, sizeof err)
                             : versions_read(own, cfg, state_expr(), v, err, sizeof err));
    pthread_mutex_unlock(&gate_mu);
    return ok;
}

bool gate_at_target(const struct versions *v)
{
    return gate_tool->guards() && compare(v) == AT_TARGET;
}

const char *gate_version_table(void)
{
    pthread_once(&tool_once, load_tool);
    return gate_tool->table(shim_config());
}

void gate_forget(const struct pq_copy *copy, const PGconn *pg)
{
    fork_init();
    pthread_mutex_lock(&gate_mu);
    unmap_conn(pg);
    if (!atomic_load_explicit(&gate_watching, memory_order_relaxed)) {
        pthread_mutex_unlock(&gate_mu);
        return;
    }
    for (size_t i = 0; i < gate_ndbs; i++) {
        struct gdb *g = &gate_dbs[i];
        if (g->pid != getpid())
            continue;
        int slot = dirty_slot(g, pg);
        bool cut = g->st == G_LEADING && slot >= 0 && (g->dirty_wrote[slot] || g->dirty_failed[slot]);
        clear_dirty(g, pg);
        forget_tuned(g, pg);
        if (g->st == G_LEADING && g->run.pg == pg)
            g->run.pg = NULL;
        if (cut) /* closed inside its version-table transaction: rolled back */
            run_ended(copy, g, NULL, true);
        if (g->st == G_UNKNOWN && g->holder == pg) {
            if (g->holder_locked && g->own)
                release_lock(g, ownconn_db(g->own));
            g->holder = NULL;
            g->holder_locked = false;
            close_own(g);
        }
    }
    refresh_pending();
    pthread_mutex_unlock(&gate_mu);
}

/* --- fork --------------------------------------------------------------------
 * The mutex is held across fork(), so a child never inherits it locked by
 * a thread it does not have.  Every function above that takes it first
 * calls fork_init(), which registers the modules the gate calls with the
 * mutex held -- resolve and conn (libpq's nested calls through the
 * wrappers), ownconn, heartbeat -- and then the gate itself: prepare
 * handlers run last-registered first, so fork() takes the gate's mutex
 * before theirs, in the order the gate's threads take them.  No mutex of
 * the shim is held here (pthread_atfork waits for a fork in progress). */

static void atfork_prepare(void) { pthread_mutex_lock(&gate_mu); }
static void atfork_parent(void) { pthread_mutex_unlock(&gate_mu); }
static void atfork_child(void)
{
    settler_forget(); /* the parent's thread */
    pthread_mutex_unlock(&gate_mu);
}

static pthread_once_t fork_once = PTHREAD_ONCE_INIT;
static void fork_register(void)
{
    resolve_fork_init();
    conn_fork_init();
    ownconn_fork_init();
    heartbeat_fork_init();
    atfork_register("gate", atfork_prepare, atfork_parent, atfork_child);
}

static void fork_init(void) { pthread_once(&fork_once, fork_register); }
