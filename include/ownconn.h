/*
 * ownconn — the shim's own connections (the one that takes the migration
 * lock), opened with the app connection's own parameters through the same
 * libpq copy, and kept safe across fork().
 *
 * After fork() a child must never use or terminate a connection the parent
 * opened: PQfinish would send a Terminate message on the shared socket and
 * end the parent's session (and drop its lock).  The atfork child handler
 * therefore points each inherited socket descriptor at /dev/null, so the
 * child neither keeps the parent's session alive nor can talk on it, and
 * marks the connection inherited: the child's later calls treat it as gone.
 */
#ifndef MIGSHIM_OWNCONN_H
#define MIGSHIM_OWNCONN_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>

#include "compiler.h"
#include "dbconn.h"
#include "resolve.h"

struct ownconn; /* opaque */

/*
 * Open a connection like `app` (same parameters, password included, same
 * libpq copy) with application_name "migshim <purpose> pid=<pid> host=<host>".
 * Returns NULL on failure with the reason (password-free) in err.
 */
struct ownconn *ownconn_open(const struct pq_copy *copy, PGconn *app, const char *purpose,
                             char *err, size_t errsz) MUSTCHECK;

/*
 * True when `err`, ownconn_open's reason, says the server had no
 * connection slot for it: "too many clients already" (max_connections),
 * "too many connections for role/database" (a CONNECTION LIMIT), or
 * "remaining connection slots are reserved".  Such a refusal ends when
 * someone else disconnects, so it is worth waiting for; any other
 * failure is not.  Matches the server's English messages only: under a
 * translated lc_messages the refusal reads as any other failure.
 */
bool ownconn_no_slot(const char *err);

/* The libpq connection, or NULL when it was inherited across fork() and
 * must not be touched by this process. */
PGconn *ownconn_pg(const struct ownconn *oc);

/* Its connection seam (dbconn.h: the lock, the version reads and the
 * holder take it), living as long as `oc`; NULL when `oc` is NULL or was
 * inherited across fork(), as ownconn_pg. */
struct dbconn *ownconn_db(struct ownconn *oc);

/* The copy it was opened through. */
const struct pq_copy *ownconn_copy(const struct ownconn *oc);

/* Close it: PQfinish in the process that opened it; in a forked child only
 * the (already neutralised) descriptor is released.  NULL is a no-op. */
void ownconn_close(struct ownconn *oc);

/*
 * fork(): register the module's fork handlers (pthread_atfork), once; a
 * no-op after the first call.  The list's mutex is held across fork(), and
 * the child handler points the inherited sockets at /dev/null (above).  The
 * module calls this itself before it first takes the mutex.  A module that
 * calls into this one with its own mutex held (the gate) calls it before
 * registering its own handlers: prepare handlers run last-registered first,
 * so fork() then takes the outer mutex before this one, in the order the
 * threads take them.  Never call it with a mutex of the shim held
 * (pthread_atfork waits for a fork in progress, whose prepare handlers may
 * wait for that mutex).  A failure to register is logged.
 */
void ownconn_fork_init(void);

#endif
