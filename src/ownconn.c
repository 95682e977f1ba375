/*
 * ownconn — see include/ownconn.h.  Open connections are kept in a short
 * list so the fork handler can find them; a process has at most a handful.
 */
#include "ownconn.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "atfork.h"
#include "log.h"
#include "peer.h"

struct ownconn {
    PGconn *pg;
    const struct pq_copy *copy;
    struct dbconn_pq db;  /* its seam (ownconn_db)  */
    pid_t owner;          /* the process that opened it */
    int fd;               /* its socket, remembered for the fork handler */
    struct ownconn *next;
};

static struct ownconn *all;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pid_t forking_pid; /* set in the prepare handler */

/* Take the mutex, the fork handlers registered first. */
static void lock(void)
{
    ownconn_fork_init();
    pthread_mutex_lock(&mu);
}

/* Copy the first line of libpq's message, without the trailing newline. */
static void first_line(const char *msg, char *err, size_t errsz)
{
    snprintf(err, errsz, "%.*s", (int)strcspn(msg ? msg : "", "\n"), msg ? msg : "");
}

bool ownconn_no_slot(const char *err)
{
    return err && (strstr(err, "too many clients already") ||
                   strstr(err, "too many connections for ") ||
                   strstr(err, "remaining connection slots are reserved"));
}

struct ownconn *ownconn_open(const struct pq_copy *copy, PGconn *app, const char *purpose,
                             char *err, size_t errsz)
{
    const struct pq_api *pq = &copy->api;
    PQconninfoOption *opts = pq->PQconninfo(app);
    if (!opts) {
        snprintf(err, errsz, "out of memory reading the connection's parameters");
        return NULL;
    }
    size_t n = 0;
    while (opts[n].keyword)
        n++;
    /* A vanished server (or a host of ours cut off) is noticed by the
     * client in seconds (peer.h): libpq's keepalive keywords, each
     * only if this libpq copy knows it (its PQconninfo lists it). */
    char k_idle[16], k_intv[16], k_cnt[16], k_user[16];
    snprintf(k_idle, sizeof k_idle, "%d", PEER_KEEPALIVE_IDLE);
    snprintf(k_intv, sizeof k_intv, "%d", PEER_KEEPALIVE_INTERVAL);
    snprintf(k_cnt, sizeof k_cnt, "%d", PEER_KEEPALIVE_COUNT);
    snprintf(k_user, sizeof k_user, "%d", PEER_USER_TIMEOUT_MS);
    static const char *const tuned[] = {"keepalives", "keepalives_idle", "keepalives_interval",
                                        "keepalives_count", "tcp_user_timeout"};
    const char *tuned_val[] = {"1", k_idle, k_intv, k_cnt, k_user};
    const size_t ntuned = sizeof tuned / sizeof tuned[0];
    const char **kw = calloc(n + 2, sizeof *kw);
    const char **val = calloc(n + 2, sizeof *val);
    char host[64] = "", appname[160];
    gethostname(host, sizeof host - 1);
    snprintf(appname, sizeof appname, "migshim %s pid=%ld host=%s", purpose, (long)getpid(), host);
    size_t k = 0;
    if (kw && val) {
        for (size_t i = 0; i < n; i++) {
            const char *v = opts[i].val;
            for (size_t t = 0; t < ntuned; t++)
                if (strcmp(opts[i].keyword, tuned[t]) == 0)
                    v = tuned_val[t];
            if (!v || strcmp(opts[i].keyword, "application_name") == 0)
                continue;
            kw[k] = opts[i].keyword;
            val[k++] = v;
        }
        kw[k] = "application_name";
        val[k++] = appname;
        kw[k] = NULL;
    }
    PGconn *pg = kw && val ? pq->PQconnectdbParams(kw, val, 0) : NULL;
    free(kw);
    free(val);
    pq->PQconninfoFree(opts);
    if (!pg || pq->PQstatus(pg) != CONNECTION_OK) {
        first_line(pg ? pq->PQerrorMessage(pg) : "out of memory", err, errsz);
        if (pg)
            pq->PQfinish(pg);
        return NULL;
    }
    struct ownconn *oc = calloc(1, sizeof *oc);
    if (!oc) {
        pq->PQfinish(pg);
        snprintf(err, errsz, "out of memory");
        return NULL;
    }
    oc->pg = pg;
    oc->copy = copy;
    (void)dbconn_pq_init(&oc->db, &copy->api, pg);
    oc->owner = getpid();
    oc->fd = pq->PQsocket(pg);
    lock();
    oc->next = all;
    all = oc;
    pthread_mutex_unlock(&mu);
    return oc;
}

PGconn *ownconn_pg(const struct ownconn *oc)
{
    return oc && oc->owner == getpid() ? oc->pg : NULL;
}

struct dbconn *ownconn_db(struct ownconn *oc)
{
    return oc && oc->owner == getpid() ? &oc->db.base : NULL;
}

const struct pq_copy *ownconn_copy(const struct ownconn *oc) { return oc->copy; }

void ownconn_close(struct ownconn *oc)
{
    if (!oc)
        return;
    lock();
    for (struct ownconn **p = &all; *p; p = &(*p)->next) {
        if (*p == oc) {
            *p = oc->next;
            break;
        }
    }
    pthread_mutex_unlock(&mu);
    if (oc->owner == getpid()) {
        oc->copy->api.PQfinish(oc->pg);
    } else if (oc->fd >= 0) {
        /* inherited: the descriptor already points at /dev/null; the
         * PGconn is leaked on purpose, freeing it would talk on it. */
        close(oc->fd);
    }
    free(oc);
}

/* --- fork ------------------------------------------------------------------ */

static void atfork_prepare(void)
{
    pthread_mutex_lock(&mu);
    forking_pid = getpid();
}
static void atfork_parent(void) { pthread_mutex_unlock(&mu); }

static void atfork_child(void)
{
    /* Only async-signal-safe calls here: open, dup3, close.  Entries the
     * forking process itself inherited were neutralised at that fork. */
    int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    for (struct ownconn *oc = all; oc; oc = oc->next) {
        if (oc->owner == forking_pid && oc->fd >= 0 && devnull >= 0)
            dup3(devnull, oc->fd, O_CLOEXEC); /* same fd number, no socket */
    }
    if (devnull >= 0)
        close(devnull);
    pthread_mutex_unlock(&mu);
}

static pthread_once_t fork_once = PTHREAD_ONCE_INIT;
static void fork_register(void)
{
    atfork_register("ownconn", atfork_prepare, atfork_parent, atfork_child);
}

void ownconn_fork_init(void) { pthread_once(&fork_once, fork_register); }
