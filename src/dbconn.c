/*
 * dbconn — see include/dbconn.h: the seam's helpers, written against the
 * operations only, and its libpq implementation (a PGresult stands for a
 * result as it is; every libpq function through the copy's table).
 */
#include "dbconn.h"

#include <assert.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "log.h"

/* Results of an earlier message dbconn_exec reads and drops at most. */
#define DRAIN_MAX 64

struct dbres *dbconn_exec(struct dbconn *c, const char *sql)
{
    assert(c && sql);
    /* as PQexec: the rest of an earlier message first.  Bounded: a
     * connection in COPY answers with a COPY result each time it is asked
     * (libpq's PQexec gives up on it too); the send then fails. */
    struct dbres *left;
    for (int i = 0; i < DRAIN_MAX && (left = dbconn_next(c)) != NULL; i++)
        dbres_free(c, left);
    if (!dbconn_send(c, sql))
        return NULL;
    struct dbres *keep = NULL;
    for (struct dbres *r; (r = dbconn_next(c)) != NULL;) {
        if (keep && dbres_kind(c, keep) == DBRES_ERROR) {
            dbres_free(c, r); /* the first failure is the one to tell */
            continue;
        }
        dbres_free(c, keep);
        keep = r;
    }
    return keep;
}

bool dbconn_run_ok(struct dbconn *c, const char *sql)
{
    struct dbres *r = dbconn_exec(c, sql);
    bool ok = r && dbres_kind(c, r) != DBRES_ERROR;
    dbres_free(c, r);
    return ok;
}

bool dbres_is_value(const struct dbconn *c, const struct dbres *r, const char *want)
{
    return r && dbres_kind(c, r) == DBRES_ROWS && dbres_nrows(c, r) == 1 &&
           dbres_ncols(c, r) == 1 && strcmp(dbres_value(c, r, 0, 0), want) == 0;
}

/* The first line of `msg` (NULL: "") into err. */
static void first_line(const char *msg, char *err, size_t n)
{
    snprintf(err, n, "%.*s", (int)strcspn(msg ? msg : "", "\n"), msg ? msg : "");
}

void dbconn_error(const struct dbconn *c, const struct dbres *r, char *err, size_t n)
{
    assert(c && err && n > 0);
    const char *m = r ? c->ops->message(c, r) : NULL;
    first_line(m && *m ? m : dbconn_last_error(c), err, n);
    if (!err[0])
        snprintf(err, n, "the connection was lost");
}

bool dbconn_block(struct dbconn *c)
{
    if (!c->ops->nonblocking(c))
        return false;
    if (!c->ops->set_nonblocking(c, false))
        log_debug("cannot make the connection blocking for the gate's round trip: %s",
                  dbconn_last_error(c));
    return true;
}

void dbconn_unblock(struct dbconn *c, bool was_nonblocking)
{
    if (was_nonblocking && !c->ops->set_nonblocking(c, true))
        log_debug("cannot put the connection's non-blocking mode back: %s", dbconn_last_error(c));
}

/* --- libpq ------------------------------------------------------------------ */

#define PC(c) ((const struct dbconn_pq *)(const void *)(c))
#define RES(r) ((const PGresult *)(const void *)(r))

static bool pq_send(struct dbconn *c, const char *sql)
{
    return PC(c)->pq->PQsendQuery(PC(c)->pg, sql) == 1;
}

static struct dbres *pq_next(struct dbconn *c)
{
    return (struct dbres *)(void *)PC(c)->pq->PQgetResult(PC(c)->pg);
}

static enum dbres_kind pq_kind(const struct dbconn *c, const struct dbres *r)
{
    switch (PC(c)->pq->PQresultStatus(RES(r))) {
    case PGRES_COMMAND_OK:
    case PGRES_EMPTY_QUERY: return DBRES_COMMAND;
    case PGRES_TUPLES_OK: return DBRES_ROWS;
    default: return DBRES_ERROR;
    }
}

static int pq_nrows(const struct dbconn *c, const struct dbres *r)
{
    return PC(c)->pq->PQntuples(RES(r));
}

static int pq_ncols(const struct dbconn *c, const struct dbres *r)
{
    return PC(c)->pq->PQnfields(RES(r));
}

static const char *pq_value(const struct dbconn *c, const struct dbres *r, int row, int col)
{
    return PC(c)->pq->PQgetvalue(RES(r), row, col);
}

static bool pq_isnull(const struct dbconn *c, const struct dbres *r, int row, int col)
{
    return PC(c)->pq->PQgetisnull(RES(r), row, col) != 0;
}

static const char *pq_sqlstate(const struct dbconn *c, const struct dbres *r)
{
    const char *s = PC(c)->pq->PQresultErrorField(RES(r), PG_DIAG_SQLSTATE);
    return s ? s : "";
}

static const char *pq_message(const struct dbconn *c, const struct dbres *r)
{
    const char *m = PC(c)->pq->PQresultErrorField(RES(r), PG_DIAG_MESSAGE_PRIMARY);
    return m ? m : "";
}

static void pq_free(const struct dbconn *c, struct dbres *r)
{
    PC(c)->pq->PQclear((PGresult *)(void *)r);
}

static enum dbconn_txn pq_txn(const struct dbconn *c)
{
    switch (PC(c)->pq->PQtransactionStatus(PC(c)->pg)) {
    case PQTRANS_IDLE: return DBCONN_IDLE;
    case PQTRANS_INTRANS: return DBCONN_INTRANS;
    case PQTRANS_INERROR: return DBCONN_INERROR;
    default: return DBCONN_BUSY;
    }
}

static int pq_backend_pid(const struct dbconn *c) { return PC(c)->pq->PQbackendPID(PC(c)->pg); }

static const char *pq_last_error(const struct dbconn *c)
{
    const char *m = PC(c)->pq->PQerrorMessage(PC(c)->pg);
    return m ? m : "";
}

static bool pq_nonblocking(const struct dbconn *c)
{
    return PC(c)->pq->PQisnonblocking(PC(c)->pg) != 0;
}

static bool pq_set_nonblocking(struct dbconn *c, bool on)
{
    return PC(c)->pq->PQsetnonblocking(PC(c)->pg, on ? 1 : 0) == 0;
}

static int pq_socket(const struct dbconn *c) { return PC(c)->pq->PQsocket(PC(c)->pg); }

static const char *pq_dbname(const struct dbconn *c) { return PC(c)->pq->PQdb(PC(c)->pg); }

static void pq_address(const struct dbconn *c, char *buf, size_t n)
{
    const struct pq_api *pq = PC(c)->pq;
    const char *host = pq->PQhost ? pq->PQhost(PC(c)->pg) : NULL; /* libpq 10+ */
    const char *port = pq->PQport ? pq->PQport(PC(c)->pg) : NULL;
    snprintf(buf, n, "%s:%s/%s", host ? host : "", port ? port : "", pq->PQdb(PC(c)->pg));
}

static bool pq_pipelined(const struct dbconn *c)
{
    const struct pq_api *pq = PC(c)->pq; /* libpq 14+ */
    return pq->PQpipelineStatus && pq->PQpipelineStatus(PC(c)->pg) != PQ_PIPELINE_OFF;
}

/* The socket shut down, then one round trip: libpq finds the server gone
 * and marks the connection CONNECTION_BAD. */
static void pq_fail(struct dbconn *c)
{
    const struct pq_api *pq = PC(c)->pq;
    int fd = pq->PQsocket(PC(c)->pg);
    if (fd >= 0)
        shutdown(fd, SHUT_RDWR);
    PGresult *r = pq->PQexec(PC(c)->pg, ";");
    if (r)
        pq->PQclear(r);
}

static const struct dbconn_ops pq_ops = {
    .send = pq_send,
    .next = pq_next,
    .kind = pq_kind,
    .nrows = pq_nrows,
    .ncols = pq_ncols,
    .value = pq_value,
    .isnull = pq_isnull,
    .sqlstate = pq_sqlstate,
    .message = pq_message,
    .free = pq_free,
    .txn = pq_txn,
    .backend_pid = pq_backend_pid,
    .last_error = pq_last_error,
    .nonblocking = pq_nonblocking,
    .set_nonblocking = pq_set_nonblocking,
    .socket = pq_socket,
    .dbname = pq_dbname,
    .address = pq_address,
    .pipelined = pq_pipelined,
    .fail = pq_fail,
};

struct dbconn *dbconn_pq_init(struct dbconn_pq *pc, const struct pq_api *pq, PGconn *pg)
{
    assert(pc && pq && pg);
    pc->base.ops = &pq_ops;
    pc->pq = pq;
    pc->pg = pg;
    return &pc->base;
}
