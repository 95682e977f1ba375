/*
 * wirefd — see include/wirefd.h.
 *
 * Two tables: the per-fd state words (one uint16 per fd, in bss: a page
 * is touched only when an fd of its range is connected), and
 * WIREFD_CONNS connection slots, each a framing parser (wire.h) with a
 * try-lock.  A slot's life: taken (in_use) by the first write that
 * recognises a connection, fed under its lock, marked dead when its fd
 * closes or its stream ends; whoever holds or next takes the lock of a
 * dead slot frees it, so a slot is never freed under a feeder's feet.
 */
#include "wirefd.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "atfork.h"
#include "log.h"
#include "resolve.h"
#include "shim.h"
#include "wire.h"

_Atomic uint16_t wirefd_state[WIREFD_MAX];

struct wconn {
    _Atomic bool in_use;    /* taken                                              */
    _Atomic bool busy;      /* the try-lock (held from taking until set up)        */
    _Atomic bool dead;      /* to be freed by whoever holds or takes the lock      */
    _Atomic bool contended; /* someone met the lock held: the stream is not whole  */
    int fd;
    const char *transport;  /* "unix", "tcp"                                       */
    dev_t dev;              /* the socket's identity (fstat) when recognised:      */
    ino_t ino;              /* an fd closed behind our back and reused differs     */
    struct wire w;
};

static struct wconn conns[WIREFD_CONNS];

/* The pid whose states these are (set by the first connect, and in a
 * forked child): a vfork() child shares this memory and must not change
 * its parent's states. */
static _Atomic pid_t owner;

/* --- fork ------------------------------------------------------------------- */

/* The child follows none of its parent's connections: the same server
 * session is now in two processes' hands. */
static void atfork_child(void)
{
    atomic_store(&owner, getpid());
    for (int k = 0; k < WIREFD_CONNS; k++) {
        struct wconn *c = &conns[k];
        if (!atomic_load(&c->in_use))
            continue;
        uint16_t st = (uint16_t)(WIREFD_FOLLOWED + k);
        if ((unsigned)c->fd < WIREFD_MAX)
            atomic_compare_exchange_strong(&wirefd_state[c->fd], &st, WIREFD_NONE);
        atomic_store(&c->dead, false);
        atomic_store(&c->busy, true);
        atomic_store(&c->in_use, false);
    }
}

static pthread_once_t fork_once = PTHREAD_ONCE_INIT;
static void fork_register(void) { atfork_register("wirefd", NULL, NULL, atfork_child); }

/* True in the process that owns the states (not in a vfork child). */
static bool owned(void)
{
    pid_t o = atomic_load_explicit(&owner, memory_order_relaxed);
    return o == 0 || o == getpid();
}

/* --- connection slots -------------------------------------------------------- */

static bool conn_lock(struct wconn *c) { return !atomic_exchange(&c->busy, true); }

/* Free a dead slot if its lock can be had (the lock stays held: a freed
 * slot is locked until it is taken again). */
static void conn_reap(struct wconn *c)
{
    if (atomic_load(&c->dead) && conn_lock(c)) {
        atomic_store(&c->dead, false);
        atomic_store(&c->in_use, false);
    }
}

static void conn_unlock(struct wconn *c)
{
    atomic_store(&c->busy, false);
    conn_reap(c); /* (seq_cst: a closer that set dead meanwhile is seen) */
}

static void conn_kill(struct wconn *c)
{
    atomic_store(&c->dead, true);
    conn_reap(c);
}

/* A free slot for fd, locked; -1 when all are taken. */
static int conn_take(int fd, const char *transport)
{
    for (int k = 0; k < WIREFD_CONNS; k++) {
        struct wconn *c = &conns[k];
        bool f = false;
        if (!atomic_compare_exchange_strong(&c->in_use, &f, true))
            continue;
        atomic_store(&c->busy, true);
        atomic_store(&c->dead, false);
        atomic_store(&c->contended, false);
        c->fd = fd;
        c->transport = transport;
        wire_init(&c->w);
        return k;
    }
    return -1;
}

static struct wconn *conn_of(unsigned st)
{
    assert(st >= WIREFD_FOLLOWED && st - WIREFD_FOLLOWED < WIREFD_CONNS);
    return &conns[st - WIREFD_FOLLOWED];
}

/* --- following ------------------------------------------------------------------ */

/* Stop following fd (its stream ended for the parser, or cannot be
 * followed any more): one debug line, the fd back to NONE, the slot dead.
 * The caller holds the lock. */
static void stop(int fd, unsigned st, struct wconn *c, const char *why)
{
    struct stat sb;
    switch (c->w.phase) {
    case WIRE_TERMINATED:
        log_debug("wire: fd %d (%s): Terminate sent, followed to the end (%llu messages written, "
                  "%llu read, last status %c)",
                  fd, c->transport, (unsigned long long)wire_messages(&c->w, WIRE_FE),
                  (unsigned long long)wire_messages(&c->w, WIRE_BE),
                  wire_txn(&c->w) ? wire_txn(&c->w) : '-');
        break;
    case WIRE_TLS:
        log_debug("wire: fd %d: the server accepted SSLRequest: TLS, not followed in phase 1", fd);
        break;
    case WIRE_GSS:
        log_debug("wire: fd %d: the server accepted GSSENCRequest: GSSAPI encryption, passed through", fd);
        break;
    default:
        if (fstat(fd, &sb) != 0 || sb.st_dev != c->dev || sb.st_ino != c->ino) {
            /* (libuv closes with a raw system call: the fd number was reused) */
            log_debug("wire: fd %d: no longer the connection it was (closed unseen and reused); "
                      "not followed any more", fd);
            break;
        }
        log_debug("wire: fd %d: lost: %s; not followed any more", fd,
                  why ? why : wire_lost_reason(&c->w) ? wire_lost_reason(&c->w) : "?");
        break;
    }
    uint16_t expect = (uint16_t)st;
    atomic_compare_exchange_strong(&wirefd_state[fd], &expect, WIREFD_NONE);
    atomic_store(&c->dead, true);
}

/* Feed one direction's chunks; `why` non-NULL: the call itself loses the
 * stream (MSG_OOB, MSG_TRUNC, dup).  errno: untouched but where it stops
 * (saved there). */
static inline __attribute__((always_inline)) void follow(int fd, unsigned st, enum wire_dir dir,
                                                         const struct iovec *iov, int iovcnt,
                                                         size_t r, const char *why)
{
    struct wconn *c = conn_of(st);
    if (__builtin_expect(!conn_lock(c), 0)) {
        atomic_store(&c->contended, true); /* the holder's turn to notice */
        return;
    }
    if (__builtin_expect(!atomic_load_explicit(&c->in_use, memory_order_relaxed) ||
                             atomic_load_explicit(&c->dead, memory_order_relaxed) || c->fd != fd,
                         0)) {
        conn_unlock(c); /* a slot freed or reused meanwhile: not ours to feed */
        return;
    }
    if (__builtin_expect(atomic_load_explicit(&c->contended, memory_order_relaxed), 0) && !why)
        why = "two threads (or a signal handler) on the connection at once";
    if (__builtin_expect(!why, 1)) {
        if (iovcnt == 1) {
            wire_feed(&c->w, dir, iov[0].iov_base, r);
        } else {
            for (int i = 0; i < iovcnt && r > 0; i++) {
                size_t n = iov[i].iov_len < r ? iov[i].iov_len : r;
                wire_feed(&c->w, dir, iov[i].iov_base, n);
                r -= n;
            }
        }
    } else {
        c->w.phase = WIRE_LOST;
        c->w.lost = why;
    }
    if (__builtin_expect(wire_phase_is_end(c->w.phase), 0)) {
        int saved = errno;
        stop(fd, st, c, why);
        errno = saved;
    }
    conn_unlock(c);
}

/* The first write on a candidate: is it a PostgreSQL connection the wire
 * layer follows?  `first`: its first `n` bytes (up to 8).  Returns the
 * locked slot, or -1 (fd is NONE then). */
static int recognise_stream(int fd, enum wire_first kind, const void *ra);
static int recognise(int fd, const uint8_t *first, size_t n, const void *ra)
{
    enum wire_first kind = wire_first(first, n);
    if (kind == WIRE_FIRST_NONE || kind == WIRE_FIRST_CANCEL) {
        uint16_t cand = WIREFD_CANDIDATE;
        atomic_compare_exchange_strong(&wirefd_state[fd], &cand, WIREFD_NONE);
        return -1;
    }
    int saved = errno;
    int k = recognise_stream(fd, kind, ra);
    errno = saved;
    return k;
}

static int recognise_stream(int fd, enum wire_first kind, const void *ra)
{
    uint16_t cand = WIREFD_CANDIDATE;
    if (kind == WIRE_FIRST_NONE || kind == WIRE_FIRST_CANCEL)
        goto none;
    if (resolve_is_libpq(ra)) {
        log_debug("wire: fd %d: a libpq connection, left to the libpq layer", fd);
        goto none;
    }
    if (!shim_active())
        goto none;
    int type = 0;
    socklen_t tl = sizeof type;
    struct sockaddr_storage sa;
    socklen_t sl = sizeof sa;
    struct stat sb;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) != 0 || type != SOCK_STREAM ||
        getsockname(fd, (struct sockaddr *)&sa, &sl) != 0 || fstat(fd, &sb) != 0)
        goto none;
    const char *transport = sa.ss_family == AF_UNIX                               ? "unix"
                            : sa.ss_family == AF_INET || sa.ss_family == AF_INET6 ? "tcp"
                                                                                  : NULL;
    if (!transport)
        goto none;
    int k = conn_take(fd, transport);
    if (k < 0) {
        log_debug("wire: PostgreSQL connection on fd %d (%s) not followed: %d followed already", fd,
                  transport, WIREFD_CONNS);
        goto none;
    }
    conns[k].dev = sb.st_dev;
    conns[k].ino = sb.st_ino;
    if (!atomic_compare_exchange_strong(&wirefd_state[fd], &cand,
                                        (uint16_t)(WIREFD_FOLLOWED + k))) {
        conn_kill(&conns[k]); /* closed meanwhile */
        conn_unlock(&conns[k]);
        return -1;
    }
    log_debug("wire: PostgreSQL connection on fd %d (%s), followed%s", fd, transport,
              kind == WIRE_FIRST_SSL      ? " (SSLRequest first)"
              : kind == WIRE_FIRST_GSSENC ? " (GSSENCRequest first)"
                                          : "");
    return k;
none:
    atomic_compare_exchange_strong(&wirefd_state[fd], &cand, WIREFD_NONE);
    return -1;
}

/* A write on fd in state st: recognise a candidate, follow a followed fd. */
static void wrote(int fd, unsigned st, const struct iovec *iov, int iovcnt, size_t r, int flags,
                  const void *ra)
{
    if (st == WIREFD_CANDIDATE) {
        if (!owned())
            return;
        uint8_t first[8];
        size_t n = 0;
        for (int i = 0; i < iovcnt && n < sizeof first; i++)
            for (size_t j = 0; j < iov[i].iov_len && n < sizeof first; j++)
                first[n++] = ((const uint8_t *)iov[i].iov_base)[j];
        int k = recognise(fd, first, n, ra);
        if (k < 0)
            return;
        conn_unlock(&conns[k]); /* (follow takes it again: one path for the bytes) */
        st = WIREFD_FOLLOWED + (unsigned)k;
    }
    if (st >= WIREFD_FOLLOWED)
        follow(fd, st, WIRE_FE, iov, iovcnt, r,
               (flags & MSG_OOB) ? "out-of-band data written" : NULL);
}

/* --- the hooks ------------------------------------------------------------------ */

void wirefd_connected(int fd, int r, int err, const void *ra)
{
    if ((unsigned)fd >= WIREFD_MAX)
        return;
    int saved = errno;
    /* libpq's connections are the libpq layer's; and libpq may connect with
     * a mutex of the shim held (the gate's lock connection), when
     * pthread_atfork must not be called (atfork.h): decide that first */
    bool candidate = (r == 0 || err == EINPROGRESS || err == EINTR) && !resolve_is_internal(ra);
    if (candidate && atomic_load_explicit(&owner, memory_order_relaxed) == 0) {
        pthread_once(&fork_once, fork_register); /* a forked child owns its copy */
        pid_t none = 0;
        atomic_compare_exchange_strong(&owner, &none, getpid());
    }
    if (owned()) {
        unsigned old = atomic_exchange(&wirefd_state[fd],
                                       candidate ? WIREFD_CANDIDATE : WIREFD_NONE);
        if (old >= WIREFD_FOLLOWED)
            conn_kill(conn_of(old)); /* its fd was closed behind our back */
    }
    errno = saved;
}

void wirefd_wrote(int fd, unsigned st, const void *buf, size_t len, ssize_t r, int flags,
                  const void *ra)
{
    if (r <= 0 || !buf)
        return;
    struct iovec v = {.iov_base = (void *)buf, .iov_len = len};
    wrote(fd, st, &v, 1, (size_t)r, flags, ra);
}

void wirefd_wrotev(int fd, unsigned st, const struct iovec *iov, int iovcnt, ssize_t r, int flags,
                   const void *ra)
{
    if (r <= 0 || !iov || iovcnt <= 0)
        return;
    wrote(fd, st, iov, iovcnt, (size_t)r, flags, ra);
}

void wirefd_read(int fd, unsigned st, const void *buf, ssize_t r, int flags)
{
    if (r <= 0 || !buf || (flags & MSG_PEEK))
        return;
    struct iovec v = {.iov_base = (void *)buf, .iov_len = (size_t)r};
    follow(fd, st, WIRE_BE, &v, 1, (size_t)r,
           (flags & (MSG_OOB | MSG_TRUNC)) ? "out-of-band or discarded bytes read" : NULL);
}

void wirefd_readv(int fd, unsigned st, const struct iovec *iov, int iovcnt, ssize_t r, int flags)
{
    if (r <= 0 || !iov || iovcnt <= 0 || (flags & MSG_PEEK))
        return;
    follow(fd, st, WIRE_BE, iov, iovcnt, (size_t)r,
           (flags & (MSG_OOB | MSG_TRUNC)) ? "out-of-band or discarded bytes read" : NULL);
}

void wirefd_closing(int fd, unsigned st)
{
    (void)st;
    if ((unsigned)fd >= WIREFD_MAX)
        return;
    int saved = errno;
    if (owned()) {
        unsigned old = atomic_exchange(&wirefd_state[fd], WIREFD_NONE);
        if (old >= WIREFD_FOLLOWED) {
            struct wconn *c = conn_of(old);
            if (conn_lock(c)) {
                if (atomic_load(&c->in_use) && !atomic_load(&c->dead) && c->fd == fd)
                    log_debug("wire: fd %d (%s): closed, followed to the end (%llu messages "
                              "written, %llu read, last status %c)",
                              fd, c->transport, (unsigned long long)wire_messages(&c->w, WIRE_FE),
                              (unsigned long long)wire_messages(&c->w, WIRE_BE),
                              wire_txn(&c->w) ? wire_txn(&c->w) : '-');
                atomic_store(&c->dead, true);
                conn_unlock(c);
            } else {
                conn_kill(c);
            }
        }
    }
    errno = saved;
}

void wirefd_duplicated(int fd, unsigned st)
{
    int saved = errno;
    static const struct iovec none = {0};
    follow(fd, st, WIRE_FE, &none, 0, 0, "the fd was duplicated (dup): its stream is shared");
    errno = saved;
}

bool wirefd_followed(int fd) { return wirefd_get(fd) >= WIREFD_FOLLOWED; }
