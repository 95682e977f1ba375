/*
 * wait — the decisions of the wait for a peer's migration, as a pure step
 * function: what one wait slice observed in, one action out.
 *
 * The gate's wait loop (gate_wait.c, wait_steps) does the I/O: it takes one
 * lock step (lock.h, lock_step: try the exclusive lock, else wait one
 * slice on the shared form, then read the version table), fills a
 * struct wait_obs, and asks wait_step() what to do.  The answer is one
 * action: look further (hand the lock over to a connection of its own,
 * read the version table, read the table the holder published), go on
 * waiting (maybe looking at the holder, reporting, pausing first), or end
 * the wait (lead, proceed, proceed ahead, ungated, fail, interrupted,
 * lapsed), each end with the message to print for it.  Nothing here does
 * I/O, reads the clock or the configuration: the unit tests drive it with
 * made-up observations (tests/unit/test_wait.c).
 *
 * The migration tools differ in named behaviours (struct wait_policy),
 * never by the tool's name: Django's leader keeps the lock after its last
 * record (lock_outlives_target), a lapsed Django holder is followed by a
 * process that takes the lock later at its own first statement
 * (lapse_takes_lock_later), and so on.
 *
 * The messages of the wait -- log level, event name, format -- are one
 * table keyed by message id (wait_message); the gate formats a message
 * with the arguments its entry names (wait_format) and prints it.  The
 * compiler cannot check a format from a table against a call's arguments:
 * each entry lists its conversions (args), which tests/unit/test_wait.c
 * checks against the format, and each call site in gate_wait.c passes them in
 * that order (say, open_own).
 */
#ifndef MIGSHIM_WAIT_H
#define MIGSHIM_WAIT_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

#include "log.h"

/* What one lock step gave (lock.h's enum lock_result, as seen here). */
enum wait_lock {
    WAIT_LOCK_TAKEN, /* this process holds the exclusive lock                */
    WAIT_LOCK_FREED, /* it was held by another and came free in the slice   */
    WAIT_LOCK_BUSY,  /* still held by another after the slice               */
    WAIT_LOCK_ERROR, /* the waiting connection failed                        */
};

/* The version table against the target. */
enum wait_cmp { WAIT_AT_TARGET, WAIT_BEHIND, WAIT_AHEAD };

/* How the holder's migration run stands, as it published it (holder.h,
 * holder_mark_run). */
enum wait_run { WAIT_RUN_GOING, WAIT_RUN_ENDED, WAIT_RUN_FAILED };

/* Whether the version table is known as of this slice. */
enum wait_read {
    WAIT_READ_NONE,   /* not read yet (lock_step did not, or the lock was handed over) */
    WAIT_READ_OK,     /* cmp and present are set                                   */
    WAIT_READ_FAILED,
};

/* The table the holder published (holder.h, holder_mark_migrating_vt), as
 * read by this slice. */
enum wait_pub {
    WAIT_PUB_UNREAD,    /* not read in this slice                     */
    WAIT_PUB_AT_TARGET, /* exactly the target heads there             */
    WAIT_PUB_NOT,       /* anything else, or the read failed          */
};

/* The settings of one wait, and the tool's differences as behaviours. */
struct wait_policy {
    double wait_timeout;          /* seconds from the wait's start                 */
    bool fail_on_timeout;         /* on_timeout = fail (else proceed ungated)      */
    double leader_grace;          /* a holder idle this long without migrating lapsed */
    double lead_settle;           /* a holder whose run ended is looked at twice in it */
    int lead_failures;            /* failed runs seen before the wait gives up; 0: never */
    double report_every;          /* seconds between "still waiting" lines         */
    /* the leader keeps the lock after the version reaches the target (Django:
     * post_migrate): a waiter that sees the target while the lock is busy
     * waits for the lock itself */
    bool lock_outlives_target;
    /* a holder may publish the version table its migration writes; a waiter
     * still behind in the configured one reads that one too (Alembic, and
     * not a per-schema wait, whose table is known) */
    bool reads_published_table;
    /* failed runs published by holders are counted against lead_failures */
    bool counts_failed_runs;
    /* a lapsed holder: this process goes on and takes the lock at its own
     * first version-table statement (WAIT_ACT_LAPSED), instead of going on
     * ungated with the race guard (WAIT_ACT_UNGATED) */
    bool lapse_takes_lock_later;
    /* target unknown and the lock taken: the process leads to its exit,
     * and says so (else it leads silently, to the end of its version-table
     * transaction) */
    bool unknown_target_leads_to_exit;
    /* the leader may learn its version table from its migration's
     * statements (the configured table not set in migshim's settings): with
     * the configured table absent, its "leading" line waits (tell_later) */
    bool may_learn_table;
    /* the "leading" line's word for what migrates ("Django ", or "") */
    const char *lead_label;
};

/* One look at the holder of the lock (holder.h, holder_state_run). */
struct wait_holder {
    double idle;        /* its lock connection idle for, seconds        */
    bool migrating;     /* marked migrating                             */
    bool vt_published;  /* it published its version table              */
    enum wait_run run;
};

/* What one slice observed.  Times are seconds since the wait began. */
struct wait_obs {
    enum wait_lock lock;
    bool on_app;          /* the lock step ran on the app's own connection  */
    bool handed_over;     /* `lock` is lock_hand_over's result              */
    int signal;           /* a recorded SIGTERM & co. (waitsig_pending)     */
    bool target_known;
    enum wait_read read;
    enum wait_cmp cmp;    /* with read == WAIT_READ_OK (target known)       */
    bool present;         /* ... the version table exists                   */
    bool same_as_seen;    /* ... and equals the one read when the holder was
                             first seen (state.holder_seen)                 */
    enum wait_pub published;
    double elapsed;       /* when the slice's observation was complete      */
};

/* What the wait carries from slice to slice (wait_begin sets it). */
struct wait_state {
    bool waited;               /* a slice found the lock held by another      */
    unsigned spins;            /* slices that found the lock freed            */
    double last_report;        /* the last "waiting" line (or the start)      */
    double seen_at;            /* the last look at the holder                 */
    bool holder_seen;          /* a look since the last lock hand-off found it */
    bool holder_migrating;
    double holder_idle_since;  /* when its lock connection went idle          */
    enum wait_run holder_run;  /* how its run stood, as it published          */
    unsigned failed_runs;      /* holders whose run failed, the database behind */
    bool pub_known;            /* some holder published its version table     */
};

/* The messages of the wait.  Each entry's comment lists the arguments its
 * format takes, in order (wait_format); "versions" says the event carries
 * the versions read. */
enum wait_msg {
    WAIT_MSG_NONE,
    WAIT_MSG_STEP_FAILED,    /* db, "connection"/"lock connection", err        */
    WAIT_MSG_INTERRUPTED,    /* db, signal name, elapsed                       */
    WAIT_MSG_HANDOVER_FAILED,/* db, err                                        */
    WAIT_MSG_READ_FAILED,    /* db, err                                        */
    WAIT_MSG_PUBLISHED,      /* db, elapsed, revs, table name       (versions) */
    WAIT_MSG_LEAD_FAILURES,  /* db, elapsed, n (unsigned), "s"/"", lead_failures (int), revs (versions) */
    WAIT_MSG_RUN_FAILED,     /* db, n (unsigned), lead_failures (int), revs    */
    WAIT_MSG_LEAD_TO_EXIT,   /* db, key (long long), " after waiting"/""       */
    WAIT_MSG_LEADING,        /* db, key (long long), " after waiting"/"", tool
                                label, revs, target, " "/"", why/"" (versions) */
    WAIT_MSG_AHEAD,          /* db, revs                            (versions) */
    WAIT_MSG_PEER_WAITED,    /* db, elapsed, revs                   (versions) */
    WAIT_MSG_PEER_BEFORE,    /* db, revs                            (versions) */
    WAIT_MSG_AT_TARGET,      /* db, elapsed, revs                   (versions) */
    WAIT_MSG_LAPSED_LATER,   /* db, leader_grace, revs              (versions) */
    WAIT_MSG_LAPSED,         /* db, leader_grace, schema, "."/"", table, revs (versions) */
    WAIT_MSG_TIMEOUT_FAIL,   /* db, elapsed, holder                 (versions) */
    WAIT_MSG_TIMEOUT,        /* db, elapsed, holder                 (versions) */
    WAIT_MSG_WAITING,        /* db, elapsed, holder                 (versions) */
    /* waiting for a connection slot for the lock connection (gate_wait.c, open_own) */
    WAIT_MSG_SLOT_PEER,      /* db, elapsed, revs                   (versions) */
    WAIT_MSG_SLOT_TIMEOUT,   /* db, elapsed, err                               */
    WAIT_MSG_SLOT_NOBODY,    /* db, elapsed, err                               */
    WAIT_MSG_OWN_FAILED,     /* db, err                                        */
    WAIT_MSG_SLOT_WAITING,   /* db, err, wait_timeout                          */
    WAIT_MSG_SLOT_FREE,      /* db, elapsed                                    */
    WAIT_MSG_COUNT
};

/* One entry of the table. */
struct wait_message {
    enum log_level level;
    const char *event;    /* the event emitted with the line; NULL: none     */
    bool versions;        /* the event carries the versions read             */
    const char *args;     /* the conversions of fmt, one letter each: s
                             string, f double, u unsigned, d int, L long long */
    const char *fmt;
};

/* What to do after a step. */
enum wait_action {
    /* look further, then step again with the same observation completed */
    WAIT_ACT_HAND_OVER,      /* the lock was taken on the app's connection: move
                                it to a lock connection of the process's own
                                (lock_hand_over); set lock and handed_over    */
    WAIT_ACT_READ,           /* read the version table: set read, cmp, present */
    WAIT_ACT_READ_PUBLISHED, /* read the holder's published table: set published */
    /* go on */
    WAIT_ACT_RETRY,          /* the hand-over ended with a peer holding the lock:
                                the next slice, nothing else                   */
    WAIT_ACT_WAIT,           /* the next slice (see look, pause_ms, msg)        */
    /* the ends of the wait */
    WAIT_ACT_LEAD,           /* lead: the lock is this process's.  With
                                WAIT_MSG_LEADING the target is known and the
                                leader migrates toward it (the gate sets the
                                lock session up: keepalives, leader_grace);
                                otherwise (target unknown) it holds the lock
                                as it is, saying so or not (msg)              */
    WAIT_ACT_PROCEED,        /* the database is at the target: go on           */
    WAIT_ACT_PROCEED_AHEAD,  /* it holds revisions the local scripts do not know */
    WAIT_ACT_UNGATED,        /* go on without the gate                         */
    WAIT_ACT_FAIL,           /* fail the app's connection (on_timeout = fail)  */
    WAIT_ACT_INTERRUPTED,    /* a signal: fail the connection, let the app's handler run */
    WAIT_ACT_LAPSED,         /* the holder lapsed: go on, lock taken later     */
};

/* One step's answer. */
struct wait_step {
    enum wait_action act;
    enum wait_msg msg;   /* print it (WAIT_ACT_WAIT: WAIT_MSG_WAITING or none;
                            WAIT_ACT_LEAD: WAIT_MSG_LEADING is the line the gate
                            holds for the leader, see tell_later)              */
    enum wait_msg note;  /* printed before anything else (a failed run counted) */
    bool release;        /* an end other than LEAD with the lock taken: release
                            it (on the waiting connection) first              */
    bool look;           /* look at the holder now and tell wait_saw_holder   */
    bool tell_later;     /* LEAD: hold the "leading" line back if another table
                            has a version_num column (the leader may learn it) */
    unsigned pause_ms;   /* WAIT: sleep this long before the next slice        */
};

/* Start a wait: `st` as no slice has seen anything. */
void wait_begin(struct wait_state *st);

/*
 * The decision for one slice: `ob` is what was observed (ob->elapsed and
 * everything the earlier answers of this slice asked for), `st` what the
 * earlier slices left.  Updates `st` and returns the action.  The look
 * actions (HAND_OVER, READ, READ_PUBLISHED) leave `st` as it was: call
 * again with `ob` completed.  A look at the holder (look) is made before
 * the action, timeout included, and reported with wait_saw_holder.
 * Deterministic and free of I/O.
 */
struct wait_step wait_step(const struct wait_policy *pol, struct wait_state *st,
                           const struct wait_obs *ob);

/* True for the actions that ask for a further look (HAND_OVER, READ,
 * READ_PUBLISHED): make it, then call wait_step again. */
bool wait_wants_look(enum wait_action a);

/* A look at the holder at `elapsed` succeeded (step's look): remember it.
 * Returns true when it is the first look since the lock last changed
 * hands: the caller keeps the version table as read now, to compare the
 * next freed slice with (wait_obs.same_as_seen). */
bool wait_saw_holder(struct wait_state *st, const struct wait_holder *h, double elapsed);

/* The table entry of `id` (never NULL for a valid id). */
const struct wait_message *wait_message(enum wait_msg id);

/* Format message `id` into buf (always NUL-terminated) with the arguments
 * its entry lists, in order; the length it needed (vsnprintf's). */
int wait_format(char *buf, size_t n, enum wait_msg id, ...);
int wait_vformat(char *buf, size_t n, enum wait_msg id, va_list ap);

/* The name of an action ("WAIT_ACT_LEAD"), for tests and debug lines;
 * "?" for a value that is none. */
const char *wait_action_name(enum wait_action a);

#endif
