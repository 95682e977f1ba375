/*
 * heartbeat — a Gunicorn worker that waits for a peer's migration, or
 * leads one, is not killed for it by Gunicorn's worker timeout.
 *
 * Gunicorn's arbiter kills a worker whose heartbeat file it has not seen
 * touched for --timeout (default 30 s); the worker touches it from its
 * request loop only, so a worker that migrates or waits at import sends
 * none, and a migration longer than the timeout is a boot loop.  The file
 * is the worker's WorkerTmp (gunicorn/workers/workertmp.py): created by the
 * arbiter with mkstemp(prefix="wgunicorn-", dir=worker_tmp_dir) before it
 * forks the worker, unlinked at once, kept open by both.  The arbiter reads
 * its st_ctime against time.time() (Gunicorn <= 21) or its st_mtime
 * against time.monotonic() (22 and later, notify() = os.utime(fd,
 * (monotonic, monotonic))).  One futimens(fd, {monotonic, monotonic})
 * serves both: it sets the mtime the new arbiter reads, and the kernel
 * moves the ctime the old one reads to now.
 *
 * The file is found only in a process that is such a worker, and exactly:
 * an fd of this process that links to a deleted regular file named
 * wgunicorn-*, with no link left, owned by this user, which the parent
 * process holds open too (the same device and inode among /proc/PPID/fd:
 * the arbiter's worker.tmp of this worker -- Gunicorn closes its siblings'
 * in the child).  When the parent's fds cannot be read (an arbiter running
 * as root, workers under --user), the parent's command line must name
 * gunicorn and the candidate must be the only one.  Anything else (no
 * Gunicorn, an arbiter itself, --preload, two candidates): no heartbeat.
 *
 * While at least one begin is in force, a thread of the module's own (all
 * signals blocked) touches the file every HEARTBEAT_TICK_MS, up to the
 * latest limit among the begins in force; a worker hung anywhere else, or
 * after the shim's wait and lead, is killed as before.  Nothing runs
 * outside a begin/end: no thread, no fd.  Switched off by the config key
 * gunicorn_heartbeat (the caller asks config; this module reads no
 * configuration).
 */
#ifndef MIGSHIM_HEARTBEAT_H
#define MIGSHIM_HEARTBEAT_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "compiler.h"

#define HEARTBEAT_TICK_MS 500

/* gunicorn_heartbeat: false makes every begin a count only (src/shim.c
 * sets it once the configuration is loaded; default true). */
void heartbeat_configure(bool on);

/*
 * Keep this process's Gunicorn worker heartbeat alive from now until the
 * matching heartbeat_end(), for at most `limit_s` seconds (0: no limit of
 * its own -- a wait, which ends by wait_timeout).  `what` says why, for the
 * debug line ("waiting", "leading").  Counted: the first begin finds the
 * file and starts the thread; later ones only count (and may push the
 * limit later).  Never fails: where there is no heartbeat to keep it logs
 * one debug line and counts all the same.  May be called with the gate's
 * mutex held (it takes only its own).
 */
void heartbeat_begin(const char *what, double limit_s);

/*
 * End one begin.  The last one out stops the thread (it exits at its next
 * wake-up, at once) and closes the module's copy of the fd.  In a forked
 * child, the ends of begins made before fork() are absorbed: the child has
 * no heartbeat of its parent's to stop.
 */
void heartbeat_end(void);

/* Number of begins in force in this process (tests, asserts). */
unsigned heartbeat_count(void);

/*
 * Find the worker's heartbeat file: an fd of this process satisfying the
 * rules above, against the parent `ppid`.  Returns it (not duplicated: the
 * app's own) or -1 when there is none; `why` says what was found or why
 * none (one phrase, for the debug line).  Reads /proc only.
 */
int heartbeat_find(pid_t ppid, char *why, size_t whysz) MUSTCHECK;

/*
 * fork(): register the module's fork handlers (pthread_atfork), once; a
 * no-op after the first call.  The module's mutex is held across fork(),
 * after the gate's (the gate calls in with its own held); the child starts
 * with no begin in force, no thread and no fd.  The module calls this itself
 * before it first takes the mutex.  A module that calls into this one with
 * its own mutex held (the gate) calls it before registering its own
 * handlers: prepare handlers run last-registered first, so fork() then
 * takes the outer mutex before this one, in the order the threads take
 * them.  Never call it with a mutex of the shim held (pthread_atfork waits
 * for a fork in progress, whose prepare handlers may wait for that
 * mutex).  A failure to register is logged.
 */
void heartbeat_fork_init(void);

#endif
