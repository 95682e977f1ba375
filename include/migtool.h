/*
 * migtool — the migration tool, as the gate, the lock and the command see
 * it.  Everything that differs between Alembic and Django lives behind
 * this interface: finding the target, the state read, comparing (at /
 * behind / ahead), the lock key and the table the hooks watch, what to
 * learn from the app's statements, whether the race guard applies, and
 * when a leader's run has ended.  The gate holds no tool flag: it asks
 * the tool in hand.
 *
 * A tool is a const table of behaviour flags and operations.  Its target
 * (the heads, the graph) is its own state, loaded once per process by
 * load(); every operation after that only reads it.  Two implementations:
 * migtool_alembic (src/migtool_alembic.c) and migtool_django
 * (src/migtool_django.c).  A third tool (Sequel, Doctrine, a plain
 * "version table plus target" mode) is one new file with one such table
 * and one line in migtool_pick.
 *
 *   const struct migtool *t = migtool_pick(cfg, false);
 *   t->load(cfg);                         -- once; logs what it found
 *   if (t->known() && t->compare(&v) == MIGTOOL_BEHIND) ... lead or wait
 *
 * Thread safety: load() runs once (the gate calls it under pthread_once);
 * the other operations are pure reads of the loaded target.
 */
#ifndef MIGSHIM_MIGTOOL_H
#define MIGSHIM_MIGTOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "config.h"
#include "versions.h"
#include "wait.h"

/* A state read against the target. */
enum migtool_cmp {
    MIGTOOL_AT_TARGET, /* exactly the target: proceed                              */
    MIGTOOL_BEHIND,    /* short of it (or the state absent): migrate, or wait       */
    MIGTOOL_AHEAD,     /* holds what the local scripts do not know: a newer deploy
                          migrated it; proceed                                     */
};

/* A comparison as the wait's step function takes it (wait.h). */
static inline enum wait_cmp migtool_wait_cmp(enum migtool_cmp c)
{
    switch (c) {
    case MIGTOOL_AT_TARGET: return WAIT_AT_TARGET;
    case MIGTOOL_AHEAD: return WAIT_AHEAD;
    case MIGTOOL_BEHIND: break;
    }
    return WAIT_BEHIND;
}

/* When a leader's lead (its hold of the migration lock) ends. */
enum migtool_end {
    /* Alembic: when the leader's version-table transaction commits at the
     * target; or, its run having ended short of it (a version-table
     * transaction that wrote or failed), after lead_settle with no further
     * version-table statement.  Waiters wait for the state; a holder
     * publishes how its run stood (holder_mark_run) and waiters count the
     * failed runs (lead_failures). */
    MIGTOOL_END_RUN,
    /* Django: the run goes on after its last record (post_migrate writes
     * content types and permissions): the lead ends when every node is
     * recorded and the process has been idle for django_settle, or when it
     * exits.  Waiters wait for the lock itself, not for the state. */
    MIGTOOL_END_IDLE,
};

struct migtool {
    const char *name;      /* "alembic", "django": the command's `tool:` line     */
    const char *run_label; /* the "leading" line's "migrates <label>from": "" or
                              "Django "                                          */

    /* --- behaviour the gate follows -------------------------------------- */
    enum migtool_end lead_end;
    /* The target unknown: true, each process in turn leads and keeps the
     * lock until it exits (Django); false, the lock is taken per
     * version-table transaction (gate.h's UNKNOWN state: Alembic). */
    bool unknown_leads_to_exit;
    /* A holder that gave the lock up after leader_grace without touching
     * the state: true, a waiter proceeds and takes the lock again at its
     * own first statement on the table (LAPSED); false, it proceeds
     * ungated with the race guard watching. */
    bool relock_after_lapse;
    /* The state read is built from the target (Django's: which of its
     * nodes are not recorded): there is none while the target is unknown. */
    bool state_needs_target;

    /* --- operations --------------------------------------------------------- */

    /* Find the target for this process per `cfg` (files, the app's own
     * Python...), logging what was found and why it is unknown when it is.
     * Never fails: known() says. */
    void (*load)(const struct config *cfg);

    /* Is the target known (after load)? */
    bool (*known)(void);

    /* The state read, when it is not the configured version table: the
     * SQL expression the reads of versions.h evaluate in its place (their
     * `expr`: versions_read, versions_read_idle, lock_step's wait slice),
     * NULL while there is none (the target unknown).  The operation itself
     * NULL: always the configured version table (Alembic).  After load;
     * the expression lives as long as the process.  Callers go through
     * migtool_state_expr. */
    const char *(*state_expr)(void);

    /* Where the target came from, for messages ("heads key", a folder, a
     * target file); "" when unknown. */
    const char *(*where)(void);

    /* The table whose statements the hooks watch: the configured version
     * table, or django_migrations. */
    const char *(*table)(const struct config *cfg);

    /* The lock key for database `db`: lock_key when set, else a hash of
     * the database and the tool's table (lock.h). */
    int64_t (*key)(const struct config *cfg, const char *db);

    /* Compare a state read with the target (known() must be true). */
    enum migtool_cmp (*compare)(const struct versions *v);

    /* The state read, and the target, for the log (NUL-terminated, cut to
     * n).  describe_target needs known(). */
    void (*describe)(const struct versions *v, char *buf, size_t n);
    void (*describe_target)(char *buf, size_t n);

    /* The command's `status`: the target line(s), and the state line(s)
     * for `v` (the configured table named as the tool reads it). */
    void (*print_target)(FILE *out);
    void (*print_state)(FILE *out, const struct config *cfg, const struct versions *v);

    /* Is `sql`, a statement that names the table (table()), one of the
     * tool's writes of it (Alembic: CREATE, INSERT, UPDATE, DELETE in their
     * exact shapes)?  A leader's run that wrote it and ended short of the
     * target has ended (MIGTOOL_END_RUN). */
    bool (*writes)(const struct config *cfg, const char *sql);

    /* What to learn from the app's statements, NULL when nothing: */

    /* Is `sql` one of the tool's own statements on a version table in its
     * exact shape?  Then true with the table it names (`schema` "" when
     * unqualified) and whether it writes it.  A leader follows a table so
     * learned when it is not the configured one (gate_learn), and waiters
     * read the table a holder published (holder_mark_migrating_vt). */
    bool (*vt_statement)(const char *sql, char *schema, size_t ssz, char *table, size_t tsz,
                         bool *writes);

    /* Per-schema version tables (gate.h, "Per-schema"): is `sql` a point
     * where the tool's migration decides on the configured table -- its
     * own statement on it, or the existence probe it sends first -- and
     * which schema does the statement name (`qual`, "" for the
     * search_path's)?  NULL: the tool has no per-schema tables. */
    bool (*decision_point)(const struct config *cfg, const char *sql, char *qual, size_t n);

    /* Does the race guard (guard.h) know this tool's statements?  Only
     * with a known target. */
    bool (*guards)(void);
};

extern const struct migtool migtool_alembic;
extern const struct migtool migtool_django;

/*
 * The tool for this process: `tool` when set (alembic, django); auto: an
 * Alembic configuration found (heads.h), else Django when
 * DJANGO_SETTINGS_MODULE is set (manage.py sets it before its first
 * connection) or, with `manage_py`, a ./manage.py exists (the command run
 * in the project folder), else Alembic.  Silent; never NULL.
 */
const struct migtool *migtool_pick(const struct config *cfg, bool manage_py);

/* The state read of `t` for versions.h's reads: t->state_expr() when the
 * tool has one, else NULL (the configured version table). */
const char *migtool_state_expr(const struct migtool *t);

/* Seconds between the wait's "still waiting" lines, both gates. */
#define MIGTOOL_REPORT_EVERY 10.0

/*
 * The wait's policy (wait.h) as the configuration and the tool set it:
 * the timeouts, on_timeout, leader_grace, lead_settle, lead_failures and
 * the report interval from `cfg`; from `t`, the leader keeping the lock
 * after the target (lead_end idle), failed runs counted (lead_end run), a
 * lapsed holder followed by taking the lock later (relock_after_lapse),
 * an unknown target leading to exit, the "leading" line's label.  What
 * depends on the gate in hand (reads_published_table, may_learn_table)
 * is false: a caller sets it, and overrides what its gate cannot do.
 * Pure: reads nothing but its arguments.
 */
struct wait_policy migtool_wait_policy(const struct migtool *t, const struct config *cfg);

#endif
