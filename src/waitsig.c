/*
 * waitsig — see include/waitsig.h.  The handler only stores into a
 * lock-free atomic; everything else runs in the waiting thread under a
 * mutex (begin/end are rare: once per wait, not per slice).
 */
#include "waitsig.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>
#include <unistd.h>

#include "atfork.h"
#include "log.h"

static const int sigs[] = {SIGTERM, SIGINT, SIGQUIT};
#define NSIGS (sizeof sigs / sizeof sigs[0])

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static unsigned waiters;               /* waits in progress (under mu)       */
static struct sigaction saved[NSIGS];  /* the app's, while installed          */
static bool installed[NSIGS];
static atomic_uint recorded;           /* bit i: sigs[i] arrived              */
static atomic_int first;               /* the first one, for the log line     */
static __thread unsigned to_redeliver __attribute__((tls_model("initial-exec"))); /* handed over by the last waitsig_end */

static void record(int sig)
{
    int saved_errno = errno;
    for (unsigned i = 0; i < NSIGS; i++) {
        if (sigs[i] == sig) {
            atomic_fetch_or(&recorded, 1u << i);
            int none = 0;
            atomic_compare_exchange_strong(&first, &none, sig);
        }
    }
    errno = saved_errno;
}

/*
 * fork(): a child must not inherit `mu` held by a thread it does not have,
 * nor that thread's wait.  The child has no waiter: the app's handlers go
 * back (sigaction is async-signal-safe) and the count starts again.
 * Registered at the first wait, with no mutex of the shim held.
 */
static void atfork_prepare(void) { pthread_mutex_lock(&mu); }
static void atfork_parent(void) { pthread_mutex_unlock(&mu); }
static void atfork_child(void)
{
    for (unsigned i = 0; i < NSIGS; i++) {
        if (installed[i])
            sigaction(sigs[i], &saved[i], NULL);
        installed[i] = false;
    }
    waiters = 0;
    atomic_store(&recorded, 0);
    atomic_store(&first, 0);
    pthread_mutex_unlock(&mu);
}

static pthread_once_t fork_once = PTHREAD_ONCE_INIT;
static void fork_register(void)
{
    atfork_register("waitsig", atfork_prepare, atfork_parent, atfork_child);
}

void waitsig_begin(void)
{
    pthread_once(&fork_once, fork_register);
    pthread_mutex_lock(&mu);
    if (waiters++ == 0) {
        atomic_store(&recorded, 0);
        atomic_store(&first, 0);
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = record;
        sigemptyset(&sa.sa_mask);
        sa.sa_flags = SA_RESTART;
        for (unsigned i = 0; i < NSIGS; i++) {
            installed[i] = false;
            if (sigaction(sigs[i], NULL, &saved[i]) != 0)
                continue;
            /* an ignored signal stays ignored: the app chose not to hear it */
            if (!(saved[i].sa_flags & SA_SIGINFO) && saved[i].sa_handler == SIG_IGN)
                continue;
            installed[i] = sigaction(sigs[i], &sa, NULL) == 0;
        }
    }
    pthread_mutex_unlock(&mu);
}

int waitsig_pending(void) { return atomic_load_explicit(&first, memory_order_relaxed); }

void waitsig_end(void)
{
    to_redeliver = 0;
    pthread_mutex_lock(&mu);
    if (waiters > 0 && --waiters == 0) {
        for (unsigned i = 0; i < NSIGS; i++) {
            if (!installed[i])
                continue;
            struct sigaction cur;
            /* put the app's back; if the app replaced ours meanwhile, keep its */
            if (sigaction(sigs[i], &saved[i], &cur) == 0 &&
                ((cur.sa_flags & SA_SIGINFO) || cur.sa_handler != record))
                sigaction(sigs[i], &cur, NULL);
            installed[i] = false;
        }
        /* after the restore: a signal arriving from now on goes to the app */
        to_redeliver = atomic_exchange(&recorded, 0);
        atomic_store(&first, 0);
    }
    pthread_mutex_unlock(&mu);
}

void waitsig_redeliver(void)
{
    unsigned m = to_redeliver;
    to_redeliver = 0;
    for (unsigned i = 0; i < NSIGS; i++)
        if (m & (1u << i))
            kill(getpid(), sigs[i]);
}

const char *waitsig_name(int sig)
{
    switch (sig) {
    case SIGTERM:
        return "SIGTERM";
    case SIGINT:
        return "SIGINT";
    case SIGQUIT:
        return "SIGQUIT";
    default:
        return "a signal";
    }
}
