/*
 * guard — turn unique-violation races on the version table into success,
 * but only after proving the database holds what the app wanted.
 *
 * Races still arrive from outside the gate: an unshimmed `alembic upgrade`,
 * a gate that timed out or was disabled, a lock lost with its connection.
 *
 * 1. Statement level.  CREATE TABLE <vt> failing with 42P07/23505 while the
 *    table now exists, or INSERT INTO <vt> failing with 23505 while that row
 *    now exists: the statement reports success with its command tag (and its
 *    RETURNING row); inside a transaction block the shim wraps just these
 *    statements in a savepoint, so the app's transaction stays usable.
 * 2. Transaction level.  A race error (23505, 42P07, 42701, 42710, 42P06,
 *    42723), or an UPDATE of <vt> matching 0 rows, in a transaction that
 *    referenced <vt>, when a re-check on the shim's own connection shows the
 *    database at this process's target heads (waiting up to race_wait for a
 *    peer in flight): the transaction is rolled back and its remaining
 *    statements up to COMMIT/ROLLBACK report success without changing
 *    anything — writes get the tags the app expects, reads run for real.
 * 3. Otherwise the original result passes through unchanged.
 *
 * The guard only runs while the gate watches the connection's database
 * (the process may still migrate); afterwards it costs nothing.
 */
#ifndef MIGSHIM_GUARD_H
#define MIGSHIM_GUARD_H

#include <libpq-fe.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "resolve.h"

/* One statement call, as the app made it. */
struct pq_call {
    enum { CALL_EXEC, CALL_PARAMS, CALL_PREPARED } kind;
    const char *sql;        /* NULL for CALL_PREPARED */
    const char *stmt_name;  /* CALL_PREPARED          */
    int nparams;
    const Oid *types;
    const char *const *values;
    const int *lengths;
    const int *formats;
    int result_format;
    bool mentions_vt;       /* sql names the version table (computed once, by
                               the wrapper: a statement that does not cannot
                               write it, and is not classified)       */
};

/* The synchronous path: run `call` on `pg` under the guard's rules. */
PGresult *guard_exec(const struct pq_copy *c, PGconn *pg, const struct pq_call *call);

/* The asynchronous path: send `call` (returns what PQsend* returns), and
 * deliver its results. */
int guard_send(const struct pq_copy *c, PGconn *pg, const struct pq_call *call);
PGresult *guard_get_result(const struct pq_copy *c, PGconn *pg);

/* The transaction status the app must see: INTRANS while the guard absorbs
 * the rest of a rolled-back transaction. */
PGTransactionStatusType guard_transaction_status(const struct pq_copy *c, const PGconn *pg);

/* The connection is being finished. */
void guard_forget(const struct pq_copy *c, const PGconn *pg);

/* Non-zero while some connection absorbs or has a made result pending. */
extern _Atomic int guard_busy;

/* True when `sqlstate` is one of the race codes of rule 2. */
bool guard_is_race_sqlstate(const char *sqlstate);

#endif
