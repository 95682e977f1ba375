/*
 * gate — see include/gate.h; the gate's files and their locking rule are
 * in include/gate_int.h.
 *
 * This file is the state machine and the entry points of gate.h: which
 * database a connection belongs to (the server's name, and the client's
 * address as an alias), the decision at a process's first connection to
 * it, each state's answer to the app's statements (gate_before,
 * gate_learn) and to the ends of its commands (gate_after, gate_forget),
 * what the guard asks, and fork safety.  Waiting is gate_wait.c's, the
 * lead and its end gate_lead.c's, per-schema decisions gate_schema.c's,
 * the learned version table gate_learn.c's; what every part does to a
 * database is gate_db.c's.
 */
#include "gate.h"

#include <assert.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "atfork.h"
#include "clock.h"
#include "conn.h"
#include "dbconn.h"
#include "events.h"
#include "gate_int.h"
#include "heartbeat.h"
#include "log.h"
#include "migtool.h"
#include "ownconn.h"
#include "resolve.h"
#include "shim.h"
#include "versions.h"
#include "waitsig.h"

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

/* --- the first connection to a database ----------------------------------- */

/* A connection made like one whose database is decided (the same client
 * address, `key`): nothing to ask the server.  A leader's new connection
 * may carry the migration (tune_app).  True when `pg` is so decided. */
static bool alias_decided(const struct pq_copy *copy, PGconn *pg, struct dbconn *ac,
                          const char *key)
{
    pthread_mutex_lock(&gate_mu);
    struct gdb *g = find_alias(key);
    bool known = g && decided(g, pg);
    if (known && g->st == G_LEADING && g->pid == getpid()) {
        bool nb = dbconn_block(ac);
        tune_app(copy, g, pg);
        dbconn_unblock(ac, nb);
    }
    pthread_mutex_unlock(&gate_mu);
    return known;
}

/* What the first connection's one round trip found (versions_read_idle). */
struct first_read {
    bool read;               /* the version table (or the tool's state) read */
    struct versions v;
    struct server_id id;     /* ... and the server's names                   */
    char db[CONFIG_NAME_MAX];/* the server's name, else the client's         */
    const char *cluster;     /* which server ("" when not read)              */
    char err[256];           /* why not read                                 */
};

/* Read the version table on the app's fresh connection `ac` (blocking),
 * when the target is known or unknown targets lead; `cdb` is the
 * client's name for the database.  False for a standby: not gated. */
static bool read_first(struct dbconn *ac, const struct config *cfg, const char *cdb,
                       struct first_read *r)
{
    r->read = false;
    r->cluster = "";
    r->err[0] = '\0';
    snprintf(r->db, sizeof r->db, "%s", cdb);
    if (!gate_tool->known() && !gate_tool->unknown_leads_to_exit)
        return true;
    r->read = versions_read_idle(ac, cfg, state_expr(), &r->v, &r->id, r->err, sizeof r->err);
    if (!r->read)
        return true;
    if (r->id.standby) {
        log_debug("database \"%s\" on a standby (pg_is_in_recovery()); not gated", r->id.db);
        return false;
    }
    /* the server's names: an alias and a direct connection meet */
    snprintf(r->db, sizeof r->db, "%s", r->id.db);
    r->cluster = r->id.cluster;
    return true;
}

/* g's state for the database `r` names, G_DECIDING by this thread (NULL:
 * decided already -- by another thread meanwhile, or earlier -- or more
 * databases than MAX_DBS, said). */
static struct gdb *claim(const struct pq_copy *copy, PGconn *pg, const struct first_read *r,
                         const char *key)
{
    pthread_mutex_lock(&gate_mu);
    struct gdb *g = find_db(r->db, r->cluster, true);
    if (!g) {
        pthread_mutex_unlock(&gate_mu);
        log_warn("database \"%s\": more than %d databases; not gated", r->db, MAX_DBS);
        return NULL;
    }
    if (r->read)
        add_alias(key, g);
    if (decided(g, pg)) {
        if (g->st == G_LEADING && g->pid == getpid())
            tune_app(copy, g, pg); /* the migration may run on it */
        pthread_mutex_unlock(&gate_mu);
        return NULL;
    }
    assert(g->st == G_NEW);
    g->st = G_DECIDING; /* this thread decides (set_state counts from NEW: neither watched nor guarded) */
    memset(&g->sp, 0, sizeof g->sp);
    pthread_mutex_unlock(&gate_mu);
    return g;
}

/* How the first connection's wait for a behind database ended: g's next
 * state.  *ok false: the app's connection was failed on purpose. */
static enum gstate after_first_wait(const struct pq_copy *copy, PGconn *pg, struct gdb *g,
                                    enum outcome o, bool *ok)
{
    const struct config *cfg = shim_config();
    switch (o) {
    case OUT_LAPSED:
        if (gate_tool->relock_after_lapse)
            return G_LAPSED; /* the lock again at its first statement on the table */
        /* fall through */
    case OUT_UNGATED:
        return cfg->guard && gate_tool->guards() ? G_UNGATED : G_DONE;
    case OUT_LEADING:
        g->grace_deadline = clock_now() + cfg->leader_grace;
        g->saw_vt = false;
        memset(&g->vt, 0, sizeof g->vt);
        tune_app(copy, g, pg);
        return G_LEADING;
    case OUT_FAILED:
    case OUT_INTERRUPTED:
        fail_app_conn(copy, pg);
        *ok = false;
        return G_NEW; /* the app's retry is gated again */
    case OUT_DONE:
        break;
    }
    return G_DONE;
}

/* The decision for g (DECIDING) from the first connection's read `r`: its
 * next state, said; behind, after the wait for the lock (mutex released).
 * *ok false: the app's connection was failed on purpose. */
static enum gstate decide(const struct pq_copy *copy, PGconn *pg, struct gdb *g,
                          const struct first_read *r, bool *ok)
{
    const struct config *cfg = shim_config();
    const char *db = r->db;
    char revs[512];
    if (!gate_tool->known() && !gate_tool->unknown_leads_to_exit) {
        if (cfg->lock == LOCK_OFF) {
            NOTE(LOG_LVL_DEBUG, "unknown", db, NULL, "database \"%s\": target heads unknown and lock = off; passing through", db);
            return G_DONE;
        }
        NOTE(LOG_LVL_DEBUG, "unknown", db, NULL, "database \"%s\": target heads unknown; the migration lock is taken at the first "
                 "version-table statement", db);
        return G_UNKNOWN;
    }
    if (!r->read) {
        NOTE(LOG_LVL_WARN, "ungated", db, NULL, "database \"%s\": cannot read the version table (%s); proceeding without the gate",
                 db, r->err);
        return G_DONE;
    }
    enum cmp c = compare(&r->v);
    describe(&r->v, revs, sizeof revs);
    if (c != AHEAD && cfg->lock != LOCK_OFF && schema_mode(g, &r->v, &r->id))
        return G_SCHEMA;
    if (c == AT_TARGET) {
        NOTE(LOG_LVL_DEBUG, "at_head", db, revs, "database \"%s\" is at head (%s); proceeding", db, revs);
        return G_DONE;
    }
    if (c == AHEAD) {
        NOTE(LOG_LVL_WARN, "ahead", db, revs, "database \"%s\" holds revisions the local scripts do not know (%s): a newer "
                 "deploy migrated it; proceeding", db, revs);
        return G_DONE;
    }
    if (cfg->lock == LOCK_OFF) {
        NOTE(LOG_LVL_INFO, "ungated", db, revs, "database \"%s\" is at %s, behind the target; lock = off: proceeding%s",
                 db, revs, gate_tool->guards() ? ", the race guard watches" : "");
        return gate_tool->guards() ? G_UNGATED : G_DONE;
    }
    enum outcome o = wait_loop(copy, pg, g, NULL, cfg->lock == LOCK_XACT, true);
    return after_first_wait(copy, pg, g, o, ok);
}

/* g's decision is `next`: made known to the waiting threads. */
static void decision_made(const struct pq_copy *copy, struct gdb *g, enum gstate next)
{
    pthread_mutex_lock(&gate_mu);
    g->st = G_DECIDING; /* set_state counts from here */
    set_state(g, next);
    if (ends_idle() && next == G_LEADING)
        start_settler(copy);
    refresh_pending();
    pthread_cond_broadcast(&gate_cv);
    pthread_mutex_unlock(&gate_mu);
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
    if (alias_decided(copy, pg, ac, key))
        return true;

    pthread_once(&tool_once, load_tool);
    /* The read and the wait block; an app may have set non-blocking mode
     * already. */
    bool nb = dbconn_block(ac);
    struct first_read r;
    struct gdb *g = NULL;
    if (read_first(ac, cfg, cdb, &r) &&
        (!cfg->database[0] || strcmp(cdb, cfg->database) == 0 || strcmp(r.db, cfg->database) == 0))
        g = claim(copy, pg, &r, key);
    if (!g) {
        dbconn_unblock(ac, nb);
        return true;
    }
    events_emit("connect", r.db, NULL, NULL);
    bool ok = true;
    enum gstate next = decide(copy, pg, g, &r, &ok);
    dbconn_unblock(ac, nb);
    decision_made(copy, g, next);
    waitsig_redeliver();
    return ok;
}

/* --- connections with a version-table transaction open -------------------- */

/* --- the app's statements on the version table ---------------------------- */

/* A lapsed leader (G_LAPSED) is about to migrate after all: take the lock
 * again for the statement on `pg`.  True when g leads again (the statement
 * goes on through gate_before); false when this statement's part is over,
 * g in its new state: `pg` failed (a wait that failed or was interrupted:
 * a reconnect is gated anew), or going on without the lock. */
static bool lapsed_relock(const struct pq_copy *copy, PGconn *pg, struct gdb *g, enum outcome *o)
{
    const struct config *cfg = shim_config();
    *o = reacquire(copy, pg, g, "(again, for a late migration)");
    switch (*o) {
    case OUT_LEADING:
        set_state(g, G_LEADING);
        g->grace_deadline = clock_now() + cfg->leader_grace;
        tune_app(copy, g, pg);
        if (ends_idle())
            start_settler(copy);
        return true;
    case OUT_FAILED:
    case OUT_INTERRUPTED:
        fail_app_conn(copy, pg); /* the statement fails; a reconnect is gated anew */
        set_state(g, G_NEW);
        return false;
    case OUT_UNGATED:
    case OUT_LAPSED:
        if (cfg->guard && gate_tool->guards()) {
            set_state(g, G_UNGATED);
            mark_dirty(g, pg);
            return false;
        }
        break;
    case OUT_DONE:
        break;
    }
    set_state(g, G_DONE);
    return false;
}

/* G_UNKNOWN (target unknown): a version-table transaction on `pg` takes
 * the lock to its end, unless another connection of this process holds it
 * (never wait on ourselves); `writes`: the statement writes the table. */
static void unknown_statement(const struct pq_copy *copy, PGconn *pg, struct gdb *g, bool writes)
{
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
    if (g->holder == pg)
        g->holder_wrote |= writes;
}

void gate_before(const struct pq_copy *copy, PGconn *pg, const char *sql)
{
    bool writes = gate_tool->writes(shim_config(), sql); /* one of the tool's writes of its table */
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
    if (g->st == G_LEADING && !g->saw_vt && clock_now() > g->grace_deadline)
        lead_lapse(copy, g, NULL, false);
    enum outcome o;
    if (g->st == G_LAPSED && !lapsed_relock(copy, pg, g, &o)) {
        refresh_pending();
        pthread_mutex_unlock(&gate_mu);
        /* whatever the outcome: a signal that came after the wait's last
         * look at the record (a wait that then ended in the lock or the
         * target) is handed over all the same, and lost if not sent */
        waitsig_redeliver();
        return;
    }
    if (g->st == G_SCHEMA)
        schema_decide(copy, pg, g, sql);
    if (g->st == G_LEADING && g->sp.home_known && !g->sp.checked && gate_tool->decision_point &&
        lead_resolve(copy, pg, g, sql)) {
        refresh_pending();
        pthread_mutex_unlock(&gate_mu);
        return;
    }
    if (g->st == G_LEADING)
        lead_statement(g, pg, writes);
    else if (g->st == G_UNGATED)
        mark_dirty(g, pg);
    else if (g->st == G_UNKNOWN)
        unknown_statement(copy, pg, g, writes);
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

/* --- the end of the app's commands ---------------------------------------- */

/* G_UNKNOWN: the transaction on `pg` that held the lock ended: release.
 * One that only read ends the watch: whatever this process migrates is
 * done (Alembic reads and writes in one transaction), and its later reads
 * -- a /health endpoint -- must not take the fleet's lock for the rest of
 * its life. */
static void unknown_txn_ended(struct gdb *g)
{
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
        set_state(g, G_DONE);
        log_debug("database \"%s\": a version-table transaction that only read; the gate "
                  "stops watching", g->name);
    }
}

/* G_UNGATED: a version-table transaction on `pg`, idle now, ended: at the
 * target (or past it), the race guard stops watching.  A read that fails
 * keeps it watching (logged). */
static void ungated_txn_ended(const struct pq_copy *copy, PGconn *pg, struct gdb *g)
{
    struct dbconn_pq pc;
    struct versions v;
    char err[256], revs[512];
    if (!versions_read_idle(seam(&pc, copy, pg), shim_config(), state_expr(), &v, NULL, err,
                            sizeof err)) {
        log_debug("database \"%s\": cannot read the version table after a transaction on it "
                  "(%s); the race guard goes on watching", g->name, err);
        return;
    }
    if (compare(&v) == BEHIND)
        return;
    describe(&v, revs, sizeof revs);
    g->ndirty = 0;
    set_state(g, G_DONE);
    NOTE(LOG_LVL_INFO, "at_target", g->name, revs, "database \"%s\": now at %s; the race guard stops watching", g->name, revs);
}

void gate_after(const struct pq_copy *copy, PGconn *pg)
{
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
    bool idle = ts == DBCONN_IDLE, wrote, failed;
    if (g->st == G_LEADING && ts == DBCONN_INERROR)
        lead_saw_error(g, pg); /* the migration failed: its transaction's end is the run's end */
    if (g->st == G_UNKNOWN && g->holder == pg && idle)
        unknown_txn_ended(g);
    else if (g->st == G_LEADING && idle && take_dirty(g, pg, &wrote, &failed))
        lead_txn_ended(copy, g, pg, wrote, failed);
    else if (g->st == G_UNGATED && idle && take_dirty(g, pg, NULL, NULL))
        ungated_txn_ended(copy, pg, g);
    else if (g->st == G_LEADING && !g->saw_vt && clock_now() > g->grace_deadline)
        lead_lapse(copy, g, idle ? pg : NULL, true);
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
    if (own && !ok)
        log_debug("database \"%s\": cannot read the version table as committed on the lock "
                  "connection (%s)", g->name, err);
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

struct sqlclass_name gate_vt_name;
_Atomic bool gate_vt_name_ready;
static pthread_once_t vt_name_once = PTHREAD_ONCE_INIT;

static void vt_name_init(void)
{
    sqlclass_name_init(&gate_vt_name, gate_version_table());
    atomic_store_explicit(&gate_vt_name_ready, true, memory_order_release);
}

void gate_vt_name_prepare(void) { pthread_once(&vt_name_once, vt_name_init); }

const struct migtool *gate_migtool(void)
{
    pthread_once(&tool_once, load_tool);
    return gate_tool;
}

/* --- the wire layer's decisions (gate.h: gate_share_claim) ------------------ */

enum gate_share gate_share_claim(const char *db, const char *cluster, bool (*still)(void *),
                                 void *arg)
{
    fork_init();
    pthread_mutex_lock(&gate_mu);
    struct gdb *g = find_db(db, cluster, true);
    if (!g) {
        pthread_mutex_unlock(&gate_mu);
        return GATE_SHARE_UNTRACKED;
    }
    adopt_after_fork(g);
    while (g->st == G_DECIDING) { /* the libpq gate decides (or another wire connection) */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 50 * 1000000L;
        if (ts.tv_nsec >= 1000000000L)
            ts.tv_sec++, ts.tv_nsec -= 1000000000L;
        (void)pthread_cond_timedwait(&gate_cv, &gate_mu, &ts);
        if (g->st == G_DECIDING && still) {
            pthread_mutex_unlock(&gate_mu); /* (g: a slot of a static table) */
            bool go_on = still(arg);
            pthread_mutex_lock(&gate_mu);
            if (!go_on) {
                pthread_mutex_unlock(&gate_mu);
                return GATE_SHARE_STOPPED;
            }
        }
        adopt_after_fork(g);
    }
    enum gate_share r = g->st == G_LEADING ? GATE_SHARE_LEADING
                        : g->st == G_NEW   ? GATE_SHARE_MINE
                                           : GATE_SHARE_DECIDED;
    if (r == GATE_SHARE_MINE)
        g->st = G_DECIDING; /* (NEW -> DECIDING: neither watched nor guarded) */
    pthread_mutex_unlock(&gate_mu);
    return r;
}

void gate_share_end(const char *db, const char *cluster, bool decided)
{
    fork_init();
    pthread_mutex_lock(&gate_mu);
    struct gdb *g = find_db(db, cluster, false);
    if (g && g->pid == getpid() && g->st == G_DECIDING) {
        /* a wire connection that leads holds the lock on its own connection:
         * the libpq gate has no lock connection to follow, and this
         * process's libpq connections pass (DONE: nothing watched) */
        g->st = decided ? G_DONE : G_NEW;
        pthread_cond_broadcast(&gate_cv);
    }
    pthread_mutex_unlock(&gate_mu);
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
 * before theirs, in the order the gate's threads take them.  (The
 * settler thread and the exit handler, gate_lead.c, only ever start after
 * one of them.)  No mutex of the shim is held here (pthread_atfork waits
 * for a fork in progress). */

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
