/*
 * wait — see include/wait.h.  The step is read top to bottom in the order
 * the gate always decided: a failed step, a signal, the hand-over, the
 * read, the published table, failed runs, the lock taken, the target
 * reached, a lapse, then the waiting itself (look, timeout, report, pause).
 */
#include "wait.h"

#include <assert.h>
#include <stdio.h>
#include <string.h>

static const struct wait_message messages[WAIT_MSG_COUNT] = {
    [WAIT_MSG_NONE] = {LOG_LVL_DEBUG, NULL, false, "", ""},
    [WAIT_MSG_STEP_FAILED] = {LOG_LVL_WARN, "ungated", false, "sss",
        "database \"%s\": the %s failed while waiting (%s); proceeding without the gate"},
    [WAIT_MSG_INTERRUPTED] = {LOG_LVL_WARN, "interrupted", false, "ssf",
        "database \"%s\": %s after waiting %.3f s for the migration lock; failing the "
        "connection so the app's own handler runs"},
    [WAIT_MSG_HANDOVER_FAILED] = {LOG_LVL_WARN, "ungated", false, "ss",
        "database \"%s\": the lock connection failed (%s); proceeding without the gate"},
    [WAIT_MSG_READ_FAILED] = {LOG_LVL_WARN, "ungated", false, "ss",
        "database \"%s\": cannot read the version table (%s); proceeding without the gate"},
    [WAIT_MSG_PUBLISHED] = {LOG_LVL_INFO, "proceed", true, "sfss",
        "database \"%s\": waited %.3f s for the migration lock; database at %s in %s, the "
        "version table the leader's migration wrote; proceeding"},
    [WAIT_MSG_LEAD_FAILURES] = {LOG_LVL_WARN, "ungated", true, "sfusds",
        "database \"%s\": waited %.3f s; %u leader%s in turn failed to migrate it "
        "(lead_failures = %d), the database still at %s; proceeding without the gate, the "
        "race guard watching"},
    [WAIT_MSG_RUN_FAILED] = {LOG_LVL_INFO, NULL, false, "suds",
        "database \"%s\": the migration run of the process that held the lock failed (%u of "
        "lead_failures = %d); the database is still at %s: one waiter leads the next attempt"},
    [WAIT_MSG_LEAD_TO_EXIT] = {LOG_LVL_INFO, "leading", false, "sLs",
        "database \"%s\": leading: this process holds the migration lock (key %lld)%s; the "
        "Django target is unknown, so it keeps the lock until it exits"},
    [WAIT_MSG_LEADING] = {LOG_LVL_INFO, "leading", true, "sLssssss",
        "database \"%s\": leading: this process holds the migration lock (key %lld)%s and "
        "migrates %sfrom %s to %s%s%s"},
    [WAIT_MSG_AHEAD] = {LOG_LVL_WARN, "ahead", true, "ss",
        "database \"%s\" holds revisions the local scripts do not know (%s): a newer deploy "
        "migrated it; proceeding"},
    [WAIT_MSG_PEER_WAITED] = {LOG_LVL_INFO, "proceed", true, "sfs",
        "database \"%s\": waited %.3f s; a peer migrated it to %s; proceeding"},
    [WAIT_MSG_PEER_BEFORE] = {LOG_LVL_INFO, "proceed", true, "ss",
        "database \"%s\": a peer migrated it to %s before this process got the lock; proceeding"},
    [WAIT_MSG_AT_TARGET] = {LOG_LVL_INFO, "proceed", true, "sfs",
        "database \"%s\": waited %.3f s for the migration lock; database at %s; proceeding"},
    [WAIT_MSG_LAPSED_LATER] = {LOG_LVL_WARN, "lapsed", true, "sfs",
        "database \"%s\": the process that held the migration lock gave it up after "
        "leader_grace (%g s) without touching django_migrations (%s); proceeding: this "
        "process takes the lock at its own first statement on django_migrations"},
    [WAIT_MSG_LAPSED] = {LOG_LVL_WARN, "lapsed", true, "sfssss",
        "database \"%s\": the process that held the migration lock gave it up after "
        "leader_grace (%g s) without touching the version table %s%s%s; the database is "
        "still at %s; proceeding without the gate, the race guard watching.  If the app "
        "migrates, set version_table (MIGSHIM_VERSION_TABLE) to the table it uses"},
    [WAIT_MSG_TIMEOUT_FAIL] = {LOG_LVL_ERROR, "timeout", true, "sfs",
        "database \"%s\": waited %.0f s (wait_timeout) for the migration lock held by %s; "
        "failing the connection (on_timeout = fail)"},
    [WAIT_MSG_TIMEOUT] = {LOG_LVL_WARN, "timeout", true, "sfs",
        "database \"%s\": waited %.0f s (wait_timeout) for the migration lock held by %s; "
        "proceeding (on_timeout = proceed)"},
    [WAIT_MSG_WAITING] = {LOG_LVL_INFO, "waiting", true, "sfs",
        "database \"%s\": waiting %.0f s so far for the migration lock held by %s"},
    [WAIT_MSG_SLOT_PEER] = {LOG_LVL_INFO, "proceed", true, "sfs",
        "database \"%s\": waited %.3f s for a connection slot; a peer migrated it to %s; "
        "proceeding"},
    [WAIT_MSG_SLOT_TIMEOUT] = {LOG_LVL_WARN, "ungated", false, "sfs",
        "database \"%s\": waited %.1f s (wait_timeout) for a connection slot for the lock "
        "connection (%s); proceeding without the gate"},
    [WAIT_MSG_SLOT_NOBODY] = {LOG_LVL_WARN, "ungated", false, "sfs",
        "database \"%s\": no connection slot for the lock connection after %.3f s (%s), and "
        "nobody holds the migration lock now; proceeding without the gate"},
    [WAIT_MSG_OWN_FAILED] = {LOG_LVL_WARN, "ungated", false, "ss",
        "database \"%s\": cannot open the lock connection (%s); proceeding without the gate"},
    [WAIT_MSG_SLOT_WAITING] = {LOG_LVL_WARN, "waiting", false, "ssf",
        "database \"%s\": no connection slot for the lock connection (%s); waiting for one "
        "while another process holds the migration lock, up to wait_timeout (%g s)"},
    [WAIT_MSG_SLOT_FREE] = {LOG_LVL_INFO, NULL, false, "sf",
        "database \"%s\": a connection slot came free after %.3f s; the lock connection is "
        "open"},
};

const struct wait_message *wait_message(enum wait_msg id)
{
    assert(id >= 0 && id < WAIT_MSG_COUNT);
    return &messages[id];
}

int wait_vformat(char *buf, size_t n, enum wait_msg id, va_list ap)
{
    assert(buf && n > 0);
    /* the table's formats are checked against their argument letters by
     * tests/unit/test_wait.c: no literal here for the compiler to check */
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
#endif
    int r = vsnprintf(buf, n, wait_message(id)->fmt, ap);
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif
    if (r < 0)
        buf[0] = '\0';
    return r;
}

int wait_format(char *buf, size_t n, enum wait_msg id, ...)
{
    va_list ap;
    va_start(ap, id);
    int r = wait_vformat(buf, n, id, ap);
    va_end(ap);
    return r;
}

const char *wait_action_name(enum wait_action a)
{
    switch (a) {
    case WAIT_ACT_HAND_OVER: return "WAIT_ACT_HAND_OVER";
    case WAIT_ACT_READ: return "WAIT_ACT_READ";
    case WAIT_ACT_READ_PUBLISHED: return "WAIT_ACT_READ_PUBLISHED";
    case WAIT_ACT_RETRY: return "WAIT_ACT_RETRY";
    case WAIT_ACT_WAIT: return "WAIT_ACT_WAIT";
    case WAIT_ACT_LEAD: return "WAIT_ACT_LEAD";
    case WAIT_ACT_PROCEED: return "WAIT_ACT_PROCEED";
    case WAIT_ACT_PROCEED_AHEAD: return "WAIT_ACT_PROCEED_AHEAD";
    case WAIT_ACT_UNGATED: return "WAIT_ACT_UNGATED";
    case WAIT_ACT_FAIL: return "WAIT_ACT_FAIL";
    case WAIT_ACT_INTERRUPTED: return "WAIT_ACT_INTERRUPTED";
    case WAIT_ACT_LAPSED: return "WAIT_ACT_LAPSED";
    }
    return "?";
}

bool wait_wants_look(enum wait_action a)
{
    return a == WAIT_ACT_HAND_OVER || a == WAIT_ACT_READ || a == WAIT_ACT_READ_PUBLISHED;
}

void wait_begin(struct wait_state *st)
{
    assert(st);
    memset(st, 0, sizeof *st);
    st->holder_run = WAIT_RUN_GOING;
}

bool wait_saw_holder(struct wait_state *st, const struct wait_holder *h, double elapsed)
{
    assert(st && h);
    bool first = !st->holder_seen;
    st->holder_run = h->run;
    st->pub_known |= h->vt_published;
    st->holder_seen = true;
    st->holder_idle_since = elapsed - h->idle;
    st->holder_migrating = h->migrating;
    return first;
}

/* An answer that ends or continues the wait. */
static struct wait_step answer(enum wait_msg note, enum wait_action act, enum wait_msg msg)
{
    return (struct wait_step){.act = act, .msg = msg, .note = note};
}

/* An end of the wait other than a lead: the lock, if this slice took it,
 * was never used and is released first. */
static struct wait_step give_up(const struct wait_obs *ob, enum wait_msg note,
                                enum wait_action act, enum wait_msg msg)
{
    assert(act != WAIT_ACT_LEAD && act != WAIT_ACT_WAIT);
    struct wait_step s = answer(note, act, msg);
    s.release = ob->lock == WAIT_LOCK_TAKEN;
    return s;
}

/* The slice took the lock: lead, or go on when a peer already migrated. */
static struct wait_step taken(const struct wait_policy *pol, const struct wait_state *st,
                              const struct wait_obs *ob, enum wait_cmp c, enum wait_msg note)
{
    if (!ob->target_known) /* each process in turn, holding the lock while it migrates */
        return answer(note, WAIT_ACT_LEAD,
                      pol->unknown_target_leads_to_exit ? WAIT_MSG_LEAD_TO_EXIT : WAIT_MSG_NONE);
    if (c == WAIT_AHEAD)
        return give_up(ob, note, WAIT_ACT_PROCEED_AHEAD, WAIT_MSG_AHEAD);
    if (c == WAIT_AT_TARGET)
        return give_up(ob, note, WAIT_ACT_PROCEED,
                       st->waited ? WAIT_MSG_PEER_WAITED : WAIT_MSG_PEER_BEFORE);
    struct wait_step s = answer(note, WAIT_ACT_LEAD, WAIT_MSG_LEADING);
    s.tell_later = pol->may_learn_table && !ob->present;
    return s;
}

/* The holder as last seen just let the lock go with nothing moved: was
 * that the server ending its session after leader_grace idle, the version
 * table never touched (a lapse)? */
static bool lapsed(const struct wait_policy *pol, const struct wait_state *st,
                   const struct wait_obs *ob)
{
    double idle_for = ob->elapsed - st->holder_idle_since;
    return !st->holder_migrating && idle_for >= pol->leader_grace - 0.5 &&
           idle_for <= pol->leader_grace + 3.0 && ob->same_as_seen;
}

struct wait_step wait_step(const struct wait_policy *pol, struct wait_state *st,
                           const struct wait_obs *ob)
{
    assert(pol && st && ob);
    assert(!ob->handed_over || !ob->on_app);
    bool took = ob->lock == WAIT_LOCK_TAKEN;
    if (ob->lock == WAIT_LOCK_ERROR)
        return answer(WAIT_MSG_NONE, WAIT_ACT_UNGATED,
                      ob->handed_over ? WAIT_MSG_HANDOVER_FAILED : WAIT_MSG_STEP_FAILED);
    /* the app is being stopped: give it its connection back, failed */
    if (ob->signal)
        return give_up(ob, WAIT_MSG_NONE, WAIT_ACT_INTERRUPTED, WAIT_MSG_INTERRUPTED);
    if (ob->handed_over && !took) /* a peer got in first: wait the normal way */
        return answer(WAIT_MSG_NONE, WAIT_ACT_RETRY, WAIT_MSG_NONE);
    if (took && ob->on_app) /* lead from a connection of our own: the app needs this one */
        return answer(WAIT_MSG_NONE, WAIT_ACT_HAND_OVER, WAIT_MSG_NONE);
    if (ob->read == WAIT_READ_NONE)
        return answer(WAIT_MSG_NONE, WAIT_ACT_READ, WAIT_MSG_NONE);
    if (ob->read == WAIT_READ_FAILED)
        return give_up(ob, WAIT_MSG_NONE, WAIT_ACT_UNGATED, WAIT_MSG_READ_FAILED);

    enum wait_cmp c = ob->target_known ? ob->cmp : WAIT_BEHIND;
    bool behind_unheld = ob->target_known && c == WAIT_BEHIND && ob->lock != WAIT_LOCK_BUSY;
    if (pol->reads_published_table && behind_unheld && st->pub_known) {
        if (ob->published == WAIT_PUB_UNREAD)
            return answer(WAIT_MSG_NONE, WAIT_ACT_READ_PUBLISHED, WAIT_MSG_NONE);
        if (ob->published == WAIT_PUB_AT_TARGET)
            return give_up(ob, WAIT_MSG_NONE, WAIT_ACT_PROCEED, WAIT_MSG_PUBLISHED);
    }
    /* The holder's run failed and it let the lock go (it lives on), the
     * database still behind: another leader would most likely fail the
     * same way; after lead_failures such runs, stop serializing on it. */
    enum wait_msg note = WAIT_MSG_NONE;
    if (pol->counts_failed_runs && behind_unheld && st->holder_seen &&
        st->holder_run == WAIT_RUN_FAILED) {
        st->holder_seen = false;
        st->holder_run = WAIT_RUN_GOING;
        st->failed_runs++;
        if (pol->lead_failures > 0 && st->failed_runs >= (unsigned)pol->lead_failures)
            return give_up(ob, WAIT_MSG_NONE, WAIT_ACT_UNGATED, WAIT_MSG_LEAD_FAILURES);
        note = WAIT_MSG_RUN_FAILED;
    }
    if (took)
        return taken(pol, st, ob, c, note);

    st->waited = true;
    if (c != WAIT_BEHIND && !(pol->lock_outlives_target && ob->lock == WAIT_LOCK_BUSY))
        return answer(note, WAIT_ACT_PROCEED, WAIT_MSG_AT_TARGET);
    double t = ob->elapsed;
    if (ob->lock == WAIT_LOCK_FREED && st->holder_seen) {
        bool lapse = lapsed(pol, st, ob);
        st->holder_seen = false;
        if (lapse)
            return pol->lapse_takes_lock_later
                       ? answer(note, WAIT_ACT_LAPSED, WAIT_MSG_LAPSED_LATER)
                       : answer(note, WAIT_ACT_UNGATED, WAIT_MSG_LAPSED);
    }
    struct wait_step s = answer(note, WAIT_ACT_WAIT, WAIT_MSG_NONE);
    /* every slice until the holder is seen migrating (it may publish its
     * version table then), then once a second, or twice in lead_settle
     * (how its run ended) */
    double look_every = pol->lead_settle / 2 < 1.0 ? pol->lead_settle / 2 : 1.0;
    if (ob->lock == WAIT_LOCK_BUSY &&
        (!st->holder_seen || !st->holder_migrating || t - st->seen_at >= look_every)) {
        s.look = true;
        st->seen_at = t;
    }
    if (t >= pol->wait_timeout) {
        s.act = pol->fail_on_timeout ? WAIT_ACT_FAIL : WAIT_ACT_UNGATED;
        s.msg = pol->fail_on_timeout ? WAIT_MSG_TIMEOUT_FAIL : WAIT_MSG_TIMEOUT;
        return s;
    }
    if (t - st->last_report >= pol->report_every) {
        s.msg = WAIT_MSG_WAITING;
        st->last_report = t;
    }
    /* freed but still behind (the holder gave up or died): everyone
     * retries the exclusive lock; a short growing pause avoids a herd */
    if (ob->lock == WAIT_LOCK_FREED && ++st->spins > 1)
        s.pause_ms = st->spins < 20 ? st->spins : 20;
    return s;
}
