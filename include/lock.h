/*
 * lock — the migration lock: a PostgreSQL advisory lock on a 64-bit key,
 * over a connection seam (dbconn.h).
 *
 * A process that wants to migrate tries it exclusively without blocking; a
 * process that finds it taken waits on the *shared* form, which every
 * waiter gets at the same instant the holder releases (no chain of
 * exclusive hand-offs), and never for more than LOCK_WAIT_SLICE_MS in one
 * statement (a waiter stuck in a statement holds a snapshot a CREATE INDEX
 * CONCURRENTLY must wait for).
 *
 * In xact mode the lock lives in an open READ COMMITTED transaction on the
 * shim's own connection: it works through PgBouncer transaction pooling and
 * dies with the connection.  In session mode it is a session lock.
 *
 * Who holds it and what the holder publishes: holder.h.  The version-table
 * reads (one of which travels inside the wait slice): versions.h.  The
 * keepalive settings of the lock connection: peer.h.  Every statement goes
 * through the connection's seam (dbconn.h); nothing here allocates memory the
 * caller must free.
 */
#ifndef MIGSHIM_LOCK_H
#define MIGSHIM_LOCK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "compiler.h"
#include "config.h"
#include "dbconn.h"
#include "versions.h"
#include "wait.h"

#define LOCK_WAIT_SLICE_MS 250

/*
 * The lock's key for the configured version table of database `dbname`
 * (NULL: ""): cfg->lock_key when set, else a 64-bit FNV-1a hash of
 * "migshim", the database, cfg->version_table_schema and
 * cfg->version_table.  Pure; the same in every process of the fleet.
 */
int64_t lock_key_for(const struct config *cfg, const char *dbname);

/* The same for a table other than the configured one (Django's
 * django_migrations): `schema` ("" when unqualified) and `table` (not
 * NULL) in place of the configured names. */
int64_t lock_key_for_table(const struct config *cfg, const char *dbname, const char *schema,
                           const char *table);

enum lock_result {
    LOCK_TAKEN,   /* exclusive lock held: lead                     */
    LOCK_FREED,   /* it was held by another and is now free        */
    LOCK_BUSY,    /* still held by another after one wait slice    */
    LOCK_ERROR,   /* the connection failed (err set)               */
};

/* A lock step's result as the wait's step function takes it (wait.h). */
static inline enum wait_lock lock_wait_lock(enum lock_result r)
{
    switch (r) {
    case LOCK_TAKEN: return WAIT_LOCK_TAKEN;
    case LOCK_FREED: return WAIT_LOCK_FREED;
    case LOCK_BUSY: return WAIT_LOCK_BUSY;
    case LOCK_ERROR: break;
    }
    return WAIT_LOCK_ERROR;
}

/*
 * One step of the wait loop on `c` (the lock connection, or in xact mode
 * also an app's fresh connection, outside any transaction block): try the
 * exclusive lock on `key` (a transaction lock when cfg->lock is LOCK_XACT,
 * else a session lock); if taken by someone else, wait up to
 * LOCK_WAIT_SLICE_MS on the shared form (calling before_wait(arg) first,
 * when before_wait is not NULL).  Never leaves a shared lock or a transaction behind unless it
 * returns LOCK_TAKEN (xact mode: the lock transaction stays open on `c`).
 *
 * The slice's lock_timeout is caught inside a PL/pgSQL block, so waiting
 * writes nothing to the server log (without PL/pgSQL in the database the
 * plain statement is used: each slice that times out is then an ERROR
 * there).  The wait, the end of its transaction and a read of the version
 * table (versions_idle_sql) travel as one message: a waiter wakes, ends
 * its transaction and reads the table at once, so the whole fleet's
 * hand-off costs one lock-queue wake-up and no further round trip.  When
 * that read was made (LOCK_FREED or LOCK_BUSY) *have_v is set and *v holds
 * the table -- or the tool's state `expr` when not NULL (versions.h) -- as
 * it stood after the slice; otherwise (*have_v false) the
 * caller reads it itself.  LOCK_ERROR: the reason (one line) in err, for
 * the caller to log.
 */
enum lock_result lock_step(struct dbconn *c, const struct config *cfg,
                           const char *expr, int64_t key, void (*before_wait)(void *), void *arg,
                           struct versions *v, bool *have_v, char *err, size_t errsz) MUSTCHECK;

/*
 * Move the exclusive lock (xact mode) that `from` holds in its transaction
 * to `to`, a fresh connection, with no gap in which a peer could take it:
 * `to` asks for it (blocking), and once the server shows that request
 * queued, `from` ends its transaction.  Peers that were already waiting
 * on the shared form may wake briefly in between (they see the database
 * still behind and wait again: a lock request never jumps a queued
 * conflicting one).  LOCK_TAKEN when `to` holds it; otherwise `from` has
 * released it and the caller waits normally on `to` (LOCK_BUSY) or gives
 * up (LOCK_ERROR, err set).  `from` ends outside a transaction either way.
 */
enum lock_result lock_hand_over(struct dbconn *from, struct dbconn *to, int64_t key,
                                char *err, size_t errsz) MUSTCHECK;

/* Release the exclusive lock on `key` that `own` took with lock_step or
 * lock_hand_over, in `mode` (LOCK_XACT: ends the lock transaction, a
 * ROLLBACK; LOCK_SESSION: pg_advisory_unlock).  True when the server
 * answered; false when the connection failed (the server then drops the
 * lock with the session).  Silent: the caller logs. */
bool lock_release(struct dbconn *own, enum lock_mode mode, int64_t key)
    MUSTCHECK;

/* Ask the server to end the holder's session on `own` if it stays idle
 * for `seconds` (0, or more than the setting's range: never), in `mode`
 * (LOCK_XACT: idle_in_transaction_session_timeout for the lock
 * transaction; LOCK_SESSION: idle_session_timeout, PostgreSQL 14+): the
 * server enforces leader_grace and hold_timeout even if this process
 * hangs or sleeps.  False when the statement failed (an older server
 * refuses idle_session_timeout).  Silent: the caller logs. */
bool lock_limit_idle(struct dbconn *own, enum lock_mode mode, double seconds)
    MUSTCHECK;

#endif
