/*
 * guard — a safety net under the gate: a race on the version table that
 * still arrives (an unshimmed `alembic upgrade`, a gate that timed out or
 * is off, a lock lost with its connection) is answered with success only
 * when the end state is provably the one a clean run leaves.
 *
 * The rule (its proof is written above candidate() in src/guard.c): in a
 * transaction block that is one of Alembic's migrations (it sent Alembic's
 * own version-table statements, showed the version it started from, behind
 * this process's target, and sent nothing before them but the read-only
 * probes of SQLAlchemy and its drivers (sqlclass_probe: an allowlist of
 * exact words; anything else first is the app's own work, which a
 * rollback would destroy)), a DDL
 * statement failing with a race SQLSTATE (23505, 42P07, 42701, 42710,
 * 42P06, 42723), Alembic's version INSERT failing with 23505, or its
 * version UPDATE matching 0 rows, when the version table as committed now
 * holds exactly the target heads: the app's transaction is rolled back and
 * a READ ONLY transaction stands in for it up to COMMIT/ROLLBACK.  While
 * the app's view of the version table is short of the target, DDL,
 * savepoint commands, a plain INSERT ... VALUES and Alembic's version
 * writes get their usual tags, Alembic's read of the version table gets
 * the view, and a statement that reads no table runs for real;
 * DEALLOCATE [PREPARE] {ALL | name} runs for real at any point (session
 * state, not transactional: psycopg 3 sends it after an answered ALTER);
 * anything else -- and everything once the view is at the target -- makes the
 * stand-in fail for real, and the app gets the original error.  COMMIT is
 * answered "COMMIT" and ends the stand-in.
 *
 * Everything else passes through unchanged: autocommit, the app's own data
 * statements, multi-statement strings, pipeline mode, a transaction that
 * started at the target, a database not at the target.
 *
 * The guard only runs while the gate watches the connection's database
 * (the process may still migrate); afterwards it costs nothing.
 */
#ifndef MIGSHIM_GUARD_H
#define MIGSHIM_GUARD_H

#include <libpq-fe.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "compiler.h"
#include "resolve.h"

/* One statement call, as the app made it. */
struct pq_call {
    enum { CALL_EXEC, CALL_PARAMS, CALL_PREPARED } kind;
    const char *sql;        /* CALL_PREPARED: the text it was prepared with, or NULL */
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
PGresult *guard_exec(const struct pq_copy *c, PGconn *pg, const struct pq_call *call) MUSTCHECK;

/* The asynchronous path: send `call` (returns what PQsend* returns), and
 * deliver its results. */
int guard_send(const struct pq_copy *c, PGconn *pg, const struct pq_call *call) MUSTCHECK;
PGresult *guard_get_result(const struct pq_copy *c, PGconn *pg) MUSTCHECK;

/* The connection is being finished. */
void guard_forget(const struct pq_copy *c, const PGconn *pg);

/* Non-zero while some connection is stood in for or has a made result
 * pending. */
extern _Atomic int guard_busy;

/* True when `sqlstate` is one of the race codes. */
bool guard_is_race_sqlstate(const char *sqlstate);

#endif
