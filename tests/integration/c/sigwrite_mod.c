/*
 * sigwrite_mod — dlopen()ed by sigwrite_helper.c: its constructor, run with
 * the dynamic loader's lock held, signals the process and waits for the
 * byte the main thread's signal handler writes (a raw read system call:
 * not an interposed read).
 */
#include <signal.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

__attribute__((constructor)) static void sigwrite_mod_init(void)
{
    const char *fd = getenv("SIGWRITE_FD");
    if (!fd)
        return;
    kill(getpid(), SIGUSR1);
    char c;
    while (syscall(SYS_read, atoi(fd), &c, 1) < 0)
        ;
}
