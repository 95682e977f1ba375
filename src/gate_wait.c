/*
 * gate_wait — the gate's waiting (see include/gate_int.h; the gate's state
 * machine is gate.c): the lock connection opened, waiting for a
 * connection slot while a peer migrates (open_own), and the
 * wait-for-version loop, the I/O side of wait.h's pure step function:
 * each slice observes (one lock step, then the reads and looks the step
 * asks for), asks wait_step what that means, says it, and acts.
 */
#include "gate_int.h"

#include <assert.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "config.h"
#include "dbconn.h"
#include "events.h"
#include "heartbeat.h"
#include "holder.h"
#include "lock.h"
#include "log.h"
#include "ownconn.h"
#include "peer.h"
#include "shim.h"
#include "versions.h"
#include "wait.h"
#include "waitsig.h"

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

static bool versions_equal(const struct versions *a, const struct versions *b)
{
    if (a->present != b->present || a->n != b->n || a->truncated != b->truncated)
        return false;
    for (size_t i = 0; i < a->n; i++)
        if (strcmp(a->v[i], b->v[i]) != 0)
            return false;
    return true;
}

/* The first time a process has to wait: the timeline's "waiting" starts. */
static void first_wait(void *db) { events_emit("waiting", db, NULL, NULL); }

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
    struct backoff pause = BACKOFF_INIT;
    while (!g->own) {
        g->own = ownconn_open(copy, app, "lock", err, sizeof err);
        if (g->own)
            break;
        bool no_slot = patient && ownconn_no_slot(err);
        struct versions v;
        char rerr[256];
        if (no_slot && !pol->lock_outlives_target && gate_tool->known() &&
            versions_read(appc, cfg, state_expr(), &v, rerr, sizeof rerr) && compare(&v) != BEHIND) {
            char revs[512];
            describe(&v, revs, sizeof revs);
            wait_note(WAIT_MSG_SLOT_PEER, g->name, revs, g->name, clock_now() - start, revs);
            return OWN_DONE;
        }
        double idle, t = clock_now();
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
        backoff_pause(&pause);
    }
    if (told)
        wait_note(WAIT_MSG_SLOT_FREE, g->name, NULL, g->name, clock_now() - start);
    return OWN_OPEN;
}

/* A signal while waiting for a slot: the same note as one while waiting
 * for the lock. */
static enum outcome slot_interrupted(struct gdb *g, double start)
{
    wait_note(WAIT_MSG_INTERRUPTED, g->name, NULL, g->name, waitsig_name(waitsig_pending()),
              clock_now() - start);
    return OUT_INTERRUPTED;
}

/* version_table or version_table_schema set in migshim's own settings
 * (file, environment): the table is known, nothing to learn. */
static bool vt_set_by_migshim(const struct config *cfg)
{
    int t = config_key_index("version_table"), s = config_key_index("version_table_schema");
    return (t >= 0 && (cfg->source[t] == CFG_FILE || cfg->source[t] == CFG_ENV)) ||
           (s >= 0 && (cfg->source[s] == CFG_FILE || cfg->source[s] == CFG_ENV));
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

/* The settings of g's wait, and how the tool waits (wait.h): the
 * configuration's and the tool's (migtool_wait_policy), with what depends
 * on g: the published table read (Alembic, not a per-schema wait) and the
 * table learned from the leader's statements. */
static void wait_policy_of(const struct gdb *g, const struct config *cfg, struct wait_policy *pol)
{
    *pol = migtool_wait_policy(gate_tool, cfg);
    pol->reads_published_table = gate_tool->vt_statement && !g->sp.schema[0];
    pol->may_learn_table = gate_tool->vt_statement && !vt_set_by_migshim(cfg);
}

static enum wait_run wait_run_of(enum holder_run r)
{
    return r == HOLDER_RUN_FAILED ? WAIT_RUN_FAILED : r == HOLDER_RUN_ENDED ? WAIT_RUN_ENDED
                                                                        : WAIT_RUN_GOING;
}

/* The slice's version table is w->v: what the step needs of it. */
static void observe_read(struct waiter *w, struct wait_obs *ob)
{
    ob->read = WAIT_READ_OK;
    ob->cmp = gate_tool->known() ? migtool_wait_cmp(gate_tool->compare(&w->v)) : WAIT_BEHIND;
    ob->present = w->v.present;
    ob->same_as_seen = w->st.holder_seen && versions_equal(&w->v, &w->v_seen);
    ob->elapsed = clock_now() - w->start;
    describe(&w->v, w->revs, sizeof w->revs);
}

/* One slice: a lock step on the waiting connection. */
static void observe(struct waiter *w, struct wait_obs *ob)
{
    bool have_v;
    enum lock_result r = lock_step(w->wc, w->cfg, state_expr(), w->g->key,
                                   w->st.waited ? NULL : first_wait, w->g->name, &w->v, &have_v,
                                   w->err, sizeof w->err);
    *ob = (struct wait_obs){.lock = lock_wait_lock(r), .on_app = w->wc == w->appc,
                            .signal = waitsig_pending(), .target_known = gate_tool->known(),
                            .read = WAIT_READ_NONE, .cmp = WAIT_BEHIND,
                            .published = WAIT_PUB_UNREAD, .elapsed = clock_now() - w->start};
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
        ob->lock = lock_wait_lock(lock_hand_over(w->appc, w->wc, g->key, w->err, sizeof w->err));
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
        if (!versions_read_in(w->wc, w->pub.schema, w->pub.table, &w->pv, err, sizeof err)) {
            log_debug("database \"%s\": cannot read the version table the holder published "
                      "(%s); taken as not at the target", g->name, err);
            ob->published = WAIT_PUB_NOT;
        } else {
            ob->published = compare(&w->pv) == AT_TARGET ? WAIT_PUB_AT_TARGET : WAIT_PUB_NOT;
        }
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
    if (!holder_state_run(w->wc, w->g->key, &idle, &migrating, &vt, &run)) {
        log_debug("database \"%s\": cannot look at the migration lock's holder: %s", w->g->name,
                  dbconn_last_error(w->wc));
        return;
    }
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
    double waited = clock_now() - w->start;
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
    assert(s->msg == WAIT_MSG_LEADING);
    wait_format(g->untold.text, sizeof g->untold.text, s->msg, g->name,
                (long long)g->key, w->st.waited ? " after waiting" : "", w->pol.lead_label,
                w->revs, want, w->why ? " " : "", w->why ? w->why : "");
    snprintf(g->untold.revs, sizeof g->untold.revs, "%s", w->revs);
    g->untold.msg = s->msg;
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
        g->since = clock_now();
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
    w.start = clock_now();
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
        if (s.pause_ms)
            clock_pause_ms((long)s.pause_ms);
    }
}

/*
 * The wait-for-version loop (wait_steps), with SIGTERM, SIGINT and SIGQUIT
 * recorded for its length only (waitsig.h): a signal ends the wait after
 * the current slice with OUT_INTERRUPTED, and the caller, once it holds no
 * lock of ours, hands the signal back to the app (waitsig_redeliver).  A
 * process that leads is past this loop: the shim never interrupts it.
 */
enum outcome wait_loop(const struct pq_copy *copy, PGconn *app, struct gdb *g,
                              const char *why, bool on_app, bool fresh)
{
    waitsig_begin();
    heartbeat_begin("waiting for the migration", 0); /* the wait ends by wait_timeout */
    enum outcome o = wait_steps(copy, app, g, why, on_app, fresh);
    heartbeat_end();
    waitsig_end();
    return o;
}

enum outcome reacquire(const struct pq_copy *copy, PGconn *pg, struct gdb *g, const char *why)
{
    enum gstate was = g->st;
    assert(was != G_DECIDING && g->pid == getpid());
    set_state(g, G_DECIDING);
    pthread_mutex_unlock(&gate_mu);
    enum outcome o = wait_loop(copy, pg, g, why, false, false); /* pg may be mid-transaction */
    pthread_mutex_lock(&gate_mu);
    set_state(g, was); /* from DECIDING: restores the watch count */
    pthread_cond_broadcast(&gate_cv);
    return o;
}
