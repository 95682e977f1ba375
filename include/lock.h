/*
 * lock — the migration lock and the version table, over libpq.
 *
 * The lock is a PostgreSQL advisory lock on a 64-bit key.  A process that
 * wants to migrate tries it exclusively without blocking; a process that
 * finds it taken waits on the *shared* form, which every waiter gets at the
 * same instant the holder releases (no chain of exclusive hand-offs), and
 * never for more than LOCK_WAIT_SLICE_MS in one statement (a waiter stuck
 * in a statement holds a snapshot a CREATE INDEX CONCURRENTLY must wait for).
 *
 * In xact mode the lock lives in an open READ COMMITTED transaction on the
 * shim's own connection: it works through PgBouncer transaction pooling and
 * dies with the connection.  In session mode it is a session lock.
 */
#ifndef MIGSHIM_LOCK_H
#define MIGSHIM_LOCK_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "heads.h"
#include "resolve.h"

#define LOCK_WAIT_SLICE_MS 250

/* The version table as read. */
struct versions {
    bool present;                     /* the table exists              */
    size_t n;
    char v[8][HEADS_REV_MAX];         /* its rows (8 heads is plenty)  */
    bool truncated;                   /* more than 8 rows              */
};

/* The key: lock_key if set, else a hash of database, schema, table. */
int64_t lock_key_for(const struct config *cfg, const char *dbname);

/*
 * Read the version table on `c` in one round trip, leaving no trace: no
 * error (not even in the server log) when the table is absent, no open
 * transaction, no session change.  False on failure with the reason in err.
 */
bool lock_read_versions(const struct pq_api *pq, PGconn *c, const struct config *cfg,
                        struct versions *out, char *err, size_t errsz)
    __attribute__((warn_unused_result));

enum lock_result {
    LOCK_TAKEN,   /* exclusive lock held: lead                     */
    LOCK_FREED,   /* it was held by another and is now released    */
    LOCK_BUSY,    /* still held by another after one wait slice    */
    LOCK_ERROR,   /* the connection failed (err set)               */
};

/*
 * One step of the wait loop: try the exclusive lock; if taken by someone
 * else, wait up to LOCK_WAIT_SLICE_MS on the shared form (calling
 * before_wait(arg) first, when given).  Never leaves a
 * shared lock or a transaction behind unless it returns LOCK_TAKEN.
 */
enum lock_result lock_step(const struct pq_api *pq, PGconn *own, enum lock_mode mode,
                           int64_t key, void (*before_wait)(void *), void *arg, char *err,
                           size_t errsz);

/* Release the exclusive lock taken by lock_step (ends the transaction in
 * xact mode).  False when the connection failed. */
bool lock_release(const struct pq_api *pq, PGconn *own, enum lock_mode mode, int64_t key);

/* Ask the server to end the holder's session if it stays idle for
 * `seconds` (0 = never): the server enforces leader_grace and hold_timeout
 * even if this process hangs or sleeps. */
bool lock_limit_idle(const struct pq_api *pq, PGconn *own, enum lock_mode mode, double seconds);

/* Describe who holds the exclusive lock ("pid 123 host 10.0.0.5 app 'x'
 * since 12:00:01"), or "nobody". */
void lock_describe_holder(const struct pq_api *pq, PGconn *own, int64_t key, char *buf,
                          size_t n);

#endif
