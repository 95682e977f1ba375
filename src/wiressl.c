/*
 * wiressl — see include/wiressl.h.
 *
 * One table of followed SSL objects under one mutex (mu) and one condition
 * (cv).  A connection held by a gate thread has a channel: `out` (the
 * gate's bytes for the server, written by the app's thread), `in` (the
 * server's bytes for the gate, read by the app's thread), and two
 * counters: `fed` (bumped by the app's thread each time it adds to `in`)
 * and `seen` (the `fed` the gate thread had taken all of when it last
 * started to wait for more).  The app's thread may go back to its event
 * loop once the gate waits having seen everything fed (it needs the
 * server's next reply), or once it is finished.
 */
#include "wiressl.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "atfork.h"
#include "config.h"
#include "log.h"
#include "shim.h"
#include "wire.h"
#include "wireconn.h"
#include "wirefd.h"
#include "wiregate.h"

_Atomic unsigned wiressl_live;

enum job { JOB_NONE, JOB_FIRST, JOB_SETTLE };

struct tconn {
    SSL *ssl;             /* NULL: a free slot                                     */
    pid_t pid;            /* the process that follows it (fork: the child does not) */
    struct wire w;        /* the plaintext, both ways                              */
    bool first;           /* the app's first statement not met yet                 */
    bool lead;            /* holds the migration lock                              */
    bool txn_seen;        /* (leading) a transaction since the last look            */
    bool held;            /* a gate thread runs: the app's writes are kept          */
    bool dead;            /* SSL_free'd: the slot waits for its thread              */
    bool pinned;          /* a gate thread uses the slot                            */
    bool finished;        /* the gate thread is done (end below)                    */
    bool broken;          /* the channel is broken: the stream is unknown           */
    bool fail_app;        /* answer the app's next call with a failure              */
    bool unfollow_later;  /* decided: not followed once `later` is delivered        */
    bool starved;         /* the gate thread waits for the server                   */
    bool synth;           /* SSL_get_error answers synth_err for our last answer    */
    int synth_err;
    enum job job;
    enum wiregate_end end;
    struct wiregate_lead lead_info;
    unsigned long fed, seen;
    uint8_t *stash;       /* the app's kept bytes                                  */
    size_t stash_len;
    uint8_t *out;         /* the gate's bytes for the server                       */
    size_t out_len;
    uint8_t *in;          /* the server's bytes for the gate                       */
    size_t in_len, in_off;
    uint8_t *later;       /* bytes for the app, first                               */
    size_t later_len, later_off;
    int fd;               /* the socket underneath (-1: unknown), when it was        */
    dev_t dev;            /* recognised (dev, ino: an fd closed and reused differs) */
    ino_t ino;
    char txn;             /* the status the gate starts from                        */
    uint32_t key_pid;
    struct dbconn *gate_conn; /* the gate thread's connection (its idle slices)     */
    char db[CONFIG_NAME_MAX];
    char peer[WIREGATE_PEER_MAX]; /* the server's address (wirefd_peer; "": unknown) */
    char where[96];
};

static struct tconn conns[WIRESSL_CONNS];
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static pthread_once_t fork_once = PTHREAD_ONCE_INIT;

/* --- fork -------------------------------------------------------------------------- */

static void atfork_prepare(void) { pthread_mutex_lock(&mu); }
static void atfork_parent(void) { pthread_mutex_unlock(&mu); }
static void atfork_child(void)
{
    /* the parent's connections are the parent's; their threads are gone */
    pthread_mutex_init(&mu, NULL);
    pthread_cond_init(&cv, NULL);
    for (size_t i = 0; i < WIRESSL_CONNS; i++) {
        struct tconn *t = &conns[i];
        free(t->stash);
        free(t->out);
        free(t->in);
        free(t->later);
        memset(t, 0, sizeof *t);
    }
    atomic_store(&wiressl_live, 0);
}
static void fork_register(void)
{
    atfork_register("wiressl", atfork_prepare, atfork_parent, atfork_child);
}

/* --- the table (mu held) ----------------------------------------------------------- */

static struct tconn *find(const SSL *s)
{
    pid_t me = getpid();
    for (size_t i = 0; i < WIRESSL_CONNS; i++)
        if (conns[i].ssl == s && !conns[i].dead && conns[i].pid == me)
            return &conns[i];
    return NULL;
}

static void slot_free(struct tconn *t)
{
    free(t->stash);
    free(t->out);
    free(t->in);
    free(t->later);
    memset(t, 0, sizeof *t);
    atomic_fetch_sub(&wiressl_live, 1);
}

/* Stop following t (its thread, if any, frees the slot when it ends). */
static void unfollow(struct tconn *t, const char *why)
{
    log_debug("wire: %s: %s; not followed from here on", t->where, why);
    t->dead = true;
    pthread_cond_broadcast(&cv);
    if (!t->pinned)
        slot_free(t);
}

static bool append(uint8_t **b, size_t *len, const void *p, size_t n)
{
    if (n == 0)
        return true;
    uint8_t *m = realloc(*b, *len + n);
    if (!m)
        return false;
    memcpy(m + *len, p, n);
    *b = m;
    *len += n;
    return true;
}

/* --- the real calls ------------------------------------------------------------------ */

/* All n bytes through the real SSL_write_ex (a memory BIO takes them at
 * once; a blocking socket blocks).  False on a failure. */
static bool write_all(SSL *s, const uint8_t *p, size_t n)
{
    __typeof__(SSL_write_ex) *w = real_SSL_write_ex();
    while (n > 0) {
        size_t k = 0;
        if (!w || w(s, p, n, &k) != 1 || k == 0)
            return false;
        p += k, n -= k;
    }
    return true;
}

/* --- the channel: the gate thread's side (wireconn_io) ------------------------------- */

static ssize_t chan_read(void *ctx, void *buf, size_t n)
{
    struct tconn *t = ctx;
    pthread_mutex_lock(&mu);
    ssize_t r;
    if (t->dead || t->broken) {
        errno = ECONNRESET;
        r = -1;
    } else if (t->in_off == t->in_len) {
        errno = EAGAIN;
        r = -1;
    } else {
        size_t k = t->in_len - t->in_off < n ? t->in_len - t->in_off : n;
        memcpy(buf, t->in + t->in_off, k);
        t->in_off += k;
        if (t->in_off == t->in_len)
            t->in_off = t->in_len = 0;
        r = (ssize_t)k;
    }
    pthread_mutex_unlock(&mu);
    return r;
}

static ssize_t chan_write(void *ctx, const void *buf, size_t n)
{
    struct tconn *t = ctx;
    pthread_mutex_lock(&mu);
    ssize_t r = (ssize_t)n;
    if (t->dead || t->broken) {
        errno = ECONNRESET;
        r = -1;
    } else if (!append(&t->out, &t->out_len, buf, n)) {
        errno = ENOMEM;
        r = -1;
    }
    pthread_mutex_unlock(&mu);
    return r;
}

static int chan_wait(void *ctx, short ev, int ms)
{
    struct tconn *t = ctx;
    if (ev & POLLOUT)
        return 1;
    pthread_mutex_lock(&mu);
    int r = 1;
    if (!t->dead && !t->broken && t->in_off == t->in_len) {
        t->seen = t->fed;
        t->starved = true;
        pthread_cond_broadcast(&cv);
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += (long)ms * 1000000L;
        ts.tv_sec += ts.tv_nsec / 1000000000L;
        ts.tv_nsec %= 1000000000L;
        (void)pthread_cond_timedwait(&cv, &mu, &ts);
        t->starved = false;
        r = (t->dead || t->broken || t->in_off < t->in_len) ? 1 : 0;
    }
    pthread_mutex_unlock(&mu);
    return r;
}

/* Is t's socket still the one it was recognised on?  (false when unknown) */
static bool same_socket(const struct tconn *t)
{
    struct stat sb;
    int saved = errno;
    bool same = t->fd >= 0 && fstat(t->fd, &sb) == 0 && sb.st_dev == t->dev &&
                sb.st_ino == t->ino;
    errno = saved;
    return same;
}

static void chan_shut(void *ctx)
{
    struct tconn *t = ctx;
    pthread_mutex_lock(&mu);
    t->broken = true;
    t->fail_app = true;
    pthread_cond_broadcast(&cv);
    /* the app's loop may not call again: end the socket, so that it sees
     * its connection lost (asyncio: EOF, then its SSL_read_ex fails) */
    if (same_socket(t))
        (void)shutdown(t->fd, SHUT_RDWR);
    pthread_mutex_unlock(&mu);
}

/* The gate's stop test: the app freed the SSL object, or closed its
 * socket (asyncpg's terminate(): the object lives on, the socket not). */
static bool chan_stop(void *ctx)
{
    struct tconn *t = ctx;
    pthread_mutex_lock(&mu);
    bool d = t->dead || (t->fd >= 0 && !same_socket(t));
    if (d && !t->dead && t->held)
        log_debug("wire: %s: closed by the app while the gate held it; the gate stopped",
                  t->where);
    if (d)
        t->dead = true; /* (the slot is freed by its thread: pinned) */
    pthread_mutex_unlock(&mu);
    return d;
}

/* The gate thread waits for another connection's decision: a slice spent
 * in a server round trip, whose reply is what wakes the app's loop to
 * move the gate's next statement (a wait of the thread's own would leave
 * the app asleep).  False when the connection broke. */
static bool chan_idle(void *ctx)
{
    struct tconn *t = ctx;
    return t->gate_conn && dbconn_run_ok(t->gate_conn, "SELECT pg_catalog.pg_sleep(0.05)");
}

/* --- the direct way: a blocking socket, in the app's thread ---------------------------- */

struct direct {
    SSL *s;
    int fd;
};

static ssize_t direct_read(void *ctx, void *buf, size_t n)
{
    struct direct *d = ctx;
    __typeof__(SSL_has_pending) *hp = real_SSL_has_pending();
    if (!(hp && hp(d->s))) {
        struct pollfd p = {.fd = d->fd, .events = POLLIN};
        if (poll(&p, 1, 0) == 0) {
            errno = EAGAIN;
            return -1;
        }
    }
    size_t k = 0;
    if (real_SSL_read_ex()(d->s, buf, n, &k) == 1)
        return (ssize_t)k;
    int e = real_SSL_get_error()(d->s, 0);
    if (e == SSLAPI_ERROR_WANT_READ || e == SSLAPI_ERROR_WANT_WRITE) {
        errno = EAGAIN;
        return -1;
    }
    if (e == SSLAPI_ERROR_ZERO_RETURN)
        return 0;
    errno = ECONNRESET;
    return -1;
}

static ssize_t direct_write(void *ctx, const void *buf, size_t n)
{
    struct direct *d = ctx;
    size_t k = 0;
    if (real_SSL_write_ex()(d->s, buf, n, &k) == 1)
        return (ssize_t)k;
    int e = real_SSL_get_error()(d->s, 0);
    errno = (e == SSLAPI_ERROR_WANT_READ || e == SSLAPI_ERROR_WANT_WRITE) ? EAGAIN : ECONNRESET;
    return -1;
}

static int direct_wait(void *ctx, short ev, int ms)
{
    struct direct *d = ctx;
    __typeof__(SSL_has_pending) *hp = real_SSL_has_pending();
    if ((ev & POLLIN) && hp && hp(d->s))
        return 1;
    struct pollfd p = {.fd = d->fd, .events = ev};
    int r = poll(&p, 1, ms);
    if (r < 0 && errno == EINTR)
        return 0;
    if (r > 0 && (p.revents & POLLNVAL))
        return -1;
    return r;
}

static void direct_shut(void *ctx)
{
    struct direct *d = ctx;
    (void)shutdown(d->fd, SHUT_RDWR);
}

/* --- the gate ---------------------------------------------------------------------------- */

/* Run t's job on `c` (any thread; t pinned).  Returns its end. */
static enum wiregate_end run_job(struct tconn *t, enum job job, struct dbconn *c, bool inline_wait,
                                 bool *released)
{
    struct wiregate_lead lead = {0};
    *released = false;
    if (job == JOB_SETTLE) {
        pthread_mutex_lock(&mu);
        lead = t->lead_info;
        pthread_mutex_unlock(&mu);
        *released = wiregate_settle(c, &lead, t->where);
        return WIREGATE_LEAD;
    }
    /* a gate thread on a memory BIO spends its waits for another
     * connection's decision in server round trips (chan_idle) */
    struct wiregate_hooks h = {.stop = chan_stop, .idle = inline_wait ? NULL : chan_idle,
                               .arg = t};
    t->gate_conn = inline_wait ? NULL : c;
    enum wiregate_end e = wiregate_first(c, t->db[0] ? t->db : NULL, t->peer, t->key_pid,
                                         t->where, &h, inline_wait, &lead);
    t->gate_conn = NULL;
    if (e == WIREGATE_LEAD) {
        pthread_mutex_lock(&mu);
        t->lead_info = lead;
        pthread_mutex_unlock(&mu);
    }
    return e;
}

static void *gate_thread(void *arg)
{
    struct tconn *t = arg;
    struct wireconn_io io = {.read = chan_read, .write = chan_write, .wait = chan_wait,
                             .shut = chan_shut, .ctx = t};
    struct wireconn wc;
    struct dbconn *c = wireconn_init_io(&wc, &io, -1, t->txn, t->where, chan_stop, t);
    bool released;
    enum wiregate_end e = run_job(t, t->job, c, false, &released);
    size_t n;
    uint8_t *later = wireconn_take_later(&wc, &n);
    bool broken = wireconn_broken(&wc);
    wireconn_done(&wc);
    pthread_mutex_lock(&mu);
    if (broken || e == WIREGATE_FAIL) {
        t->fail_app = !t->dead;
        e = WIREGATE_FAIL;
    } else if (!t->dead) {
        /* bytes the exchange met after its last ReadyForQuery, then whatever
         * was fed and not read: both the app's, in that order */
        uint8_t *rest = NULL;
        size_t rn = 0;
        if (!append(&rest, &rn, later, n) ||
            !append(&rest, &rn, t->in + t->in_off, t->in_len - t->in_off)) {
            free(rest);
            rest = NULL;
            rn = 0;
            t->fail_app = true;
            e = WIREGATE_FAIL;
            log_warn("wire: %s: out of memory after the gate; the connection is failed",
                     t->where);
        }
        t->in_off = t->in_len = 0;
        if (rn) {
            if (!append(&t->later, &t->later_len, rest, rn))
                t->fail_app = true;
            free(rest);
        }
        if (t->job == JOB_SETTLE && released)
            t->lead = false;
        else if (t->job == JOB_FIRST && e == WIREGATE_LEAD)
            t->lead = true;
    }
    free(later);
    t->end = e;
    t->finished = true;
    t->pinned = false;
    pthread_cond_broadcast(&cv);
    if (t->dead)
        slot_free(t);
    pthread_mutex_unlock(&mu);
    return NULL;
}

/* Start t's job in a thread, the app's bytes kept (mu held).  False
 * (said) when it cannot start: nothing kept then. */
static bool start_job(struct tconn *t, enum job job, const void *buf, size_t num)
{
    uint8_t *copy = malloc(num ? num : 1);
    if (!copy) {
        log_warn("wire: %s: out of memory; not gated", t->where);
        return false;
    }
    memcpy(copy, buf, num);
    t->stash = copy;
    t->stash_len = num;
    t->job = job;
    t->held = true;
    t->pinned = true;
    t->finished = false;
    t->starved = false;
    t->fed = t->seen = 0;
    t->txn = wire_txn(&t->w);
    bool started = wiregate_thread(gate_thread, t);
    if (!started) {
        log_warn("wire: %s: cannot start the gate's thread; not gated", t->where);
        free(t->stash);
        t->stash = NULL;
        t->stash_len = 0;
        t->held = t->pinned = false;
        t->job = JOB_NONE;
    }
    return started;
}

/* The gate finished (mu held, t->finished): the app's kept bytes go out,
 * the connection is decided.  Unlocks mu while it writes. */
static void conclude(struct tconn *t)
{
    assert(t->finished && !t->pinned);
    uint8_t *stash = t->stash;
    size_t n = t->stash_len;
    t->stash = NULL;
    t->stash_len = 0;
    t->held = false;
    t->finished = false;
    enum job job = t->job;
    t->job = JOB_NONE;
    if (t->fail_app || t->end == WIREGATE_FAIL) {
        t->fail_app = true;
        log_debug("wire: %s: the gate failed the connection; the app's held bytes dropped",
                  t->where);
        free(stash);
        return;
    }
    SSL *s = t->ssl;
    pthread_mutex_unlock(&mu);
    bool ok = write_all(s, stash, n);
    pthread_mutex_lock(&mu);
    if (t->dead || t->ssl != s) { /* freed meanwhile (the app's own thread: not expected) */
        free(stash);
        return;
    }
    if (!ok) {
        log_warn("wire: %s: the app's held bytes could not be written after the gate; the "
                 "connection is failed", t->where);
        t->fail_app = true;
        free(stash);
        return;
    }
    wire_feed(&t->w, WIRE_FE, stash, n);
    free(stash);
    if (!t->lead) {
        const char *why = job == JOB_FIRST ? "the gate let it pass" : "its migration lock released";
        if (t->later_off < t->later_len)
            t->unfollow_later = true;
        else
            unfollow(t, why);
    }
}

/*
 * The app's thread moves the channel (mu held): wait until the gate thread
 * has taken everything fed and waits for the server, or is finished
 * (bounded), then write what it wrote.  Unlocks mu while it writes.
 */
static void pump(struct tconn *t)
{
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += WIRESSL_PUMP_MS / 1000;
    dl.tv_nsec += (long)(WIRESSL_PUMP_MS % 1000) * 1000000L;
    if (dl.tv_nsec >= 1000000000L)
        dl.tv_sec++, dl.tv_nsec -= 1000000000L;
    while (!t->dead && !t->finished && !(t->starved && t->seen == t->fed) && !t->broken) {
        if (pthread_cond_timedwait(&cv, &mu, &dl) == ETIMEDOUT) {
            log_debug("wire: %s: the gate thread did not answer in %d ms; back to the app's "
                      "loop", t->where, WIRESSL_PUMP_MS);
            break;
        }
    }
    if (t->dead || !t->out_len)
        return;
    uint8_t *out = t->out;
    size_t n = t->out_len;
    t->out = NULL;
    t->out_len = 0;
    SSL *s = t->ssl;
    pthread_mutex_unlock(&mu);
    bool ok = write_all(s, out, n);
    pthread_mutex_lock(&mu);
    free(out);
    if (!ok && !t->dead) {
        log_warn("wire: %s: the gate's statement could not be written; the connection is "
                 "failed", t->where);
        t->broken = true;
        t->fail_app = true;
        pthread_cond_broadcast(&cv);
    }
}

/* An answer of ours for a call that failed: SSL_get_error says `err`. */
static int synth(struct tconn *t, int err)
{
    t->synth = true;
    t->synth_err = err;
    if (err == SSLAPI_ERROR_SYSCALL)
        errno = ECONNRESET;
    return 0;
}

/* Bytes kept for the app, into buf (mu held): their count. */
static size_t deliver(struct tconn *t, void *buf, size_t num)
{
    size_t k = t->later_len - t->later_off;
    if (k > num)
        k = num;
    memcpy(buf, t->later + t->later_off, k);
    wire_feed(&t->w, WIRE_BE, t->later + t->later_off, k);
    t->later_off += k;
    if (t->later_off == t->later_len) {
        free(t->later);
        t->later = NULL;
        t->later_off = t->later_len = 0;
        if (t->unfollow_later)
            unfollow(t, "the gate decided, its kept bytes delivered");
    }
    return k;
}

/* A blocking socket's gate, inline (mu held on entry and return; t pinned
 * meanwhile). */
static void run_inline(struct tconn *t, enum job job, int fd)
{
    t->pinned = true;
    t->txn = wire_txn(&t->w);
    pthread_mutex_unlock(&mu);
    struct direct d = {.s = t->ssl, .fd = fd};
    struct wireconn_io io = {.read = direct_read, .write = direct_write, .wait = direct_wait,
                             .shut = direct_shut, .ctx = &d};
    struct wireconn wc;
    struct dbconn *c = wireconn_init_io(&wc, &io, fd, t->txn, t->where, chan_stop, t);
    bool released;
    enum wiregate_end e = run_job(t, job, c, true, &released);
    size_t n;
    uint8_t *later = wireconn_take_later(&wc, &n);
    bool broken = wireconn_broken(&wc);
    wireconn_done(&wc);
    pthread_mutex_lock(&mu);
    t->pinned = false;
    if (t->dead) {
        slot_free(t);
        free(later);
        return;
    }
    if (broken || e == WIREGATE_FAIL) {
        t->fail_app = true; /* (the socket is shut down: the real call fails too) */
        free(later);
        return;
    }
    if (n && !append(&t->later, &t->later_len, later, n))
        t->fail_app = true;
    free(later);
    if (job == JOB_SETTLE) {
        if (released) {
            t->lead = false;
            if (t->later_off < t->later_len)
                t->unfollow_later = true;
            else
                unfollow(t, "its migration lock released");
        }
    } else if (e == WIREGATE_LEAD) {
        t->lead = true;
    } else if (t->later_off < t->later_len) {
        t->unfollow_later = true;
    } else {
        unfollow(t, "the gate let it pass");
    }
}

/* n bytes of direction dir went by on t (mu held): follow them; a stream
 * that ended for the parser is not followed any more. */
static void feed(struct tconn *t, enum wire_dir dir, const void *buf, size_t n)
{
    wire_feed(&t->w, dir, buf, n);
    if (wire_phase_is_end(t->w.phase))
        unfollow(t, wire_phase_name(t->w.phase));
}

/* The same after a real call of the app's, on s if still followed (mu
 * not held; errno kept). */
static void feed_after(SSL *s, enum wire_dir dir, const void *buf, size_t n)
{
    int saved = errno;
    pthread_mutex_lock(&mu);
    struct tconn *t = find(s);
    if (t)
        feed(t, dir, buf, n);
    pthread_mutex_unlock(&mu);
    errno = saved;
}

/* --- the wrappers' slow paths ------------------------------------------------------------- */

/* Follow s from its StartupMessage (mu held), already written. */
static void recognise(SSL *s, const void *buf, size_t num)
{
    if (find(s))
        return;
    for (size_t i = 0; i < WIRESSL_CONNS; i++) {
        struct tconn *t = &conns[i];
        if (t->ssl)
            continue;
        memset(t, 0, sizeof *t);
        t->ssl = s;
        t->pid = getpid();
        t->first = true;
        wire_init(&t->w);
        wire_feed(&t->w, WIRE_FE, buf, num);
        t->fd = -1;
        unsigned char rnd[32];
        __typeof__(SSL_get_client_random) *cr = real_SSL_get_client_random();
        if (cr && cr(s, rnd, sizeof rnd) == sizeof rnd &&
            wirefd_tls_hello(rnd, &t->fd, &t->dev, &t->ino)) {
            snprintf(t->where, sizeof t->where, "asyncpg/pg8000 connection on fd %d, TLS", t->fd);
            wirefd_peer(t->fd, t->peer, sizeof t->peer);
        } else {
            t->fd = -1;
            snprintf(t->where, sizeof t->where, "asyncpg/pg8000 connection over TLS");
            __typeof__(SSL_get_fd) *gfd = real_SSL_get_fd();
            int sfd = gfd ? gfd(s) : -1; /* (a socket BIO names its socket) */
            if (sfd >= 0)
                wirefd_peer(sfd, t->peer, sizeof t->peer);
        }
        atomic_fetch_add(&wiressl_live, 1);
        log_debug("wire: %s: a PostgreSQL connection over TLS (its StartupMessage through "
                  "SSL_write_ex); followed", t->where);
        return;
    }
    log_debug("wire: a PostgreSQL connection over TLS, with %d followed already; not followed",
              WIRESSL_CONNS);
}

int wiressl_write_ex(SSL *s, const void *buf, size_t num, size_t *written)
{
    __typeof__(SSL_write_ex) *real = real_SSL_write_ex();
    if (!real) {
        errno = ENOSYS;
        return 0;
    }
    pthread_once(&fork_once, fork_register);
    pthread_mutex_lock(&mu);
    struct tconn *t = find(s);
    if (!t) {
        pthread_mutex_unlock(&mu);
        bool cand = wiressl_maybe_startup(buf, num) &&
                    wire_first(buf, num) == WIRE_FIRST_STARTUP &&
                    ((const uint8_t *)buf)[3] + ((size_t)((const uint8_t *)buf)[2] << 8) +
                            ((size_t)((const uint8_t *)buf)[1] << 16) == num &&
                    shim_active() && shim_config()->wire;
        int r = real(s, buf, num, written);
        if (cand && r == 1 && written && *written == num) {
            int saved = errno;
            pthread_mutex_lock(&mu);
            recognise(s, buf, num);
            pthread_mutex_unlock(&mu);
            errno = saved;
        }
        return r;
    }
    t->synth = false;
    if (t->fail_app) {
        int r = synth(t, SSLAPI_ERROR_SYSCALL);
        pthread_mutex_unlock(&mu);
        return r;
    }
    if (t->held) { /* the gate speaks: the app's bytes wait */
        if (t->stash_len + num > WIRESSL_STASH_MAX || !append(&t->stash, &t->stash_len, buf, num)) {
            int r = synth(t, SSLAPI_ERROR_WANT_WRITE);
            pthread_mutex_unlock(&mu);
            return r;
        }
        if (written)
            *written = num;
        pthread_mutex_unlock(&mu);
        return 1;
    }
    const uint8_t *b = buf;
    bool statement = num >= 5 && b && (b[0] == 'Q' || b[0] == 'P') && wire_idle(&t->w);
    enum job job = JOB_NONE;
    if (statement && t->first) {
        t->first = false;
        if (wire_txn(&t->w) != 'I' || shim_config()->lock == LOCK_OFF) {
            if (wire_txn(&t->w) != 'I')
                log_debug("wire: %s: its first statement comes inside a transaction block "
                          "(status %c); not gated", t->where, wire_txn(&t->w));
            unfollow(t, "not gated");
            pthread_mutex_unlock(&mu);
            return real(s, buf, num, written);
        }
        if (wiregate_decided(wire_database(&t->w), t->peer, t->where)) {
            /* decided already in this process for this StartupMessage's
             * database: what the gate would answer without a round trip,
             * here, with no thread and nothing kept */
            unfollow(t, "the gate let it pass");
            pthread_mutex_unlock(&mu);
            return real(s, buf, num, written);
        }
        job = JOB_FIRST;
    } else if (statement && t->lead) {
        if (wire_txn(&t->w) != 'I') {
            t->txn_seen = true;
        } else if (t->txn_seen) {
            t->txn_seen = false;
            job = JOB_SETTLE;
        }
    }
    if (job != JOB_NONE) {
        if (job == JOB_FIRST) {
            const char *db = wire_database(&t->w);
            snprintf(t->db, sizeof t->db, "%s", db ? db : "");
            t->key_pid = wire_backend_pid(&t->w);
        }
        __typeof__(SSL_get_fd) *gfd = real_SSL_get_fd();
        int fd = gfd ? gfd(s) : -1; /* (-1: no socket BIO: a memory BIO) */
        int fl = fd >= 0 ? fcntl(fd, F_GETFL) : -1;
        if (fd >= 0 && fl >= 0 && !(fl & O_NONBLOCK)) {
            run_inline(t, job, fd);
            t = find(s);
            if (t && t->fail_app) {
                int r = synth(t, SSLAPI_ERROR_SYSCALL);
                pthread_mutex_unlock(&mu);
                return r;
            }
            /* (bytes kept for the app wait in t->later: a blocking app reads
             * after it wrote) */
        } else if (start_job(t, job, buf, num)) {
            pump(t);
            if (t->finished && !t->pinned)
                conclude(t);
            t = find(s);
            if (t && t->fail_app) {
                int r = synth(t, SSLAPI_ERROR_SYSCALL);
                pthread_mutex_unlock(&mu);
                return r;
            }
            if (written)
                *written = num;
            pthread_mutex_unlock(&mu);
            return 1;
        }
    }
    pthread_mutex_unlock(&mu);
    int r = real(s, buf, num, written);
    if (r == 1 && written && *written > 0)
        feed_after(s, WIRE_FE, buf, *written);
    return r;
}

int wiressl_read_ex(SSL *s, void *buf, size_t num, size_t *readbytes)
{
    __typeof__(SSL_read_ex) *real = real_SSL_read_ex();
    if (!real) {
        errno = ENOSYS;
        return 0;
    }
    pthread_mutex_lock(&mu);
    struct tconn *t = find(s);
    if (!t) {
        pthread_mutex_unlock(&mu);
        return real(s, buf, num, readbytes);
    }
    t->synth = false;
    if (t->later_off < t->later_len && num > 0) {
        size_t k = deliver(t, buf, num);
        if (readbytes)
            *readbytes = k;
        pthread_mutex_unlock(&mu);
        return 1;
    }
    if (t->fail_app) {
        int r = synth(t, SSLAPI_ERROR_SYSCALL);
        pthread_mutex_unlock(&mu);
        return r;
    }
    if (t->held) {
        /* the server's bytes are the gate's: all that is there, to the channel */
        pthread_mutex_unlock(&mu);
        uint8_t tmp[16384];
        uint8_t *got = NULL;
        size_t gn = 0, k = 0;
        bool oom = false;
        while (real(s, tmp, sizeof tmp, &k) == 1 && k > 0)
            oom |= !append(&got, &gn, tmp, k);
        int e = real_SSL_get_error()(s, 0);
        int saved = errno;
        pthread_mutex_lock(&mu);
        t = find(s);
        if (!t) {
            free(got);
            pthread_mutex_unlock(&mu);
            errno = saved;
            return 0; /* (freed meanwhile: the real state answers) */
        }
        if (gn && !oom && append(&t->in, &t->in_len, got, gn)) {
            t->fed++;
            pthread_cond_broadcast(&cv);
        } else if (gn) {
            log_warn("wire: %s: out of memory while the gate held it; the connection is failed",
                     t->where);
            t->broken = t->fail_app = true;
            pthread_cond_broadcast(&cv);
        }
        free(got);
        if (e != SSLAPI_ERROR_WANT_READ && e != SSLAPI_ERROR_WANT_WRITE) {
            /* the connection ended or failed under the gate: the gate breaks,
             * the app gets the real failure (its state is the SSL object's) */
            t->broken = true;
            pthread_cond_broadcast(&cv);
            pthread_mutex_unlock(&mu);
            errno = saved;
            return 0;
        }
        pump(t);
        if (t->finished && !t->pinned)
            conclude(t);
        t = find(s);
        if (!t) {
            /* decided and not followed any more (the kept bytes are out):
             * the app's read is the real one from here, error state and all */
            pthread_mutex_unlock(&mu);
            return real(s, buf, num, readbytes);
        }
        int r;
        if (t->later_off < t->later_len && num > 0) {
            size_t kk = deliver(t, buf, num);
            if (readbytes)
                *readbytes = kk;
            r = 1;
        } else if (t->fail_app) {
            r = synth(t, SSLAPI_ERROR_SYSCALL);
        } else {
            /* the object's own state answers: everything that had come was
             * read above, and what went out since cannot be answered yet,
             * so the real read wants more (SSL_get_error says so itself) */
            pthread_mutex_unlock(&mu);
            size_t got_n = 0;
            r = real(s, buf, num, &got_n);
            if (r == 1 && got_n > 0) {
                int err_saved = errno;
                pthread_mutex_lock(&mu);
                t = find(s);
                if (t && t->held) { /* (not expected) the gate's: to the channel */
                    if (append(&t->in, &t->in_len, buf, got_n)) {
                        t->fed++;
                    } else {
                        t->broken = t->fail_app = true;
                    }
                    pthread_cond_broadcast(&cv);
                    r = synth(t, SSLAPI_ERROR_WANT_READ);
                } else {
                    if (t)
                        feed(t, WIRE_BE, buf, got_n);
                    if (readbytes)
                        *readbytes = got_n;
                }
                pthread_mutex_unlock(&mu);
                errno = err_saved;
            } else if (r == 1 && readbytes) {
                *readbytes = got_n;
            }
            return r;
        }
        pthread_mutex_unlock(&mu);
        return r;
    }
    pthread_mutex_unlock(&mu);
    int r = real(s, buf, num, readbytes);
    if (r == 1 && readbytes && *readbytes > 0)
        feed_after(s, WIRE_BE, buf, *readbytes);
    return r;
}

int wiressl_get_error(const SSL *s, int ret)
{
    pthread_mutex_lock(&mu);
    struct tconn *t = find(s);
    if (t && t->synth) {
        t->synth = false;
        int e = t->synth_err;
        pthread_mutex_unlock(&mu);
        return e;
    }
    pthread_mutex_unlock(&mu);
    __typeof__(SSL_get_error) *real = real_SSL_get_error();
    return real ? real(s, ret) : SSLAPI_ERROR_SSL;
}

void wiressl_free(SSL *s)
{
    pthread_mutex_lock(&mu);
    struct tconn *t = find(s);
    if (t) {
        if (t->held)
            log_debug("wire: %s: freed by the app while the gate held it; the gate stopped",
                      t->where);
        unfollow(t, "freed");
    }
    pthread_mutex_unlock(&mu);
    __typeof__(SSL_free) *real = real_SSL_free();
    if (real)
        real(s);
}

bool wiressl_followed(const SSL *s)
{
    pthread_mutex_lock(&mu);
    bool f = find(s) != NULL;
    pthread_mutex_unlock(&mu);
    return f;
}
