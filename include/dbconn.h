/*
 * dbconn — the connection seam: how the gate, the lock, the version reads,
 * the holder and the session tuning talk to the server.
 *
 * A `struct dbconn` is a connection as those modules see it.  It sends one
 * message of one or more statements (the simple protocol: see versions.h
 * on why) and hands back their results one by one, each a small table of
 * text values or an error with its SQLSTATE; it says where its
 * transaction stands and which backend serves it; and, for the app's own
 * connection the gate decides on, it gives the few things the gate needs
 * beyond statements: blocking mode for the gate's own round trips, its
 * socket (keepalive options), the database and address it was asked for,
 * whether it is in pipeline mode, and a way to fail it on purpose.
 * Nothing above this interface names a libpq function.
 *
 * libpq implements it (dbconn_pq below: the app's PGconn, or the shim's
 * own lock connection, through the real functions of the caller's libpq
 * copy, resolve.h).  A wire-protocol layer for drivers that do not use
 * libpq (asyncpg, pg8000) implements the same table, and so do the unit
 * tests (a scripted fake: tests/unit/test_seam.c).
 *
 *   struct dbconn_pq pc;
 *   struct dbconn *c = dbconn_pq_init(&pc, &copy->api, pg);
 *   if (dbconn_send(c, "SELECT 1; SELECT 2"))
 *       for (struct dbres *r; (r = dbconn_next(c)) != NULL; dbres_free(c, r))
 *           ... dbres_kind(c, r), dbres_value(c, r, 0, 0) ...
 *
 * Semantics the callers rely on (libpq's, which another implementation
 * keeps): after dbconn_send, every result is read with dbconn_next until
 * it returns NULL, before anything else is sent; a statement that failed
 * ends the message (the server skips the rest), its result DBRES_ERROR; a
 * connection lost mid-message ends the results early (an error result or
 * none).  Ownership: a result belongs to the caller until dbres_free; a
 * connection to whoever made it (the seam never closes one).  Thread
 * safety: that of the connection underneath (one thread at a time), but
 * dbconn_txn may be asked from another thread while the owner uses it
 * (the gate's settler does: it only reads the connection's state).
 */
#ifndef MIGSHIM_DBCONN_H
#define MIGSHIM_DBCONN_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>

#include "compiler.h"
#include "resolve.h"

struct dbconn;
struct dbres; /* one statement's result: opaque */

enum dbres_kind {
    DBRES_COMMAND, /* a statement without rows completed (BEGIN, SET, an
                      empty statement ";")                                  */
    DBRES_ROWS,    /* a statement returned rows (maybe none)                 */
    DBRES_ERROR,   /* the statement failed, or the connection did            */
};

enum dbconn_txn {
    DBCONN_IDLE,    /* outside a transaction block, nothing in flight         */
    DBCONN_INTRANS, /* idle inside a transaction block                         */
    DBCONN_INERROR, /* idle inside a failed transaction block                  */
    DBCONN_BUSY,    /* a command in flight, or the state cannot be known       */
};

/* The operations an implementation provides (every one required; an
 * implementation without a notion returns the neutral answer each names). */
struct dbconn_ops {
    /* statements */
    bool (*send)(struct dbconn *c, const char *sql);
    struct dbres *(*next)(struct dbconn *c);
    /* results */
    enum dbres_kind (*kind)(const struct dbconn *c, const struct dbres *r);
    int (*nrows)(const struct dbconn *c, const struct dbres *r);
    int (*ncols)(const struct dbconn *c, const struct dbres *r);
    const char *(*value)(const struct dbconn *c, const struct dbres *r, int row, int col);
    bool (*isnull)(const struct dbconn *c, const struct dbres *r, int row, int col);
    const char *(*sqlstate)(const struct dbconn *c, const struct dbres *r);
    const char *(*message)(const struct dbconn *c, const struct dbres *r);
    void (*free)(const struct dbconn *c, struct dbres *r);
    /* the connection */
    enum dbconn_txn (*txn)(const struct dbconn *c);
    int (*backend_pid)(const struct dbconn *c);   /* 0: unknown           */
    const char *(*last_error)(const struct dbconn *c); /* "": none         */
    bool (*nonblocking)(const struct dbconn *c);  /* false: always blocks  */
    bool (*set_nonblocking)(struct dbconn *c, bool on);
    int (*socket)(const struct dbconn *c);        /* -1: none              */
    const char *(*dbname)(const struct dbconn *c);/* NULL: unknown         */
    void (*address)(const struct dbconn *c, char *buf, size_t n);
    bool (*pipelined)(const struct dbconn *c);    /* false: no such mode   */
    void (*fail)(struct dbconn *c);
};

struct dbconn {
    const struct dbconn_ops *ops;
};

/* --- statements ---------------------------------------------------------------- */

/*
 * Send `sql` (one message; several statements separated by ';' run as one
 * implicit transaction unless they manage their own) without waiting for
 * the answer.  In the simple protocol, always (one Query message: no
 * portal, and no snapshot with it, outlives the statement; versions.h
 * says why that matters), as libpq's PQsendQuery.  False when it could not be sent (dbconn_error(c, NULL, ...)
 * says why).  Every result must then be read with dbconn_next until it
 * returns NULL before the next send.
 */
static inline bool dbconn_send(struct dbconn *c, const char *sql) MUSTCHECK;
static inline bool dbconn_send(struct dbconn *c, const char *sql)
{
    return c->ops->send(c, sql);
}

/* The next result of the message sent, blocking for it; NULL when there
 * is none left. */
static inline struct dbres *dbconn_next(struct dbconn *c) { return c->ops->next(c); }

/*
 * Run `sql` as PQexec would and keep one result: NULL when the message
 * could not be sent; else the first failure's result when a statement
 * failed (the later ones dropped), otherwise the last statement's, for the
 * caller to free (dbres_free).  Any results of an earlier message still
 * unread are read and dropped first (a few: a connection in COPY is not
 * drained, and the send then fails).
 */
struct dbres *dbconn_exec(struct dbconn *c, const char *sql);

/* Run `sql` (dbconn_exec); true when the kept result is not an error
 * (every statement completed).  Silent: the reason of a failure is
 * dbconn_error(c, NULL, ...) or dbconn_last_error(c). */
bool dbconn_run_ok(struct dbconn *c, const char *sql) MUSTCHECK;

/* --- results ------------------------------------------------------------------- */

/* A result's kind, size, text values (row and col in range; "" for a
 * NULL), NULL test, SQLSTATE ("" when none), the server's primary message
 * ("" when none: not an error, or the client's own) and release (NULL: a
 * no-op). */
static inline enum dbres_kind dbres_kind(const struct dbconn *c, const struct dbres *r)
{
    return c->ops->kind(c, r);
}
static inline int dbres_nrows(const struct dbconn *c, const struct dbres *r)
{
    return c->ops->nrows(c, r);
}
static inline int dbres_ncols(const struct dbconn *c, const struct dbres *r)
{
    return c->ops->ncols(c, r);
}
static inline const char *dbres_value(const struct dbconn *c, const struct dbres *r, int row,
                                      int col)
{
    return c->ops->value(c, r, row, col);
}
static inline bool dbres_isnull(const struct dbconn *c, const struct dbres *r, int row, int col)
{
    return c->ops->isnull(c, r, row, col);
}
static inline const char *dbres_sqlstate(const struct dbconn *c, const struct dbres *r)
{
    return c->ops->sqlstate(c, r);
}
static inline void dbres_free(const struct dbconn *c, struct dbres *r)
{
    if (r)
        c->ops->free(c, r);
}

/* `r` (may be NULL) is rows of exactly one row and one column whose text
 * is `want`. */
bool dbres_is_value(const struct dbconn *c, const struct dbres *r, const char *want);

/*
 * Why `r` failed (r NULL: why the connection did), as one line into `err`
 * (n > 0): the server's primary message from `r` when there is one, else
 * the first line of the connection's last error (dbconn_last_error), else
 * "the connection was lost" (a lost connection leaves an error without
 * fields).  Never empty.
 */
void dbconn_error(const struct dbconn *c, const struct dbres *r, char *err, size_t n);

/* --- the connection ----------------------------------------------------------- */

/* Where the connection stands (see enum dbconn_txn). */
static inline enum dbconn_txn dbconn_txn(const struct dbconn *c) { return c->ops->txn(c); }

/* The server process serving it (pg_backend_pid()); 0 when unknown. */
static inline int dbconn_backend_pid(const struct dbconn *c) { return c->ops->backend_pid(c); }

/* The connection's last error as the client holds it, whole (libpq's
 * PQerrorMessage: maybe several lines, a newline at the end); "" when
 * none.  For the log lines that quote it as it is. */
static inline const char *dbconn_last_error(const struct dbconn *c)
{
    return c->ops->last_error(c);
}

/*
 * Blocking mode, for the gate's own round trips on the app's connection
 * (an app may have made it non-blocking): dbconn_block makes its calls
 * block and returns whether they did not before; dbconn_unblock(c, was)
 * puts that back (a no-op for was = false).  A failure to change the mode
 * is logged (debug): the round trip then runs in the mode it found.
 */
bool dbconn_block(struct dbconn *c);
void dbconn_unblock(struct dbconn *c, bool was_nonblocking);

/* Its socket's descriptor (keepalive options: peer.h); -1 when none. */
static inline int dbconn_socket(const struct dbconn *c) { return c->ops->socket(c); }

/* The database it was asked for, in the client's spelling (the
 * connection string's; a PgBouncer alias stays one); NULL when unknown. */
static inline const char *dbconn_dbname(const struct dbconn *c) { return c->ops->dbname(c); }

/* Where it was asked to connect, as one string "host:port/dbname" (each
 * part "" when unknown) into buf (n > 0): connections made the same way
 * reach the same database (the gate's alias key). */
static inline void dbconn_address(const struct dbconn *c, char *buf, size_t n)
{
    c->ops->address(c, buf, n);
}

/* True when it is in pipeline mode (libpq 14+), where the gate cannot
 * slip a round trip of its own in. */
static inline bool dbconn_pipelined(const struct dbconn *c) { return c->ops->pipelined(c); }

/* Make it fail on purpose (on_timeout = fail, a signal during the wait):
 * its socket is shut down, so that its owner sees the server go away and
 * reports the connection bad.  Never closes it: that is the owner's. */
static inline void dbconn_fail(struct dbconn *c) { c->ops->fail(c); }

/* --- libpq -------------------------------------------------------------------- */

/* The libpq implementation: a PGconn driven through the real functions of
 * the copy that made it.  Lives where the caller puts it (its stack, or
 * inside struct ownconn); no allocation. */
struct dbconn_pq {
    struct dbconn base;
    const struct pq_api *pq;
    PGconn *pg;
};

/* Make `pc` stand for `pg` (reached through `pq`, neither NULL) and return
 * its seam, valid as long as `pc` and `pg` are. */
struct dbconn *dbconn_pq_init(struct dbconn_pq *pc, const struct pq_api *pq, PGconn *pg);

#endif
