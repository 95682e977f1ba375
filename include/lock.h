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

#include "compiler.h"
#include "config.h"
#include "heads.h"
#include "peer.h"
#include "resolve.h"

#define LOCK_WAIT_SLICE_MS 250


/* The version table as read. */
struct versions {
    bool present;                     /* the table exists              */
    size_t n;
    char v[8][HEADS_REV_MAX];         /* its rows (8 heads is plenty)  */
    bool truncated;                   /* more than 8 rows              */
};

/* Which server and database a connection reached, as the server says:
 * not the client's spelling (a PgBouncer alias, a replica's address). */
struct server_id {
    char db[CONFIG_NAME_MAX];   /* current_database()                       */
    char cluster[48];           /* pg_postmaster_start_time(): one per server */
    bool standby;               /* pg_is_in_recovery()                      */
    char home[CONFIG_NAME_MAX]; /* current_schema() ("" when none)          */
    bool vt_elsewhere;          /* another schema than the one read has a
                                   table of the version table's name with a
                                   version_num column (always false for
                                   another tool's read)                     */
};

/* The key: lock_key if set, else a hash of database, schema, table. */
int64_t lock_key_for(const struct config *cfg, const char *dbname);
/* The same for a table other than the configured one (Django's). */
int64_t lock_key_for_table(const struct config *cfg, const char *dbname, const char *schema,
                           const char *table);

/*
 * Another tool's state in place of Alembic's version table (Django's: which
 * migrations are not recorded): an SQL expression of one text column, NULL
 * when there is nothing yet, else query_to_xml output whose <version_num>
 * elements become struct versions' rows.  Every read below (the idle read,
 * the wait slice's, the one inside the lock transaction) then evaluates it.
 * Set once, before the first read; the string must outlive the process's
 * reads.
 */
void lock_set_read_expr(const char *expr);

/*
 * Read the version table on `c` in one round trip, leaving no trace: no
 * error (not even in the server log) when the table is absent, no open
 * transaction, no session change.  False on failure with the reason in err.
 */
bool lock_read_versions(const struct pq_api *pq, PGconn *c, const struct config *cfg,
                        struct versions *out, char *err, size_t errsz)
    __attribute__((warn_unused_result));

/*
 * The same read, cheaper on a fresh backend, for a connection that is
 * outside any transaction block (where to_regclass() is current: inside a
 * long transaction it can keep answering "absent" after a peer created the
 * table).  The gate's one added round trip on the app's new connection.
 * With `id`, the same round trip also says which server and database it
 * reached, the session's current_schema(), and whether a schema other
 * than the one read has a table of the version table's name with a
 * version_num column (per-schema version tables: gate.h).
 */
/* The same for the version table `schema`.`table` ("" schema: the
 * search_path's): the table a leader learned from its migration's
 * statements, or one a leader published. */
bool lock_read_versions_in(const struct pq_api *pq, PGconn *c, const char *schema,
                           const char *table, struct versions *out, char *err, size_t errsz)
    __attribute__((warn_unused_result));

bool lock_read_versions_idle(const struct pq_api *pq, PGconn *c, const struct config *cfg,
                             struct versions *out, struct server_id *id, char *err,
                             size_t errsz)
    __attribute__((warn_unused_result));

/*
 * Where the app's session puts the version table `table` (per-schema
 * version tables: Alembic's multi-tenant recipe sets search_path in env.py,
 * after the connection's first read).  On `c` (the app's connection, idle
 * or in a transaction in good order), in one round trip: `schema` the
 * first schema of the search_path holding a table of that name, else
 * current_schema() (where Alembic's CREATE TABLE puts it), "" when the
 * search_path names no existing schema; `out` its rows (present false
 * when it does not exist).  Inside a transaction the read runs in a
 * savepoint rolled back at once: it leaves no error, lock or session
 * change in the app's transaction.  False on failure, reason in err.
 */
bool lock_resolve_versions(const struct pq_api *pq, PGconn *c, const char *table, char *schema,
                           size_t ssz, struct versions *out, char *err, size_t errsz)
    __attribute__((warn_unused_result));

enum lock_result {
    LOCK_TAKEN,   /* exclusive lock held: lead                     */
    LOCK_FREED,   /* it was held by another and is now free        */
    LOCK_BUSY,    /* still held by another after one wait slice    */
    LOCK_ERROR,   /* the connection failed (err set)               */
};

/*
 * One step of the wait loop on `c` (the lock connection, or in xact mode
 * also an app's fresh connection, outside any transaction block): try the
 * exclusive lock; if taken by someone else, wait up to LOCK_WAIT_SLICE_MS
 * on the shared form (calling before_wait(arg) first, when given).  Never
 * leaves a shared lock or a transaction behind unless it returns
 * LOCK_TAKEN.
 *
 * The slice's lock_timeout is caught inside a PL/pgSQL block, so waiting
 * writes nothing to the server log (without PL/pgSQL in the database the
 * plain statement is used: each slice that times out is then an ERROR
 * there).  The wait, the end of its transaction and a read of the version
 * table travel as one message: a waiter wakes, ends its transaction and
 * reads the table at once, so the whole fleet's hand-off costs one
 * lock-queue wake-up and no further round trip.  When that read was made
 * (LOCK_FREED or LOCK_BUSY) *have_v is set and `v` holds the table as it
 * stood after the slice; otherwise the caller reads it itself.
 */
enum lock_result lock_step(const struct pq_api *pq, PGconn *c, const struct config *cfg,
                           int64_t key, void (*before_wait)(void *), void *arg,
                           struct versions *v, bool *have_v, char *err, size_t errsz);

/*
 * Move the exclusive lock (xact mode) that `from` holds in its transaction
 * to `to`, a fresh connection, with no gap in which a peer could take it:
 * `to` asks for it (blocking), and once the server shows that request
 * queued, `from` ends its transaction.  Peers that were already waiting
 * on the shared form may wake briefly in between (they see the database
 * still behind and wait again: a lock request never jumps a queued
 * conflicting one).  LOCK_TAKEN when `to` holds it; otherwise `from` has
 * released it and the caller waits normally on `to` (LOCK_BUSY) or gives
 * up (LOCK_ERROR, err set).
 */
enum lock_result lock_hand_over(const struct pq_api *pq, PGconn *from, PGconn *to, int64_t key,
                                char *err, size_t errsz);

/* Release the exclusive lock taken by lock_step (ends the transaction in
 * xact mode).  False when the connection failed: the lock then lasts until
 * that connection closes (or its transaction ends), so a caller logs it
 * and closes the connection. */
bool lock_release(const struct pq_api *pq, PGconn *own, enum lock_mode mode, int64_t key)
    MUSTCHECK;

/* Ask the server to end the holder's session if it stays idle for
 * `seconds` (0 = never): the server enforces leader_grace and hold_timeout
 * even if this process hangs or sleeps.  False when the server refused it
 * (idle_session_timeout before PostgreSQL 14) or the connection failed:
 * the limit is then not in force, which the caller logs. */
bool lock_limit_idle(const struct pq_api *pq, PGconn *own, enum lock_mode mode, double seconds)
    MUSTCHECK;

/*
 * The server side of the settings of peer.h on `c`: tcp_keepalives_idle,
 * tcp_keepalives_interval, tcp_keepalives_count, tcp_user_timeout and
 * client_connection_check_interval, each only where the server has it (an
 * older server skips the ones it lacks, without an error).  `local`: for
 * the current transaction only (SET LOCAL: the lock transaction, where it
 * also cannot leak through a transaction pooler); otherwise for the
 * session.  `reset` puts the session's defaults back instead.  False when
 * the statement failed.
 */
bool lock_tune_conn(const struct pq_api *pq, PGconn *c, bool local, bool reset);

/* Describe who holds the exclusive lock ("pid 123 host 10.0.0.5 app 'x'
 * since 12:00:01"), or "nobody". */
/*
 * Lapses.  A leader that never touches the version table gives the lock up
 * after leader_grace (the server ends its idle lock session); the next
 * waiter would lead and lapse the same way, N-1 times over a fleet.  A
 * leader that does touch it marks its lock connection (application_name
 * ends in LOCK_MIGRATING_MARK); waiters look at the holder now and then:
 * how long its lock connection has been idle, and whether it is marked.
 */
#define LOCK_MIGRATING_MARK "migrating"
bool lock_mark_migrating(const struct pq_api *pq, PGconn *own);

/*
 * A leader whose migration writes a version table other than the
 * configured one (gate.c: learned from its statements) publishes it for
 * the waiters: application_name becomes
 * `migshim lock pid=N migrating vt=<name>`, <name> being `table` or
 * `schema.table`, each part plain when it is a lower-case identifier and
 * "quoted" ("" doubled) otherwise.  application_name keeps only 63 bytes
 * of printable ASCII: a name that does not fit is not published (only the
 * mark is).  Waiters read the holder's name with lock_holder_state.
 */
#define LOCK_VT_MARK "vt="
struct lock_vt {
    bool known;
    char schema[CONFIG_NAME_MAX];
    char table[CONFIG_NAME_MAX];
};
/* Does any table in the database have a version_num column (a version
 * table of Alembic's shape under some name)?  A hint only: false on error. */
bool lock_any_version_column(const struct pq_api *pq, PGconn *c);

bool lock_mark_migrating_vt(const struct pq_api *pq, PGconn *own, const char *schema,
                            const char *table);
bool lock_vt_format(const char *schema, const char *table, char *out, size_t n);
bool lock_vt_parse(const char *text, char *schema, size_t ssz, char *table, size_t tsz);

/* The holder of `key`: how long its lock connection has been idle, whether
 * it is marked migrating, and (`vt` not NULL) the version table it
 * published.  False when nobody holds it or the query failed. */
bool lock_holder_state(const struct pq_api *pq, PGconn *c, int64_t key, double *idle,
                       bool *migrating, struct lock_vt *vt);

/*
 * The end of a leader's migration run (gate.c, "A lead ends when the run
 * ends").  A leader whose version-table transaction ended short of the
 * target holds the lock for lead_settle more, publishing how the run
 * ended: application_name becomes
 * `migshim lock pid=N host=H migrating run=ended|failed`, or with a
 * published version table `migshim lock pid=N migrating run=... vt=<name>`
 * (`failed`: the transaction ended in an error).  A waiter that sees
 * `run=failed` and then the lock freed with the database still behind
 * counts one failed run (lead_failures).  LOCK_RUN_GOING puts the plain
 * mark back (the run went on).  The vt name is kept if it was published;
 * when both do not fit in 63 bytes the run token is left out (a waiter
 * then counts no failure: it leads, as before).
 */
#define LOCK_RUN_MARK "run="
enum lock_run { LOCK_RUN_GOING, LOCK_RUN_ENDED, LOCK_RUN_FAILED };
bool lock_mark_run(const struct pq_api *pq, PGconn *own, enum lock_run run, const char *schema,
                   const char *table) __attribute__((warn_unused_result));

/* lock_holder_state, and (`run` not NULL) how the holder's run stands as
 * it published it (LOCK_RUN_GOING when it published nothing). */
bool lock_holder_state_run(const struct pq_api *pq, PGconn *c, int64_t key, double *idle,
                           bool *migrating, struct lock_vt *vt, enum lock_run *run);

void lock_describe_holder(const struct pq_api *pq, PGconn *own, int64_t key, char *buf,
                          size_t n);

#endif
