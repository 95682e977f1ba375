/*
 * wait: the wait's step function without a server.  Every action and
 * every end of wait_step from made-up observations, the state it carries
 * between slices, and the message table: each entry's format against the
 * arguments it lists, and each text byte for byte against the line the
 * gate printed before the table (the literals below are those lines, as
 * they stood in gate.c).
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "wait.h"

/* Alembic's way of waiting (gate_wait.c, wait_policy_of). */
static struct wait_policy alembic(void)
{
    return (struct wait_policy){
        .wait_timeout = 60, .fail_on_timeout = false, .leader_grace = 5, .lead_settle = 5,
        .lead_failures = 2, .report_every = 10, .lock_outlives_target = false,
        .reads_published_table = true, .counts_failed_runs = true,
        .lapse_takes_lock_later = false, .unknown_target_leads_to_exit = false,
        .may_learn_table = true, .lead_label = ""};
}

/* Django's. */
static struct wait_policy django(void)
{
    return (struct wait_policy){
        .wait_timeout = 60, .fail_on_timeout = false, .leader_grace = 5, .lead_settle = 5,
        .lead_failures = 2, .report_every = 10, .lock_outlives_target = true,
        .reads_published_table = false, .counts_failed_runs = false,
        .lapse_takes_lock_later = true, .unknown_target_leads_to_exit = true,
        .may_learn_table = false, .lead_label = "Django "};
}

/* A slice that read the version table. */
static struct wait_obs slice(enum wait_lock lock, enum wait_cmp cmp, double t)
{
    return (struct wait_obs){.lock = lock, .target_known = true, .read = WAIT_READ_OK,
                             .cmp = cmp, .present = true, .published = WAIT_PUB_UNREAD,
                             .elapsed = t};
}

static struct wait_state fresh(void)
{
    struct wait_state st;
    wait_begin(&st);
    return st;
}

/* The step `s` (evaluated once: a step changes the state) is action `a`
 * with message `m`. */
#define EXPECT(s, a, m)                                                                        \
    do {                                                                                       \
        struct wait_step s_ = (s);                                                             \
        cr_expect_eq(s_.act, (a), "action %s, expected %s", wait_action_name(s_.act),           \
                     wait_action_name(a));                                                     \
        cr_expect_eq(s_.msg, (m), "message %d, expected %d", (int)s_.msg, (int)(m));            \
    } while (0)

/* A holder seen by a look at `t`, idle `idle` s, migrating or not, its run. */
static void saw(struct wait_state *st, double t, double idle, bool migrating, enum wait_run run)
{
    struct wait_holder h = {.idle = idle, .migrating = migrating, .run = run};
    wait_saw_holder(st, &h, t);
}

/* --- the step's early exits ------------------------------------------------ */

Test(wait, a_failed_step_is_ungated_naming_the_connection)
{
    struct wait_policy p = alembic();
    struct wait_state st = fresh();
    struct wait_obs ob = {.lock = WAIT_LOCK_ERROR, .on_app = true, .signal = SIGTERM};
    struct wait_step s = wait_step(&p, &st, &ob);
    EXPECT(s, WAIT_ACT_UNGATED, WAIT_MSG_STEP_FAILED);
    cr_expect(!s.release);
    ob.on_app = false;
    ob.handed_over = true;
    s = wait_step(&p, &st, &ob);
    EXPECT(s, WAIT_ACT_UNGATED, WAIT_MSG_HANDOVER_FAILED);
}

Test(wait, a_signal_interrupts_and_releases_a_lock_just_taken)
{
    struct wait_policy p = alembic();
    struct wait_state st = fresh();
    struct wait_obs ob = {.lock = WAIT_LOCK_TAKEN, .on_app = true, .signal = SIGTERM};
    struct wait_step s = wait_step(&p, &st, &ob);
    EXPECT(s, WAIT_ACT_INTERRUPTED, WAIT_MSG_INTERRUPTED);
    cr_expect(s.release);
    ob.lock = WAIT_LOCK_BUSY;
    s = wait_step(&p, &st, &ob);
    EXPECT(s, WAIT_ACT_INTERRUPTED, WAIT_MSG_INTERRUPTED);
    cr_expect(!s.release);
}

Test(wait, a_lock_taken_on_the_apps_connection_is_handed_over)
{
    struct wait_policy p = alembic();
    struct wait_state st = fresh();
    struct wait_obs ob = slice(WAIT_LOCK_TAKEN, WAIT_BEHIND, 0);
    ob.on_app = true;
    struct wait_step s = wait_step(&p, &st, &ob);
    EXPECT(s, WAIT_ACT_HAND_OVER, WAIT_MSG_NONE);
    cr_expect(wait_wants_look(s.act));
    /* a peer got in between: the next slice, nothing else */
    ob.on_app = false;
    ob.handed_over = true;
    ob.read = WAIT_READ_NONE;
    ob.lock = WAIT_LOCK_BUSY;
    s = wait_step(&p, &st, &ob);
    EXPECT(s, WAIT_ACT_RETRY, WAIT_MSG_NONE);
    cr_expect(!wait_wants_look(s.act));
    cr_expect(!st.waited, "a retry is not a wait slice");
    /* taken on the lock connection: read the table there first */
    ob.lock = WAIT_LOCK_TAKEN;
    s = wait_step(&p, &st, &ob);
    EXPECT(s, WAIT_ACT_READ, WAIT_MSG_NONE);
    ob.read = WAIT_READ_OK;
    s = wait_step(&p, &st, &ob);
    EXPECT(s, WAIT_ACT_LEAD, WAIT_MSG_LEADING);
}

Test(wait, an_unread_table_is_read_and_a_failed_read_is_ungated)
{
    struct wait_policy p = alembic();
    struct wait_state st = fresh();
    struct wait_obs ob = {.lock = WAIT_LOCK_FREED, .target_known = true};
    struct wait_step s = wait_step(&p, &st, &ob);
    EXPECT(s, WAIT_ACT_READ, WAIT_MSG_NONE);
    ob.read = WAIT_READ_FAILED;
    s = wait_step(&p, &st, &ob);
    EXPECT(s, WAIT_ACT_UNGATED, WAIT_MSG_READ_FAILED);
    cr_expect(!s.release);
    ob.lock = WAIT_LOCK_TAKEN;
    s = wait_step(&p, &st, &ob);
    EXPECT(s, WAIT_ACT_UNGATED, WAIT_MSG_READ_FAILED);
    cr_expect(s.release);
}

Test(wait, a_look_leaves_the_state_as_it_was)
{
    struct wait_policy p = alembic();
    struct wait_state st = fresh(), before;
    saw(&st, 1, 0, true, WAIT_RUN_FAILED);
    struct wait_holder h = {.idle = 0, .migrating = true, .vt_published = true,
                            .run = WAIT_RUN_FAILED};
    wait_saw_holder(&st, &h, 1);
    struct wait_obs ob[] = {slice(WAIT_LOCK_TAKEN, WAIT_BEHIND, 2),
                            slice(WAIT_LOCK_FREED, WAIT_BEHIND, 2),
                            slice(WAIT_LOCK_FREED, WAIT_BEHIND, 2)};
    ob[0].on_app = true;
    ob[1].read = WAIT_READ_NONE;
    enum wait_action want[] = {WAIT_ACT_HAND_OVER, WAIT_ACT_READ, WAIT_ACT_READ_PUBLISHED};
    for (size_t i = 0; i < 3; i++) {
        memcpy(&before, &st, sizeof st);
        struct wait_step s = wait_step(&p, &st, &ob[i]);
        cr_expect_eq(s.act, want[i], "look %zu: %s", i, wait_action_name(s.act));
        cr_expect(wait_wants_look(s.act));
        cr_expect_eq(memcmp(&before, &st, sizeof st), 0, "look %zu changed the state", i);
    }
}

/* --- the published version table ------------------------------------------- */

Test(wait, a_published_table_at_the_target_ends_the_wait)
{
    struct wait_policy p = alembic();
    struct wait_state st = fresh();
    struct wait_holder h = {.idle = 0, .migrating = true, .vt_published = true};
    wait_saw_holder(&st, &h, 1);
    cr_expect(st.pub_known);
    struct wait_obs ob = slice(WAIT_LOCK_FREED, WAIT_BEHIND, 2);
    struct wait_step s = wait_step(&p, &st, &ob);
    EXPECT(s, WAIT_ACT_READ_PUBLISHED, WAIT_MSG_NONE);
    cr_expect(wait_wants_look(s.act));
    ob.published = WAIT_PUB_AT_TARGET;
    s = wait_step(&p, &st, &ob);
    EXPECT(s, WAIT_ACT_PROCEED, WAIT_MSG_PUBLISHED);
    cr_expect(!s.release);
    ob.lock = WAIT_LOCK_TAKEN;
    s = wait_step(&p, &st, &ob);
    EXPECT(s, WAIT_ACT_PROCEED, WAIT_MSG_PUBLISHED);
    cr_expect(s.release);
}

Test(wait, a_published_table_elsewhere_changes_nothing)
{
    struct wait_policy p = alembic();
    struct wait_state st = fresh();
    struct wait_holder h = {.idle = 0, .migrating = true, .vt_published = true};
    wait_saw_holder(&st, &h, 1);
    struct wait_obs ob = slice(WAIT_LOCK_TAKEN, WAIT_BEHIND, 2);
    ob.published = WAIT_PUB_NOT;
    EXPECT(wait_step(&p, &st, &ob), WAIT_ACT_LEAD, WAIT_MSG_LEADING);
}

Test(wait, the_published_table_is_read_only_when_it_can_matter)
{
    struct wait_state st = fresh();
    struct wait_holder h = {.idle = 0, .migrating = true, .vt_published = true};
    wait_saw_holder(&st, &h, 1);
    struct wait_policy p = alembic();
    /* the lock still held: the leader has not committed */
    struct wait_obs ob = slice(WAIT_LOCK_BUSY, WAIT_BEHIND, 2);
    cr_expect_neq(wait_step(&p, &st, &ob).act, WAIT_ACT_READ_PUBLISHED);
    /* the configured table at the target: nothing to look for */
    ob = slice(WAIT_LOCK_FREED, WAIT_AT_TARGET, 2);
    cr_expect_neq(wait_step(&p, &st, &ob).act, WAIT_ACT_READ_PUBLISHED);
    /* target unknown */
    ob = slice(WAIT_LOCK_FREED, WAIT_BEHIND, 2);
    ob.target_known = false;
    cr_expect_neq(wait_step(&p, &st, &ob).act, WAIT_ACT_READ_PUBLISHED);
    /* a tool (or a per-schema wait) that does not read it */
    p.reads_published_table = false;
    ob = slice(WAIT_LOCK_FREED, WAIT_BEHIND, 2);
    cr_expect_neq(wait_step(&p, &st, &ob).act, WAIT_ACT_READ_PUBLISHED);
    /* nothing published */
    p = alembic();
    struct wait_state none = fresh();
    cr_expect_neq(wait_step(&p, &none, &ob).act, WAIT_ACT_READ_PUBLISHED);
}

/* --- failed runs (lead_failures) -------------------------------------------- */

Test(wait, failed_runs_are_counted_then_the_wait_gives_up)
{
    struct wait_policy p = alembic(); /* lead_failures = 2 */
    struct wait_state st = fresh();
    saw(&st, 1, 0, true, WAIT_RUN_FAILED);
    struct wait_obs ob = slice(WAIT_LOCK_FREED, WAIT_BEHIND, 2);
    struct wait_step s = wait_step(&p, &st, &ob);
    EXPECT(s, WAIT_ACT_WAIT, WAIT_MSG_NONE);
    cr_expect_eq(s.note, WAIT_MSG_RUN_FAILED);
    cr_expect_eq(st.failed_runs, 1);
    cr_expect(!st.holder_seen);
    cr_expect_eq(st.holder_run, WAIT_RUN_GOING);
    /* the same holder is not counted twice */
    s = wait_step(&p, &st, &ob);
    cr_expect_eq(s.note, WAIT_MSG_NONE);
    cr_expect_eq(st.failed_runs, 1);
    /* the next leader fails too: the second one ends the wait */
    saw(&st, 3, 0, true, WAIT_RUN_FAILED);
    ob = slice(WAIT_LOCK_TAKEN, WAIT_BEHIND, 4);
    s = wait_step(&p, &st, &ob);
    EXPECT(s, WAIT_ACT_UNGATED, WAIT_MSG_LEAD_FAILURES);
    cr_expect(s.release);
    cr_expect_eq(s.note, WAIT_MSG_NONE);
    cr_expect_eq(st.failed_runs, 2);
}

Test(wait, a_failed_run_is_not_also_a_lapse)
{
    struct wait_policy p = alembic();
    p.lead_failures = 3;
    struct wait_state st = fresh();
    saw(&st, 1, 0, false, WAIT_RUN_FAILED); /* idle since 1 */
    struct wait_obs ob = slice(WAIT_LOCK_FREED, WAIT_BEHIND, 6.5); /* idle 5.5 s: a lapse's */
    ob.same_as_seen = true;
    struct wait_step s = wait_step(&p, &st, &ob);
    EXPECT(s, WAIT_ACT_WAIT, WAIT_MSG_NONE);
    cr_expect_eq(s.note, WAIT_MSG_RUN_FAILED);
}

Test(wait, a_counted_failure_short_of_the_limit_still_leads)
{
    struct wait_policy p = alembic();
    p.lead_failures = 3;
    struct wait_state st = fresh();
    saw(&st, 1, 0, true, WAIT_RUN_FAILED);
    struct wait_obs ob = slice(WAIT_LOCK_TAKEN, WAIT_BEHIND, 2);
    struct wait_step s = wait_step(&p, &st, &ob);
    EXPECT(s, WAIT_ACT_LEAD, WAIT_MSG_LEADING);
    cr_expect_eq(s.note, WAIT_MSG_RUN_FAILED);
}

Test(wait, lead_failures_zero_never_gives_up)
{
    struct wait_policy p = alembic();
    p.lead_failures = 0;
    struct wait_state st = fresh();
    for (int i = 0; i < 50; i++) {
        saw(&st, i, 0, true, WAIT_RUN_FAILED);
        struct wait_obs ob = slice(WAIT_LOCK_FREED, WAIT_BEHIND, i + 0.5);
        struct wait_step s = wait_step(&p, &st, &ob);
        cr_assert_eq(s.act, WAIT_ACT_WAIT);
        cr_assert_eq(s.note, WAIT_MSG_RUN_FAILED);
    }
    cr_expect_eq(st.failed_runs, 50);
}

Test(wait, failed_runs_count_only_when_the_lock_came_free_behind)
{
    struct wait_policy p = alembic();
    p.lead_failures = 1;
    struct wait_state st = fresh();
    saw(&st, 1, 0, true, WAIT_RUN_FAILED);
    struct wait_obs ob = slice(WAIT_LOCK_BUSY, WAIT_BEHIND, 2); /* still held */
    cr_expect_eq(wait_step(&p, &st, &ob).act, WAIT_ACT_WAIT);
    cr_expect_eq(st.failed_runs, 0);
    ob = slice(WAIT_LOCK_FREED, WAIT_AT_TARGET, 2); /* the next one made it */
    EXPECT(wait_step(&p, &st, &ob), WAIT_ACT_PROCEED, WAIT_MSG_AT_TARGET);
    cr_expect_eq(st.failed_runs, 0);
    /* a run that only ended (no error) is no failure */
    st = fresh();
    saw(&st, 1, 0, true, WAIT_RUN_ENDED);
    ob = slice(WAIT_LOCK_FREED, WAIT_BEHIND, 2);
    cr_expect_eq(wait_step(&p, &st, &ob).act, WAIT_ACT_WAIT);
    cr_expect_eq(st.failed_runs, 0);
    /* a tool whose holders publish no runs */
    p = django();
    p.lead_failures = 1;
    st = fresh();
    saw(&st, 1, 0, true, WAIT_RUN_FAILED);
    cr_expect_eq(wait_step(&p, &st, &ob).act, WAIT_ACT_WAIT);
    cr_expect_eq(st.failed_runs, 0);
}

/* --- the lock taken ---------------------------------------------------------- */

Test(wait, taken_behind_leads)
{
    struct wait_policy p = alembic();
    struct wait_state st = fresh();
    struct wait_obs ob = slice(WAIT_LOCK_TAKEN, WAIT_BEHIND, 0);
    struct wait_step s = wait_step(&p, &st, &ob);
    EXPECT(s, WAIT_ACT_LEAD, WAIT_MSG_LEADING);
    cr_expect(!s.release);
    cr_expect(!s.tell_later, "the table exists: the line is told at once");
    cr_expect(!st.waited);
    ob.present = false; /* the leader may learn its table: the line may wait */
    cr_expect(wait_step(&p, &st, &ob).tell_later);
    p.may_learn_table = false;
    cr_expect(!wait_step(&p, &st, &ob).tell_later);
}

Test(wait, taken_at_the_target_proceeds_and_says_whether_it_waited)
{
    struct wait_policy p = alembic();
    struct wait_state st = fresh();
    struct wait_obs ob = slice(WAIT_LOCK_TAKEN, WAIT_AT_TARGET, 0);
    struct wait_step s = wait_step(&p, &st, &ob);
    EXPECT(s, WAIT_ACT_PROCEED, WAIT_MSG_PEER_BEFORE);
    cr_expect(s.release);
    struct wait_obs busy = slice(WAIT_LOCK_BUSY, WAIT_BEHIND, 1);
    cr_expect_eq(wait_step(&p, &st, &busy).act, WAIT_ACT_WAIT);
    cr_expect(st.waited);
    s = wait_step(&p, &st, &ob);
    EXPECT(s, WAIT_ACT_PROCEED, WAIT_MSG_PEER_WAITED);
    cr_expect(s.release);
}

Test(wait, taken_ahead_proceeds_ahead)
{
    struct wait_policy p = alembic();
    struct wait_state st = fresh();
    struct wait_obs ob = slice(WAIT_LOCK_TAKEN, WAIT_AHEAD, 0);
    struct wait_step s = wait_step(&p, &st, &ob);
    EXPECT(s, WAIT_ACT_PROCEED_AHEAD, WAIT_MSG_AHEAD);
    cr_expect(s.release);
}

Test(wait, target_unknown_leads_once_taken_whatever_the_table_says)
{
    struct wait_policy p = alembic();
    struct wait_state st = fresh();
    struct wait_obs ob = slice(WAIT_LOCK_TAKEN, WAIT_AT_TARGET, 0);
    ob.target_known = false;
    struct wait_step s = wait_step(&p, &st, &ob);
    EXPECT(s, WAIT_ACT_LEAD, WAIT_MSG_NONE);
    cr_expect(!s.release);
    p = django();
    s = wait_step(&p, &st, &ob);
    EXPECT(s, WAIT_ACT_LEAD, WAIT_MSG_LEAD_TO_EXIT);
}

Test(wait, target_unknown_waits_for_the_lock_itself)
{
    struct wait_policy p = alembic();
    struct wait_state st = fresh();
    struct wait_obs ob = slice(WAIT_LOCK_FREED, WAIT_AT_TARGET, 1);
    ob.target_known = false; /* "at the target" means nothing then */
    EXPECT(wait_step(&p, &st, &ob), WAIT_ACT_WAIT, WAIT_MSG_NONE);
    ob.lock = WAIT_LOCK_BUSY;
    EXPECT(wait_step(&p, &st, &ob), WAIT_ACT_WAIT, WAIT_MSG_NONE);
}

/* --- not taken: the target reached ------------------------------------------- */

Test(wait, a_peer_at_the_target_lets_the_waiter_proceed)
{
    struct wait_policy p = alembic();
    struct wait_state st = fresh();
    struct wait_obs ob = slice(WAIT_LOCK_BUSY, WAIT_AT_TARGET, 1);
    struct wait_step s = wait_step(&p, &st, &ob);
    EXPECT(s, WAIT_ACT_PROCEED, WAIT_MSG_AT_TARGET);
    cr_expect(!s.release);
    cr_expect(st.waited);
    ob = slice(WAIT_LOCK_FREED, WAIT_AHEAD, 1); /* ahead, seen while waiting: the same line */
    EXPECT(wait_step(&p, &st, &ob), WAIT_ACT_PROCEED, WAIT_MSG_AT_TARGET);
}

Test(wait, a_lock_that_outlives_the_target_is_waited_for)
{
    struct wait_policy p = django();
    struct wait_state st = fresh();
    struct wait_obs ob = slice(WAIT_LOCK_BUSY, WAIT_AT_TARGET, 1);
    EXPECT(wait_step(&p, &st, &ob), WAIT_ACT_WAIT, WAIT_MSG_NONE);
    ob.lock = WAIT_LOCK_FREED;
    EXPECT(wait_step(&p, &st, &ob), WAIT_ACT_PROCEED, WAIT_MSG_AT_TARGET);
}

/* --- lapses -------------------------------------------------------------- */

/* A holder seen at t=1, idle `idle` then, freed at t=`t`, nothing moved. */
static struct wait_step lapse_at(const struct wait_policy *p, double idle, double t,
                                 bool migrating, bool same)
{
    struct wait_state st = fresh();
    saw(&st, 1, idle, migrating, WAIT_RUN_GOING);
    struct wait_obs ob = slice(WAIT_LOCK_FREED, WAIT_BEHIND, t);
    ob.same_as_seen = same;
    struct wait_step s = wait_step(p, &st, &ob);
    cr_expect(!st.holder_seen, "a freed lock forgets the holder");
    return s;
}

Test(wait, a_holder_idle_for_leader_grace_lapsed)
{
    struct wait_policy p = alembic(); /* leader_grace = 5: idle 4.5 .. 8 s */
    EXPECT(lapse_at(&p, 0, 6, false, true), WAIT_ACT_UNGATED, WAIT_MSG_LAPSED);
    EXPECT(lapse_at(&p, 3.5, 1, false, true), WAIT_ACT_WAIT, WAIT_MSG_NONE); /* idle 3.5 s */
    EXPECT(lapse_at(&p, 0, 5.5, false, true), WAIT_ACT_UNGATED, WAIT_MSG_LAPSED); /* 4.5 */
    EXPECT(lapse_at(&p, 0, 5.49, false, true), WAIT_ACT_WAIT, WAIT_MSG_NONE);
    EXPECT(lapse_at(&p, 0, 9, false, true), WAIT_ACT_UNGATED, WAIT_MSG_LAPSED); /* 8 */
    EXPECT(lapse_at(&p, 0, 9.01, false, true), WAIT_ACT_WAIT, WAIT_MSG_NONE);
    p = django();
    EXPECT(lapse_at(&p, 0, 6, false, true), WAIT_ACT_LAPSED, WAIT_MSG_LAPSED_LATER);
}

Test(wait, a_migrating_holder_or_a_moved_table_is_no_lapse)
{
    struct wait_policy p = alembic();
    EXPECT(lapse_at(&p, 0, 6, true, true), WAIT_ACT_WAIT, WAIT_MSG_NONE);
    EXPECT(lapse_at(&p, 0, 6, false, false), WAIT_ACT_WAIT, WAIT_MSG_NONE);
    /* a holder never seen */
    struct wait_state st = fresh();
    struct wait_obs ob = slice(WAIT_LOCK_FREED, WAIT_BEHIND, 6);
    ob.same_as_seen = true;
    EXPECT(wait_step(&p, &st, &ob), WAIT_ACT_WAIT, WAIT_MSG_NONE);
}

/* --- waiting: looks, timeouts, reports, pauses ------------------------------ */

Test(wait, the_holder_is_looked_at_until_seen_migrating_then_now_and_then)
{
    struct wait_policy p = alembic(); /* lead_settle 5: once a second */
    struct wait_state st = fresh();
    struct wait_obs ob = slice(WAIT_LOCK_BUSY, WAIT_BEHIND, 0.25);
    struct wait_step s = wait_step(&p, &st, &ob);
    EXPECT(s, WAIT_ACT_WAIT, WAIT_MSG_NONE);
    cr_expect(s.look);
    cr_expect_float_eq(st.seen_at, 0.25, 1e-9);
    saw(&st, 0.25, 0, false, WAIT_RUN_GOING);
    ob.elapsed = 0.5;
    cr_expect(wait_step(&p, &st, &ob).look, "not migrating yet: every slice");
    saw(&st, 0.5, 0, true, WAIT_RUN_GOING);
    ob.elapsed = 0.75;
    cr_expect(!wait_step(&p, &st, &ob).look);
    ob.elapsed = 1.49;
    cr_expect(!wait_step(&p, &st, &ob).look);
    ob.elapsed = 1.5;
    cr_expect(wait_step(&p, &st, &ob).look, "once a second");
    /* a short lead_settle: twice in it */
    p.lead_settle = 0.5;
    ob.elapsed = 1.75;
    cr_expect(wait_step(&p, &st, &ob).look);
    /* no look while the lock is free or taken */
    ob = slice(WAIT_LOCK_FREED, WAIT_BEHIND, 30);
    st = fresh();
    cr_expect(!wait_step(&p, &st, &ob).look);
}

Test(wait, wait_saw_holder_says_when_it_is_the_first_look)
{
    struct wait_state st = fresh();
    struct wait_holder h = {.idle = 2, .migrating = false, .run = WAIT_RUN_ENDED};
    cr_expect(wait_saw_holder(&st, &h, 10));
    cr_expect(!wait_saw_holder(&st, &h, 11));
    cr_expect_float_eq(st.holder_idle_since, 9, 1e-9);
    cr_expect_eq(st.holder_run, WAIT_RUN_ENDED);
    cr_expect(!st.pub_known);
    struct wait_obs ob = slice(WAIT_LOCK_FREED, WAIT_BEHIND, 12);
    struct wait_policy p = alembic();
    (void)wait_step(&p, &st, &ob); /* the lock changed hands */
    cr_expect(wait_saw_holder(&st, &h, 13));
}

Test(wait, wait_timeout_proceeds_by_default)
{
    struct wait_policy p = alembic();
    struct wait_state st = fresh();
    struct wait_obs ob = slice(WAIT_LOCK_BUSY, WAIT_BEHIND, 59.9);
    cr_expect_eq(wait_step(&p, &st, &ob).act, WAIT_ACT_WAIT);
    ob.elapsed = 60;
    struct wait_step s = wait_step(&p, &st, &ob);
    EXPECT(s, WAIT_ACT_UNGATED, WAIT_MSG_TIMEOUT);
    cr_expect(!s.release);
    cr_expect(s.look, "the holder not seen yet: looked at first, as ever");
}

Test(wait, wait_timeout_fails_with_on_timeout_fail)
{
    struct wait_policy p = alembic();
    p.fail_on_timeout = true;
    struct wait_state st = fresh();
    struct wait_obs ob = slice(WAIT_LOCK_FREED, WAIT_BEHIND, 61);
    struct wait_step s = wait_step(&p, &st, &ob);
    EXPECT(s, WAIT_ACT_FAIL, WAIT_MSG_TIMEOUT_FAIL);
    cr_expect(!s.release);
    cr_expect_eq(s.pause_ms, 0);
}

Test(wait, a_waiting_line_every_report_interval)
{
    struct wait_policy p = alembic(); /* report_every 10 */
    struct wait_state st = fresh();
    struct wait_obs ob = slice(WAIT_LOCK_BUSY, WAIT_BEHIND, 9.9);
    EXPECT(wait_step(&p, &st, &ob), WAIT_ACT_WAIT, WAIT_MSG_NONE);
    ob.elapsed = 10;
    EXPECT(wait_step(&p, &st, &ob), WAIT_ACT_WAIT, WAIT_MSG_WAITING);
    ob.elapsed = 19.9;
    EXPECT(wait_step(&p, &st, &ob), WAIT_ACT_WAIT, WAIT_MSG_NONE);
    ob.elapsed = 20.5;
    EXPECT(wait_step(&p, &st, &ob), WAIT_ACT_WAIT, WAIT_MSG_WAITING);
    cr_expect_float_eq(st.last_report, 20.5, 1e-9);
}

Test(wait, freed_but_behind_spins_with_a_growing_pause)
{
    struct wait_policy p = alembic();
    struct wait_state st = fresh();
    struct wait_obs ob = slice(WAIT_LOCK_FREED, WAIT_BEHIND, 1);
    unsigned want[] = {0, 2, 3, 4};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        struct wait_step s = wait_step(&p, &st, &ob);
        EXPECT(s, WAIT_ACT_WAIT, WAIT_MSG_NONE);
        cr_expect_eq(s.pause_ms, want[i], "spin %zu: %u ms", i + 1, s.pause_ms);
    }
    for (int i = 0; i < 30; i++)
        (void)wait_step(&p, &st, &ob);
    cr_expect_eq(wait_step(&p, &st, &ob).pause_ms, 20, "capped at 20 ms");
    ob.lock = WAIT_LOCK_BUSY;
    cr_expect_eq(wait_step(&p, &st, &ob).pause_ms, 0, "a busy slice already waited");
}

Test(wait, the_first_busy_slice_marks_the_wait)
{
    struct wait_policy p = alembic();
    struct wait_state st = fresh();
    struct wait_obs ob = slice(WAIT_LOCK_BUSY, WAIT_BEHIND, 0.25);
    cr_expect(!st.waited);
    (void)wait_step(&p, &st, &ob);
    cr_expect(st.waited);
}

/* --- the message table ------------------------------------------------------ */

/* The conversions of `fmt`, one letter each as in wait_message.args. */
static void conversions(const char *fmt, char *out, size_t n)
{
    size_t o = 0;
    for (const char *c = fmt; *c; c++) {
        if (*c != '%')
            continue;
        c++;
        if (*c == '%')
            continue;
        while (strchr("-+ #0123456789.", *c))
            c++;
        char k = '?';
        if (strncmp(c, "lld", 3) == 0) {
            k = 'L';
            c += 2;
        } else if (*c == 's' || *c == 'u' || *c == 'd') {
            k = *c;
        } else if (*c == 'f' || *c == 'g') {
            k = 'f';
        }
        if (o + 1 < n)
            out[o++] = k;
    }
    out[o] = '\0';
}

Test(wait, every_format_takes_the_arguments_its_entry_lists)
{
    for (int id = WAIT_MSG_NONE + 1; id < WAIT_MSG_COUNT; id++) {
        const struct wait_message *m = wait_message((enum wait_msg)id);
        char got[32];
        cr_assert(m->fmt && m->args, "message %d has no entry", id);
        conversions(m->fmt, got, sizeof got);
        cr_expect_str_eq(got, m->args, "message %d: format takes \"%s\", entry lists \"%s\"", id,
                         got, m->args);
        cr_expect_eq(strncmp(m->fmt, "database \"%s\"", 13), 0, "message %d names its database",
                     id);
        cr_expect(!m->versions || m->event, "message %d: versions without an event", id);
    }
}

/* The wait's line `id` formatted by the table equals `fmt` (the gate's
 * literal before the table) with the same arguments. */
#define SAME(id, fmt, ...)                                                                     \
    do {                                                                                       \
        char want_[1024], got_[1024];                                                          \
        snprintf(want_, sizeof want_, fmt, __VA_ARGS__);                                       \
        wait_format(got_, sizeof got_, id, __VA_ARGS__);                                       \
        cr_expect_str_eq(got_, want_, "%s", #id);                                              \
    } while (0)

Test(wait, every_line_is_the_one_the_gate_printed)
{
    const char *db = "app", *err = "server closed the connection", *revs = "a1b2c3";
    SAME(WAIT_MSG_STEP_FAILED, "database \"%s\": the %s failed while waiting (%s); proceeding without the gate",
         db, "lock connection", err);
    SAME(WAIT_MSG_INTERRUPTED, "database \"%s\": %s after waiting %.3f s for the migration lock; "
         "failing the connection so the app's own handler runs", db, "SIGTERM", 1.25);
    SAME(WAIT_MSG_HANDOVER_FAILED, "database \"%s\": the lock connection failed (%s); proceeding without the gate",
         db, err);
    SAME(WAIT_MSG_READ_FAILED, "database \"%s\": cannot read the version table (%s); proceeding without the gate",
         db, err);
    SAME(WAIT_MSG_PUBLISHED, "database \"%s\": waited %.3f s for the migration lock; database at %s in "
         "%s, the version table the leader's migration wrote; proceeding", db, 2.5, revs,
         "\"s\".\"vt\"");
    SAME(WAIT_MSG_LEAD_FAILURES, "database \"%s\": waited %.3f s; %u "
         "leader%s in turn failed to migrate it (lead_failures = %d), the database "
         "still at %s; proceeding without the gate, the race guard watching",
         db, 3.0, 2u, "s", 2, revs);
    SAME(WAIT_MSG_RUN_FAILED, "database \"%s\": the migration run of the process that held the lock failed "
         "(%u of lead_failures = %d); the database is still at %s: one waiter leads "
         "the next attempt", db, 1u, 3, revs);
    SAME(WAIT_MSG_LEAD_TO_EXIT, "database \"%s\": leading: this process holds the migration lock "
         "(key %lld)%s; the Django target is unknown, so it keeps the lock until it exits",
         db, -42LL, " after waiting");
    SAME(WAIT_MSG_LEADING, "database \"%s\": leading: this process holds the migration lock (key %lld)%s "
         "and migrates %sfrom %s to %s%s%s", db, 7LL, "", "Django ", revs, "b2", " ", "(again)");
    SAME(WAIT_MSG_AHEAD, "database \"%s\" holds revisions the local scripts do not know (%s): a "
         "newer deploy migrated it; proceeding", db, revs);
    SAME(WAIT_MSG_PEER_WAITED, "database \"%s\": waited %.3f s; a peer migrated it to %s; proceeding",
         db, 4.0, revs);
    SAME(WAIT_MSG_PEER_BEFORE, "database \"%s\": a peer migrated it to %s before this process got the "
         "lock; proceeding", db, revs);
    SAME(WAIT_MSG_AT_TARGET, "database \"%s\": waited %.3f s for the migration lock; database at %s; proceeding",
         db, 5.5, revs);
    SAME(WAIT_MSG_LAPSED_LATER, "database \"%s\": the process that held the migration lock gave it "
         "up after leader_grace (%g s) without touching django_migrations (%s); proceeding: "
         "this process takes the lock at its own first statement on django_migrations",
         db, 2.0, revs);
    SAME(WAIT_MSG_LAPSED, "database \"%s\": the process that held the migration lock gave it up "
         "after leader_grace (%g s) without touching the version table %s%s%s; the database is still "
         "at %s; proceeding without the gate, the race guard watching.  If the app "
         "migrates, set version_table (MIGSHIM_VERSION_TABLE) to the table it uses",
         db, 2.0, "s", ".", "alembic_version", revs);
    SAME(WAIT_MSG_TIMEOUT_FAIL, "database \"%s\": waited %.0f s (wait_timeout) for the migration lock held by %s; "
         "failing the connection (on_timeout = fail)", db, 3.2, "pid 1");
    SAME(WAIT_MSG_TIMEOUT, "database \"%s\": waited %.0f s (wait_timeout) for the migration lock held by %s; "
         "proceeding (on_timeout = proceed)", db, 3.2, "pid 1");
    SAME(WAIT_MSG_WAITING, "database \"%s\": waiting %.0f s so far for the migration lock held by %s",
         db, 10.1, "nobody");
    SAME(WAIT_MSG_SLOT_PEER, "database \"%s\": waited %.3f s for a connection slot; a peer "
         "migrated it to %s; proceeding", db, 0.5, revs);
    SAME(WAIT_MSG_SLOT_TIMEOUT, "database \"%s\": waited %.1f s (wait_timeout) for a connection "
         "slot for the lock connection (%s); proceeding without the gate", db, 3.0, err);
    SAME(WAIT_MSG_SLOT_NOBODY, "database \"%s\": no connection slot for the lock connection "
         "after %.3f s (%s), and nobody holds the migration lock now; proceeding without the gate",
         db, 1.0, err);
    SAME(WAIT_MSG_OWN_FAILED, "database \"%s\": cannot open the lock connection (%s); proceeding "
         "without the gate", db, err);
    SAME(WAIT_MSG_SLOT_WAITING, "database \"%s\": no connection slot for the lock connection (%s); "
         "waiting for one while another process holds the migration lock, up to wait_timeout (%g s)",
         db, err, 3.0);
    SAME(WAIT_MSG_SLOT_FREE, "database \"%s\": a connection slot came free after %.3f s; the lock connection is open",
         db, 0.75);
}

Test(wait, levels_and_events_are_the_gates)
{
    struct {
        enum wait_msg id;
        enum log_level level;
        const char *event;
    } want[] = {
        {WAIT_MSG_STEP_FAILED, LOG_LVL_WARN, "ungated"},
        {WAIT_MSG_INTERRUPTED, LOG_LVL_WARN, "interrupted"},
        {WAIT_MSG_HANDOVER_FAILED, LOG_LVL_WARN, "ungated"},
        {WAIT_MSG_READ_FAILED, LOG_LVL_WARN, "ungated"},
        {WAIT_MSG_PUBLISHED, LOG_LVL_INFO, "proceed"},
        {WAIT_MSG_LEAD_FAILURES, LOG_LVL_WARN, "ungated"},
        {WAIT_MSG_RUN_FAILED, LOG_LVL_INFO, NULL},
        {WAIT_MSG_LEAD_TO_EXIT, LOG_LVL_INFO, "leading"},
        {WAIT_MSG_LEADING, LOG_LVL_INFO, "leading"},
        {WAIT_MSG_AHEAD, LOG_LVL_WARN, "ahead"},
        {WAIT_MSG_PEER_WAITED, LOG_LVL_INFO, "proceed"},
        {WAIT_MSG_PEER_BEFORE, LOG_LVL_INFO, "proceed"},
        {WAIT_MSG_AT_TARGET, LOG_LVL_INFO, "proceed"},
        {WAIT_MSG_LAPSED_LATER, LOG_LVL_WARN, "lapsed"},
        {WAIT_MSG_LAPSED, LOG_LVL_WARN, "lapsed"},
        {WAIT_MSG_TIMEOUT_FAIL, LOG_LVL_ERROR, "timeout"},
        {WAIT_MSG_TIMEOUT, LOG_LVL_WARN, "timeout"},
        {WAIT_MSG_WAITING, LOG_LVL_INFO, "waiting"},
        {WAIT_MSG_SLOT_PEER, LOG_LVL_INFO, "proceed"},
        {WAIT_MSG_SLOT_TIMEOUT, LOG_LVL_WARN, "ungated"},
        {WAIT_MSG_SLOT_NOBODY, LOG_LVL_WARN, "ungated"},
        {WAIT_MSG_OWN_FAILED, LOG_LVL_WARN, "ungated"},
        {WAIT_MSG_SLOT_WAITING, LOG_LVL_WARN, "waiting"},
        {WAIT_MSG_SLOT_FREE, LOG_LVL_INFO, NULL},
    };
    cr_assert_eq(sizeof want / sizeof want[0], WAIT_MSG_COUNT - 1, "a message without a check");
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const struct wait_message *m = wait_message(want[i].id);
        cr_expect_eq(m->level, want[i].level, "message %d", (int)want[i].id);
        if (want[i].event)
            cr_expect_str_eq(m->event, want[i].event, "message %d", (int)want[i].id);
        else
            cr_expect_null(m->event, "message %d", (int)want[i].id);
    }
}
