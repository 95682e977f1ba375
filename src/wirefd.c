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
 *
 * The gate (phase 2a, at the end): each slot's flags word (wirefd_flags,
 * read inline by the wrappers), and under one mutex (hold_mu, taken only
 * when a flag is set) the app's bytes a held connection keeps, the bytes
 * kept for the app, and a leading connection's lock.  A gate works on its
 * own dup of the socket and pins the slot (never freed while pinned); it
 * stops when the app's fd is no longer that socket (gone()).  Once the
 * gate needs nothing more from a connection (unfollow()), its fd goes
 * back to NONE and its slot is marked dead (freed when unpinned).
 */
#include "wirefd.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/stat.h>
#include <unistd.h>

#include "atfork.h"
#include "log.h"
#include "resolve.h"
#include "shim.h"
#include "config.h"
#include "sysapi.h"
#include "wire.h"
#include "wireconn.h"
#include "sslapi.h"
#include "wiregate.h"

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
    bool tls_hello;         /* TLS accepted: the app's next write is its ClientHello */
    /* the gate (phase 2a): what the app's reads and writes look at first */
    _Atomic bool pinned;    /* a gate thread uses the slot: it is not freed under it */
    /* under hold_mu: */
    uint8_t *stash;         /* F_HELD: the app's bytes, reported written, not sent  */
    size_t stash_len;
    uint8_t *later;         /* F_LATER: bytes the app reads before the socket's     */
    size_t later_len, later_off;
    struct wiregate_lead lead; /* F_LEAD                                            */
    bool txn_seen;          /* F_LEAD: a transaction since the last look            */
};

/* Each slot's F_* word, beside the slots: the wrappers test it inline
 * (wirefd_gate_flags) before calling anything; 0 on the steady state. */
_Atomic unsigned wirefd_flags[WIREFD_CONNS];
#define FLAGS(c) wirefd_flags[(c) - conns]

enum {
    F_FIRST = WIREFD_F_FIRST,
    F_LEAD = WIREFD_F_LEAD,
    F_HELD = WIREFD_F_HELD,
    F_LATER = WIREFD_F_LATER,
    F_UNFOLLOW = WIREFD_F_UNFOLLOW,
};

/* The held state's bytes (stash, later, lead) of every connection: taken
 * only on a slow path (a flag set), never on the steady state. */
static pthread_mutex_t hold_mu = PTHREAD_MUTEX_INITIALIZER;

#define STASH_MAX (256u * 1024u) /* a bigger first write is gated inline (said) */

static struct wconn conns[WIREFD_CONNS];

/* The pid whose states these are (set by the first connect, and in a
 * forked child): a vfork() child shares this memory and must not change
 * its parent's states. */
static _Atomic pid_t owner;

static void hello_forget(void);

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
        atomic_store(&FLAGS(c), 0);
        atomic_store(&c->pinned, false);
        atomic_store(&c->in_use, false);
    }
    pthread_mutex_init(&hold_mu, NULL); /* (a thread of the parent's may have held it) */
    hello_forget();
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
    if (atomic_load(&c->dead) && !atomic_load(&c->pinned) && conn_lock(c)) {
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
        c->tls_hello = false;
        wire_init(&c->w);
        pthread_mutex_lock(&hold_mu); /* what a closed connection left */
        free(c->stash);
        free(c->later);
        c->stash = c->later = NULL;
        c->stash_len = c->later_len = c->later_off = 0;
        c->txn_seen = false;
        pthread_mutex_unlock(&hold_mu);
        atomic_store(&FLAGS(c), F_FIRST);
        return k;
    }
    return -1;
}

static struct wconn *conn_of(unsigned st)
{
    assert(st >= WIREFD_FOLLOWED && st - WIREFD_FOLLOWED < WIREFD_CONNS);
    return &conns[st - WIREFD_FOLLOWED];
}

/* --- TLS: which socket a ClientHello went out on ---------------------------------- */

/*
 * A TLS connection's plaintext is seen above the TLS layer (wiressl.h),
 * where asyncio's memory BIOs name no socket.  The socket is found by its
 * ClientHello: the first write after the server accepted SSLRequest is one
 * TLS record (content type 22, handshake type 1, ClientHello) whose
 * client random (32 bytes at offset 11) OpenSSL also gives for the SSL
 * object (SSL_get_client_random).  The last HELLOS of them are kept.
 */
#define HELLOS 64
struct hello {
    uint8_t random[32];
    int fd;
    dev_t dev;
    ino_t ino;
    bool used;
};
static struct hello hellos[HELLOS];
static unsigned hello_next;
static pthread_mutex_t hello_mu = PTHREAD_MUTEX_INITIALIZER;
static _Atomic bool tls_unseen_said;

/* (the child: the parent's sockets are not the child's to name) */
static void hello_forget(void)
{
    pthread_mutex_init(&hello_mu, NULL);
    memset(hellos, 0, sizeof hellos);
}

static void hello_note(const struct wconn *c, const struct iovec *iov, int iovcnt, size_t r)
{
    if (iovcnt < 1 || r < 43 || iov[0].iov_len < 43)
        return;
    const uint8_t *p = iov[0].iov_base;
    if (p[0] != 22 || p[1] != 3 || p[5] != 1)
        return;
    pthread_mutex_lock(&hello_mu);
    struct hello *h = &hellos[hello_next++ % HELLOS];
    memcpy(h->random, p + 11, 32);
    h->fd = c->fd;
    h->dev = c->dev;
    h->ino = c->ino;
    h->used = true;
    pthread_mutex_unlock(&hello_mu);
}

void wirefd_peer(int fd, char *buf, size_t n)
{
    assert(buf && n > 0);
    buf[0] = '\0';
    struct sockaddr_storage sa;
    socklen_t sl = sizeof sa;
    int saved = errno;
    if (getpeername(fd, (struct sockaddr *)&sa, &sl) != 0) {
        errno = saved;
        return;
    }
    errno = saved;
    char host[INET6_ADDRSTRLEN];
    if (sa.ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)&sa;
        if (inet_ntop(AF_INET, &in->sin_addr, host, sizeof host))
            snprintf(buf, n, "%s:%u", host, (unsigned)ntohs(in->sin_port));
    } else if (sa.ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&sa;
        if (inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host))
            snprintf(buf, n, "[%s]:%u", host, (unsigned)ntohs(in6->sin6_port));
    } else if (sa.ss_family == AF_UNIX && sl > offsetof(struct sockaddr_un, sun_path)) {
        const struct sockaddr_un *un = (const struct sockaddr_un *)&sa;
        size_t len = sl - offsetof(struct sockaddr_un, sun_path);
        if (un->sun_path[0] != '\0') /* (not an abstract or unnamed socket) */
            snprintf(buf, n, "%.*s", (int)strnlen(un->sun_path, len), un->sun_path);
    }
}

bool wirefd_tls_hello(const uint8_t random[32], int *fd, dev_t *dev, ino_t *ino)
{
    bool found = false;
    pthread_mutex_lock(&hello_mu);
    for (unsigned i = 0; i < HELLOS && !found; i++) {
        struct hello *h = &hellos[i];
        if (h->used && memcmp(h->random, random, 32) == 0) {
            *fd = h->fd;
            *dev = h->dev;
            *ino = h->ino;
            h->used = false;
            found = true;
        }
    }
    pthread_mutex_unlock(&hello_mu);
    return found;
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
        if (sslapi_visible()) {
            log_debug("wire: fd %d: the server accepted SSLRequest: TLS; followed above the TLS "
                      "layer (SSL_write_ex/SSL_read_ex)", fd);
        } else if (!atomic_exchange(&tls_unseen_said, true)) {
            log_warn("wire: fd %d: a PostgreSQL connection over TLS, and no shared libssl with "
                     "SSL_write_ex is loaded in this process (OpenSSL linked into the interpreter "
                     "statically, as python-build-standalone's?): its bytes cannot be seen, so "
                     "connections over TLS are not gated in this process", fd);
        } else {
            log_debug("wire: fd %d: TLS, its bytes cannot be seen; not gated", fd);
        }
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
    if (__builtin_expect(c->tls_hello, 0)) { /* TLS accepted: this is the ClientHello */
        int saved = errno;
        if (dir == WIRE_FE && !why)
            hello_note(c, iov, iovcnt, r);
        stop(fd, st, c, why);
        errno = saved;
        conn_unlock(c);
        return;
    }
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
        if (c->w.phase == WIRE_TLS && !why)
            c->tls_hello = true; /* followed up to the ClientHello (hello_note) */
        else
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
    if (!shim_config()->wire) {
        log_debug("wire: fd %d: a PostgreSQL start-up, not followed (wire = false)", fd);
        goto none;
    }
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

/* --- the gate (phase 2a) ---------------------------------------------------------- */

/* A gate's run on one connection: inline in the app's write (a blocking
 * socket), or in a detached thread (a non-blocking one, held meanwhile). */
struct gjob {
    struct wconn *c;
    int fd;        /* the app's number, for the lines and checks            */
    int dupfd;     /* the gate's own descriptor on the same socket          */
    char txn;
    uint32_t key_pid; /* the server's BackendKeyData pid (0: none): a pooler's differs */
    char db[WIRE_NAME_MAX];
    char peer[WIREGATE_PEER_MAX];
    char where[96];
};

static size_t iov_total(const struct iovec *iov, int iovcnt)
{
    size_t n = 0;
    for (int i = 0; i < iovcnt; i++)
        n += iov[i].iov_len;
    return n;
}

/* The first byte of the app's write, or -1 when it writes nothing. */
static int iov_first(const struct iovec *iov, int iovcnt)
{
    for (int i = 0; i < iovcnt; i++)
        if (iov[i].iov_len > 0 && iov[i].iov_base)
            return ((const uint8_t *)iov[i].iov_base)[0];
    return -1;
}

/* Keep bytes for the app (hold_mu held). */
static void later_add(struct wconn *c, uint8_t *b, size_t n)
{
    if (!b || n == 0) {
        free(b);
        return;
    }
    if (c->later_off < c->later_len) {
        uint8_t *m = realloc(c->later, c->later_len + n);
        if (!m) {
            free(b);
            log_warn("wire: fd %d: out of memory keeping %zu bytes for the app; shut down", c->fd,
                     n);
            (void)shutdown(c->fd, SHUT_RDWR);
            return;
        }
        memcpy(m + c->later_len, b, n);
        free(b);
        c->later = m;
        c->later_len += n;
    } else {
        free(c->later);
        c->later = b;
        c->later_len = n;
        c->later_off = 0;
    }
    atomic_fetch_or(&FLAGS(c), F_LATER);
}

/* c's app fd no longer is its socket (closed behind our back -- libuv
 * closes with a raw system call -- and maybe reused): mark c dead and the
 * fd NONE, so that the new file at that number is never taken for it. */
static bool gone(struct wconn *c, int fd)
{
    if (atomic_load(&c->dead))
        return true;
    struct stat sb;
    int saved = errno;
    bool same = fstat(fd, &sb) == 0 && sb.st_dev == c->dev && sb.st_ino == c->ino;
    errno = saved;
    if (same)
        return false;
    atomic_store(&c->dead, true);
    unsigned k = (unsigned)(c - conns);
    uint16_t expect = (uint16_t)(WIREFD_FOLLOWED + k);
    if ((unsigned)fd < WIREFD_MAX)
        atomic_compare_exchange_strong(&wirefd_state[fd], &expect, WIREFD_NONE);
    return true;
}

/* The gate needs nothing more from connection c on fd (it let it pass, did
 * not gate it, or its lock was released): stop following it, so that its
 * fd is NONE again -- the fast path, a load and a compare -- and its slot
 * is freed.  Sound because nothing of the wire layer looks at the
 * connection any more: no flag is left (F_FIRST, F_LEAD, F_HELD all
 * clear: the caller cleared them, and the held bytes went out), so the
 * parser's view of the stream is never asked again.  The one thing the
 * app still needs from the slot is the bytes kept for it (F_LATER): while
 * any are left, the connection stays followed with F_UNFOLLOW, and the
 * read that drains them unfollows it (wirefd_before_read).  A vfork child
 * (not the owner) leaves it to the parent (wirefd_before_write).
 * hold_mu held. */
static void unfollow(struct wconn *c, int fd, const char *why)
{
    unsigned f = atomic_load(&FLAGS(c));
    assert(!(f & (F_FIRST | F_LEAD | F_HELD)));
    if (atomic_load(&c->dead) || c->fd != fd)
        return; /* closed (seen or not) meanwhile: ended already */
    if ((f & F_LATER) && c->later_off < c->later_len) {
        atomic_fetch_or(&FLAGS(c), F_UNFOLLOW); /* deliver them first */
        return;
    }
    if (!owned()) {
        atomic_fetch_or(&FLAGS(c), F_UNFOLLOW);
        return;
    }
    uint16_t expect = (uint16_t)(WIREFD_FOLLOWED + (unsigned)(c - conns));
    if ((unsigned)fd >= WIREFD_MAX ||
        !atomic_compare_exchange_strong(&wirefd_state[fd], &expect, WIREFD_NONE))
        return; /* closed, or reset by a connect() after an unseen close: not ours */
    atomic_store(&FLAGS(c), 0);
    if (conn_lock(c)) { /* (a feeder of another thread's holds it: it frees the slot) */
        log_debug("wire: fd %d (%s): %s; not followed from here on (%llu messages written, "
                  "%llu read, last status %c)",
                  fd, c->transport, why, (unsigned long long)wire_messages(&c->w, WIRE_FE),
                  (unsigned long long)wire_messages(&c->w, WIRE_BE),
                  wire_txn(&c->w) ? wire_txn(&c->w) : '-');
        atomic_store(&c->dead, true);
        conn_unlock(c); /* (frees it, unless a gate's run still pins it) */
    } else {
        log_debug("wire: fd %d (%s): %s; not followed from here on", fd, c->transport, why);
        conn_kill(c);
    }
}

/* The gate's stop test: the app closed the connection (seen, or not). */
static bool job_stop(void *arg)
{
    struct gjob *j = arg;
    return gone(j->c, j->fd);
}

/* Run the gate on the job's connection (any thread): WIREGATE_PASS or
 * WIREGATE_LEAD (F_LEAD set then), or WIREGATE_FAIL when the connection
 * broke or was failed (the socket is shut down then). */
static enum wiregate_end gate_run(struct gjob *j, bool inline_wait)
{
    struct wireconn wc;
    struct dbconn *db = wireconn_init(&wc, j->dupfd, j->txn, j->where, job_stop, j);
    struct wiregate_lead lead;
    struct wiregate_hooks h = {.stop = job_stop, .arg = j};
    enum wiregate_end e = wiregate_first(db, j->db[0] ? j->db : NULL, j->peer, j->key_pid,
                                         j->where, &h, inline_wait, &lead);
    size_t n;
    uint8_t *later = wireconn_take_later(&wc, &n);
    bool ok = e != WIREGATE_FAIL && !wireconn_broken(&wc);
    wireconn_done(&wc);
    pthread_mutex_lock(&hold_mu);
    if (ok && !atomic_load(&j->c->dead)) {
        later_add(j->c, later, n);
        later = NULL;
        if (e == WIREGATE_LEAD) {
            j->c->lead = lead;
            j->c->txn_seen = false;
            atomic_fetch_or(&FLAGS(j->c), F_LEAD);
        }
    }
    pthread_mutex_unlock(&hold_mu);
    free(later);
    return ok ? e : WIREGATE_FAIL;
}

/* Write the held bytes out on the gate's descriptor, bounded (hold_mu
 * held).  False when the socket failed (then shut down, said). */
static bool stash_out(struct gjob *j)
{
    struct wconn *c = j->c;
    const uint8_t *p = c->stash;
    size_t n = c->stash_len;
    int waited = 0;
    while (n > 0) {
        ssize_t r = real_send()(j->dupfd, p, n, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (r > 0) {
            p += r, n -= (size_t)r;
            continue;
        }
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) &&
            waited < WIRECONN_IO_TIMEOUT_MS && !atomic_load(&c->dead)) {
            struct pollfd pf = {.fd = j->dupfd, .events = POLLOUT};
            (void)poll(&pf, 1, WIRECONN_POLL_MS);
            waited += WIRECONN_POLL_MS;
            continue;
        }
        if (!atomic_load(&c->dead))
            log_warn("wire: %s: the app's held bytes could not be written after the gate; the "
                     "connection was shut down", j->where);
        (void)shutdown(j->dupfd, SHUT_RDWR);
        return false;
    }
    return true;
}

/* The stash went out: the parser sees it as the app's bytes. */
static void stash_feed(struct gjob *j)
{
    struct wconn *c = j->c;
    if (!conn_lock(c)) {
        atomic_store(&c->contended, true);
        return;
    }
    if (atomic_load(&c->in_use) && !atomic_load(&c->dead) && c->fd == j->fd) {
        wire_feed(&c->w, WIRE_FE, c->stash, c->stash_len);
        if (wire_phase_is_end(c->w.phase)) {
            unsigned st = wirefd_get(j->fd);
            if (st >= WIREFD_FOLLOWED && conn_of(st) == c)
                stop(j->fd, st, c, NULL);
        }
    }
    conn_unlock(c);
}

static void *gate_thread(void *arg)
{
    struct gjob *j = arg;
    struct wconn *c = j->c;
    enum wiregate_end e = gate_run(j, false);
    bool ok = e != WIREGATE_FAIL, out = false;
    pthread_mutex_lock(&hold_mu);
    if (atomic_load(&c->dead)) {
        log_debug("wire: %s: closed by the app while the gate held it; the gate stopped",
                  j->where);
    } else if (ok && stash_out(j)) {
        stash_feed(j);
        out = true;
    } else if (ok) {
        /* (stash_out said it) */
    } else {
        log_debug("wire: %s: the gate failed the connection; the app's held bytes dropped",
                  j->where);
    }
    free(c->stash);
    c->stash = NULL;
    c->stash_len = 0;
    atomic_fetch_and(&FLAGS(c), ~(unsigned)F_HELD);
    /* the held bytes are out and fed, the app's reads and writes go to the
     * socket from here on: a connection not leading needs nothing more */
    if (out && e == WIREGATE_PASS)
        unfollow(c, j->fd, "the gate let it pass");
    pthread_mutex_unlock(&hold_mu);
    (void)real_close()(j->dupfd);
    free(j);
    atomic_store(&c->pinned, false);
    conn_reap(c);
    return NULL;
}

/* A job for connection c on fd (its lock held). NULL (said) when the
 * descriptor cannot be duplicated or memory is short. */
static struct gjob *job_new(struct wconn *c, int fd)
{
    struct gjob *j = calloc(1, sizeof *j);
    if (!j) {
        log_warn("wire: fd %d: out of memory; not gated", fd);
        return NULL;
    }
    j->dupfd = fcntl(fd, F_DUPFD_CLOEXEC, 0); /* (fcntl is not interposed) */
    if (j->dupfd < 0) {
        log_warn("wire: fd %d: cannot duplicate the socket for the gate (%s); not gated", fd,
                 strerror(errno));
        free(j);
        return NULL;
    }
    j->c = c;
    j->fd = fd;
    j->txn = wire_txn(&c->w);
    j->key_pid = wire_backend_pid(&c->w);
    const char *db = wire_database(&c->w);
    snprintf(j->db, sizeof j->db, "%s", db ? db : "");
    wirefd_peer(fd, j->peer, sizeof j->peer);
    snprintf(j->where, sizeof j->where, "asyncpg/pg8000 connection on fd %d, %s", fd,
             c->transport);
    return j;
}

/* The app's first statement on c, outside a transaction block: gate it.
 * Returns true when the call was answered (*r). Called with c's lock
 * held; returns with it released. */
static bool gate_first(struct wconn *c, int fd, const struct iovec *iov, int iovcnt, int flags,
                       ssize_t *r)
{
    /* decided already in this process for this StartupMessage's database
     * (wiregate_first would pass it without a round trip): pass here, with
     * no descriptor of the gate's and no thread */
    char where[96], peer[WIREGATE_PEER_MAX];
    snprintf(where, sizeof where, "asyncpg/pg8000 connection on fd %d, %s", fd, c->transport);
    wirefd_peer(fd, peer, sizeof peer);
    if (wiregate_decided(wire_database(&c->w), peer, where)) {
        conn_unlock(c);
        pthread_mutex_lock(&hold_mu);
        unfollow(c, fd, "the gate let it pass");
        pthread_mutex_unlock(&hold_mu);
        return false;
    }
    size_t total = iov_total(iov, iovcnt);
    int fl = fcntl(fd, F_GETFL);
    bool nonblocking = (flags & MSG_DONTWAIT) || (fl >= 0 && (fl & O_NONBLOCK));
    struct gjob *j = job_new(c, fd);
    if (!j) {
        conn_unlock(c);
        pthread_mutex_lock(&hold_mu);
        unfollow(c, fd, "not gated");
        pthread_mutex_unlock(&hold_mu);
        return false;
    }
    atomic_store(&c->pinned, true);
    if (nonblocking && total <= STASH_MAX) {
        uint8_t *copy = malloc(total ? total : 1);
        if (copy) {
            size_t k = 0;
            for (int i = 0; i < iovcnt; i++) {
                if (iov[i].iov_len)
                    memcpy(copy + k, iov[i].iov_base, iov[i].iov_len);
                k += iov[i].iov_len;
            }
            pthread_mutex_lock(&hold_mu);
            c->stash = copy;
            c->stash_len = total;
            atomic_fetch_or(&FLAGS(c), F_HELD);
            pthread_mutex_unlock(&hold_mu);
            conn_unlock(c);
            if (wiregate_thread(gate_thread, j)) {
                *r = (ssize_t)total; /* as if written: the gate thread writes it */
                return true;
            }
            log_warn("wire: %s: cannot start the gate's thread; not gated", j->where);
            pthread_mutex_lock(&hold_mu);
            free(c->stash);
            c->stash = NULL;
            c->stash_len = 0;
            atomic_fetch_and(&FLAGS(c), ~(unsigned)F_HELD);
            pthread_mutex_unlock(&hold_mu);
            goto drop;
        }
    }
    if (nonblocking)
        log_debug("wire: %s: a first write of %zu bytes, more than the %u the gate holds; gated "
                  "inline", j->where, total, STASH_MAX);
    conn_unlock(c);
    enum wiregate_end e = gate_run(j, true);
    if (e == WIREGATE_PASS) { /* the app's bytes go straight to the socket, not fed */
        pthread_mutex_lock(&hold_mu);
        unfollow(c, fd, "the gate let it pass");
        pthread_mutex_unlock(&hold_mu);
    }
    (void)real_close()(j->dupfd);
    free(j);
    atomic_store(&c->pinned, false);
    conn_reap(c);
    if (e == WIREGATE_FAIL) {
        *r = -1;
        errno = ECONNRESET; /* the connection was shut down: the app sees it lost */
        return true;
    }
    return false;
drop:
    (void)real_close()(j->dupfd);
    free(j);
    atomic_store(&c->pinned, false);
    conn_reap(c);
    pthread_mutex_lock(&hold_mu);
    unfollow(c, fd, "not gated");
    pthread_mutex_unlock(&hold_mu);
    return false;
}

/* A leading connection at an idle statement outside a transaction block,
 * after a transaction: release the lock when the version table is at the
 * target (inline: one round trip).  c's lock held; released on return. */
static bool settle(struct wconn *c, int fd, ssize_t *r)
{
    struct gjob *j = job_new(c, fd);
    if (!j) {
        conn_unlock(c);
        return false;
    }
    atomic_store(&c->pinned, true);
    conn_unlock(c);
    pthread_mutex_lock(&hold_mu);
    struct wiregate_lead lead = c->lead;
    pthread_mutex_unlock(&hold_mu);
    struct wireconn wc;
    struct dbconn *db = wireconn_init(&wc, j->dupfd, j->txn, j->where, job_stop, j);
    bool released = wiregate_settle(db, &lead, j->where);
    size_t n;
    uint8_t *later = wireconn_take_later(&wc, &n);
    bool ok = !wireconn_broken(&wc);
    wireconn_done(&wc);
    pthread_mutex_lock(&hold_mu);
    if (released)
        atomic_fetch_and(&FLAGS(c), ~(unsigned)F_LEAD);
    if (ok && !atomic_load(&c->dead))
        later_add(c, later, n);
    else
        free(later);
    /* the lock is released: the wire layer has nothing more to do here (the
     * app's statement goes straight to the socket) */
    if (ok && released)
        unfollow(c, fd, "its migration lock released");
    pthread_mutex_unlock(&hold_mu);
    (void)real_close()(j->dupfd);
    free(j);
    atomic_store(&c->pinned, false);
    conn_reap(c);
    if (!ok) {
        *r = -1;
        errno = ECONNRESET;
        return true;
    }
    return false;
}

bool wirefd_before_write(int fd, unsigned st, const struct iovec *iov, int iovcnt, int flags,
                         ssize_t *r)
{
    struct wconn *c = conn_of(st);
    unsigned f = atomic_load_explicit(&FLAGS(c), memory_order_acquire);
    if (__builtin_expect(f == 0, 1))
        return false;
    int saved = errno;
    if (f & F_HELD) {
        pthread_mutex_lock(&hold_mu);
        if ((atomic_load(&FLAGS(c)) & F_HELD) && c->fd == fd && !gone(c, fd)) {
            size_t total = iov_total(iov, iovcnt);
            if (c->stash_len + total > 4 * STASH_MAX) {
                pthread_mutex_unlock(&hold_mu);
                *r = -1;
                errno = EAGAIN; /* the gate still holds the connection */
                return true;
            }
            uint8_t *m = realloc(c->stash, c->stash_len + total + 1);
            if (!m) {
                pthread_mutex_unlock(&hold_mu);
                *r = -1;
                errno = EAGAIN;
                return true;
            }
            for (int i = 0; i < iovcnt; i++) {
                if (iov[i].iov_len)
                    memcpy(m + c->stash_len, iov[i].iov_base, iov[i].iov_len);
                c->stash_len += iov[i].iov_len;
            }
            c->stash = m;
            pthread_mutex_unlock(&hold_mu);
            *r = (ssize_t)total;
            errno = saved;
            return true;
        }
        pthread_mutex_unlock(&hold_mu);
        f = atomic_load(&FLAGS(c));
    }
    if ((f & (F_UNFOLLOW | F_LATER | F_HELD)) == F_UNFOLLOW && owned()) {
        /* decided, its kept bytes delivered (by a vfork child): unfollow */
        pthread_mutex_lock(&hold_mu);
        if (atomic_load(&FLAGS(c)) == F_UNFOLLOW && c->fd == fd)
            unfollow(c, fd, "the gate decided, its kept bytes delivered");
        pthread_mutex_unlock(&hold_mu);
        errno = saved;
        return false;
    }
    if (!(f & (F_FIRST | F_LEAD)) || !owned())
        return false;
    if (!conn_lock(c))
        return false; /* (follow marks it contended) */
    if (!atomic_load(&c->in_use) || atomic_load(&c->dead) || c->fd != fd ||
        atomic_load(&c->pinned)) {
        conn_unlock(c);
        return false;
    }
    int b = iov_first(iov, iovcnt);
    bool idle = wire_idle(&c->w);
    char txn = wire_txn(&c->w);
    bool answered = false;
    if (!idle || (b != 'Q' && b != 'P')) {
        conn_unlock(c);
    } else if (f & F_FIRST) {
        atomic_fetch_and(&FLAGS(c), ~(unsigned)F_FIRST);
        if (txn != 'I' || shim_config()->lock == LOCK_OFF) {
            if (txn != 'I')
                log_debug("wire: fd %d (%s): its first statement comes inside a transaction "
                          "block (status %c); not gated", fd, c->transport, txn);
            conn_unlock(c);
            pthread_mutex_lock(&hold_mu);
            unfollow(c, fd, "not gated");
            pthread_mutex_unlock(&hold_mu);
        } else {
            answered = gate_first(c, fd, iov, iovcnt, flags, r);
        }
    } else if (txn != 'I') { /* F_LEAD */
        pthread_mutex_lock(&hold_mu);
        c->txn_seen = true;
        pthread_mutex_unlock(&hold_mu);
        conn_unlock(c);
    } else {
        pthread_mutex_lock(&hold_mu);
        bool due = c->txn_seen;
        c->txn_seen = false;
        pthread_mutex_unlock(&hold_mu);
        if (due)
            answered = settle(c, fd, r);
        else
            conn_unlock(c);
    }
    if (!answered)
        errno = saved;
    return answered;
}

bool wirefd_before_read(int fd, unsigned st, const struct iovec *iov, int iovcnt, int flags,
                        ssize_t *r)
{
    struct wconn *c = conn_of(st);
    unsigned f = atomic_load_explicit(&FLAGS(c), memory_order_acquire);
    if (__builtin_expect(!(f & (F_HELD | F_LATER)), 1))
        return false;
    int saved = errno;
    pthread_mutex_lock(&hold_mu);
    f = atomic_load(&FLAGS(c));
    if (c->fd != fd || gone(c, fd)) {
        pthread_mutex_unlock(&hold_mu);
        errno = saved;
        return false;
    }
    if (f & F_HELD) { /* the gate is speaking on it: nothing for the app yet */
        pthread_mutex_unlock(&hold_mu);
        *r = -1;
        errno = EAGAIN;
        return true;
    }
    if (!(f & F_LATER) || c->later_off >= c->later_len) {
        pthread_mutex_unlock(&hold_mu);
        errno = saved;
        return false;
    }
    size_t k = 0, have = c->later_len - c->later_off;
    const uint8_t *src = c->later + c->later_off;
    for (int i = 0; i < iovcnt && k < have; i++) {
        size_t m = iov[i].iov_len < have - k ? iov[i].iov_len : have - k;
        if (m)
            memcpy(iov[i].iov_base, src + k, m);
        k += m;
    }
    if (!(flags & MSG_PEEK) && k > 0) {
        struct iovec v = {.iov_base = (void *)src, .iov_len = k};
        c->later_off += k;
        bool drained = c->later_off >= c->later_len;
        if (drained)
            atomic_fetch_and(&FLAGS(c), ~(unsigned)F_LATER);
        /* the app's parser sees them as read (the buffer stays until the slot's reuse) */
        follow(fd, st, WIRE_BE, &v, 1, k, NULL);
        /* decided, and the last kept byte delivered: unfollow (the app's next
         * read goes to the socket, which holds what comes after them) */
        if (drained && atomic_load(&FLAGS(c)) == F_UNFOLLOW)
            unfollow(c, fd, "the gate decided, its kept bytes delivered");
    }
    pthread_mutex_unlock(&hold_mu);
    *r = (ssize_t)k;
    errno = saved;
    return true;
}
