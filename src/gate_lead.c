/*
 * gate_lead — while this process leads the migration (see
 * include/gate_int.h; the gate's state machine is gate.c): the app's
 * connections tuned for a peer that vanishes, the leader's re-read of the
 * table it follows, the migration run and its end, the lapse, the settler
 * thread that ends a lead the app never calls libpq again for, and the
 * exit.
 */
#include "gate_int.h"

#include <assert.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "config.h"
#include "dbconn.h"
#include "events.h"
#include "holder.h"
#include "log.h"
#include "ownconn.h"
#include "peer.h"
#include "shim.h"
#include "versions.h"
#include "wait.h"

/*
 * While this process leads, its connections carry the migration: if its
 * host vanishes, the server must end them (and roll the migration back)
 * within seconds, and the app must not wait two hours for a reply that
 * cannot come (peer.h).  The app's connection `pg`, idle, gets the server's
 * side (session settings) and the client's (socket options), both undone
 * by untune_all when the lead ends.
 */
void tune_app(const struct pq_copy *copy, struct gdb *g, PGconn *pg)
{
    for (size_t i = 0; i < g->ntuned; i++)
        if (g->tuned[i].pg == pg)
            return;
    struct dbconn_pq pc;
    struct dbconn *c = seam(&pc, copy, pg);
    if (g->ntuned == MAX_DIRTY || dbconn_txn(c) != DBCONN_IDLE)
        return;
    if (!peer_tune_session(c, false, false)) {
        log_debug("database \"%s\": cannot set the app connection's keepalive settings: %s",
                  g->name, dbconn_last_error(c));
        return;
    }
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
void untune_all(const struct pq_copy *copy, struct gdb *g, PGconn *idle)
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

void forget_tuned(struct gdb *g, const PGconn *pg)
{
    for (size_t i = 0; i < g->ntuned; i++) {
        if (g->tuned[i].pg == pg) {
            g->tuned[i] = g->tuned[--g->ntuned];
            return;
        }
    }
}

void lead_let_go(const struct pq_copy *copy, struct gdb *g, PGconn *idle)
{
    struct dbconn *own = ownconn_db(g->own);
    if (own)
        release_lock(g, own);
    close_own(g);
    untune_all(copy, g, idle);
    g->ndirty = 0;
    memset(&g->run, 0, sizeof g->run);
    sp_use(g, "");
}

bool read_lead_table(const struct gdb *g, struct dbconn *own, struct versions *v, char *err,
                     size_t errsz)
{
    const struct config *cfg = shim_config();
    if (!g->vt.learned)
        return versions_read(own, cfg, state_expr(), v, err, errsz);
    return versions_read_in(own, g->vt.schema, g->vt.table, v, err, errsz);
}

/* Where the lead ends: the table it follows at exactly the target when
 * learned (a learned table never counts as "ahead"), else at or past it. */
static bool lead_reached(const struct gdb *g, const struct versions *v)
{
    return g->vt.learned ? compare(v) == AT_TARGET : compare(v) != BEHIND;
}

void lead_migrating(struct gdb *g, const char *schema, const char *table)
{
    struct dbconn *own = ownconn_db(g->own);
    if (!own)
        return;
    limit_idle(g, own, "hold_timeout", shim_config()->hold_timeout);
    if (!(table ? holder_mark_migrating_vt(own, schema, table) : holder_mark_migrating(own)))
        log_warn("database \"%s\": cannot mark the lock connection migrating (waiters may "
                 "take this lead for a lapse): %s",
                 g->name, dbconn_last_error(own));
}

void lead_statement(struct gdb *g, PGconn *pg, bool writes)
{
    assert(g->st == G_LEADING);
    g->sp.wrote |= writes;
    if (writes)
        tell_lead(g);
    if (!g->saw_vt) {
        g->saw_vt = true;
        lead_migrating(g, NULL, NULL); /* not a lapse */
    }
    if (gate_tool->lead_end == MIGTOOL_END_RUN) /* else: held until idle (settler) */
        lead_activity(g, pg, writes);
}

void lead_lapse(const struct pq_copy *copy, struct gdb *g, PGconn *idle, bool say)
{
    const struct config *cfg = shim_config();
    assert(g->st == G_LEADING && !g->saw_vt);
    tell_lead(g);
    close_own(g); /* the server ended its idle session */
    untune_all(copy, g, idle);
    set_state(g, G_LAPSED);
    if (!say)
        return;
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

void note_activity(void)
{
    atomic_store_explicit(&activity_us, (long long)(clock_now() * 1e6), memory_order_relaxed);
}

/* The lead is over (mutex held): release, close, and say why. */
static void end_idle_lead(const struct pq_copy *copy, struct gdb *g, const char *why)
{
    lead_let_go(copy, g, NULL);
    set_state(g, G_DONE);
    refresh_pending();
    NOTE(LOG_LVL_INFO, "migrated", g->name, NULL, "database \"%s\": %s; migration lock released after %.3f s",
         g->name, why, clock_now() - g->since);
}

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

/* The leader's version-table transaction on `pg` (NULL: closed) ended
 * short of the target (mutex held): the settle begins. */
void run_ended(const struct pq_copy *copy, struct gdb *g, PGconn *pg, bool failed)
{
    g->run.ended = clock_now();
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
    assert(g->st == G_LEADING && gate_tool->lead_end == MIGTOOL_END_RUN);
    struct dbconn *own = ownconn_db(g->own);
    struct versions v;
    char err[256] = "no lock connection", revs[512] = "(unreadable)", want[512];
    bool read = own && read_lead_table(g, own, &v, err, sizeof err);
    if (read)
        describe(&v, revs, sizeof revs);
    else
        log_warn("database \"%s\": cannot re-read the version table on the lock connection (%s)",
                 g->name, err);
    bool done = read && lead_reached(g, &v);
    bool failed = g->run.failed;
    lead_let_go(copy, g, NULL);
    tell_lead(g);
    double held = clock_now() - g->since;
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
        pthread_mutex_lock(&gate_mu);
        bool any = false;
        double t = clock_now();
        double idle = t - (double)atomic_load_explicit(&activity_us, memory_order_relaxed) / 1e6;
        for (size_t i = 0; i < gate_ndbs; i++) {
            struct gdb *g = &gate_dbs[i];
            if (g->pid != getpid() || g->st != G_LEADING)
                continue;
            any = true;
            if (gate_tool->lead_end == MIGTOOL_END_RUN) {
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
        pthread_cond_broadcast(&gate_cv);
        pthread_mutex_unlock(&gate_mu);
        if (!any)
            return NULL;
    }
}

/* At exit (the `manage.py migrate` entrypoint): say what the lock was
 * held for; closing the lock connection releases it at once. */
static void at_exit(void)
{
    if (pthread_mutex_trylock(&gate_mu) != 0)
        return; /* another thread is inside the gate: the kernel closes the socket */
    for (size_t i = 0; i < gate_ndbs; i++) {
        struct gdb *g = &gate_dbs[i];
        if (g->pid != getpid() || g->st != G_LEADING || !settle_copy)
            continue;
        if (gate_tool->lead_end == MIGTOOL_END_RUN) { /* the server releases it with the connection anyway */
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
    pthread_mutex_unlock(&gate_mu);
}

static void register_exit(void) { atexit(at_exit); }

/* A Django lead began (mutex held): make sure the settler runs. */
void start_settler(const struct pq_copy *copy)
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

/* The leader's run goes on (mutex held): a version-table statement, or a
 * transaction on the run's connection (see run_ended).  The settle is off
 * and the lock connection shows the plain mark again. */
static void run_goes_on(struct gdb *g)
{
    g->run.ended = 0;
    run_tell(g, HOLDER_RUN_GOING);
}

/* A version-table statement of the leader on `pg` (mutex held). */
void lead_activity(struct gdb *g, PGconn *pg, bool writes)
{
    mark_dirty(g, pg);
    int i = dirty_slot(g, pg);
    if (i >= 0 && writes)
        g->dirty_wrote[i] = true;
    if (g->run.ended)
        run_goes_on(g);
}

void lead_saw_error(struct gdb *g, PGconn *pg)
{
    int slot = dirty_slot(g, pg);
    if (slot >= 0)
        g->dirty_failed[slot] = true;
    if (g->run.ended > 0 && pg == g->run.pg && !g->run.failed) {
        /* a transaction_per_migration run's next revision */
        g->run.failed = true;
        g->run.ended = clock_now(); /* waiters get lead_settle to see it */
        run_tell(g, HOLDER_RUN_FAILED);
    }
}

void settler_forget(void) { settler_running = false; }

/* lead_txn_ended's ends.  A re-read that failed twice: never hold the
 * fleet on it -- release, and let the waiters read the version themselves
 * (one of them leads again if the database is still behind). */
static void lead_unread(const struct pq_copy *copy, struct gdb *g, PGconn *pg, const char *err)
{
    log_warn("database \"%s\": cannot re-read the version table on the lock connection "
             "(%s); releasing the migration lock, the waiters check for themselves",
             g->name, err);
    lead_let_go(copy, g, pg);
    set_state(g, g->sp.on ? G_SCHEMA : shim_config()->guard ? G_UNGATED : G_DONE);
}

/* The table the lead follows reached the target (`revs`): released.  A
 * leader whose "leading" line was held (tell_lead) and whose learned table
 * a peer migrated first only read it: it says "proceed" instead. */
static void lead_done(const struct pq_copy *copy, struct gdb *g, PGconn *pg, const char *revs)
{
    lead_let_go(copy, g, pg);
    set_state(g, g->sp.on ? G_SCHEMA : G_DONE); /* per-schema: the next one decides */
    if (g->untold.pending && g->vt.learned) {
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
}

/* A per-schema lead whose transaction only read its table (a schema with
 * none, looked at without migrating: `alembic current`, a check): nothing
 * migrates here, and holding the fleet's lock until hold_timeout would
 * stall every other schema.  Alembic reads and writes in one transaction. */
static void lead_only_read(const struct pq_copy *copy, struct gdb *g, PGconn *pg, const char *revs)
{
    lead_let_go(copy, g, pg); /* (the table it followed stays in g->vt) */
    g->untold.pending = false;
    set_state(g, G_SCHEMA);
    NOTE(LOG_LVL_INFO, "migrated", g->name, revs, "database \"%s\": the transaction on \"%s\".\"%s\" "
         "(%s) only read it; migration lock released after %.3f s", g->name, g->vt.schema,
         g->vt.table, revs, clock_now() - g->since);
}

void lead_txn_ended(const struct pq_copy *copy, struct gdb *g, PGconn *pg, bool wrote, bool failed)
{
    assert(g->st == G_LEADING);
    struct versions v;
    char err[256], revs[512];
    struct dbconn *own = ownconn_db(g->own);
    bool read = own && (read_lead_table(g, own, &v, err, sizeof err) ||
                        read_lead_table(g, own, &v, err, sizeof err));
    if (read)
        describe(&v, revs, sizeof revs);
    if (own && !read)
        lead_unread(copy, g, pg, err);
    else if (read && lead_reached(g, &v))
        lead_done(copy, g, pg, revs);
    else if (read && g->sp.on && !g->sp.wrote)
        lead_only_read(copy, g, pg, revs);
    else if (read && (wrote || failed))
        run_ended(copy, g, pg, failed); /* short of the target: the settle begins */
}
