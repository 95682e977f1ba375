/*
 * wireconn — see include/wireconn.h.
 *
 * One read buffer: fill() appends what the socket has (the real recv,
 * never blocking: MSG_DONTWAIT on a blocking socket too, then a bounded
 * poll), message() takes one whole backend message out of it.  A
 * result is built from RowDescription, DataRow... and ends at
 * CommandComplete (or is EmptyQueryResponse, or ErrorResponse alone);
 * ReadyForQuery ends the exchange, and whatever the buffer still holds
 * then was sent by the server on its own after it (the app's bytes are
 * not out yet): it is kept for the app.
 */
#include "wireconn.h"

#include <assert.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "log.h"
#include "sysapi.h"

struct dbres {
    enum dbres_kind kind;
    int nrows, ncols;
    size_t cap;          /* cells allocated                          */
    char **cells;        /* nrows * ncols, NULL for a SQL NULL        */
    char state[6];
    char *msg;           /* the primary message of an error ("" else) */
};

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static struct wireconn *wc_of(struct dbconn *c) { return (struct wireconn *)c; }
static const struct wireconn *cwc_of(const struct dbconn *c) { return (const struct wireconn *)c; }

/* --- the pure part -------------------------------------------------------------- */

bool wireconn_error_fields(const uint8_t *body, size_t n, char state[6], char *msg, size_t msz)
{
    assert(state && msg && msz > 0);
    state[0] = '\0';
    msg[0] = '\0';
    size_t i = 0;
    while (i < n && body[i] != 0) {
        uint8_t code = body[i++];
        const uint8_t *end = memchr(body + i, 0, n - i);
        if (!end)
            return false;
        size_t len = (size_t)(end - (body + i));
        if (code == 'C')
            snprintf(state, 6, "%.*s", (int)len, (const char *)body + i);
        else if (code == 'M')
            snprintf(msg, msz, "%.*s", (int)len, (const char *)body + i);
        i += len + 1;
    }
    return i < n; /* the closing NUL */
}

bool wireconn_datarow(const uint8_t *body, size_t n, int ncols, uint32_t *off, int32_t *len)
{
    if (n < 2 || (int)((uint32_t)body[0] << 8 | body[1]) != ncols)
        return false;
    size_t i = 2;
    for (int k = 0; k < ncols; k++) {
        if (n - i < 4)
            return false;
        uint32_t l = be32(body + i);
        i += 4;
        if (l == 0xffffffffu) {
            off[k] = 0;
            len[k] = -1;
            continue;
        }
        if (l > n - i || l > 0x3fffffffu)
            return false;
        off[k] = (uint32_t)i;
        len[k] = (int32_t)l;
        i += l;
    }
    return i == n;
}

/* --- breaking ----------------------------------------------------------------------- */

/* The stream is unknown from here: shut the socket down, say so once. */
static void wc_break(struct wireconn *wc, const char *why)
{
    snprintf(wc->err, sizeof wc->err, "%s", why);
    if (wc->broken)
        return;
    wc->broken = true;
    if (wc->io)
        wc->io->shut(wc->io->ctx);
    else if (shutdown(wc->fd, SHUT_RDWR) != 0 && errno != ENOTCONN)
        log_debug("wire: %s: shutdown: %s", wc->where, strerror(errno));
    log_warn("wire: %s: %s halfway through the shim's own exchange; the connection's state is "
             "unknown, so it was shut down", wc->where, why);
}

static bool stopped(const struct wireconn *wc)
{
    return wc->stop && wc->stop(wc->stop_arg);
}

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Wait until fd is ready for `ev`, in slices, bounded.  False (broken)
 * on a timeout, an error or stop. */
static bool wait_ready(struct wireconn *wc, short ev)
{
    long long deadline = now_ms() + WIRECONN_IO_TIMEOUT_MS;
    for (;;) {
        if (stopped(wc)) {
            snprintf(wc->err, sizeof wc->err, "the app closed the connection");
            wc->broken = true; /* the app's: nothing to shut down or say */
            return false;
        }
        if (wc->io) {
            int r = wc->io->wait(wc->io->ctx, ev, WIRECONN_POLL_MS);
            if (r > 0)
                return true;
            if (r < 0) {
                wc_break(wc, "the connection failed");
                return false;
            }
            if (now_ms() >= deadline) {
                wc_break(wc, "the server did not answer in time");
                return false;
            }
            continue;
        }
        struct pollfd p = {.fd = wc->fd, .events = ev};
        int r = poll(&p, 1, WIRECONN_POLL_MS);
        if (r > 0) {
            if (p.revents & (ev | POLLHUP | POLLERR))
                return true; /* (an error shows at the read or write) */
            if (p.revents & POLLNVAL) {
                wc_break(wc, "the socket went away");
                return false;
            }
        } else if (r < 0 && errno != EINTR) {
            wc_break(wc, "poll failed");
            return false;
        }
        if (now_ms() >= deadline) {
            wc_break(wc, "the server did not answer in time");
            return false;
        }
    }
}

/* --- sending -------------------------------------------------------------------------- */

static bool write_all(struct wireconn *wc, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t r = wc->io ? wc->io->write(wc->io->ctx, p, n)
                           : real_send()(wc->fd, p, n, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (r > 0) {
            p += r, n -= (size_t)r;
            continue;
        }
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (!wait_ready(wc, POLLOUT))
                return false;
            continue;
        }
        wc_break(wc, r == 0 ? "the connection was lost" : "a write failed");
        return false;
    }
    return true;
}

static bool wc_send(struct dbconn *c, const char *sql)
{
    struct wireconn *wc = wc_of(c);
    if (wc->broken)
        return false;
    if (wc->in_flight) {
        snprintf(wc->err, sizeof wc->err, "another command is already in progress");
        return false;
    }
    size_t n = strlen(sql) + 1;
    uint8_t *m = malloc(n + 5);
    if (!m) {
        snprintf(wc->err, sizeof wc->err, "out of memory");
        return false;
    }
    m[0] = 'Q';
    uint32_t len = (uint32_t)(n + 4);
    m[1] = (uint8_t)(len >> 24), m[2] = (uint8_t)(len >> 16), m[3] = (uint8_t)(len >> 8),
    m[4] = (uint8_t)len;
    memcpy(m + 5, sql, n);
    bool ok = write_all(wc, m, n + 5);
    free(m);
    if (ok)
        wc->in_flight = true;
    return ok;
}

/* --- reading ---------------------------------------------------------------------------- */

/* At least `need` unread bytes in the buffer. */
static bool fill(struct wireconn *wc, size_t need)
{
    while (wc->len - wc->off < need) {
        if (wc->off > 0 && wc->off == wc->len)
            wc->off = wc->len = 0;
        if (wc->cap - wc->len < 8192 || wc->cap < wc->off + need) {
            if (wc->off > 0) { /* compact first */
                memmove(wc->buf, wc->buf + wc->off, wc->len - wc->off);
                wc->len -= wc->off;
                wc->off = 0;
            }
            size_t cap = wc->cap ? wc->cap : 16384;
            while (cap - wc->len < 8192 || cap < need)
                cap *= 2;
            if (cap != wc->cap) {
                uint8_t *b = realloc(wc->buf, cap);
                if (!b) {
                    wc_break(wc, "out of memory");
                    return false;
                }
                wc->buf = b;
                wc->cap = cap;
            }
        }
        ssize_t r = wc->io ? wc->io->read(wc->io->ctx, wc->buf + wc->len, wc->cap - wc->len)
                           : real_recv()(wc->fd, wc->buf + wc->len, wc->cap - wc->len,
                                         MSG_DONTWAIT);
        if (r > 0) {
            wc->len += (size_t)r;
            continue;
        }
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (!wait_ready(wc, POLLIN))
                return false;
            continue;
        }
        wc_break(wc, r == 0 ? "the server closed the connection" : "a read failed");
        return false;
    }
    return true;
}

/* One whole backend message: its type, body and body length.  The body
 * stays valid until the next call. */
static bool message(struct wireconn *wc, uint8_t *type, const uint8_t **body, size_t *n)
{
    if (!fill(wc, 5))
        return false;
    const uint8_t *h = wc->buf + wc->off;
    uint32_t len = be32(h + 1);
    if (len < 4 || len > WIRECONN_MESSAGE_MAX) {
        wc_break(wc, "a backend message length out of range");
        return false;
    }
    if (!fill(wc, 1 + (size_t)len))
        return false;
    h = wc->buf + wc->off;
    *type = h[0];
    *body = h + 5;
    *n = len - 4;
    wc->off += 1 + (size_t)len;
    return true;
}

/* Keep `n` bytes for the app. */
static bool keep_later(struct wireconn *wc, const uint8_t *p, size_t n)
{
    if (n == 0)
        return true;
    if (wc->later_len + n > WIRECONN_LATER_MAX) {
        wc_break(wc, "too many asynchronous messages for the app");
        return false;
    }
    uint8_t *b = realloc(wc->later, wc->later_len + n);
    if (!b) {
        wc_break(wc, "out of memory");
        return false;
    }
    memcpy(b + wc->later_len, p, n);
    wc->later = b;
    wc->later_len += n;
    return true;
}

static struct dbres *res_new(enum dbres_kind kind, int ncols)
{
    struct dbres *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->kind = kind;
    r->ncols = ncols;
    return r;
}

static void wc_free(const struct dbconn *c, struct dbres *r)
{
    (void)c;
    if (!r)
        return;
    for (size_t i = 0; i < (size_t)r->nrows * (size_t)r->ncols; i++)
        free(r->cells[i]);
    free(r->cells);
    free(r->msg);
    free(r);
}

static bool add_row(struct wireconn *wc, struct dbres *r, const uint8_t *body, size_t n)
{
    uint32_t off[64];
    int32_t len[64];
    if (r->ncols > 64 || !wireconn_datarow(body, n, r->ncols, off, len)) {
        wc_break(wc, "a malformed DataRow");
        return false;
    }
    size_t need = (size_t)(r->nrows + 1) * (size_t)r->ncols;
    if (need > r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 16;
        while (cap < need)
            cap *= 2;
        char **cells = realloc(r->cells, cap * sizeof *cells);
        if (!cells) {
            wc_break(wc, "out of memory");
            return false;
        }
        r->cells = cells;
        r->cap = cap;
    }
    char **row = r->cells + (size_t)r->nrows * (size_t)r->ncols;
    for (int k = 0; k < r->ncols; k++) {
        row[k] = NULL;
        if (len[k] < 0)
            continue;
        row[k] = malloc((size_t)len[k] + 1);
        if (!row[k]) {
            for (int j = 0; j < k; j++)
                free(row[j]);
            wc_break(wc, "out of memory");
            return false;
        }
        memcpy(row[k], body + off[k], (size_t)len[k]);
        row[k][len[k]] = '\0';
    }
    r->nrows++;
    return true;
}

/* The exchange ended (ReadyForQuery): what the buffer still holds came
 * after it, on the server's own: the app's. */
static void exchange_over(struct wireconn *wc)
{
    wc->in_flight = false;
    if (wc->len > wc->off) {
        log_debug("wire: %s: %zu bytes the server sent after the shim's ReadyForQuery kept for "
                  "the app", wc->where, wc->len - wc->off);
        (void)keep_later(wc, wc->buf + wc->off, wc->len - wc->off);
    }
    wc->off = wc->len = 0;
}

static struct dbres *wc_next(struct dbconn *c)
{
    struct wireconn *wc = wc_of(c);
    while (wc->in_flight && !wc->broken) {
        uint8_t t;
        const uint8_t *b;
        size_t n;
        if (!message(wc, &t, &b, &n))
            break;
        switch (t) {
        case 'T': { /* RowDescription */
            if (n < 2 || wc->cur) {
                wc_break(wc, "an unexpected RowDescription");
                break;
            }
            wc->cur = res_new(DBRES_ROWS, (int)((uint32_t)b[0] << 8 | b[1]));
            if (!wc->cur)
                wc_break(wc, "out of memory");
            break;
        }
        case 'D': /* DataRow */
            if (!wc->cur) {
                wc_break(wc, "a DataRow without a RowDescription");
                break;
            }
            (void)add_row(wc, wc->cur, b, n);
            break;
        case 'C': { /* CommandComplete */
            struct dbres *r = wc->cur ? wc->cur : res_new(DBRES_COMMAND, 0);
            wc->cur = NULL;
            if (!r) {
                wc_break(wc, "out of memory");
                break;
            }
            return r;
        }
        case 'I': { /* EmptyQueryResponse */
            struct dbres *r = res_new(DBRES_COMMAND, 0);
            if (!r) {
                wc_break(wc, "out of memory");
                break;
            }
            return r;
        }
        case 'E': { /* ErrorResponse: the message's end, ReadyForQuery next */
            wc_free(c, wc->cur);
            wc->cur = NULL;
            struct dbres *r = res_new(DBRES_ERROR, 0);
            char msg[512];
            if (!r) {
                wc_break(wc, "out of memory");
                break;
            }
            if (!wireconn_error_fields(b, n, r->state, msg, sizeof msg)) {
                wc_free(c, r);
                wc_break(wc, "a malformed ErrorResponse");
                break;
            }
            r->msg = strdup(msg);
            snprintf(wc->err, sizeof wc->err, "%.200s", msg);
            return r;
        }
        case 'N': /* NoticeResponse: the shim's own statement's notice */
            break;
        case 'S': { /* ParameterStatus inside the shim's reply */
            const uint8_t *z = memchr(b, 0, n);
            log_debug("wire: %s: ParameterStatus %.*s inside the shim's reply, consumed",
                      wc->where, z ? (int)(z - b) : 0, (const char *)b);
            break;
        }
        case 'A': /* NotificationResponse: the app's (a LISTEN of its own) */
            (void)keep_later(wc, b - 5, n + 5);
            break;
        case 'Z': /* ReadyForQuery */
            if (n != 1 || (b[0] != 'I' && b[0] != 'T' && b[0] != 'E')) {
                wc_break(wc, "a malformed ReadyForQuery");
                break;
            }
            wc->txn = (char)b[0];
            if (wc->cur) {
                wc_free(c, wc->cur);
                wc->cur = NULL;
            }
            exchange_over(wc);
            return NULL;
        default: {
            char why[96];
            snprintf(why, sizeof why, "an unexpected backend message '%c'",
                     t >= 0x20 && t < 0x7f ? t : '?');
            wc_break(wc, why);
            break;
        }
        }
    }
    if (wc->cur) {
        wc_free(c, wc->cur);
        wc->cur = NULL;
    }
    return NULL;
}

/* --- the results and the connection -------------------------------------------------- */

static enum dbres_kind wc_kind(const struct dbconn *c, const struct dbres *r)
{
    (void)c;
    return r->kind;
}
static int wc_nrows(const struct dbconn *c, const struct dbres *r)
{
    (void)c;
    return r->nrows;
}
static int wc_ncols(const struct dbconn *c, const struct dbres *r)
{
    (void)c;
    return r->ncols;
}
static const char *wc_value(const struct dbconn *c, const struct dbres *r, int row, int col)
{
    (void)c;
    if (row < 0 || row >= r->nrows || col < 0 || col >= r->ncols)
        return "";
    const char *v = r->cells[(size_t)row * (size_t)r->ncols + (size_t)col];
    return v ? v : "";
}
static bool wc_isnull(const struct dbconn *c, const struct dbres *r, int row, int col)
{
    (void)c;
    if (row < 0 || row >= r->nrows || col < 0 || col >= r->ncols)
        return true;
    return r->cells[(size_t)row * (size_t)r->ncols + (size_t)col] == NULL;
}
static const char *wc_sqlstate(const struct dbconn *c, const struct dbres *r)
{
    (void)c;
    return r->state;
}
static const char *wc_message(const struct dbconn *c, const struct dbres *r)
{
    (void)c;
    return r->msg ? r->msg : "";
}
static enum dbconn_txn wc_txn(const struct dbconn *c)
{
    const struct wireconn *wc = cwc_of(c);
    if (wc->broken || wc->in_flight)
        return DBCONN_BUSY;
    return wc->txn == 'T' ? DBCONN_INTRANS : wc->txn == 'E' ? DBCONN_INERROR : DBCONN_IDLE;
}
static int wc_backend_pid(const struct dbconn *c)
{
    (void)c;
    return 0;
}
static const char *wc_last_error(const struct dbconn *c) { return cwc_of(c)->err; }
static bool wc_nonblocking(const struct dbconn *c)
{
    (void)c;
    return false; /* it polls: blocking as the seam sees it */
}
static bool wc_set_nonblocking(struct dbconn *c, bool on)
{
    (void)c;
    (void)on;
    return true;
}
static int wc_socket(const struct dbconn *c) { return cwc_of(c)->fd; }
static const char *wc_dbname(const struct dbconn *c)
{
    (void)c;
    return NULL;
}
static void wc_address(const struct dbconn *c, char *buf, size_t n)
{
    (void)c;
    if (n)
        buf[0] = '\0';
}
static bool wc_pipelined(const struct dbconn *c)
{
    (void)c;
    return false;
}
static void wc_fail(struct dbconn *c)
{
    struct wireconn *wc = wc_of(c);
    if (!wc->broken) {
        wc->broken = true;
        snprintf(wc->err, sizeof wc->err, "failed on purpose");
        if (wc->io)
            wc->io->shut(wc->io->ctx);
        else
            (void)shutdown(wc->fd, SHUT_RDWR);
    }
}

static const struct dbconn_ops wire_ops = {
    .send = wc_send,
    .next = wc_next,
    .kind = wc_kind,
    .nrows = wc_nrows,
    .ncols = wc_ncols,
    .value = wc_value,
    .isnull = wc_isnull,
    .sqlstate = wc_sqlstate,
    .message = wc_message,
    .free = wc_free,
    .txn = wc_txn,
    .backend_pid = wc_backend_pid,
    .last_error = wc_last_error,
    .nonblocking = wc_nonblocking,
    .set_nonblocking = wc_set_nonblocking,
    .socket = wc_socket,
    .dbname = wc_dbname,
    .address = wc_address,
    .pipelined = wc_pipelined,
    .fail = wc_fail,
};

static struct dbconn *init(struct wireconn *wc, const struct wireconn_io *io, int fd, char txn,
                           const char *where, bool (*stop)(void *), void *stop_arg)
{
    memset(wc, 0, sizeof *wc);
    wc->base.ops = &wire_ops;
    wc->fd = fd;
    wc->io = io;
    wc->txn = txn;
    wc->where = where;
    wc->stop = stop;
    wc->stop_arg = stop_arg;
    return &wc->base;
}

struct dbconn *wireconn_init(struct wireconn *wc, int fd, char txn, const char *where,
                             bool (*stop)(void *), void *stop_arg)
{
    assert(wc && fd >= 0 && where);
    return init(wc, NULL, fd, txn, where, stop, stop_arg);
}

struct dbconn *wireconn_init_io(struct wireconn *wc, const struct wireconn_io *io, int fd,
                                char txn, const char *where, bool (*stop)(void *),
                                void *stop_arg)
{
    assert(wc && io && io->read && io->write && io->wait && io->shut && where);
    return init(wc, io, fd, txn, where, stop, stop_arg);
}

bool wireconn_broken(const struct wireconn *wc) { return wc->broken; }

uint8_t *wireconn_take_later(struct wireconn *wc, size_t *n)
{
    uint8_t *b = wc->later;
    *n = wc->later_len;
    wc->later = NULL;
    wc->later_len = 0;
    return b;
}

void wireconn_done(struct wireconn *wc)
{
    if (wc->cur)
        wc_free(&wc->base, wc->cur);
    wc->cur = NULL;
    free(wc->buf);
    free(wc->later);
    wc->buf = wc->later = NULL;
    wc->len = wc->off = wc->cap = wc->later_len = 0;
}
