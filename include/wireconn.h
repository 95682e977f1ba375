/*
 * wireconn — the connection seam (dbconn.h) on a PostgreSQL connection the
 * wire layer follows (wirefd.h): the shim's own statements on the socket
 * of an asyncpg or pg8000 connection, in the simple protocol, at an idle
 * point (issue 22, phase 2a).
 *
 * What it is for: the wire gate (wiregate.h) runs the same lock protocol
 * (lock.h's lock_step), version reads (versions.h) and holder look
 * (holder.h) as the libpq layer, on the app's own connection, before the
 * app's first statement goes out.  A struct wireconn is that connection
 * as the seam sees it: send() writes one Query message, next() reads the
 * backend's messages up to ReadyForQuery and hands back each statement's
 * result (RowDescription + DataRow... + CommandComplete, EmptyQueryResponse,
 * ErrorResponse with its SQLSTATE 'C' and message 'M').
 *
 * What it promises:
 *   - every byte goes through the real libc functions (sysapi.h: never a
 *     wrapper, never by name; send/recv with MSG_DONTWAIT, so a blocking
 *     socket never blocks it, and MSG_NOSIGNAL), on the descriptor it was given (the gate
 *     works on a dup() of the app's: a close() by the app never makes it
 *     touch a reused number);
 *   - it reads only the replies to what it sent: the app's bytes are held
 *     until the shim is done, so what the server sends after the shim's
 *     ReadyForQuery can only be asynchronous (a notice, a notification, a
 *     parameter change): such bytes, and a NotificationResponse inside the
 *     shim's reply, are handed to the caller (wireconn_take_later) for the
 *     app to read first -- nothing of the app's is dropped;
 *   - NoticeResponse inside the shim's reply is consumed; ParameterStatus
 *     too, with a debug line (the app does not learn of it);
 *   - every wait is bounded: a poll of at most WIRECONN_IO_TIMEOUT_MS in
 *     all for one message, in slices of WIRECONN_POLL_MS, and the caller's
 *     stop test is asked after each slice (the app closed its fd);
 *   - a stream that stops making sense, a lost connection or a timeout
 *     halfway through an exchange leaves the stream unknown: the socket is
 *     shut down (SHUT_RDWR) with one warn line, and the connection reports
 *     itself broken (wireconn_broken) -- the app then sees its connection
 *     lost, never a wrong byte.
 *
 * What it must never do: close the descriptor (its owner's), block without
 * a bound, log a statement's parameters or anything of the app's.
 *
 * Thread safety: one thread at a time on one wireconn.  Memory: results
 * are malloc'ed (dbres_free), the read buffer too (wireconn_done).
 *
 *   struct wireconn wc;
 *   struct dbconn *c = wireconn_init(&wc, dupfd, 'I', "fd 7, tcp", closed, job);
 *   ... lock_step(c, ...) ...
 *   wireconn_done(&wc);
 */
#ifndef MIGSHIM_WIRECONN_H
#define MIGSHIM_WIRECONN_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "compiler.h"
#include "dbconn.h"

#define WIRECONN_IO_TIMEOUT_MS 30000 /* one message's bound: the server stopped answering */
#define WIRECONN_POLL_MS 20          /* the stop flag is looked at this often             */
#define WIRECONN_LATER_MAX 65536     /* asynchronous bytes kept for the app at most       */
#define WIRECONN_MESSAGE_MAX (16u << 20) /* a bigger message in reply to the shim's
                                            statements is no answer to them (its length
                                            is garbage): the stream is unknown */

/*
 * Another way to move the bytes than recv/send on a socket (a TLS
 * connection's plaintext: wiressl.h).  Each call is non-blocking:
 *   read   up to n bytes into buf: > 0 their count, 0 the peer closed, -1
 *          with errno EAGAIN (nothing yet) or another errno (failed);
 *   write  up to n bytes: > 0 their count, -1 with errno EAGAIN or another;
 *   wait   until read (ev POLLIN) or write (POLLOUT) may make progress, at
 *          most ms milliseconds: > 0 ready, 0 not yet, -1 failed;
 *   shut   end the connection for the app as well (the stream is unknown):
 *          never closes a descriptor.
 */
struct wireconn_io {
    ssize_t (*read)(void *ctx, void *buf, size_t n);
    ssize_t (*write)(void *ctx, const void *buf, size_t n);
    int (*wait)(void *ctx, short ev, int ms);
    void (*shut)(void *ctx);
    void *ctx;
};

struct wireconn {
    struct dbconn base;
    int fd;                    /* the socket (not owned; -1: unknown, io moves the bytes) */
    const struct wireconn_io *io; /* NULL: recv/send/poll on fd                        */
    char txn;                  /* the last ReadyForQuery's status                 */
    bool in_flight;            /* a Query sent, its ReadyForQuery not read yet    */
    bool broken;               /* the stream is unknown: shut down                */
    bool (*stop)(void *);      /* asked while waiting: true to give up (may be NULL) */
    void *stop_arg;
    const char *where;         /* "fd 7, tcp": for the lines                      */
    uint8_t *buf;              /* bytes read, not yet taken                        */
    size_t len, off, cap;
    struct dbres *cur;         /* the result being built (RowDescription seen)    */
    uint8_t *later;            /* bytes for the app (asynchronous messages)       */
    size_t later_len;
    char err[256];             /* the last failure, one line                       */
};

/*
 * Make `wc` stand for the followed connection on `fd` (blocking or not: it
 * polls), idle with ReadyForQuery status `txn` ('I', 'T', 'E'); `where`
 * names it in log lines (kept, not copied); `stop(stop_arg)` (stop may be
 * NULL) is asked while waiting: true gives up (the connection then
 * reports itself broken, silently: the app's end, not the stream's).
 * Returns its seam.
 */
struct dbconn *wireconn_init(struct wireconn *wc, int fd, char txn, const char *where,
                             bool (*stop)(void *), void *stop_arg);

/*
 * The same, the bytes moved by `io` (kept, not copied) instead of a
 * socket's recv/send; `fd` is the socket underneath when known (-1 if
 * not: dbconn_socket's answer).
 */
struct dbconn *wireconn_init_io(struct wireconn *wc, const struct wireconn_io *io, int fd,
                                char txn, const char *where, bool (*stop)(void *),
                                void *stop_arg);

/* The stream became unknown (or the connection was lost, or stop was set)
 * halfway through an exchange: the socket has been shut down. */
bool wireconn_broken(const struct wireconn *wc);

/* The bytes the app must read before anything else from the socket
 * (asynchronous messages the shim met), moved to the caller: *n their
 * length; NULL when none.  The caller frees them. */
uint8_t *wireconn_take_later(struct wireconn *wc, size_t *n);

/* Free what `wc` holds (never closes the descriptor). */
void wireconn_done(struct wireconn *wc);

/* --- the pure part, for the unit tests ------------------------------------- */

/*
 * The fields of an ErrorResponse's body (`n` bytes): its SQLSTATE ('C')
 * into state (6 bytes) and its primary message ('M') into msg (msz > 0),
 * each "" when absent.  False when the body is malformed (a field not
 * NUL-terminated).
 */
bool wireconn_error_fields(const uint8_t *body, size_t n, char state[6], char *msg, size_t msz)
    MUSTCHECK;

/*
 * A DataRow's body (`n` bytes) of `ncols` columns: each value's offset
 * and length into off[] and len[] (-1: NULL).  False when malformed (a
 * count other than ncols, a length past the end).
 */
bool wireconn_datarow(const uint8_t *body, size_t n, int ncols, uint32_t *off, int32_t *len)
    MUSTCHECK;

#endif
