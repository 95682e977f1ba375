/*
 * sigwrite_helper — the process's first I/O call is a write() from a
 * signal handler, made while another thread holds the dynamic loader's
 * lock.  Run under LD_PRELOAD of the library by
 * tests/integration/test_wire.py (test_first_write_from_a_signal_handler).
 *
 *   sigwrite_helper MODULE
 *
 * A second thread dlopen()s MODULE (sigwrite_mod.c); glibc runs its
 * constructor with the loader's lock held.  That constructor sends SIGUSR1
 * to this process (only the main thread takes it) and waits, with a raw
 * read system call, for the byte the main thread's handler write()s to a
 * pipe.  A libc table resolved lazily, at that write, would call dlsym
 * inside the handler, which waits for the loader's lock: the process hangs
 * (alarm(2) ends it after 20 s).  Resolved in the library's constructor,
 * the write goes straight to libc: the helper prints "ok" and exits 0.
 * No read/write/close before the handler's write (pipe, sigaction,
 * setenv, pthread_create and dlopen's own I/O are not interposed).
 */
#include <dlfcn.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static int pfd[2];

static void on_usr1(int sig)
{
    (void)sig;
    char c = 'x';
    ssize_t r = write(pfd[1], &c, 1); /* the process's first interposed call */
    (void)r;
}

static void *opener(void *path)
{
    return dlopen(path, RTLD_NOW | RTLD_LOCAL);
}

int main(int argc, char **argv)
{
    if (argc != 2)
        return 2;
    alarm(20); /* a hang ends by SIGALRM */
    if (pipe(pfd) != 0)
        return 3;
    struct sigaction sa = {.sa_handler = on_usr1};
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGUSR1, &sa, NULL) != 0)
        return 4;
    char fd[16];
    snprintf(fd, sizeof fd, "%d", pfd[0]);
    setenv("SIGWRITE_FD", fd, 1);
    /* the opener thread never takes SIGUSR1: it is born with it blocked */
    sigset_t usr1, old;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &usr1, &old);
    pthread_t t;
    if (pthread_create(&t, NULL, opener, argv[1]) != 0)
        return 5;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    void *h = NULL;
    pthread_join(t, &h);
    if (!h) {
        fprintf(stderr, "sigwrite_helper: dlopen %s: %s\n", argv[1], dlerror());
        return 6;
    }
    printf("ok\n");
    return 0;
}
