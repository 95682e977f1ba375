/*
 * gate — the start-up gate: per (process, database), decide once whether
 * this process may proceed, must wait for a peer's migration, or leads it.
 *
 *   NEW ──first connection──▶ DECIDING ──at target / ahead──▶ DONE
 *                                │  └──behind: lock taken──▶ LEADING ──commit at target──▶ DONE
 *                                │                             ├──no version-table statement
 *                                │                             │   within leader_grace──▶ LAPSED
 *                                │                             └──run ended short of the target
 *                                │                                 (a version-table transaction that
 *                                │                                 wrote or failed ended), then
 *                                │                                 lead_settle quiet──▶ UNGATED
 *                                │                                 (DONE with guard = false)
 *                                ├──target unknown──▶ UNKNOWN (lock per version-table transaction)
 *                                │                      └──one that only read──▶ DONE
 *                                └──behind, no lock (lock = off, timeout, lock error,
 *                                      lead_failures failed runs seen)──▶ UNGATED
 *                                      (the guard watches; DONE at the commit that reaches the target)
 *                                └──a version table in another schema than the one read──▶ SCHEMA
 *                                      SCHEMA ──Alembic statement, its schema behind: lock taken──▶ LEADING
 *                                      LEADING (per schema) ──that schema's table at target──▶ SCHEMA
 *
 * Per-schema version tables (Alembic's multi-tenant recipe: env.py sets
 * search_path in the migration's transaction, one alembic_version per
 * tenant schema; or options=-csearch_path=... in the conninfo).  The
 * first connection's read looks where that connection's search_path
 * finds the table (options included: the lock connection is made with
 * the same parameters, so it reads the same table).  With
 * version_table_schema not set (a schema set by the user is always
 * authoritative: none of this applies),
 *  - when some other schema than the one read has a table of that name
 *    with a version_num column (the same round trip says so), whether the
 *    table read is absent, behind or at the target: the database is
 *    SCHEMA.  No lock at the first connection; SQLAlchemy's
 *    has_table query of the table (the first thing Alembic's migration
 *    sends on it, before anything else in the transaction) and each of
 *    Alembic's own statements on it first read the table where that
 *    statement finds it: the schema it names, else the first
 *    schema of the app session's search_path holding it, else its
 *    current_schema() (where Alembic creates it), on the app's own
 *    connection, one round trip, in a savepoint when in a transaction.  At
 *    the target: on, no lock (a restart at head never takes the lock).
 *    Behind: the database's one migration lock (same key as ever) is taken
 *    or waited for, every read of the wait and of the lead being of that
 *    schema's table; the leader holds it until that table holds exactly
 *    the target at a commit, then the database is SCHEMA again.  Every
 *    schema is so migrated by one process at a time, by a process that
 *    read it behind under the lock; a waiter goes on only when it reads it
 *    at the target.  The app's other statements on the table (a /ready
 *    read) cost nothing.
 *  - else, the table read absent (a fresh deploy): lead or wait as always.  A
 *    leader's first unqualified Alembic statement on the table is resolved
 *    the same way; in a schema other than the first connection's, the lead
 *    follows that schema's table, the database becomes SCHEMA after it,
 *    and a leader finding that table already at the target (it got the
 *    lock after a peer's lead) releases at once.  So a fresh multi-tenant
 *    deploy has one leading process per tenant schema (not per fleet).
 * Waits stay bounded by wait_timeout, each with its "waiting" line.
 * Limits: the lead and the waits read that schema's table, but the race
 * guard still classifies statements against the configured (unqualified)
 * name and proves a race against the configured table (gate_read_committed
 * is unchanged on purpose), which a per-schema database does not have on
 * that search_path: it proves nothing there, errors pass through, and a
 * learned schema never makes it map a statement.  A has_table query whose
 * schema is a bind parameter (psycopg 3's server-side binding with a
 * schema; without one, pg_table_is_visible() says "the search_path's") is
 * no decision point: the decision falls to Alembic's CREATE TABLE, and a
 * waiter whose schema's table a peer created during its wait gets the
 * DuplicateTable error (nothing runs twice: the CREATE fails first).
 */
#ifndef MIGSHIM_GATE_H
#define MIGSHIM_GATE_H

#include <libpq-fe.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "compiler.h"
#include "resolve.h"
#include "sqlclass.h"

struct migtool;

/* Non-zero while some database needs the per-statement hooks; the
 * wrappers test it before calling gate_before/gate_after (a load). */
extern _Atomic int gate_watching;

/* Non-zero while some database is in the guard's window (LEADING, LAPSED,
 * UNGATED): without it the guard has nothing to do (a load). */
extern _Atomic int gate_guarding;

/* Non-zero while a leader of this process must show the gate its
 * version-table statements on any table (gate_learn): before its first
 * one, and after it learned a table other than the configured one.  The
 * wrappers are on their slow path then anyway (LEADING). */
extern _Atomic int gate_learning;

/*
 * The app is about to send `sql` on `pg` (gate_learning != 0, and `sql`
 * mentions version_num).  When it is one of Alembic's version-table
 * statements in its exact shape on a table other than the configured one,
 * a leader follows that table: it re-reads it at each commit and releases
 * the lock once it holds exactly the target; it publishes the name for
 * the waiters (holder.h, holder_mark_migrating_vt) and warns once, naming the
 * settings to add.
 */
void gate_learn(const struct pq_copy *copy, PGconn *pg, const char *sql);

/*
 * The app's connection `pg` just reached CONNECTION_OK.  May block for the
 * wait-for-version loop.  Returns false when the connection was failed on
 * purpose (on_timeout = fail): its status is then CONNECTION_BAD.
 */
bool gate_connected(const struct pq_copy *copy, PGconn *pg) MUSTCHECK;

/* The app is about to send `sql`, a statement that mentions the version
 * table, on `pg` (gate_watching != 0).  May block to take the lock first.  (Target unknown: the lock is held
 * to the end of the transaction; a transaction that only read ends the
 * watch.  Per-schema version tables: see "Per-schema" above.) */
void gate_before(const struct pq_copy *copy, PGconn *pg, const char *sql);

/* A command on `pg` delivered its last result (gate_watching != 0).  A
 * leader's version-table transaction ending at the target releases the
 * lock; ending short of it, having written the version table or failed,
 * ends the run: the lock is released lead_settle later by the gate's own
 * thread, unless the run goes on (another version-table statement, or a
 * transaction open on that connection then). */
void gate_after(const struct pq_copy *copy, PGconn *pg);

/* `pg` is being finished: forget it (and end a lock its transaction held). */
void gate_forget(const struct pq_copy *copy, const PGconn *pg);

struct versions;

/* True when `pg`'s database may still be migrated by this process with a
 * known target: the guard's window.  Never for a database decided per
 * schema (its version tables are the tenants', which the guard's proof
 * does not read): there the app's errors pass through unchanged. */
bool gate_guards(const struct pq_copy *copy, PGconn *pg);

/* When this process holds the migration lock for `pg`'s database, read the
 * version table -- in `schema` when given, else the configured one -- as
 * committed on the lock connection into `v` (one round trip) and return
 * true; false otherwise, or when that read fails. */
bool gate_read_committed(const struct pq_copy *copy, PGconn *pg, const char *schema,
                         struct versions *v) MUSTCHECK;

/* True when `v` is exactly this process's target heads. */
bool gate_at_target(const struct versions *v);

/* The table whose statements the hooks watch: the configured version
 * table, or django_migrations when the tool is Django. */
const char *gate_version_table(void);

/*
 * gate_version_table()'s name prepared once for sqlclass_mentions_name
 * (its length, its memchr anchor): what the wrappers ask of the app's
 * statements.  gate_vt_name_get() prepares it (once, thread-safe) and
 * returns it; after that gate_vt_name_ready is set (release) and the name
 * never changes.  The gate prepares it before it first asks the wrappers
 * for the statement texts (SHIM_HOOKS_SQL, shim.h): a wrapper that saw
 * those bits in an acquire load of shim_hooks may read gate_vt_name
 * without a test; any other caller goes through gate_vt_name_get().
 */
extern __attribute__((visibility("hidden"))) struct sqlclass_name gate_vt_name;
extern __attribute__((visibility("hidden"))) _Atomic bool gate_vt_name_ready;
void gate_vt_name_prepare(void);
static inline const struct sqlclass_name *gate_vt_name_get(void)
{
    if (__builtin_expect(!atomic_load_explicit(&gate_vt_name_ready, memory_order_acquire), 0))
        gate_vt_name_prepare();
    return &gate_vt_name;
}

/* The migration tool of this process (migtool.h), chosen and loaded once
 * (the same the libpq gate asks: one load per process): for the wire
 * layer's gate (wiregate.h), which decides with the same tool. */
const struct migtool *gate_migtool(void);

/*
 * One decision per process and database across both layers.  The wire
 * layer's gate (wiregate.h: asyncpg, pg8000) keeps its decision in this
 * gate's table too, under the server's name for the database (`db`,
 * current_database(), on server `cluster`: versions.h's server_id, as a
 * libpq connection's read names it), so that a process reaching one
 * database through libpq and through asyncpg/pg8000 decides once: its
 * later connections pass, whichever layer they come through; while a
 * decision is under way they wait for it; while the process leads (its
 * libpq gate on its lock connection, or a wire connection holding the
 * lock) its other connections pass -- never waiting for the lock their own
 * process holds.
 */
enum gate_share {
    GATE_SHARE_MINE,      /* not decided in this process: the caller decides, and then
                             says how (gate_share_end)                                 */
    GATE_SHARE_DECIDED,   /* decided in this process (either layer): pass              */
    GATE_SHARE_LEADING,   /* this process's libpq gate leads it (holds the lock): pass */
    GATE_SHARE_UNTRACKED, /* more databases than the table holds: the caller decides
                             alone (no gate_share_end)                                  */
    GATE_SHARE_STOPPED,   /* still(arg) ended the wait for the libpq gate's
                             decision under way                                         */
};

/*
 * The wire gate's claim on `db` of `cluster` (the server's names): while
 * the libpq gate of this process decides it, wait (50 ms slices, then
 * still(arg) each, called with no lock of the gate's held -- it may spend
 * a slice of its own -- false gives up; still may be NULL; the libpq
 * decision itself is bounded by wait_timeout).  GATE_SHARE_MINE leaves the
 * database deciding in this layer's table: the libpq gate's connections to
 * it wait until gate_share_end.  Any thread; never blocks with a lock of
 * the shim held.
 */
enum gate_share gate_share_claim(const char *db, const char *cluster, bool (*still)(void *),
                                 void *arg) MUSTCHECK;

/*
 * The wire gate's decision on a database it claimed (GATE_SHARE_MINE):
 * `decided` true (it passed, or leads on its own connection: either way
 * this process's libpq connections to it pass from now on, without a wait
 * or a lock), false (its connection broke or was failed: the next
 * connection, of either layer, decides).  Wakes the libpq gate's waiters.
 */
void gate_share_end(const char *db, const char *cluster, bool decided);

#endif
