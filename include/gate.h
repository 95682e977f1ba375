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
 *
 * Django (tool = django): the state read is "which migrations of the app's
 * graph are not recorded in django_migrations" (django.h), the leader
 * keeps the lock to the end of its run -- process exit, or every node
 * recorded and the process idle for django_settle -- since post_migrate
 * races too, and the guard stays out (no UNGATED: DONE; a holder that
 * lapsed sends its waiters on as LAPSED, each taking the lock at its own
 * first statement on django_migrations).
 *
 * Other threads' first connections wait for DECIDING to end; connections
 * of a leading process never wait on their own process.  A forked child
 * of a LEADING/LAPSED process starts again from NEW (the lock connection
 * belongs to the parent).
 */
#ifndef MIGSHIM_GATE_H
#define MIGSHIM_GATE_H

#include <libpq-fe.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "resolve.h"

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
 * the waiters (lock.h, lock_mark_migrating_vt) and warns once, naming the
 * settings to add.
 */
void gate_learn(const struct pq_copy *copy, PGconn *pg, const char *sql);

/*
 * The app's connection `pg` just reached CONNECTION_OK.  May block for the
 * wait-for-version loop.  Returns false when the connection was failed on
 * purpose (on_timeout = fail): its status is then CONNECTION_BAD.
 */
bool gate_connected(const struct pq_copy *copy, PGconn *pg);

/* The app is about to send a statement that mentions the version table on
 * `pg` (gate_watching != 0); `writes`: one of Alembic's writes of it.  May
 * block to take the lock first.  (Target unknown: the lock is held to the
 * end of the transaction; a transaction that only read ends the watch.) */
void gate_before(const struct pq_copy *copy, PGconn *pg, bool writes);

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
 * known target: the guard's window. */
bool gate_guards(const struct pq_copy *copy, PGconn *pg);

/* When this process holds the migration lock for `pg`'s database, read the
 * version table as committed on the lock connection into `v` (one round
 * trip) and return true; false otherwise, or when that read fails. */
bool gate_read_committed(const struct pq_copy *copy, PGconn *pg, struct versions *v);

/* True when `v` is exactly this process's target heads. */
bool gate_at_target(const struct versions *v);

/* The table whose statements the hooks watch: the configured version
 * table, or django_migrations when the tool is Django. */
const char *gate_version_table(void);

/* fork(): the mutex is held across it (src/shim.c), so a child never
 * inherits it locked by a thread it does not have. */
void gate_atfork_prepare(void);
void gate_atfork_parent(void);
void gate_atfork_child(void);

#endif
