/*
 * wiregate — see include/wiregate.h.  The per-database decision (a table
 * under one mutex, as gate_db.c's), and the wait loop: the I/O side of
 * wait.h's step function on the app's own connection, as gate_wait.c's
 * wait_steps with on_app and without a lock connection.
 */
#include "wiregate.h"

#include <assert.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "events.h"
#include "gate.h"
#include "holder.h"
#include "lock.h"
#include "log.h"
#include "migtool.h"
#include "shim.h"
#include "versions.h"
#include "wait.h"
#include "waitsig.h"

#define MAX_WDBS 64 /* (database, server) pairs a process decides for */

enum wst { W_NEW, W_DECIDING, W_DONE, W_LEADING };

struct wdb {
    char name[CONFIG_NAME_MAX]; /* the StartupMessage's database */
    char peer[WIREGATE_PEER_MAX]; /* the server's address ("": unknown) */
    enum wst st;
    pid_t pid;
};

static struct wdb wdbs[MAX_WDBS];
static size_t nwdbs;
static pthread_mutex_t wmu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wcv = PTHREAD_COND_INITIALIZER;

/* --- the lines ---------------------------------------------------------------------- */

/* Message `id` of the wait's table (wait.h), its arguments after
 * `versions`, with where it happened; and its event. */
static void wnote(enum wait_msg id, const char *db, const char *versions, const char *where, ...)
{
    const struct wait_message *m = wait_message(id);
    if (log_enabled(m->level)) {
        char line[1024];
        va_list ap;
        va_start(ap, where);
        (void)wait_vformat(line, sizeof line, id, ap);
        va_end(ap);
        log_msg(m->level, "%s (%s)", line, where);
    }
    if (m->event)
        events_emit(m->event, db, m->versions ? versions : NULL, NULL);
}

/* --- the wait ------------------------------------------------------------------------ */

struct wwait {
    struct dbconn *c;
    const struct migtool *tool;
    struct config cfg;        /* the process's, lock = session             */
    const char *db, *where;
    bool (*stop)(void *);
    void *stop_arg;
    bool signals;             /* SIGTERM & co. recorded and answered (waitsig) */
    int64_t key;
    double start;
    bool told_wait;
    struct wait_policy pol;
    struct wait_state st;
    struct versions v;
    char err[256], revs[512];
};

/* The connection broke (wireconn: the stream became unknown and was shut
 * down, or the app closed it): nothing more can be said on it. */
static bool broken(const struct dbconn *c) { return dbconn_txn(c) == DBCONN_BUSY; }

static void observe_read(struct wwait *w, struct wait_obs *ob)
{
    ob->read = WAIT_READ_OK;
    ob->cmp = w->tool->known() ? migtool_wait_cmp(w->tool->compare(&w->v)) : WAIT_BEHIND;
    ob->present = w->v.present;
    ob->same_as_seen = false; /* no look at the holder is remembered (nothing published) */
    ob->elapsed = clock_now() - w->start;
    w->tool->describe(&w->v, w->revs, sizeof w->revs);
}

/* The first slice that finds the lock held: the line and the event. */
static void first_wait(void *arg)
{
    struct wwait *w = arg;
    if (w->told_wait)
        return;
    w->told_wait = true;
    char holder[256];
    holder_describe(w->c, w->key, holder, sizeof holder);
    log_info("database \"%s\": the migration lock is held by %s; waiting (%s)", w->db, holder,
             w->where);
    events_emit("waiting", w->db, NULL, NULL);
}

static bool stopped(const struct wwait *w) { return w->stop && w->stop(w->stop_arg); }

/* While another connection of this process decides: a slice of the hooks'
 * (no lock held); false to give up. */
static bool still(void *arg)
{
    const struct wiregate_hooks *h = arg;
    if (h->stop && h->stop(h->arg))
        return false;
    return !h->idle || h->idle(h->arg);
}

/* The step's message. */
static void say(struct wwait *w, enum wait_msg id, const struct wait_obs *ob)
{
    const char *db = w->db;
    double waited = clock_now() - w->start;
    char holder[256];
    switch (id) {
    case WAIT_MSG_NONE:
        break;
    case WAIT_MSG_STEP_FAILED:
        wnote(id, db, NULL, w->where, db, "connection", w->err);
        break;
    case WAIT_MSG_INTERRUPTED:
        wnote(id, db, NULL, w->where, db, waitsig_name(ob->signal), waited);
        break;
    case WAIT_MSG_HANDOVER_FAILED:
    case WAIT_MSG_READ_FAILED:
        wnote(id, db, NULL, w->where, db, w->err);
        break;
    case WAIT_MSG_LEAD_TO_EXIT:
        wnote(id, db, NULL, w->where, db, (long long)w->key, w->st.waited ? " after waiting" : "");
        break;
    case WAIT_MSG_LEADING: {
        char want[512];
        w->tool->describe_target(want, sizeof want);
        wnote(id, db, w->revs, w->where, db, (long long)w->key,
              w->st.waited ? " after waiting" : "", w->pol.lead_label, w->revs, want, "", "");
        break;
    }
    case WAIT_MSG_AHEAD:
    case WAIT_MSG_PEER_BEFORE:
        wnote(id, db, w->revs, w->where, db, w->revs);
        break;
    case WAIT_MSG_PEER_WAITED:
    case WAIT_MSG_AT_TARGET:
        wnote(id, db, w->revs, w->where, db, waited, w->revs);
        break;
    case WAIT_MSG_TIMEOUT_FAIL:
    case WAIT_MSG_TIMEOUT:
    case WAIT_MSG_WAITING:
        holder_describe(w->c, w->key, holder, sizeof holder);
        wnote(id, db, w->revs, w->where, db, ob->elapsed, holder);
        break;
    default: /* not reachable without a published holder (wait policy below) */
        log_debug("database \"%s\": wait message %d (%s)", db, (int)id, w->where);
        break;
    }
}

static enum wiregate_end wait_loop(struct wwait *w, struct wiregate_lead *lead)
{
    const char *expr = migtool_state_expr(w->tool);
    w->start = clock_now();
    wait_begin(&w->st);
    for (;;) {
        bool have_v;
        enum lock_result r = lock_step(w->c, &w->cfg, expr, w->key, first_wait, w, &w->v,
                                       &have_v, w->err, sizeof w->err);
        if (broken(w->c))
            return WIREGATE_FAIL;
        struct wait_obs ob = {.lock = lock_wait_lock(r), .on_app = true,
                              .signal = w->signals ? waitsig_pending() : 0,
                              .target_known = w->tool->known(), .read = WAIT_READ_NONE,
                              .cmp = WAIT_BEHIND, .published = WAIT_PUB_UNREAD,
                              .elapsed = clock_now() - w->start};
        if (have_v)
            observe_read(w, &ob);
        struct wait_step s = wait_step(&w->pol, &w->st, &ob);
        for (; wait_wants_look(s.act); s = wait_step(&w->pol, &w->st, &ob)) {
            switch (s.act) {
            case WAIT_ACT_HAND_OVER: /* no connection of our own: it stays where it is */
                ob.on_app = false;
                ob.handed_over = true;
                ob.lock = WAIT_LOCK_TAKEN;
                ob.read = WAIT_READ_NONE;
                break;
            case WAIT_ACT_READ:
                if (versions_read(w->c, &w->cfg, expr, &w->v, w->err, sizeof w->err))
                    observe_read(w, &ob);
                else
                    ob.read = WAIT_READ_FAILED;
                if (broken(w->c))
                    return WIREGATE_FAIL;
                break;
            default: /* READ_PUBLISHED: nothing is published on the app's connection */
                ob.published = WAIT_PUB_NOT;
                break;
            }
        }
        say(w, s.note, &ob);
        if (s.act == WAIT_ACT_RETRY)
            continue;
        if (s.act == WAIT_ACT_WAIT) {
            if (s.msg == WAIT_MSG_WAITING)
                say(w, s.msg, &ob);
            if (s.pause_ms)
                clock_pause_ms((long)s.pause_ms);
            if (stopped(w)) {
                log_debug("database \"%s\": the app closed the connection while it waited (%s)",
                          w->db, w->where);
                return WIREGATE_FAIL;
            }
            continue;
        }
        if (s.act == WAIT_ACT_LEAD) {
            say(w, s.msg, &ob);
            lead->key = w->key;
            snprintf(lead->db, sizeof lead->db, "%s", w->db);
            lead->since = clock_now();
            return WIREGATE_LEAD;
        }
        if (s.release && !lock_release(w->c, LOCK_SESSION, w->key))
            log_debug("database \"%s\": releasing the lock failed (%s); the server drops it with "
                      "the connection (%s)", w->db, dbconn_last_error(w->c), w->where);
        say(w, s.msg, &ob);
        switch (s.act) {
        case WAIT_ACT_FAIL:
            dbconn_fail(w->c);
            return WIREGATE_FAIL;
        case WAIT_ACT_INTERRUPTED: /* the app's handler runs once its write returns */
            dbconn_fail(w->c);
            return WIREGATE_FAIL;
        default:
            return broken(w->c) ? WIREGATE_FAIL : WIREGATE_PASS;
        }
    }
}

/* --- a pooler ----------------------------------------------------------------------------- */

/*
 * Is the connection the server's own session?  A direct connection's
 * BackendKeyData names the backend that serves it (PostgreSQL always sends
 * one); a pooler (PgBouncer, and the poolers of hosted offerings) answers
 * the start-up itself with a cancel key of its own, and hands the app's
 * transactions to server connections of its pool: a session lock taken
 * there stays on a pooled server connection after the app is gone
 * (transaction pooling runs no reset query), and every fleet after waits
 * for it.  `key_pid` is the BackendKeyData's pid (0: none came),
 * `backend_pid` pg_backend_pid() from the first round trip.
 */
static bool through_pooler(uint32_t key_pid, long backend_pid)
{
    return key_pid == 0 || (long)key_pid != backend_pid;
}

/* The one line of a process whose connection goes through a pooler (once
 * per process and database: the decision is remembered as done). */
static void say_pooled(const struct migtool *tool, const char *db, uint32_t key_pid,
                       long backend_pid, const char *where)
{
    char why[128];
    if (key_pid)
        snprintf(why, sizeof why, "the BackendKeyData pid %u is not the server's backend pid %ld",
                 key_pid, backend_pid);
    else
        snprintf(why, sizeof why, "no BackendKeyData came; the server's backend pid is %ld",
                 backend_pid);
    log_warn("database \"%s\": this connection goes through a connection pooler (%s): the wire "
             "gate cannot hold the migration lock across the pool's transactions, so this "
             "process is not gated; run the migration over a direct connection to the server "
             "(e.g. a DSN without the pooler for `%s`) (%s)",
             db, why, strcmp(tool->name, "django") == 0 ? "manage.py migrate" : "alembic upgrade",
             where);
    events_emit("ungated", db, NULL, NULL);
}

/* --- the decision ------------------------------------------------------------------------ */

static enum wiregate_end decide(struct dbconn *c, const char *cdb, uint32_t key_pid,
                                const char *where, const struct wiregate_hooks *h,
                                bool signals, struct wiregate_lead *lead)
{
    const struct config *cfg = shim_config();
    const struct migtool *tool = gate_migtool();
    if (!tool->known() && !tool->unknown_leads_to_exit) {
        /* the libpq gate takes the lock at the first version-table
         * statement then: the wire layer does not read statements yet */
        log_debug("database \"%s\": target heads unknown; a wire connection is not gated (the "
                  "lock at the first version-table statement needs the statements) (%s)",
                  cdb, where);
        return WIREGATE_PASS;
    }
    struct wwait w = {.c = c, .tool = tool, .cfg = *cfg, .where = where, .stop = h->stop,
                      .stop_arg = h->arg, .signals = signals};
    w.cfg.lock = LOCK_SESSION; /* on the app's connection: not inside its transactions */
    w.pol = migtool_wait_policy(tool, cfg);
    /* nothing is published (application_name is the app's): no run is
     * counted, no lapse followed by a lock taken later */
    w.pol.counts_failed_runs = false;
    w.pol.lapse_takes_lock_later = false;
    const char *expr = migtool_state_expr(tool);
    struct server_id id;
    if (!versions_read_idle(c, &w.cfg, expr, &w.v, &id, w.err, sizeof w.err)) {
        if (broken(c))
            return WIREGATE_FAIL;
        log_warn("database \"%s\": cannot read the version table (%s); proceeding without the "
                 "gate (%s)", cdb, w.err, where);
        events_emit("ungated", cdb, NULL, NULL);
        return WIREGATE_PASS;
    }
    if (id.standby) {
        log_debug("database \"%s\" on a standby (pg_is_in_recovery()); not gated (%s)", id.db,
                  where);
        return WIREGATE_PASS;
    }
    w.db = id.db;
    w.key = tool->key(cfg, id.db);
    if (tool->known()) {
        enum migtool_cmp cmp = tool->compare(&w.v);
        tool->describe(&w.v, w.revs, sizeof w.revs);
        if (cmp == MIGTOOL_AT_TARGET) {
            log_debug("database \"%s\" is at head (%s); proceeding (%s)", w.db, w.revs, where);
            events_emit("at_head", w.db, w.revs, NULL);
            return WIREGATE_PASS;
        }
        if (cmp == MIGTOOL_AHEAD) {
            wnote(WAIT_MSG_AHEAD, w.db, w.revs, where, w.db, w.revs);
            return WIREGATE_PASS;
        }
    }
    /* the gate would take (or wait for) the lock now: only on the server's
     * own session (the pid came in the round trip above: no lock yet) */
    if (through_pooler(key_pid, id.backend_pid)) {
        say_pooled(tool, w.db, key_pid, id.backend_pid, where);
        return WIREGATE_PASS;
    }
    /* one decision per process and database, whichever layer: the libpq
     * gate's table, under the server's names (gate.h) */
    enum gate_share sh = gate_share_claim(id.db, id.cluster, still, (void *)h);
    switch (sh) {
    case GATE_SHARE_STOPPED:
        log_debug("database \"%s\": the app closed the connection while it waited for this "
                  "process's decision (%s)", w.db, where);
        return WIREGATE_FAIL;
    case GATE_SHARE_LEADING:
        log_debug("database \"%s\": this process leads its migration (its libpq lock "
                  "connection holds the lock); passing (%s)", w.db, where);
        return WIREGATE_PASS;
    case GATE_SHARE_DECIDED:
        log_debug("database \"%s\": decided already in this process (through libpq); "
                  "passing (%s)", w.db, where);
        return WIREGATE_PASS;
    case GATE_SHARE_MINE:
    case GATE_SHARE_UNTRACKED:
        break;
    }
    enum wiregate_end e;
    if (signals) {
        waitsig_begin();
        e = wait_loop(&w, lead);
        waitsig_end();
    } else {
        e = wait_loop(&w, lead);
    }
    if (sh == GATE_SHARE_MINE)
        gate_share_end(id.db, id.cluster, e != WIREGATE_FAIL);
    return e;
}

static struct wdb *find(const char *name, const char *peer)
{
    pid_t me = getpid();
    for (size_t i = 0; i < nwdbs; i++)
        if (strncmp(wdbs[i].name, name, sizeof wdbs[i].name - 1) == 0 &&
            strncmp(wdbs[i].peer, peer, sizeof wdbs[i].peer - 1) == 0) {
            if (wdbs[i].pid != me) { /* a forked parent's: this process decides again */
                wdbs[i].pid = me;
                wdbs[i].st = W_NEW;
            }
            return &wdbs[i];
        }
    if (nwdbs == MAX_WDBS)
        return NULL;
    struct wdb *g = &wdbs[nwdbs++];
    snprintf(g->name, sizeof g->name, "%s", name);
    snprintf(g->peer, sizeof g->peer, "%s", peer);
    g->st = W_NEW;
    g->pid = me;
    return g;
}

bool wiregate_decided(const char *cdb, const char *peer, const char *where)
{
    if (shim_config()->lock == LOCK_OFF || !cdb)
        return true;
    pthread_mutex_lock(&wmu);
    struct wdb *g = find(cdb, peer ? peer : "");
    bool known = g && (g->st == W_DONE || g->st == W_LEADING);
    pthread_mutex_unlock(&wmu);
    if (known)
        log_debug("database \"%s\": decided already in this process; passing (%s)", cdb, where);
    return known;
}

enum wiregate_end wiregate_first(struct dbconn *c, const char *cdb, const char *peer,
                                 uint32_t key_pid, const char *where,
                                 const struct wiregate_hooks *hooks, bool signals,
                                 struct wiregate_lead *lead)
{
    assert(c && where && lead);
    static const struct wiregate_hooks none = {0};
    const struct wiregate_hooks *h = hooks ? hooks : &none;
    const struct config *cfg = shim_config();
    if (cfg->lock == LOCK_OFF || !cdb)
        return WIREGATE_PASS;
    pthread_mutex_lock(&wmu);
    struct wdb *g = find(cdb, peer ? peer : "");
    if (!g) {
        pthread_mutex_unlock(&wmu);
        static _Atomic bool said;
        if (!atomic_exchange(&said, true))
            log_warn("database \"%s\": more than %d databases and servers in this process; this "
                     "one and any further are not gated (%s)", cdb, MAX_WDBS, where);
        else
            log_debug("database \"%s\": more than %d databases and servers; not gated (%s)",
                      cdb, MAX_WDBS, where);
        return WIREGATE_PASS;
    }
    while (g->st == W_DECIDING) { /* another connection of this process decides */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 50 * 1000000L;
        if (ts.tv_nsec >= 1000000000L)
            ts.tv_sec++, ts.tv_nsec -= 1000000000L;
        (void)pthread_cond_timedwait(&wcv, &wmu, &ts);
        if (g->st == W_DECIDING) {
            pthread_mutex_unlock(&wmu); /* (g: a slot of a static table) */
            bool go_on = still((void *)h);
            pthread_mutex_lock(&wmu);
            if (!go_on) {
                pthread_mutex_unlock(&wmu);
                return WIREGATE_FAIL;
            }
        }
    }
    if (g->st != W_NEW) {
        pthread_mutex_unlock(&wmu);
        log_debug("database \"%s\": decided already in this process; passing (%s)", cdb, where);
        return WIREGATE_PASS;
    }
    g->st = W_DECIDING;
    pthread_mutex_unlock(&wmu);

    enum wiregate_end e = decide(c, cdb, key_pid, where, h, signals, lead);

    pthread_mutex_lock(&wmu);
    /* a connection that broke or was failed decided nothing: the next one decides */
    g->st = e == WIREGATE_LEAD ? W_LEADING : e == WIREGATE_PASS ? W_DONE : W_NEW;
    pthread_cond_broadcast(&wcv);
    pthread_mutex_unlock(&wmu);
    if (signals)
        waitsig_redeliver(); /* (no lock of the shim's held) */
    return e;
}

bool wiregate_settle(struct dbconn *c, const struct wiregate_lead *lead, const char *where)
{
    const struct config *cfg = shim_config();
    const struct migtool *tool = gate_migtool();
    if (!tool->known())
        return false; /* the lead lasts as long as the connection */
    struct config scfg = *cfg;
    scfg.lock = LOCK_SESSION;
    struct versions v;
    char err[256], revs[512];
    if (!versions_read(c, &scfg, migtool_state_expr(tool), &v, err, sizeof err)) {
        log_warn("database \"%s\": cannot read the version table while leading (%s); the lock "
                 "stays until the connection closes (%s)", lead->db, err, where);
        return false;
    }
    if (tool->compare(&v) == MIGTOOL_BEHIND)
        return false;
    tool->describe(&v, revs, sizeof revs);
    if (!lock_release(c, LOCK_SESSION, lead->key)) {
        log_warn("database \"%s\": migrated to %s; releasing the migration lock failed (%s): the "
                 "server drops it with the connection (%s)", lead->db, revs, dbconn_last_error(c),
                 where);
        return false;
    }
    log_info("database \"%s\": migrated to %s; migration lock released after %.3f s (%s)",
             lead->db, revs, clock_now() - lead->since, where);
    events_emit("migrated", lead->db, revs, NULL);
    return true;
}

bool wiregate_thread(void *(*fn)(void *), void *arg)
{
    sigset_t all, old;
    sigfillset(&all);
    pthread_attr_t at;
    pthread_t t;
    bool started = false;
    if (pthread_attr_init(&at) != 0)
        return false;
    (void)pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    started = pthread_create(&t, &at, fn, arg) == 0;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&at);
    return started;
}
