/*
 * wirefd — which file descriptors carry a PostgreSQL connection the shim
 * follows on the wire, and following them (phase 1 of issue 22: observing);
 * and holding one at its first statement while the wire gate runs on it
 * (phase 2a: wirefd_before_write/_read below, wiregate.h).
 *
 * A per-fd state table, indexed by fd (fds below WIREFD_MAX; a higher fd is
 * never followed), read with one load by every interposed I/O call:
 *   WIREFD_NONE       0: not a candidate: the fast path, a load and a
 *                        compare.  Every fd starts here, and any fd the
 *                        process did not connect() itself (files, pipes,
 *                        stdio, accepted sockets) stays here.
 *   WIREFD_CANDIDATE  1: the process connect()ed this socket and has
 *                        written nothing on it yet.  Its first write
 *                        decides: a StartupMessage, SSLRequest or
 *                        GSSENCRequest (wire_first) on a stream socket, not
 *                        written by libpq -> followed; anything else (and a
 *                        CancelRequest) -> NONE for good.
 *   WIREFD_FOLLOWED+k:   followed, connection slot k: every byte written
 *                        and read goes through the framing parser (wire.h).
 * A followed connection whose stream ends for the parser (TLS accepted,
 * GSSAPI encryption, lost) logs one debug line and goes back to NONE.  So
 * does one the gate needs nothing more from (phase 2a: "not followed from
 * here on"): once its first statement was let pass or not gated, or, for
 * a leading connection, once its lock was released -- after the bytes the
 * gate kept for the app (F_LATER) were read, and never while it is held.
 * The steady state of a decided connection is the NONE path's.
 * close() and dup2/dup3 onto an fd reset it to NONE first; connect()
 * makes it a candidate again (an fd number closed behind the shim's back,
 * by fclose or close_range, is reused that way).  dup() of a followed fd
 * shares its stream: the original stops being followed ("lost").
 *
 * Connections made by libpq are the libpq layer's (interpose.c): a connect()
 * or a first write whose caller lies inside a libpq copy (resolve.h) leaves
 * the fd NONE, so nothing is followed twice.  A process where the shim is
 * inactive (shim.h) follows nothing.
 *
 * Logging: debug only, so the app cannot tell (one line when a connection
 * is recognised, one when it ends or stops being followed).
 *
 * Safety, since every program the shim is preloaded into runs these on
 * every read and write: errno and the real call's result are never
 * changed; the NONE path is async-signal-safe and lock-free (a signal
 * handler writing to a self-pipe costs a load and a compare); a followed
 * connection is fed under a per-connection try-lock (a second thread, or a
 * signal handler, meeting it busy makes the connection lost rather than
 * wait); after fork() the child follows none of its parent's connections;
 * a vfork() child (same memory, different pid) never changes the parent's
 * states.
 */
#ifndef MIGSHIM_WIREFD_H
#define MIGSHIM_WIREFD_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#define WIREFD_MAX 65536  /* fds followed: 0 .. WIREFD_MAX-1 (the table: 128 KiB of bss) */
#define WIREFD_CONNS 256  /* connections followed at once                              */

enum {
    WIREFD_NONE = 0,
    WIREFD_CANDIDATE = 1,
    WIREFD_FOLLOWED = 16, /* + the connection's slot */
};

/* The table (hidden: the wrappers load it directly). */
extern __attribute__((visibility("hidden"))) _Atomic uint16_t wirefd_state[WIREFD_MAX];

/* fd's state, WIREFD_NONE for an fd outside the table.  One compare and
 * one load. */
static inline unsigned wirefd_get(int fd)
{
    if (__builtin_expect((unsigned)fd >= WIREFD_MAX, 0))
        return WIREFD_NONE;
    return atomic_load_explicit(&wirefd_state[fd], memory_order_relaxed);
}

/*
 * The hooks the libc wrappers (interpose_libc.c) call, each only when
 * wirefd_get(fd) says there is something to do, after the real call, with
 * its result `r`; `ra` is the app's return address (who called).  None of
 * them changes errno.
 */

/* connect(fd, ...) returned r (0, or -1 with EINPROGRESS for a
 * non-blocking socket: both make fd a candidate).  Called for every
 * connect. */
void wirefd_connected(int fd, int r, int err, const void *ra);

/* The app wrote `r` > 0 bytes of `buf` (`len` bytes offered) on fd, state
 * `st` (CANDIDATE or FOLLOWED+k).  `flags`: send's (MSG_OOB loses the
 * stream). */
void wirefd_wrote(int fd, unsigned st, const void *buf, size_t len, ssize_t r, int flags,
                  const void *ra);
/* The same, gathered (writev, sendmsg). */
void wirefd_wrotev(int fd, unsigned st, const struct iovec *iov, int iovcnt, ssize_t r, int flags,
                   const void *ra);

/* The app read `r` > 0 bytes into `buf` on followed fd (state `st` >=
 * WIREFD_FOLLOWED).  `flags`: recv's (MSG_PEEK: not consumed, not fed;
 * MSG_OOB, MSG_TRUNC lose the stream). */
void wirefd_read(int fd, unsigned st, const void *buf, ssize_t r, int flags);
void wirefd_readv(int fd, unsigned st, const struct iovec *iov, int iovcnt, ssize_t r, int flags);

/* fd is about to be closed, or replaced by dup2/dup3 (state `st` !=
 * NONE): it stops being followed, and is NONE from now on. */
void wirefd_closing(int fd, unsigned st);

/* fd (state `st` >= FOLLOWED) was duplicated by dup(): the stream is
 * shared, the original stops being followed. */
void wirefd_duplicated(int fd, unsigned st);

/* Each followed connection's gate flags (hidden: the wrappers load them
 * directly), by slot: */
enum {
    WIREFD_F_FIRST = 1, /* the app's first statement not met yet: gate it                */
    WIREFD_F_LEAD = 2,  /* this connection holds the migration lock: release it when due */
    WIREFD_F_HELD = 4,  /* the gate runs in a thread: reads EAGAIN, writes kept          */
    WIREFD_F_LATER = 8, /* bytes kept for the app (wireconn_take_later)                  */
    WIREFD_F_UNFOLLOW = 16, /* decided: NONE once F_LATER's bytes are read (or, if a     */
                            /* vfork child read them, at the owner's next write)         */
};
extern __attribute__((visibility("hidden"))) _Atomic unsigned wirefd_flags[WIREFD_CONNS];

/* Does a write (read) on followed state `st` need wirefd_before_write
 * (wirefd_before_read)?  One load: on the steady state, no. */
static inline bool wirefd_write_watched(unsigned st)
{
    return atomic_load_explicit(&wirefd_flags[st - WIREFD_FOLLOWED], memory_order_acquire) != 0;
}
static inline bool wirefd_read_watched(unsigned st)
{
    return atomic_load_explicit(&wirefd_flags[st - WIREFD_FOLLOWED], memory_order_acquire) &
           (WIREFD_F_HELD | WIREFD_F_LATER);
}

/*
 * The gate (phase 2a: wiregate.h).  Before the app writes on followed fd
 * (state `st`): at its first statement (idle, a Query or Parse at a
 * message boundary, outside a transaction block) the gate runs on the
 * connection before the app's bytes go out -- inline on a blocking socket;
 * on a non-blocking one the bytes are kept, reported written, and a
 * detached thread gates the connection, then writes them (the connection
 * is held meanwhile: see wirefd_before_read).  A leading connection at an
 * idle statement after a transaction has its lock released once the
 * version table is at the target.  True when the call was answered here
 * (*r its result, errno set for -1: EAGAIN while held and full,
 * ECONNRESET when the gate broke the connection); false: make the real
 * call (then wirefd_wrote as ever).  One load on the steady state.
 */
bool wirefd_before_write(int fd, unsigned st, const struct iovec *iov, int iovcnt, int flags,
                         ssize_t *r);

/* Before the app reads on followed fd: held by the gate -> -1/EAGAIN (the
 * app's level-triggered poll wakes it again when its reply comes); bytes
 * the gate kept for the app (asynchronous messages met in its exchange)
 * -> copied into iov first, fed to the parser.  True when answered (*r),
 * false: make the real call.  One load on the steady state. */
bool wirefd_before_read(int fd, unsigned st, const struct iovec *iov, int iovcnt, int flags,
                        ssize_t *r);

/*
 * The socket a TLS connection's ClientHello went out on: the first write
 * after the server accepted SSLRequest on a followed fd carried the client
 * random `random` (32 bytes).  True with the fd and the socket's identity
 * (fstat's dev and ino then: an fd closed and reused differs), the entry
 * forgotten; false when no such write was seen (the last 64 are kept).
 */
bool wirefd_tls_hello(const uint8_t random[32], int *fd, dev_t *dev, ino_t *ino);

/*
 * The address of the server at the other end of socket `fd`, as text into
 * buf (n bytes): "127.0.0.1:5432", "[::1]:5432", or a Unix socket's path;
 * "" when it cannot be told (getpeername failed, an unnamed socket).
 */
void wirefd_peer(int fd, char *buf, size_t n);

/* For tests and the bench: is fd followed right now? */
bool wirefd_followed(int fd);

#endif
