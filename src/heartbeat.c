/*
 * heartbeat — see include/heartbeat.h.  One mutex guards everything; the
 * thread touches the file under it, so an end (which closes the module's
 * fd) and a tick never cross.  A thread belongs to one generation: a begin
 * after the last end starts a new one, and an old thread that wakes late
 * sees the generation moved on and exits without touching anything.
 */
#include "heartbeat.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h> /* INFINITY */
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "atfork.h"
#include "clock.h"
#include "log.h"

#define PREFIX "wgunicorn-"
#define DELETED " (deleted)"
#define MAX_CANDIDATES 8

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv;              /* CLOCK_MONOTONIC; made by init_once     */
static pthread_once_t cv_once = PTHREAD_ONCE_INIT;
static bool cv_ready;                  /* init_cv ran (for the child)             */
static bool enabled = true;            /* heartbeat_configure                     */
static unsigned count;                 /* begins in force in this process         */
static unsigned orphans;               /* a child's share of its parent's begins  */
static int fd = -1;                    /* our duplicate of the worker's file      */
static unsigned gen;                   /* the running thread's generation         */
static bool ticking;                   /* a thread of generation `gen` runs       */
static double deadline;                /* monotonic seconds; INFINITY: none       */

/* Take the mutex, the fork handlers registered first. */
static void lock(void)
{
    heartbeat_fork_init();
    pthread_mutex_lock(&mu);
}

static void init_cv(void)
{
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&cv, &ca);
    pthread_condattr_destroy(&ca);
    cv_ready = true;
}

static double mono(void) { return clock_now(); }

void heartbeat_configure(bool on)
{
    lock();
    enabled = on;
    pthread_mutex_unlock(&mu);
}

/* --- finding the file ----------------------------------------------------------------- */

/* The fd's link names a deleted wgunicorn-* file: "/tmp/wgunicorn-x1y2 (deleted)". */
static bool gunicorn_tmp_name(const char *link)
{
    size_t len = strlen(link), dl = strlen(DELETED);
    if (len <= dl || strcmp(link + len - dl, DELETED) != 0)
        return false;
    const char *slash = strrchr(link, '/');
    const char *base = slash ? slash + 1 : link;
    return strncmp(base, PREFIX, strlen(PREFIX)) == 0;
}

/* Does the command line of `pid` mention gunicorn (the arbiter: `gunicorn
 * ...`, `python -m gunicorn ...`, or its setproctitle "gunicorn: master")? */
static bool cmdline_names_gunicorn(pid_t pid)
{
    char path[64], buf[4096];
    snprintf(path, sizeof path, "/proc/%ld/cmdline", (long)pid);
    int f = open(path, O_RDONLY | O_CLOEXEC);
    if (f < 0)
        return false;
    ssize_t r = read(f, buf, sizeof buf - 1);
    close(f);
    if (r <= 0)
        return false;
    for (ssize_t i = 0; i < r; i++)
        if (buf[i] == '\0')
            buf[i] = ' ';
    buf[r] = '\0';
    return strstr(buf, "gunicorn") != NULL;
}

int heartbeat_find(pid_t ppid, char *why, size_t whysz)
{
    struct {
        int fd;
        dev_t dev;
        ino_t ino;
        bool in_parent;
        char link[PATH_MAX];
    } cand[MAX_CANDIDATES];
    size_t n = 0;
    DIR *d = opendir("/proc/self/fd");
    if (!d) {
        snprintf(why, whysz, "cannot list /proc/self/fd: %s", strerror(errno));
        return -1;
    }
    int skip = dirfd(d);
    bool too_many = false;
    for (struct dirent *e; (e = readdir(d));) {
        if (!isdigit((unsigned char)e->d_name[0]))
            continue;
        int f = atoi(e->d_name);
        char path[64], link[PATH_MAX];
        snprintf(path, sizeof path, "/proc/self/fd/%d", f);
        ssize_t r = f == skip ? -1 : readlink(path, link, sizeof link - 1);
        if (r <= 0)
            continue;
        link[r] = '\0';
        struct stat st;
        if (!gunicorn_tmp_name(link) || fstat(f, &st) != 0 || !S_ISREG(st.st_mode) ||
            st.st_nlink != 0 || st.st_uid != geteuid())
            continue;
        if (n == MAX_CANDIDATES) {
            too_many = true;
            break;
        }
        cand[n].fd = f;
        cand[n].dev = st.st_dev;
        cand[n].ino = st.st_ino;
        cand[n].in_parent = false;
        snprintf(cand[n].link, sizeof cand[n].link, "%s", link);
        n++;
    }
    closedir(d);
    if (n == 0) {
        snprintf(why, whysz, "no deleted " PREFIX "* file open: not a Gunicorn worker");
        return -1;
    }
    if (too_many) {
        snprintf(why, whysz, "more than %d deleted " PREFIX "* files open", MAX_CANDIDATES);
        return -1;
    }
    /* the arbiter holds its worker's file open: the same inode among the parent's fds */
    char pdir[64];
    snprintf(pdir, sizeof pdir, "/proc/%ld/fd", (long)ppid);
    DIR *pd = ppid > 1 ? opendir(pdir) : NULL;
    if (!pd) {
        if (ppid > 1 && errno == EACCES && n == 1 && cmdline_names_gunicorn(ppid)) {
            snprintf(why, whysz, "fd %d -> %s; the parent %ld (its fds unreadable) runs gunicorn",
                     cand[0].fd, cand[0].link, (long)ppid);
            return cand[0].fd;
        }
        snprintf(why, whysz, "%zu " PREFIX "* file(s), and the parent %ld %s", n, (long)ppid,
                 ppid <= 1 ? "is init: no arbiter" : "cannot be checked");
        return -1;
    }
    size_t held = 0;
    for (struct dirent *e; (e = readdir(pd));) {
        if (!isdigit((unsigned char)e->d_name[0]))
            continue;
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/%s", pdir, e->d_name);
        struct stat st;
        if (stat(path, &st) != 0 || !S_ISREG(st.st_mode))
            continue;
        for (size_t i = 0; i < n; i++) {
            if (!cand[i].in_parent && cand[i].dev == st.st_dev && cand[i].ino == st.st_ino) {
                cand[i].in_parent = true;
                held++;
            }
        }
    }
    closedir(pd);
    if (held != 1) {
        snprintf(why, whysz, "%zu " PREFIX "* file(s), %zu of them held by the parent %ld: %s", n,
                 held, (long)ppid, held ? "ambiguous" : "not a worker of its arbiter");
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        if (cand[i].in_parent) {
            snprintf(why, whysz, "fd %d -> %s, held by the arbiter %ld too", cand[i].fd,
                     cand[i].link, (long)ppid);
            return cand[i].fd;
        }
    }
    return -1; /* not reached */
}

/* --- the thread ------------------------------------------------------------------------- */

/* One beat, as Gunicorn 22+'s notify(): atime = mtime = time.monotonic();
 * the kernel moves the ctime (what Gunicorn <= 21 reads) to now. */
static bool touch(int f)
{
    struct timespec m;
    clock_gettime(CLOCK_MONOTONIC, &m);
    struct timespec ts[2] = {m, m};
    return futimens(f, ts) == 0;
}

static void *ticker(void *arg)
{
    unsigned mine = (unsigned)(uintptr_t)arg;
    lock();
    while (gen == mine && fd >= 0) {
        double t = mono();
        if (t >= deadline) {
            log_info("stopped keeping Gunicorn's worker heartbeat: the shim's limit passed "
                     "(hold_timeout); Gunicorn's --timeout applies again");
            ticking = false;
            break;
        }
        if (!touch(fd)) {
            log_warn("cannot touch Gunicorn's worker heartbeat file: %s; Gunicorn's --timeout "
                     "applies while the shim waits or leads", strerror(errno));
            ticking = false;
            break;
        }
        struct timespec next;
        clock_gettime(CLOCK_MONOTONIC, &next);
        next.tv_nsec += HEARTBEAT_TICK_MS * 1000000L;
        next.tv_sec += next.tv_nsec / 1000000000L;
        next.tv_nsec %= 1000000000L;
        while (gen == mine && pthread_cond_timedwait(&cv, &mu, &next) != ETIMEDOUT)
            ;
    }
    pthread_mutex_unlock(&mu);
    return NULL;
}

/* Start a thread of a new generation (mutex held, fd open).  False, logged,
 * when it cannot. */
static bool start_ticker(void)
{
    gen++;
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old); /* the app's signals are not ours */
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    pthread_t th;
    int rc = pthread_create(&th, &at, ticker, (void *)(uintptr_t)gen);
    pthread_attr_destroy(&at);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    ticking = rc == 0;
    if (!ticking)
        log_warn("cannot start the heartbeat thread: %s; Gunicorn's --timeout applies while the "
                 "shim waits or leads", strerror(rc));
    return ticking;
}

/* The first begin (mutex held): find the file, keep a copy of the fd, beat. */
static void start(const char *what)
{
    char why[PATH_MAX + 128];
    int f = heartbeat_find(getppid(), why, sizeof why);
    if (f < 0) {
        log_debug("no Gunicorn worker heartbeat to keep while %s (%s)", what, why);
        return;
    }
    fd = fcntl(f, F_DUPFD_CLOEXEC, 3);
    if (fd < 0) {
        log_warn("cannot duplicate Gunicorn's worker heartbeat fd %d: %s; Gunicorn's --timeout "
                 "applies while the shim waits or leads", f, strerror(errno));
        return;
    }
    bool ok = touch(fd);
    if (!ok)
        log_warn("cannot touch Gunicorn's worker heartbeat file (%s): %s; Gunicorn's --timeout "
                 "applies while the shim waits or leads", why, strerror(errno));
    if (!ok || !start_ticker()) { /* (start_ticker logs its own failure) */
        close(fd);
        fd = -1;
        return;
    }
    log_debug("keeping Gunicorn's worker heartbeat alive while %s (%s)", what, why);
}

void heartbeat_begin(const char *what, double limit_s)
{
    pthread_once(&cv_once, init_cv);
    lock();
    double until = limit_s > 0 ? mono() + limit_s : INFINITY;
    if (count++ == 0) {
        deadline = until;
        if (enabled)
            start(what);
    } else if (until > deadline) {
        deadline = until;
        if (fd >= 0 && !ticking) /* it had stopped at the old limit */
            start_ticker();
    }
    pthread_mutex_unlock(&mu);
}

void heartbeat_end(void)
{
    lock();
    if (orphans > 0) {
        orphans--;
    } else if (count == 0) {
        log_warn("heartbeat: an end without a begin (a bug of the shim's); ignored");
    } else if (--count == 0) {
        if (fd >= 0) {
            close(fd);
            fd = -1;
            log_debug("Gunicorn's worker heartbeat is the worker's own again");
        }
        gen++; /* the thread exits at once, untouched */
        ticking = false;
        pthread_cond_broadcast(&cv);
    }
    pthread_mutex_unlock(&mu);
}

unsigned heartbeat_count(void)
{
    lock();
    unsigned n = count;
    pthread_mutex_unlock(&mu);
    return n;
}

/* --- fork ------------------------------------------------------------------------------------ */

static void atfork_prepare(void) { pthread_mutex_lock(&mu); }
static void atfork_parent(void) { pthread_mutex_unlock(&mu); }
static void atfork_child(void)
{
    orphans += count; /* the gate ends them in the child; nothing to stop here */
    count = 0;
    if (fd >= 0)
        close(fd);
    fd = -1;
    gen++;
    ticking = false;
    if (cv_ready)
        init_cv(); /* a waiter the child does not have may be recorded in it */
    pthread_mutex_unlock(&mu);
}

static pthread_once_t fork_once = PTHREAD_ONCE_INIT;
static void fork_register(void)
{
    atfork_register("heartbeat", atfork_prepare, atfork_parent, atfork_child);
}

void heartbeat_fork_init(void) { pthread_once(&fork_once, fork_register); }
