/*
 * gate — see include/gate.h.
 *
 * Blocking work (the wait loop, statements on the lock connection) runs
 * with the gate mutex released while the database is DECIDING, or with it
 * held for the short per-statement checks of a leader; the lock connection
 * is only ever used by the thread that set DECIDING or under the mutex.
 */
#include "gate.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "atfork.h"
#include "conn.h"
#include "dbconn.h"
#include "events.h"
#include "heartbeat.h"
#include "holder.h"
#include "lock.h"
#include "log.h"
#include "migtool.h"
#include "ownconn.h"
#include "peer.h"
#include "shim.h"
#include "versions.h"
#include "wait.h"
#include "waitsig.h"

_Atomic int gate_watching;
_Atomic int gate_guarding;
_Atomic int gate_learning;

/* Non-zero while gate_after has something to look at: a connection whose
 * version-table transaction holds the lock (UNKNOWN) or must be checked at
 * its end (LEADING, UNGATED), or a leader still inside leader_grace.  Kept
 * by refresh_pending() under the mutex; read without it. */
static _Atomic int gate_pending;

enum gstate { G_NEW, G_DECIDING, G_DONE, G_LEADING, G_LAPSED, G_UNKNOWN, G_UNGATED,
              G_SCHEMA /* decided per version-table statement, in its schema: see schema_decide */ };

#define MAX_DBS 8
#define MAX_DIRTY 16
#define REPORT_EVERY 10.0 /* seconds between "still waiting" lines */

struct gdb {
    char name[CONFIG_NAME_MAX];  /* the server's name for it (current_database()),
                                    or the client's when the gate did not read */
    char cluster[48];            /* which server ("" when unknown)              */
    enum gstate st;
    pid_t pid;               /* the process this state belongs to          */
    struct ownconn *own;     /* the lock connection (waiting/leading)       */
    int64_t key;
    double since;            /* when the lock was taken                     */
    double grace_deadline;
    bool saw_vt;             /* the leader sent a version-table statement   */
    double next_settle;      /* Django: the settler's next read             */
    struct {                 /* LEADING: which version table its migration uses */
        bool known;          /* an Alembic statement on it was seen          */
        bool learned;        /* ... and it is not the configured one: below  */
        bool warned;         /* the warning naming the settings was given    */
        char schema[CONFIG_NAME_MAX];
        char table[CONFIG_NAME_MAX];
    } vt;
    struct {                 /* LEADING with the configured table absent: the
                                "leading" line waits for the first version-table
                                statement (tell_lead) */
        bool pending;
        char revs[512];
        char text[2048];
    } untold;
    struct {                 /* per-schema version tables (see schema_decide)   */
        bool on;             /* decide per statement (G_SCHEMA between leads)   */
        bool home_known;     /* the first connection's read found no table      */
        bool checked;        /* LEADING: its first statement was resolved       */
        bool wrote;          /* ... a per-schema lead wrote its table           */
        char home[CONFIG_NAME_MAX];   /* ... and its current_schema()           */
        char schema[CONFIG_NAME_MAX]; /* the schema a wait or lead is about, "" */
    } sp;
    PGconn *holder;          /* UNKNOWN: the connection whose transaction holds it */
    bool holder_locked;      /* ... and holds it for real (not after a timeout) */
    bool holder_wrote;       /* ... and its transaction wrote the version table */
    PGconn *dirty[MAX_DIRTY];/* connections with an uncommitted version-table write */
    bool dirty_wrote[MAX_DIRTY];  /* ... whose transaction wrote it (LEADING)      */
    bool dirty_failed[MAX_DIRTY]; /* ... whose transaction saw an error (LEADING)  */
    size_t ndirty;
    struct {                 /* LEADING: the end of the run (see run_ended)  */
        double ended;        /* when its last version-table transaction ended
                                short of the target; 0 = the run goes on     */
        PGconn *pg;          /* that transaction's connection (NULL: closed) */
        bool failed;         /* ... ended in an error, or a later one on pg did */
        enum holder_run told;  /* what the lock connection publishes           */
    } run;
    struct {                 /* LEADING: the app's connections tuned for a dead peer */
        PGconn *pg;
        struct peer_saved sock;
    } tuned[MAX_DIRTY];
    size_t ntuned;
};

static struct gdb dbs[MAX_DBS];
static size_t ndbs;
/* The configuration with version_table_schema set to a database's
 * sp.schema, for the wait loop's reads while that is set (cfg_of). */
static struct config sp_cfg[MAX_DBS];
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static void fork_init(void); /* before the mutex is first taken (see the end) */
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static pthread_once_t tool_once = PTHREAD_ONCE_INIT;

/* The migration tool (migtool.h): everything tool-specific is asked of it.
 * Chosen and loaded once per process (load_tool); Alembic's table until
 * then, whose target is unknown. */
static const struct migtool *tool = &migtool_alembic;

/* One decision: one log line and, with `events` set, one event. */
#define NOTE(level, event, db, versions, ...)                                                     \
    do {                                                                                      \
        log_msg(level, __VA_ARGS__);                                                          \
        events_emit(event, db, versions, NULL);                                               \
    } while (0)

/* The same for a message of the wait's table (wait.h): its level, event
 * and format, with the arguments the entry lists after `versions` (which
 * the event carries when the entry says so). */
static void wait_note(enum wait_msg id, const char *db, const char *versions, ...)
{
    const struct wait_message *m = wait_message(id);
    if (log_enabled(m->level)) {
        char line[1024]; /* log_msg's own line is no longer */
        va_list ap;
        va_start(ap, versions);
        (void)wait_vformat(line, sizeof line, id, ap);
        va_end(ap);
        log_msg(m->level, "%s", line);
    }
    if (m->event)
        events_emit(m->event, db, m->versions ? versions : NULL, NULL);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void load_tool(void)
{
    const struct config *cfg = shim_config();
    const struct migtool *t = migtool_pick(cfg, false);
    t->load(cfg);
    tool = t;
}

/* The lead ends when the process goes idle or exits (Django's rule): every
 * statement of the process is activity, the settler ends the lead. */
static bool ends_idle(void) { return tool->lead_end == MIGTOOL_END_IDLE; }

static int64_t key_of(const struct gdb *g) { return tool->key(shim_config(), g->name); }

/* "schema"."table" or "table", for messages. */
static void vt_text(const char *schema, const char *table, char *out, size_t n)
{
    if (schema[0])
        snprintf(out, n, "\"%s\".\"%s\"", schema, table);
    else
        snprintf(out, n, "\"%s\"", table);
}

enum cmp { AT_TARGET = MIGTOOL_AT_TARGET, BEHIND = MIGTOOL_BEHIND, AHEAD = MIGTOOL_AHEAD };

/* The state read, and the target, for the log (the tool's words). */
static void describe(const struct versions *v, char *buf, size_t sz) { tool->describe(v, buf, sz); }
static void describe_target(char *buf, size_t sz) { tool->describe_target(buf, sz); }

/* The state read against the target (known): AHEAD when a newer deploy
 * migrated it. */
static enum cmp compare(const struct versions *v) { return (enum cmp)tool->compare(v); }

/* The tool's state read for versions.h's reads (NULL: the configured
 * version table). */
static const char *state_expr(void) { return migtool_state_expr(tool); }

/* The seam of the app's connection `pg` (dbconn.h), made in `pc`: the gate
 * talks to every connection through one, the app's as its lock's. */
static struct dbconn *seam(struct dbconn_pq *pc, const struct pq_copy *copy, const PGconn *pg)
{
    /* the seam's operations that change a connection are only called on
     * one the caller may change: the const is the identity's (cmap) */
    return dbconn_pq_init(pc, &copy->api, (PGconn *)(uintptr_t)pg);
}

static bool versions_equal(const struct versions *a, const struct versions *b)
{
    if (a->present != b->present || a->n != b->n || a->truncated != b->truncated)
        return false;
    for (size_t i = 0; i < a->n; i++)
        if (strcmp(a->v[i], b->v[i]) != 0)
            return false;
    return true;
}

static struct gdb *find_db(const char *name, const char *cluster, bool add)
{
    /* names are kept truncated to the slot: compare what fits (a longer
     * name would otherwise never match and be gated at every connection) */
    for (size_t i = 0; i < ndbs; i++)
        if (strncmp(dbs[i].name, name, sizeof dbs[i].name - 1) == 0 &&
            strcmp(dbs[i].cluster, cluster) == 0)
            return &dbs[i];
    if (!add || ndbs == MAX_DBS)
        return NULL;
    struct gdb *g = &dbs[ndbs++];
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

/* The settings a wait or a lead of `g` reads the version table with: the
 * configured ones, or (per-schema, sp.schema set) the same with
 * version_table_schema = sp.schema.  The lock key stays the database's
 * (key_of): one migration at a time per database, whichever schema. */
static const struct config *cfg_of(const struct gdb *g)
{
    return g->sp.schema[0] ? &sp_cfg[g - dbs] : shim_config();
}

/* Make `schema` ("" for none) the one g's waits and lead read. */
static void sp_use(struct gdb *g, const char *schema)
{
    snprintf(g->sp.schema, sizeof g->sp.schema, "%s", schema);
    if (schema[0]) {
        sp_cfg[g - dbs] = *shim_config();
        snprintf(sp_cfg[g - dbs].version_table_schema,
                 sizeof sp_cfg[g - dbs].version_table_schema, "%s", schema);
    }
}

/* The states of the guard's window (gate_guarding counts the dbs in them). */
static bool guarded(enum gstate s)
{
    return s == G_LEADING || s == G_LAPSED || s == G_UNGATED;
}

/* Change state, keeping gate_watching equal to the number of watched dbs
 * and gate_guarding to the number of guarded ones, and the heartbeat kept
 * while leading.  (shim_hooks / shim_hooks_sql: see refresh_pending) */
static void set_state(struct gdb *g, enum gstate s)
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
static void refresh_pending(void)
{
    /* what the gate asks of the wrappers: every call (something pending,
     * or a database in the guard's window), or only the statement texts
     * (target unknown, nothing pending) */
    static int hooks, hooks_sql;
    int any = 0, full = 0, sql = 0, learn = 0;
    for (size_t i = 0; i < ndbs; i++) {
        const struct gdb *g = &dbs[i];
        if (g->pid != getpid())
            continue;
        /* (a Django leader: every statement is activity for the settler) */
        any |= g->holder || g->ndirty || (g->st == G_LEADING && (!g->saw_vt || ends_idle()));
        any |= g->st == G_LEADING && g->run.ended > 0; /* see run_ended */
        full |= guarded(g->st);
        sql |= g->st == G_UNKNOWN || g->st == G_SCHEMA;
        learn |= tool->vt_statement && g->st == G_LEADING && (!g->vt.known || g->vt.learned);
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

/*
 * While this process leads, its connections carry the migration: if its
 * host vanishes, the server must end them (and roll the migration back)
 * within seconds, and the app must not wait two hours for a reply that
 * cannot come (peer.h).  The app's connection `pg`, idle, gets the server's
 * side (session settings) and the client's (socket options), both undone
 * by untune_all when the lead ends.
 */
static void tune_app(const struct pq_copy *copy, struct gdb *g, PGconn *pg)
{
    for (size_t i = 0; i < g->ntuned; i++)
        if (g->tuned[i].pg == pg)
            return;
    struct dbconn_pq pc;
    struct dbconn *c = seam(&pc, copy, pg);
    if (g->ntuned == MAX_DIRTY || dbconn_txn(c) != DBCONN_IDLE)
        return;
    if (!peer_tune_session(c, false, false))
        return;
    g->tuned[g->ntuned].pg = pg;
    if (!peer_tune_socket(dbconn_socket(c), &g->tuned[g->ntuned].sock))
        log_debug("database \"%s\": the app connection's socket is not TCP: its options left as they are",
                  g->name);
    g->ntuned++;
}

/* The lead is over: every tuned connection's socket gets its options back;
 * `idle`, the connection the caller may use now (outside a transaction),
 * also its session defaults.  A tuned connection other than `idle` keeps
 * the server-side settings until it closes (Alembic's env.py closes its
 * own: NullPool). */
static void untune_all(const struct pq_copy *copy, struct gdb *g, PGconn *idle)
{
    for (size_t i = 0; i < g->ntuned; i++) {
        peer_restore_socket(&g->tuned[i].sock);
        if (g->tuned[i].pg != idle)
            continue;
        struct dbconn_pq pc;
        struct dbconn *c = seam(&pc, copy, idle);
        if (dbconn_txn(c) == DBCONN_IDLE && !peer_tune_session(c, false, true))
            log_debug("database \"%s\": cannot put back the app connection's keepalive settings: %s",
                      g->name, dbconn_last_error(c));
    }
    g->ntuned = 0;
}

static void forget_tuned(struct gdb *g, const PGconn *pg)
{
    for (size_t i = 0; i < g->ntuned; i++) {
        if (g->tuned[i].pg == pg) {
            g->tuned[i] = g->tuned[--g->ntuned];
            return;
        }
    }
}

static void close_own(struct gdb *g)
{
    ownconn_close(g->own);
    g->own = NULL;
}

/* Release the migration lock g holds on `c` (its lock connection, or the
 * app's connection a waiter took it on).  A failure is logged: the lock
 * then ends with that connection, which the caller closes or gives back
 * failed. */
static void release_lock(const struct gdb *g, struct dbconn *c)
{
    if (!lock_release(c, shim_config()->lock, g->key))
        log_warn("database \"%s\": releasing the migration lock failed; closing the %s "
                 "releases it", g->name, c == ownconn_db(g->own) ? "lock connection" : "connection");
}

/* Have the server end g's lock session `own` once it stays idle for
 * `seconds` (`setting`: leader_grace or hold_timeout, for the log).  A
 * failure is logged: only this process's own checks then bound the lead. */
static void limit_idle(const struct gdb *g, struct dbconn *own, const char *setting,
                       double seconds)
{
    if (!lock_limit_idle(own, shim_config()->lock, seconds))
        log_warn("database \"%s\": cannot set the server-side idle limit on the lock connection "
                 "(%s = %g s); it is not in force, only this process's own checks are",
                 g->name, setting, seconds);
}

/* Make the app's connection fail (on_timeout = fail): its socket is shut
 * down, so libpq sees the server go away and reports CONNECTION_BAD. */
static void fail_app_conn(const struct pq_copy *copy, PGconn *pg)
{
    struct dbconn_pq pc;
    dbconn_fail(seam(&pc, copy, pg));
}

/*
 * Django's leader holds the lock for its whole run: post_migrate (content
 * types, permissions) follows the last record and races just like the
 * migrations.  It ends with the process (the server drops the lock with
 * the connection; at_exit says so), or, for a process that lives on (an
 * in-process call_command), here: a thread of the shim's own looks every
 * SETTLE_TICK whether every node is recorded and the app's connections
 * have been idle for django_settle; hold_timeout (enforced by the server)
 * is the hard stop.  Activity: any statement of the process, noted by the
 * hooks while a Django leader is pending (refresh_pending).
 */
#define SETTLE_TICK_NS 100000000L
static _Atomic long long activity_us;
static bool settler_running; /* mutex */
static const struct pq_copy *settle_copy;
static pthread_once_t exit_once = PTHREAD_ONCE_INIT;

static void note_activity(void)
{
    atomic_store_explicit(&activity_us, (long long)(now() * 1e6), memory_order_relaxed);
}

/* The lead is over (mutex held): release, close, and say why. */
static void end_idle_lead(const struct pq_copy *copy, struct gdb *g, const char *why)
{
    struct dbconn *own = ownconn_db(g->own);
    if (own)
        release_lock(g, own);
    close_own(g);
    untune_all(copy, g, NULL);
    set_state(g, G_DONE);
    refresh_pending();
    NOTE(LOG_LVL_INFO, "migrated", g->name, NULL, "database \"%s\": %s; migration lock released after %.3f s",
         g->name, why, now() - g->since);
}

static bool read_lead_table(const struct gdb *g, struct dbconn *own, struct versions *v,
                            char *err, size_t errsz);
static void tell_lead(struct gdb *g);

/*
 * A lead ends when the leader's run ends (Alembic).  The run's end: the
 * commit or rollback of a version-table transaction of the leader that
 * wrote the version table or ended in an error, short of the target
 * (gate_after: run_ended), then lead_settle with no further
 * version-table statement of the process (lead_activity: run_goes_on)
 * and no transaction open on that transaction's connection (a
 * transaction_per_migration run is inside its next revision's
 * transaction, which touches the version table only at its end).  The
 * settler thread checks every SETTLE_TICK, so the lock is released even
 * if the app never calls libpq again.  A transaction that only read and
 * committed is not an end (an app may read the version before it
 * migrates in another transaction).  Meanwhile the lock connection
 * publishes how the run ended (holder_mark_run): waiters count the failed
 * ones (wait_steps, lead_failures).
 */
static void run_tell(struct gdb *g, enum holder_run run)
{
    struct dbconn *own = ownconn_db(g->own);
    if (!own || g->run.told == run)
        return;
    if (!holder_mark_run(own, run, g->vt.learned ? g->vt.schema : "",
                         g->vt.learned ? g->vt.table : ""))
        log_warn("database \"%s\": cannot publish how the migration run stands on the lock "
                 "connection; waiters may count a failed run wrongly", g->name);
    g->run.told = run;
}

static void start_settler(const struct pq_copy *copy);

/* The leader's version-table transaction on `pg` (NULL: closed) ended
 * short of the target (mutex held): the settle begins. */
static void run_ended(const struct pq_copy *copy, struct gdb *g, PGconn *pg, bool failed)
{
    g->run.ended = now();
    g->run.pg = pg;
    g->run.failed = failed;
    run_tell(g, failed ? HOLDER_RUN_FAILED : HOLDER_RUN_ENDED);
    start_settler(copy);
    log_debug("database \"%s\": the migration's version-table transaction ended%s short of the "
              "target; the migration lock is released after lead_settle (%g s) without another",
              g->name, failed ? " in an error" : "", shim_config()->lead_settle);
}

/* The run's connection is outside any transaction, no command in flight
 * (mutex held).  Read from the settler's thread while the app may be using
 * it: the seam's dbconn_txn (libpq's PQtransactionStatus) only loads three
 * enum fields of the PGconn, and gate_forget clears run.pg (under the
 * mutex) before the PGconn is freed. */
static bool run_quiet(const struct gdb *g)
{
    struct dbconn_pq pc;
    return !g->run.pg || dbconn_txn(seam(&pc, settle_copy, g->run.pg)) == DBCONN_IDLE;
}

/* The settle is over, or the process exits (mutex held, Alembic, LEADING):
 * re-read the version table, release, and say how the run ended. */
static void end_run_lead(const struct pq_copy *copy, struct gdb *g, bool exiting)
{
    const struct config *cfg = shim_config();
    struct dbconn *own = ownconn_db(g->own);
    struct versions v;
    char err[256] = "no lock connection", revs[512] = "(unreadable)", want[512];
    bool read = own && read_lead_table(g, own, &v, err, sizeof err);
    if (read)
        describe(&v, revs, sizeof revs);
    else
        log_warn("database \"%s\": cannot re-read the version table on the lock connection (%s)",
                 g->name, err);
    bool done = read && (g->vt.learned ? compare(&v) == AT_TARGET : compare(&v) != BEHIND);
    if (own)
        release_lock(g, own);
    close_own(g);
    untune_all(copy, g, NULL);
    g->ndirty = 0;
    bool failed = g->run.failed;
    memset(&g->run, 0, sizeof g->run);
    sp_use(g, "");
    tell_lead(g);
    double held = now() - g->since;
    if (done) {
        set_state(g, g->sp.on ? G_SCHEMA : G_DONE); /* per-schema: the next one decides */
        NOTE(LOG_LVL_INFO, "migrated", g->name, revs, "database \"%s\": migrated to %s; migration "
             "lock released after %.3f s", g->name, revs, held);
    } else {
        /* a later migration of this process races like any ungated one
         * (per-schema: each later statement decides again) */
        set_state(g, g->sp.on ? G_SCHEMA : cfg->guard ? G_UNGATED : G_DONE);
        describe_target(want, sizeof want);
        char then[96];
        if (exiting)
            snprintf(then, sizeof then, "; the process is exiting");
        else
            snprintf(then, sizeof then, ", then no version-table statement for lead_settle = %g s",
                     cfg->lead_settle);
        NOTE(failed ? LOG_LVL_WARN : LOG_LVL_INFO, "released", g->name, revs,
             "database \"%s\": the migration run %s at %s, short of the target %s (%s%s); "
             "migration lock released after %.3f s", g->name, failed ? "failed" : "ended", revs,
             want, failed ? "its transaction ended in an error"
                          : "its last version-table transaction committed",
             then, held);
    }
    refresh_pending();
}

static void *settler(void *arg)
{
    (void)arg;
    const struct config *cfg = shim_config();
    for (;;) {
        struct timespec ts = {0, SETTLE_TICK_NS};
        nanosleep(&ts, NULL);
        pthread_mutex_lock(&mu);
        bool any = false;
        double t = now();
        double idle = t - (double)atomic_load_explicit(&activity_us, memory_order_relaxed) / 1e6;
        for (size_t i = 0; i < ndbs; i++) {
            struct gdb *g = &dbs[i];
            if (g->pid != getpid() || g->st != G_LEADING)
                continue;
            any = true;
            if (tool->lead_end == MIGTOOL_END_RUN) {
                if (g->run.ended > 0 && t - g->run.ended >= cfg->lead_settle && g->ndirty == 0 &&
                    run_quiet(g))
                    end_run_lead(settle_copy, g, false);
                continue;
            }
            struct dbconn *own = ownconn_db(g->own);
            if (!own || !g->saw_vt || idle < cfg->django_settle || t < g->next_settle)
                continue;
            g->next_settle = t + (cfg->django_settle > 0.5 ? cfg->django_settle : 0.5);
            struct versions v;
            char err[256], what[512];
            if (!versions_read(own, cfg, state_expr(), &v, err, sizeof err)) {
                log_warn("database \"%s\": cannot read django_migrations on the lock connection (%s); "
                         "releasing the migration lock, the waiters check for themselves",
                         g->name, err);
                end_idle_lead(settle_copy, g, "lock connection failed");
            } else if (compare(&v) == AT_TARGET) {
                describe(&v, what, sizeof what);
                char why[600];
                snprintf(why, sizeof why, "%s and the process idle for %g s (django_settle)", what,
                         cfg->django_settle);
                end_idle_lead(settle_copy, g, why);
            }
        }
        if (!any)
            settler_running = false;
        pthread_cond_broadcast(&cv);
        pthread_mutex_unlock(&mu);
        if (!any)
            return NULL;
    }
}

/* At exit (the `manage.py migrate` entrypoint): say what the lock was
 * held for; closing the lock connection releases it at once. */
static void at_exit(void)
{
    if (pthread_mutex_trylock(&mu) != 0)
        return; /* another thread is inside the gate: the kernel closes the socket */
    for (size_t i = 0; i < ndbs; i++) {
        struct gdb *g = &dbs[i];
        if (g->pid != getpid() || g->st != G_LEADING || !settle_copy)
            continue;
        if (tool->lead_end == MIGTOOL_END_RUN) { /* the server releases it with the connection anyway */
            if (g->run.ended > 0)
                end_run_lead(settle_copy, g, true);
            continue;
        }
        struct versions v;
        char err[256], what[512] = "django_migrations unreadable";
        struct dbconn *own = ownconn_db(g->own);
        if (own && versions_read(own, shim_config(), state_expr(), &v, err, sizeof err))
            describe(&v, what, sizeof what);
        char why[600];
        snprintf(why, sizeof why, "process exiting (%s): released at exit", what);
        end_idle_lead(settle_copy, g, why);
    }
    pthread_mutex_unlock(&mu);
}

static void register_exit(void) { atexit(at_exit); }

/* A Django lead began (mutex held): make sure the settler runs. */
static void start_settler(const struct pq_copy *copy)
{
    pthread_once(&exit_once, register_exit);
    note_activity();
    settle_copy = copy;
    if (!settler_running) {
        /* the app's signals are not ours to receive */
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        pthread_attr_t at;
        pthread_attr_init(&at);
        pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
        pthread_t th;
        settler_running = pthread_create(&th, &at, settler, NULL) == 0;
        pthread_attr_destroy(&at);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (!settler_running)
            log_warn("cannot start the settle thread; the migration lock is held until this process exits");
    }
}

/* The first time a process has to wait: the timeline's "waiting" starts. */
static void first_wait(void *db) { events_emit("waiting", db, NULL, NULL); }

enum outcome { OUT_DONE, OUT_LEADING, OUT_FAILED, OUT_UNGATED /* behind, proceeding without the lock */,
               OUT_LAPSED /* the holder lapsed: proceed, take the lock at the first version-table statement */,
               OUT_INTERRUPTED /* SIGTERM & co. while waiting: fail, let the app's handler run */ };

enum own_open { OWN_OPEN, OWN_NONE /* cannot: noted, proceed ungated */,
                OWN_DONE /* a peer finished meanwhile: noted */, OWN_SIGNAL };

/* How long a process short of a slot looks for a holder of the lock to
 * wait for before it gives up (fleet members start within this). */
#define SLOT_HOLDER_GRACE 1.0

/*
 * Open the lock connection (made like `app`) unless open.
 *
 * With `patient` (a waiter at its first connection, `app` outside any
 * transaction, this process holding no lock), a server with no connection
 * slot free (ownconn_no_slot) is waited for while another process holds
 * the migration lock: that holder's migration ends, its lock connection
 * closes, and either a slot comes free or the database is found at the
 * target on the app's connection (OWN_DONE; not in Django mode, where
 * waiters wait for the lock itself).  Going on without the gate instead
 * would race, and the race guard needs a slot of its own too.  Bounded by
 * wait_timeout from `start`; tries again after 50 ms, doubling to 1 s.
 * Nobody holding the lock (after SLOT_HOLDER_GRACE) means the slots are
 * held by processes that wait for nothing this one could end, this
 * fleet's own among them: waiting would only stall it, so the process
 * proceeds without the gate, as it does at once on any other failure and
 * whenever it is not `patient` (it holds the lock on the app's
 * connection, or the app's connection is mid-transaction).  SIGTERM & co.
 * end the wait (OWN_SIGNAL, for the caller to note).
 */
static enum own_open open_own(const struct pq_copy *copy, PGconn *app, struct gdb *g,
                              const struct wait_policy *pol, bool patient, double start)
{
    const struct config *cfg = shim_config();
    struct dbconn_pq apc;
    struct dbconn *appc = seam(&apc, copy, app);
    char err[256];
    bool told = false;
    long pause_ms = 50;
    while (!g->own) {
        g->own = ownconn_open(copy, app, "lock", err, sizeof err);
        if (g->own)
            break;
        bool no_slot = patient && ownconn_no_slot(err);
        struct versions v;
        char rerr[256];
        if (no_slot && !pol->lock_outlives_target && tool->known() &&
            versions_read(appc, cfg, state_expr(), &v, rerr, sizeof rerr) && compare(&v) != BEHIND) {
            char revs[512];
            describe(&v, revs, sizeof revs);
            wait_note(WAIT_MSG_SLOT_PEER, g->name, revs, g->name, now() - start, revs);
            return OWN_DONE;
        }
        double idle, t = now();
        bool migrating, held = no_slot && holder_state(appc, g->key, &idle, &migrating, NULL);
        if (!no_slot || (!held && t - start >= SLOT_HOLDER_GRACE) || t - start >= cfg->wait_timeout) {
            if (told)
                wait_note(held ? WAIT_MSG_SLOT_TIMEOUT : WAIT_MSG_SLOT_NOBODY, g->name, NULL,
                          g->name, t - start, err);
            else
                wait_note(WAIT_MSG_OWN_FAILED, g->name, NULL, g->name, err);
            return OWN_NONE;
        }
        if (!told && held) {
            told = true;
            wait_note(WAIT_MSG_SLOT_WAITING, g->name, NULL, g->name, err, cfg->wait_timeout);
        }
        if (waitsig_pending())
            return OWN_SIGNAL;
        struct timespec ts = {pause_ms / 1000, (pause_ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
        pause_ms = pause_ms * 2 > 1000 ? 1000 : pause_ms * 2;
    }
    if (told)
        wait_note(WAIT_MSG_SLOT_FREE, g->name, NULL, g->name, now() - start);
    return OWN_OPEN;
}

/* A signal while waiting for a slot: the same note as one while waiting
 * for the lock. */
static enum outcome slot_interrupted(struct gdb *g, double start)
{
    wait_note(WAIT_MSG_INTERRUPTED, g->name, NULL, g->name, waitsig_name(waitsig_pending()),
              now() - start);
    return OUT_INTERRUPTED;
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
/* version_table or version_table_schema set in migshim's own settings
 * (file, environment): the table is known, nothing to learn. */
static bool vt_set_by_migshim(const struct config *cfg)
{
    int t = config_key_index("version_table"), s = config_key_index("version_table_schema");
    return (t >= 0 && (cfg->source[t] == CFG_FILE || cfg->source[t] == CFG_ENV)) ||
           (s >= 0 && (cfg->source[s] == CFG_FILE || cfg->source[s] == CFG_ENV));
}

static void tell_lead(struct gdb *g)
{
    if (!g->untold.pending)
        return;
    g->untold.pending = false;
    NOTE(LOG_LVL_INFO, "leading", g->name, g->untold.revs, "%s", g->untold.text);
}

/*
 * The wait-for-version loop's I/O side (wait.h has its decisions).  Each
 * slice observes (one lock step, then the reads and looks the step asks
 * for), asks wait_step what that means, and acts: waits on, or ends the
 * wait with OUT_LEADING (g->own holding the exclusive lock), OUT_DONE
 * (the database reached the target, or ahead), OUT_UNGATED, OUT_LAPSED,
 * OUT_FAILED (on_timeout = fail) or OUT_INTERRUPTED.
 *
 * With `on_app` (xact mode, `app` a fresh connection outside any
 * transaction) the process waits on the app's own connection: a waiter
 * never opens a connection, and wakes with the version table already read
 * (lock_step).  Only a process that gets the exclusive lock there lets it
 * go at once and takes it again on a lock connection of its own, since
 * the app needs its connection to migrate.
 */
struct waiter {
    const struct pq_copy *copy;
    const struct config *cfg;  /* cfg_of(g): per-schema, that schema's table   */
    struct gdb *g;
    PGconn *app;               /* the app's connection                          */
    struct dbconn_pq app_pc;   /* ... its seam: appc                            */
    struct dbconn *appc;
    struct dbconn *wc;         /* the waiting one: appc, or the lock connection's */
    const char *why;           /* for the "leading" line                        */
    double start;
    struct wait_policy pol;
    struct wait_state st;
    struct versions v;         /* the version table as this slice read it       */
    struct versions v_seen;    /* ... when the holder was first seen            */
    struct versions pv;        /* the published table, read at the target      */
    struct holder_vt pub;        /* the version table a holder published          */
    char err[256], revs[512];
};

/* The settings of g's wait, and how the tool waits (wait.h). */
static void wait_policy_of(const struct gdb *g, const struct config *cfg, struct wait_policy *pol)
{
    *pol = (struct wait_policy){
        .wait_timeout = cfg->wait_timeout,
        .fail_on_timeout = cfg->on_timeout == ON_TIMEOUT_FAIL,
        .leader_grace = cfg->leader_grace,
        .lead_settle = cfg->lead_settle,
        .lead_failures = cfg->lead_failures,
        .report_every = REPORT_EVERY,
        .lock_outlives_target = ends_idle(),
        .reads_published_table = tool->vt_statement && !g->sp.schema[0],
        .counts_failed_runs = tool->lead_end == MIGTOOL_END_RUN,
        .lapse_takes_lock_later = tool->relock_after_lapse,
        .unknown_target_leads_to_exit = tool->unknown_leads_to_exit,
        .may_learn_table = tool->vt_statement && !vt_set_by_migshim(cfg),
        .lead_label = tool->run_label,
    };
}

static enum wait_lock wait_lock_of(enum lock_result r)
{
    switch (r) {
    case LOCK_TAKEN: return WAIT_LOCK_TAKEN;
    case LOCK_FREED: return WAIT_LOCK_FREED;
    case LOCK_BUSY: return WAIT_LOCK_BUSY;
    case LOCK_ERROR: break;
    }
    return WAIT_LOCK_ERROR;
}

static enum wait_run wait_run_of(enum holder_run r)
{
    return r == HOLDER_RUN_FAILED ? WAIT_RUN_FAILED : r == HOLDER_RUN_ENDED ? WAIT_RUN_ENDED
                                                                        : WAIT_RUN_GOING;
}

static enum wait_cmp wait_cmp_of(const struct versions *v)
{
    switch (compare(v)) {
    case AT_TARGET: return WAIT_AT_TARGET;
    case AHEAD: return WAIT_AHEAD;
    case BEHIND: break;
    }
    return WAIT_BEHIND;
}

/* The slice's version table is w->v: what the step needs of it. */
static void observe_read(struct waiter *w, struct wait_obs *ob)
{
    ob->read = WAIT_READ_OK;
    ob->cmp = tool->known() ? wait_cmp_of(&w->v) : WAIT_BEHIND;
    ob->present = w->v.present;
    ob->same_as_seen = w->st.holder_seen && versions_equal(&w->v, &w->v_seen);
    ob->elapsed = now() - w->start;
    describe(&w->v, w->revs, sizeof w->revs);
}

/* One slice: a lock step on the waiting connection. */
static void observe(struct waiter *w, struct wait_obs *ob)
{
    bool have_v;
    enum lock_result r = lock_step(w->wc, w->cfg, state_expr(), w->g->key,
                                   w->st.waited ? NULL : first_wait, w->g->name, &w->v, &have_v,
                                   w->err, sizeof w->err);
    *ob = (struct wait_obs){.lock = wait_lock_of(r), .on_app = w->wc == w->appc,
                            .signal = waitsig_pending(), .target_known = tool->known(),
                            .read = WAIT_READ_NONE, .cmp = WAIT_BEHIND,
                            .published = WAIT_PUB_UNREAD, .elapsed = now() - w->start};
    if (have_v)
        observe_read(w, ob);
}

/* The further look the step asked for (wait_wants_look), into `ob`.
 * False when the wait ended there (*out): no lock connection for the
 * lock taken on the app's. */
static bool look(struct waiter *w, enum wait_action act, struct wait_obs *ob, enum outcome *out)
{
    struct gdb *g = w->g;
    char err[256];
    switch (act) {
    case WAIT_ACT_HAND_OVER: {
        enum own_open oo = open_own(w->copy, w->app, g, &w->pol, false, w->start);
        if (oo != OWN_OPEN) {
            release_lock(g, w->appc);
            *out = oo == OWN_SIGNAL ? slot_interrupted(g, w->start) : OUT_UNGATED;
            return false;
        }
        w->wc = ownconn_db(g->own);
        ob->lock = wait_lock_of(lock_hand_over(w->appc, w->wc, g->key, w->err, sizeof w->err));
        ob->on_app = false;
        ob->handed_over = true;
        ob->read = WAIT_READ_NONE;
        return true;
    }
    case WAIT_ACT_READ:
        if (versions_read(w->wc, w->cfg, state_expr(), &w->v, w->err, sizeof w->err))
            observe_read(w, ob);
        else
            ob->read = WAIT_READ_FAILED;
        return true;
    case WAIT_ACT_READ_PUBLISHED: /* a failed read counts as "not there" */
        ob->published = versions_read_in(w->wc, w->pub.schema, w->pub.table, &w->pv,
                                              err, sizeof err) &&
                                compare(&w->pv) == AT_TARGET
                            ? WAIT_PUB_AT_TARGET
                            : WAIT_PUB_NOT;
        return true;
    default:
        assert(!"not a look");
        return true;
    }
}

/* Look at the holder of the lock (see holder.h, "Lapses"): idle how long,
 * migrating, its published version table and run. */
static void look_at_holder(struct waiter *w, const struct wait_obs *ob)
{
    double idle;
    bool migrating;
    struct holder_vt vt;
    enum holder_run run;
    if (!holder_state_run(w->wc, w->g->key, &idle, &migrating, &vt, &run))
        return;
    struct wait_holder h = {.idle = idle, .migrating = migrating, .vt_published = vt.known,
                            .run = wait_run_of(run)};
    if (vt.known)
        w->pub = vt;
    if (wait_saw_holder(&w->st, &h, ob->elapsed))
        w->v_seen = w->v;
}

/* Print the step's message `id` with the values its table entry names;
 * `holder` for the lines about the lock's holder. */
static void say(const struct waiter *w, enum wait_msg id, const struct wait_obs *ob,
                const char *holder)
{
    const struct config *cfg = w->cfg;
    const char *db = w->g->name, *revs = w->revs;
    double waited = now() - w->start;
    unsigned n = w->st.failed_runs;
    switch (id) {
    case WAIT_MSG_NONE:
    case WAIT_MSG_LEADING: /* held back for tell_lead: see lead() */
        break;
    case WAIT_MSG_STEP_FAILED:
        wait_note(id, db, NULL, db, ob->on_app ? "connection" : "lock connection", w->err);
        break;
    case WAIT_MSG_INTERRUPTED:
        wait_note(id, db, NULL, db, waitsig_name(ob->signal), waited);
        break;
    case WAIT_MSG_HANDOVER_FAILED:
    case WAIT_MSG_READ_FAILED:
        wait_note(id, db, NULL, db, w->err);
        break;
    case WAIT_MSG_PUBLISHED: {
        char pub[512], name[2 * CONFIG_NAME_MAX + 8];
        describe(&w->pv, pub, sizeof pub);
        vt_text(w->pub.schema, w->pub.table, name, sizeof name);
        wait_note(id, db, pub, db, waited, pub, name);
        break;
    }
    case WAIT_MSG_LEAD_FAILURES:
        wait_note(id, db, revs, db, waited, n, n == 1 ? "" : "s", cfg->lead_failures, revs);
        break;
    case WAIT_MSG_RUN_FAILED:
        wait_note(id, db, revs, db, n, cfg->lead_failures, revs);
        break;
    case WAIT_MSG_LEAD_TO_EXIT:
        wait_note(id, db, NULL, db, (long long)w->g->key, w->st.waited ? " after waiting" : "");
        break;
    case WAIT_MSG_AHEAD:
    case WAIT_MSG_PEER_BEFORE:
        wait_note(id, db, revs, db, revs);
        break;
    case WAIT_MSG_PEER_WAITED:
    case WAIT_MSG_AT_TARGET:
        wait_note(id, db, revs, db, waited, revs);
        break;
    case WAIT_MSG_LAPSED_LATER:
        wait_note(id, db, revs, db, cfg->leader_grace, revs);
        break;
    case WAIT_MSG_LAPSED:
        wait_note(id, db, revs, db, cfg->leader_grace, cfg->version_table_schema,
                  cfg->version_table_schema[0] ? "." : "", cfg->version_table, revs);
        break;
    case WAIT_MSG_TIMEOUT_FAIL:
    case WAIT_MSG_TIMEOUT:
    case WAIT_MSG_WAITING:
        assert(holder);
        wait_note(id, db, revs, db, ob->elapsed, holder);
        break;
    default: /* the slot's, said by open_own */
        assert(!"not a message of the wait's steps");
        break;
    }
}

/* The slice took the lock toward the target: the server drops it within
 * seconds if this host vanishes and ends the session after leader_grace
 * idle; the "leading" line is held for tell_lead. */
static void lead(struct waiter *w, const struct wait_step *s)
{
    struct gdb *g = w->g;
    if (!peer_tune_session(w->wc, w->cfg->lock == LOCK_XACT, false))
        log_warn("database \"%s\": cannot set the lock connection's keepalive settings: %s",
                 g->name, dbconn_last_error(w->wc));
    limit_idle(g, w->wc, "leader_grace", w->cfg->leader_grace);
    char want[512];
    describe_target(want, sizeof want);
    wait_format(g->untold.text, sizeof g->untold.text, WAIT_MSG_LEADING, g->name,
                (long long)g->key, w->st.waited ? " after waiting" : "", w->pol.lead_label,
                w->revs, want, w->why ? " " : "", w->why ? w->why : "");
    snprintf(g->untold.revs, sizeof g->untold.revs, "%s", w->revs);
    g->untold.pending = true;
    /* the configured table absent, another of its shape present: see tell_lead */
    if (!s->tell_later || !versions_any_column(w->wc))
        tell_lead(g);
}

/* The step ended the wait: act on it and say so. */
static enum outcome end_wait(struct waiter *w, const struct wait_step *s, const struct wait_obs *ob)
{
    struct gdb *g = w->g;
    if (s->act == WAIT_ACT_LEAD) {
        g->since = now();
        if (s->msg == WAIT_MSG_LEADING)
            lead(w, s);
        else
            say(w, s->msg, ob, NULL);
        return OUT_LEADING;
    }
    char holder[256] = "";
    if (s->msg == WAIT_MSG_TIMEOUT || s->msg == WAIT_MSG_TIMEOUT_FAIL)
        holder_describe(w->wc, g->key, holder, sizeof holder);
    if (s->release) /* never used: released before anyone could migrate */
        release_lock(g, w->wc);
    close_own(g);
    say(w, s->msg, ob, holder);
    switch (s->act) {
    case WAIT_ACT_PROCEED:
    case WAIT_ACT_PROCEED_AHEAD: return OUT_DONE;
    case WAIT_ACT_FAIL: return OUT_FAILED;
    case WAIT_ACT_INTERRUPTED: return OUT_INTERRUPTED;
    case WAIT_ACT_LAPSED: return OUT_LAPSED;
    case WAIT_ACT_UNGATED: return OUT_UNGATED;
    default:
        assert(!"not an end of the wait");
        return OUT_UNGATED;
    }
}

static enum outcome wait_steps(const struct pq_copy *copy, PGconn *app, struct gdb *g,
                               const char *why, bool on_app, bool fresh)
{
    struct waiter w = {.copy = copy, .cfg = cfg_of(g), .g = g, .app = app, .why = why};
    g->key = key_of(g);
    w.start = now();
    wait_policy_of(g, w.cfg, &w.pol);
    if (!on_app) {
        switch (open_own(copy, app, g, &w.pol, fresh, w.start)) {
        case OWN_OPEN: break;
        case OWN_NONE: return OUT_UNGATED;
        case OWN_DONE: return OUT_DONE;
        case OWN_SIGNAL: return slot_interrupted(g, w.start);
        }
    }
    w.appc = seam(&w.app_pc, copy, app);
    w.wc = on_app ? w.appc : ownconn_db(g->own);
    wait_begin(&w.st);
    for (;;) {
        struct wait_obs ob;
        observe(&w, &ob);
        struct wait_step s = wait_step(&w.pol, &w.st, &ob);
        for (; wait_wants_look(s.act); s = wait_step(&w.pol, &w.st, &ob)) {
            enum outcome o; /* each look completes `ob`: at most three */
            if (!look(&w, s.act, &ob, &o))
                return o;
        }
        say(&w, s.note, &ob, NULL);
        if (s.look)
            look_at_holder(&w, &ob);
        if (s.act == WAIT_ACT_RETRY)
            continue;
        if (s.act != WAIT_ACT_WAIT)
            return end_wait(&w, &s, &ob);
        if (s.msg == WAIT_MSG_WAITING) {
            char holder[256];
            holder_describe(w.wc, g->key, holder, sizeof holder);
            say(&w, s.msg, &ob, holder);
        }
        if (s.pause_ms) {
            struct timespec ts = {0, 1000000L * (long)s.pause_ms};
            nanosleep(&ts, NULL);
        }
    }
}

/*
 * The wait-for-version loop (wait_steps), with SIGTERM, SIGINT and SIGQUIT
 * recorded for its length only (waitsig.h): a signal ends the wait after
 * the current slice with OUT_INTERRUPTED, and the caller, once it holds no
 * lock of ours, hands the signal back to the app (waitsig_redeliver).  A
 * process that leads is past this loop: the shim never interrupts it.
 */
static enum outcome wait_loop(const struct pq_copy *copy, PGconn *app, struct gdb *g,
                              const char *why, bool on_app, bool fresh)
{
    waitsig_begin();
    heartbeat_begin("waiting for the migration", 0); /* the wait ends by wait_timeout */
    enum outcome o = wait_steps(copy, app, g, why, on_app, fresh);
    heartbeat_end();
    waitsig_end();
    return o;
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
        pthread_cond_wait(&cv, &mu);
    map_conn(pg, g);
    return g->st != G_NEW;
}

/*
 * Per-schema version tables.  The first connection's read looks for the
 * version table where that connection's search_path finds it; an app that
 * sets search_path later (Alembic's multi-tenant recipe: SET search_path in
 * env.py, one version table per tenant schema) keeps its tables elsewhere.
 * With version_table_schema not set, when the same round trip says that
 * another schema has a table of that name with a version_num column
 * (id->vt_elsewhere), the database is decided per statement (G_SCHEMA,
 * schema_decide), whether the table read is absent, behind or at the
 * target (a new tenant next to an at-head shared one is still serialized).
 * When no other schema has one (a fresh deploy), the process leads or
 * waits as usual; with the table absent, the leader's first statement on
 * it says which schema its migration is about (lead_resolve, sp.home).
 */
static bool schema_mode(struct gdb *g, const struct versions *v, const struct server_id *id)
{
    const struct config *cfg = shim_config();
    if (!tool->decision_point || cfg->version_table_schema[0])
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
    pthread_mutex_lock(&mu);
    struct gdb *g = find_alias(key);
    if (g && decided(g, pg)) { /* nothing to ask the server */
        if (g->st == G_LEADING && g->pid == getpid()) {
            /* the migration may run on it: see tune_app */
            bool nb = dbconn_block(ac);
            tune_app(copy, g, pg);
            dbconn_unblock(ac, nb);
        }
        pthread_mutex_unlock(&mu);
        return true;
    }
    pthread_mutex_unlock(&mu);

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
    if (tool->known() || tool->unknown_leads_to_exit) {
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

    pthread_mutex_lock(&mu);
    g = find_db(db, cluster, true);
    if (!g) {
        pthread_mutex_unlock(&mu);
        log_warn("database \"%s\": more than %d databases; not gated", db, MAX_DBS);
        goto out_nb;
    }
    if (read)
        add_alias(key, g);
    if (decided(g, pg)) {
        if (g->st == G_LEADING && g->pid == getpid())
            tune_app(copy, g, pg); /* the migration may run on it */
        pthread_mutex_unlock(&mu);
        goto out_nb;
    }
    g->st = G_DECIDING; /* this thread decides */
    memset(&g->sp, 0, sizeof g->sp);
    pthread_mutex_unlock(&mu);
    events_emit("connect", db, NULL, NULL);

    enum gstate next = G_DONE;
    bool ok = true;
    if (!tool->known() && !tool->unknown_leads_to_exit) {
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
                     db, revs, tool->guards() ? ", the race guard watches" : "");
            next = tool->guards() ? G_UNGATED : G_DONE;
        } else {
            enum outcome o = wait_loop(copy, pg, g, NULL, cfg->lock == LOCK_XACT, true);
            if (o == OUT_UNGATED || o == OUT_LAPSED) {
                if (o == OUT_LAPSED && tool->relock_after_lapse)
                    next = G_LAPSED; /* the lock again at its first statement on the table */
                else
                    next = cfg->guard && tool->guards() ? G_UNGATED : G_DONE;
            } else if (o == OUT_LEADING) {
                next = G_LEADING;
                g->grace_deadline = now() + cfg->leader_grace;
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
    pthread_mutex_lock(&mu);
    g->st = G_DECIDING; /* set_state counts from here */
    set_state(g, next);
    if (ends_idle() && next == G_LEADING)
        start_settler(copy);
    refresh_pending();
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
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

static void mark_dirty(struct gdb *g, PGconn *pg)
{
    if (!is_dirty(g, pg) && g->ndirty < MAX_DIRTY) {
        g->dirty_wrote[g->ndirty] = false;
        g->dirty_failed[g->ndirty] = false;
        g->dirty[g->ndirty++] = pg;
    }
}

/* The slot of a dirty connection, or -1. */
static int dirty_slot(const struct gdb *g, const PGconn *pg)
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

/* The leader's run goes on (mutex held): a version-table statement, or a
 * transaction on the run's connection (see run_ended).  The settle is off
 * and the lock connection shows the plain mark again. */
static void run_goes_on(struct gdb *g)
{
    g->run.ended = 0;
    run_tell(g, HOLDER_RUN_GOING);
}

/* A version-table statement of the leader on `pg` (mutex held). */
static void lead_activity(struct gdb *g, PGconn *pg, bool writes)
{
    mark_dirty(g, pg);
    int i = dirty_slot(g, pg);
    if (i >= 0 && writes)
        g->dirty_wrote[i] = true;
    if (g->run.ended)
        run_goes_on(g);
}

/* Take the lock again (LAPSED, or UNKNOWN) with the mutex released. */
static enum outcome reacquire(const struct pq_copy *copy, PGconn *pg, struct gdb *g,
                              const char *why)
{
    enum gstate was = g->st;
    set_state(g, G_DECIDING);
    pthread_mutex_unlock(&mu);
    enum outcome o = wait_loop(copy, pg, g, why, false, false); /* pg may be mid-transaction */
    pthread_mutex_lock(&mu);
    set_state(g, was); /* from DECIDING: restores the watch count */
    pthread_cond_broadcast(&cv);
    return o;
}

/* Read the configured version table as the app's statement on `pg` will
 * find it: in `qual` when the statement names a schema, else where the
 * session's search_path resolves it (versions_resolve); `schema`
 * says which.  On the app's connection, blocking for the one round trip;
 * false (err set) when the connection cannot take a statement now. */
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
static void schema_decide(const struct pq_copy *copy, PGconn *pg, struct gdb *g, const char *sql)
{
    const struct config *cfg = shim_config();
    char qual[CONFIG_NAME_MAX], schema[CONFIG_NAME_MAX], err[256], revs[512];
    char name[2 * CONFIG_NAME_MAX + 8], why[2 * CONFIG_NAME_MAX + 96];
    struct versions v;
    if (!tool->decision_point(cfg, sql, qual, sizeof qual))
        return;
    pthread_mutex_unlock(&mu); /* a round trip on the app's own connection */
    bool read = read_as_app(copy, pg, qual, schema, sizeof schema, &v, err, sizeof err);
    pthread_mutex_lock(&mu);
    while (g->st == G_DECIDING)
        pthread_cond_wait(&cv, &mu);
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
        g->grace_deadline = now() + cfg->leader_grace;
        g->saw_vt = false; /* gate_before's LEADING branch: hold_timeout, the mark */
        memset(&g->vt, 0, sizeof g->vt);
        g->vt.known = g->vt.learned = true; /* the lead follows this table (gate_after) */
        g->vt.warned = true;                /* the user's settings are right: no advice */
        snprintf(g->vt.schema, sizeof g->vt.schema, "%s", schema);
        snprintf(g->vt.table, sizeof g->vt.table, "%s", cfg->version_table);
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
static bool lead_resolve(const struct pq_copy *copy, PGconn *pg, struct gdb *g, const char *sql)
{
    const struct config *cfg = shim_config();
    char qual[CONFIG_NAME_MAX], schema[CONFIG_NAME_MAX], err[256], revs[512];
    char name[2 * CONFIG_NAME_MAX + 8];
    struct versions v;
    if (!tool->decision_point(cfg, sql, qual, sizeof qual) || qual[0])
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
    memset(&g->vt, 0, sizeof g->vt);
    g->vt.known = g->vt.learned = g->vt.warned = true;
    snprintf(g->vt.schema, sizeof g->vt.schema, "%s", schema);
    snprintf(g->vt.table, sizeof g->vt.table, "%s", cfg->version_table);
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
    struct dbconn *own = ownconn_db(g->own);
    if (own)
        release_lock(g, own);
    close_own(g);
    untune_all(copy, g, NULL);
    g->ndirty = 0;
    set_state(g, G_SCHEMA);
    bool told = !g->untold.pending;
    g->untold.pending = false;
    NOTE(LOG_LVL_INFO, "proceed", g->name, revs, "database \"%s\": %s is at %s: a peer migrated "
         "it before this process got the lock%s; proceeding", g->name, name, revs,
         told ? " (released it)" : "");
    return true;
}

void gate_before(const struct pq_copy *copy, PGconn *pg, const char *sql)
{
    const struct config *cfg = shim_config();
    bool writes = tool->writes(cfg, sql); /* one of the tool's writes of its table */
    if (ends_idle())
        note_activity();
    fork_init();
    pthread_mutex_lock(&mu);
    struct gdb *g = db_of(copy, pg);
    if (!g || g->pid != getpid()) {
        pthread_mutex_unlock(&mu);
        return;
    }
    while (g->st == G_DECIDING)
        pthread_cond_wait(&cv, &mu);
    if (g->st == G_LEADING && !g->saw_vt && now() > g->grace_deadline) {
        tell_lead(g);
        close_own(g); /* the server ended its idle session */
        untune_all(copy, g, NULL);
        set_state(g, G_LAPSED);
    }
    if (g->st == G_LAPSED) {
        enum outcome o = reacquire(copy, pg, g, "(again, for a late migration)");
        if (o == OUT_LEADING) {
            set_state(g, G_LEADING);
            g->grace_deadline = now() + cfg->leader_grace;
            tune_app(copy, g, pg);
            if (ends_idle())
                start_settler(copy);
        } else if (o == OUT_FAILED || o == OUT_INTERRUPTED) {
            fail_app_conn(copy, pg); /* the statement fails; a reconnect is gated anew */
            set_state(g, G_NEW);
            refresh_pending();
            pthread_mutex_unlock(&mu);
            waitsig_redeliver();
            return;
        } else {
            set_state(g, (o == OUT_UNGATED || o == OUT_LAPSED) && cfg->guard && tool->guards()
                             ? G_UNGATED : G_DONE);
            if (g->st == G_UNGATED)
                mark_dirty(g, pg);
            refresh_pending();
            pthread_mutex_unlock(&mu);
            return;
        }
    }
    if (g->st == G_SCHEMA)
        schema_decide(copy, pg, g, sql);
    if (g->st == G_LEADING && g->sp.home_known && !g->sp.checked && tool->decision_point &&
        lead_resolve(copy, pg, g, sql)) {
        refresh_pending();
        pthread_mutex_unlock(&mu);
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
        if (tool->lead_end == MIGTOOL_END_RUN) /* else: held until idle (settler) */
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
    pthread_mutex_unlock(&mu);
    waitsig_redeliver();
}

/* The version table a leader's re-read looks at: the one its migration
 * was seen to use (gate_learn), else the configured one. */
static bool read_lead_table(const struct gdb *g, struct dbconn *own,
                            struct versions *v, char *err, size_t errsz)
{
    const struct config *cfg = shim_config();
    if (!g->vt.learned)
        return versions_read(own, cfg, state_expr(), v, err, errsz);
    return versions_read_in(own, g->vt.schema, g->vt.table, v, err, errsz);
}

/*
 * Learning the version table from the leader's own statements.  While
 * LEADING and before any of Alembic's statements on the configured table,
 * a statement in Alembic's exact shape on another table (a name or schema
 * set where migshim could not read it: computed in env.py) means the
 * migration keeps its versions there: the leader follows it (re-reads it
 * at each commit and releases the lock when it holds exactly the target),
 * publishes it for the waiters (holder_mark_migrating_vt) and warns once,
 * naming the settings to add.  A learned table never counts as "ahead":
 * only exactly the target heads release the lock.
 */
void gate_learn(const struct pq_copy *copy, PGconn *pg, const char *sql)
{
    char schema[CONFIG_NAME_MAX], table[CONFIG_NAME_MAX];
    bool writes;
    if (!tool->vt_statement || !tool->vt_statement(sql, schema, sizeof schema, table, sizeof table,
                                                   &writes))
        return;
    const struct config *cfg = shim_config();
    fork_init();
    pthread_mutex_lock(&mu);
    struct gdb *g = db_of(copy, pg);
    if (!g || g->pid != getpid() || g->st != G_LEADING) {
        pthread_mutex_unlock(&mu);
        return;
    }
    if (g->vt.learned) { /* the learned table's statements end in a re-read */
        if (strcmp(schema, g->vt.schema) == 0 && strcmp(table, g->vt.table) == 0) {
            lead_activity(g, pg, writes);
            if (writes)
                tell_lead(g);
        }
    } else if (!g->vt.known) {
        g->vt.known = true;
        if (writes)
            tell_lead(g);
        if (strcmp(schema, cfg->version_table_schema) != 0 ||
            strcmp(table, cfg->version_table) != 0) {
            g->vt.learned = true;
            snprintf(g->vt.schema, sizeof g->vt.schema, "%s", schema);
            snprintf(g->vt.table, sizeof g->vt.table, "%s", table);
            g->saw_vt = true; /* no lapse: this leader migrates */
            struct dbconn *own = ownconn_db(g->own);
            if (own) {
                limit_idle(g, own, "hold_timeout", cfg->hold_timeout);
                if (!holder_mark_migrating_vt(own, schema, table))
                    log_warn("database \"%s\": cannot mark the lock connection migrating (waiters may "
                             "take this lead for a lapse): %s",
                             g->name, dbconn_last_error(own));
            }
            lead_activity(g, pg, writes);
        }
    }
    /* one warning, from the process that writes it: a late process that
     * only reads it, found at the target, says so at info level */
    if (g->vt.learned && writes && !g->vt.warned) {
        g->vt.warned = true;
        char seen[2 * CONFIG_NAME_MAX + 8], conf[2 * CONFIG_NAME_MAX + 8];
        vt_text(g->vt.schema, g->vt.table, seen, sizeof seen);
        vt_text(cfg->version_table_schema, cfg->version_table, conf, sizeof conf);
        NOTE(LOG_LVL_WARN, "learned", g->name, NULL,
             "database \"%s\": the migration writes the version table %s, not %s; following it "
             "(the migration lock is released when it holds the target).  Set "
             "version_table = \"%s\" (MIGSHIM_VERSION_TABLE) and version_table_schema = "
             "\"%s\" (MIGSHIM_VERSION_TABLE_SCHEMA) so that every process knows it",
             g->name, seen, conf, g->vt.table, g->vt.schema);
    }
    refresh_pending();
    pthread_mutex_unlock(&mu);
}

void gate_after(const struct pq_copy *copy, PGconn *pg)
{
    const struct config *cfg = shim_config();
    if (!atomic_load_explicit(&gate_pending, memory_order_relaxed))
        return; /* the common case: one load */
    if (ends_idle())
        note_activity();
    fork_init();
    pthread_mutex_lock(&mu);
    struct gdb *g = db_of(copy, pg);
    if (!g || g->pid != getpid() || g->st == G_DECIDING) {
        pthread_mutex_unlock(&mu);
        return;
    }
    /* as the app sees it: the server's (a guard's stand-in for a failed
     * transaction is a real transaction, and giving up fails it for real) */
    struct dbconn_pq pc;
    enum dbconn_txn ts = dbconn_txn(seam(&pc, copy, pg));
    bool idle = ts == DBCONN_IDLE;
    if (g->st == G_LEADING && ts == DBCONN_INERROR) {
        /* the migration failed: its transaction's end is the run's end */
        int slot = dirty_slot(g, pg);
        if (slot >= 0)
            g->dirty_failed[slot] = true;
        if (g->run.ended > 0 && pg == g->run.pg && !g->run.failed) {
            /* a transaction_per_migration run's next revision */
            g->run.failed = true;
            g->run.ended = now(); /* waiters get lead_settle to see it */
            run_tell(g, HOLDER_RUN_FAILED);
        }
    }
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
                     revs, now() - g->since);
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
                 g->vt.table, revs, now() - g->since);
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
    } else if (g->st == G_LEADING && !g->saw_vt && now() > g->grace_deadline) {
        tell_lead(g);
        close_own(g);
        untune_all(copy, g, idle ? pg : NULL);
        set_state(g, G_LAPSED);
        if (tool->relock_after_lapse)
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
    pthread_mutex_unlock(&mu);
}

bool gate_guards(const struct pq_copy *copy, PGconn *pg)
{
    if (!tool->guards()) /* the guard knows Alembic's statements only */
        return false;
    fork_init();
    pthread_mutex_lock(&mu);
    struct gdb *g = db_of(copy, pg);
    /* Per-schema version tables (g->sp.on): the guard classifies and proves
     * against the configured table as the home search_path finds it, which
     * is not the tenant's table the app migrates -- a shared table at the
     * target there would "prove" a tenant's race.  It stays out: the app's
     * errors pass through unchanged. */
    bool on = g && g->pid == getpid() && !g->sp.on &&
              (g->st == G_LEADING || g->st == G_LAPSED || g->st == G_UNGATED);
    pthread_mutex_unlock(&mu);
    return on;
}

bool gate_read_committed(const struct pq_copy *copy, PGconn *pg, const char *schema,
                         struct versions *v)
{
    char err[256];
    const struct config *cfg = shim_config();
    fork_init();
    pthread_mutex_lock(&mu);
    struct gdb *g = db_of(copy, pg);
    struct dbconn *own = g && g->pid == getpid() && g->st == G_LEADING ? ownconn_db(g->own) : NULL;
    bool ok = own && (schema ? versions_read_in(own, schema, cfg->version_table, v, err, sizeof err)
                             : versions_read(own, cfg, state_expr(), v, err, sizeof err));
    pthread_mutex_unlock(&mu);
    return ok;
}

bool gate_at_target(const struct versions *v)
{
    return tool->guards() && compare(v) == AT_TARGET;
}

const char *gate_version_table(void)
{
    pthread_once(&tool_once, load_tool);
    return tool->table(shim_config());
}

void gate_forget(const struct pq_copy *copy, const PGconn *pg)
{
    fork_init();
    pthread_mutex_lock(&mu);
    unmap_conn(pg);
    if (!atomic_load_explicit(&gate_watching, memory_order_relaxed)) {
        pthread_mutex_unlock(&mu);
        return;
    }
    for (size_t i = 0; i < ndbs; i++) {
        struct gdb *g = &dbs[i];
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
    pthread_mutex_unlock(&mu);
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

static void atfork_prepare(void) { pthread_mutex_lock(&mu); }
static void atfork_parent(void) { pthread_mutex_unlock(&mu); }
static void atfork_child(void)
{
    settler_running = false; /* the parent's thread */
    pthread_mutex_unlock(&mu);
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
