/*
 * heartbeat: finding a Gunicorn worker's heartbeat file exactly (a deleted
 * wgunicorn-* file this process and its parent both hold open), the beat
 * itself (mtime = CLOCK_MONOTONIC, as Gunicorn 22+'s notify()), the count,
 * and a forked child's share of its parent's begins.
 *
 * Each test forks: the test process plays the arbiter (it made the file
 * and holds it), the child plays the worker.  The child's checks end in its
 * exit status: 0 passed, else the number of the check that failed.
 */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "heartbeat.h"

/* A WorkerTmp as Gunicorn makes it: mkstemp(prefix="wgunicorn-"), unlinked. */
static int worker_tmp(const char *prefix)
{
    char path[64];
    snprintf(path, sizeof path, "/tmp/%sXXXXXX", prefix);
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    cr_assert_eq(unlink(path), 0);
    return fd;
}

/* Run `child` in a forked child; its exit status. */
static int in_child(int (*child)(int), int arg)
{
    fflush(NULL);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0)
        _exit(child(arg));
    int st = 0;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    cr_assert(WIFEXITED(st), "the child died of signal %d", WTERMSIG(st));
    return WEXITSTATUS(st);
}

static double mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double mtime_of(int fd)
{
    struct stat st;
    if (fstat(fd, &st) != 0)
        return -1;
    return (double)st.st_mtim.tv_sec + (double)st.st_mtim.tv_nsec / 1e9;
}

static int finds_the_one_the_parent_holds(int fd)
{
    char why[512];
    int own = worker_tmp("wgunicorn-"); /* a second one, the parent does not hold */
    if (heartbeat_find(getppid(), why, sizeof why) != fd)
        return 1;
    if (!strstr(why, "held by the arbiter") || !strstr(why, "wgunicorn-"))
        return 2;
    close(fd);
    if (heartbeat_find(getppid(), why, sizeof why) != -1)
        return 3; /* only `own` is left: not the arbiter's */
    if (!strstr(why, "not a worker of its arbiter"))
        return 4;
    close(own);
    if (heartbeat_find(getppid(), why, sizeof why) != -1 || !strstr(why, "not a Gunicorn worker"))
        return 5;
    return 0;
}

Test(heartbeat, finds_the_file_the_arbiter_holds_and_nothing_else)
{
    int fd = worker_tmp("wgunicorn-");
    cr_assert_eq(in_child(finds_the_one_the_parent_holds, fd), 0);
    close(fd);
}

static int ignores_other_files(int fd)
{
    (void)fd;
    char why[512];
    /* another prefix, or a file with its name still there: not Gunicorn's */
    char path[] = "/tmp/wgunicorn-XXXXXX";
    int named = mkstemp(path);
    int r = heartbeat_find(getppid(), why, sizeof why);
    unlink(path);
    close(named);
    return r == -1 ? 0 : 1;
}

Test(heartbeat, a_file_of_another_name_or_still_linked_is_not_it)
{
    int other = worker_tmp("wsomething-");
    cr_assert_eq(in_child(ignores_other_files, 0), 0);
    close(other);
}

static int beats_with_the_monotonic_clock(int fd)
{
    struct timespec old[2] = {{1, 0}, {1, 0}};
    if (futimens(fd, old) != 0)
        return 1;
    heartbeat_begin("testing", 0);
    heartbeat_begin("testing again", 0);
    if (heartbeat_count() != 2)
        return 2;
    usleep((HEARTBEAT_TICK_MS + 200) * 1000);
    double m = mtime_of(fd), now = mono();
    if (m < now - 2.0 * HEARTBEAT_TICK_MS / 1e3 || m > now + 0.01)
        return 3; /* Gunicorn 22+ compares it with time.monotonic() */
    heartbeat_end();
    heartbeat_end();
    if (heartbeat_count() != 0)
        return 4;
    if (futimens(fd, old) != 0)
        return 5;
    usleep((HEARTBEAT_TICK_MS + 200) * 1000);
    if (mtime_of(fd) != 1.0)
        return 6; /* ended: the worker's own again */
    return 0;
}

Test(heartbeat, beats_while_begun_and_stops_at_the_last_end)
{
    int fd = worker_tmp("wgunicorn-");
    cr_assert_eq(in_child(beats_with_the_monotonic_clock, fd), 0);
    close(fd);
}

static int stops_at_its_limit(int fd)
{
    heartbeat_begin("leading", 0.3);
    usleep(900 * 1000);
    struct timespec old[2] = {{1, 0}, {1, 0}};
    if (futimens(fd, old) != 0)
        return 1;
    usleep((HEARTBEAT_TICK_MS + 200) * 1000);
    int r = mtime_of(fd) == 1.0 ? 0 : 2; /* past the limit: no beat */
    heartbeat_end();
    return r;
}

Test(heartbeat, a_limit_stops_the_beat)
{
    int fd = worker_tmp("wgunicorn-");
    cr_assert_eq(in_child(stops_at_its_limit, fd), 0);
    close(fd);
}

static int child_of_a_child(int fd)
{
    (void)fd;
    /* the forked child: no begin in force, and the ends of its parent's
     * begins are absorbed (the gate's adopt_after_fork ends them) */
    if (heartbeat_count() != 0)
        return 10;
    heartbeat_end();
    return heartbeat_count() == 0 ? 0 : 11;
}

static int a_fork_inherits_no_heartbeat(int fd)
{
    (void)fd;
    heartbeat_begin("waiting", 0); /* registers the module's fork handlers: fork() runs them */
    pid_t pid = fork();
    if (pid == 0)
        _exit(child_of_a_child(0));
    int st = 0;
    if (pid < 0 || waitpid(pid, &st, 0) != pid || !WIFEXITED(st))
        return 1;
    if (WEXITSTATUS(st) != 0)
        return WEXITSTATUS(st);
    if (heartbeat_count() != 1)
        return 2;
    heartbeat_end();
    return 0;
}

Test(heartbeat, a_forked_child_starts_with_none)
{
    int fd = worker_tmp("wgunicorn-");
    cr_assert_eq(in_child(a_fork_inherits_no_heartbeat, fd), 0);
    close(fd);
}

static int off_counts_only(int fd)
{
    heartbeat_configure(false);
    struct timespec old[2] = {{1, 0}, {1, 0}};
    if (futimens(fd, old) != 0)
        return 1;
    heartbeat_begin("waiting", 0);
    usleep((HEARTBEAT_TICK_MS + 200) * 1000);
    int r = heartbeat_count() == 1 && mtime_of(fd) == 1.0 ? 0 : 2;
    heartbeat_end();
    return r;
}

Test(heartbeat, switched_off_it_only_counts)
{
    int fd = worker_tmp("wgunicorn-");
    cr_assert_eq(in_child(off_counts_only, fd), 0);
    close(fd);
}
