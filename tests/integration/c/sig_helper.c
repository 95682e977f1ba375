/*
 * sig_helper — a libpq program with its own signal dispositions, for the
 * gate's handling of SIGTERM, SIGINT and SIGQUIT while it waits
 * (tests/integration/test_signals.py; run with LD_PRELOAD=libmigshim.so).
 *
 *   sig_helper CONNINFO
 *
 * Before connecting it sets
 *   SIGTERM  a counting SA_SIGINFO handler, SA_RESTART, mask {SIGUSR1}
 *   SIGINT   SIG_IGN
 *   SIGQUIT  SIG_DFL
 * prints "ready pid=P" and calls PQconnectdb (the gate may wait in it).
 * Then prints, one line each:
 *   connected status=S t=T          PQstatus (0 = CONNECTION_OK), CLOCK_REALTIME
 *   handler n=N t=T                 SIGTERM handler calls, the first one's time
 *   same SIG=yes|no                 the disposition of each signal is exactly
 *                                   what it set (handler, flags, mask)
 * and, when connected, "leading_dispositions same=yes|no" after its first
 * statement (a leader's dispositions are the app's all along).
 */
#include <libpq-fe.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifndef SA_RESTORER
#define SA_RESTORER 0x04000000 /* the kernel's; glibc sets it, its headers hide it */
#endif

static atomic_int calls;
static struct timespec first_call;

static void on_term(int sig, siginfo_t *si, void *ctx)
{
    (void)sig;
    (void)si;
    (void)ctx;
    if (atomic_fetch_add(&calls, 1) == 0)
        clock_gettime(CLOCK_REALTIME, &first_call);
}

static const int sigs[] = {SIGTERM, SIGINT, SIGQUIT};
static const char *const names[] = {"SIGTERM", "SIGINT", "SIGQUIT"};
static struct sigaction set[3];

static int same(int i)
{
    struct sigaction cur;
    if (sigaction(sigs[i], NULL, &cur) != 0)
        return 0;
    if ((cur.sa_flags & ~SA_RESTORER) != (set[i].sa_flags & ~SA_RESTORER))
        return 0;
    if (cur.sa_flags & SA_SIGINFO) {
        if (cur.sa_sigaction != set[i].sa_sigaction)
            return 0;
    } else if (cur.sa_handler != set[i].sa_handler) {
        return 0;
    }
    for (int s = 1; s < NSIG; s++)
        if (sigismember(&cur.sa_mask, s) != sigismember(&set[i].sa_mask, s))
            return 0;
    return 1;
}

static double ts(const struct timespec *t) { return (double)t->tv_sec + (double)t->tv_nsec / 1e9; }

int main(int argc, char **argv)
{
    if (argc != 2)
        return 2;
    memset(set, 0, sizeof set);
    set[0].sa_sigaction = on_term;
    set[0].sa_flags = SA_SIGINFO | SA_RESTART;
    sigemptyset(&set[0].sa_mask);
    sigaddset(&set[0].sa_mask, SIGUSR1);
    set[1].sa_handler = SIG_IGN;
    sigemptyset(&set[1].sa_mask);
    set[2].sa_handler = SIG_DFL;
    sigemptyset(&set[2].sa_mask);
    for (int i = 0; i < 3; i++)
        if (sigaction(sigs[i], &set[i], NULL) != 0)
            return 3;
    printf("ready pid=%d\n", (int)getpid());
    fflush(stdout);
    PGconn *pg = PQconnectdb(argv[1]);
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    printf("connected status=%d t=%.6f\n", (int)PQstatus(pg), ts(&now));
    printf("handler n=%d t=%.6f\n", atomic_load(&calls), ts(&first_call));
    for (int i = 0; i < 3; i++)
        printf("same %s=%s\n", names[i], same(i) ? "yes" : "no");
    if (PQstatus(pg) == CONNECTION_OK) {
        PGresult *r = PQexec(pg, "SELECT 1");
        PQclear(r);
        int all = same(0) && same(1) && same(2);
        printf("leading_dispositions same=%s\n", all ? "yes" : "no");
    }
    fflush(stdout);
    PQfinish(pg);
    return 0;
}
