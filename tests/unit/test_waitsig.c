/*
 * waitsig: a process forked while a wait is in progress (a Gunicorn
 * master's fork while one of its threads waits, a worker's subprocess)
 * starts with the app's signal handlers back and no wait of its own: its
 * own first wait installs and removes the recording handlers as usual.
 * No server needed.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "waitsig.h"

static volatile sig_atomic_t app_heard;
static void app_handler(int sig) { app_heard = sig; }

static void (*disposition(int sig))(int)
{
    struct sigaction cur;
    sigaction(sig, NULL, &cur);
    return cur.sa_handler;
}

Test(waitsig, a_child_forked_during_a_wait_has_the_apps_handlers_and_waits_anew)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = app_handler;
    sigemptyset(&sa.sa_mask);
    cr_assert_eq(sigaction(SIGTERM, &sa, NULL), 0);

    waitsig_begin(); /* a wait in progress in the parent */
    cr_assert_neq(disposition(SIGTERM), app_handler, "the wait records SIGTERM");
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        int bad = 0;
        if (disposition(SIGTERM) != app_handler)
            bad |= 1; /* the child got the parent's wait's handler */
        waitsig_begin(); /* would deadlock or miscount without the fork handlers */
        if (disposition(SIGTERM) == app_handler)
            bad |= 2;
        waitsig_end();
        if (disposition(SIGTERM) != app_handler)
            bad |= 4; /* a count inherited from the parent kept its handler */
        raise(SIGTERM);
        if (app_heard != SIGTERM)
            bad |= 8;
        _exit(bad);
    }
    int st = 0;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    cr_assert(WIFEXITED(st), "child status %#x", st);
    cr_assert_eq(WEXITSTATUS(st), 0, "child failed checks %#x", WEXITSTATUS(st));
    waitsig_end();
    cr_assert_eq(disposition(SIGTERM), app_handler, "the parent's handler back after its wait");
}
