/*
 * peer — noticing a peer that vanished: the TCP keepalive and user-timeout
 * figures the shim uses, their client side on a socket and their server
 * side on a session.
 *
 * A peer that vanishes without closing its connections (a host that loses
 * power or network: no FIN, no RST) must be noticed by the server within
 * seconds, not TCP's default two hours, or its lock and its migration's
 * uncommitted catalog rows stall the fleet for that long.  On the shim's
 * own lock connection (both ends) and, while a process leads, on the app's
 * connections (peer_tune_session for the server's side, peer_tune_socket
 * for the client's):
 *
 *   keepalive after PEER_KEEPALIVE_IDLE s of silence, then a probe every
 *   PEER_KEEPALIVE_INTERVAL s; PEER_KEEPALIVE_COUNT unanswered probes or
 *   PEER_USER_TIMEOUT_MS of unacknowledged data end the connection: a dead
 *   peer is dropped about 11 s after its last packet.  A busy backend (a
 *   statement of the migration running) looks at its socket every
 *   PEER_CHECK_INTERVAL_MS (client_connection_check_interval, PostgreSQL
 *   14+), so it ends that statement too instead of finishing it for nobody.
 *
 * Whatever is set on a socket of the app's is saved first and put back
 * with peer_restore_socket(): the shim changes an app connection only
 * while its process leads.
 */
#ifndef MIGSHIM_PEER_H
#define MIGSHIM_PEER_H

#include <stdbool.h>

#include "compiler.h"
#include "dbconn.h"

#define PEER_KEEPALIVE_IDLE 5
#define PEER_KEEPALIVE_INTERVAL 2
#define PEER_KEEPALIVE_COUNT 3
#define PEER_USER_TIMEOUT_MS 10000
#define PEER_CHECK_INTERVAL_MS 2000

/* A socket's settings as they were before peer_tune_socket. */
struct peer_saved {
    int fd;          /* -1: nothing was changed (not TCP, or no socket) */
    int keepalive, idle, interval, count;
    unsigned user_timeout;
};

/* On a TCP socket `fd` (IPv4 or IPv6; anything else is left alone):
 * save its keepalive and user-timeout options into *saved (the caller's),
 * then set the PEER_* figures.  False (and saved->fd = -1) when nothing
 * was changed: not a TCP socket, or its options could not be read.
 * errno is preserved. */
bool peer_tune_socket(int fd, struct peer_saved *saved) MUSTCHECK;

/* Put back what peer_tune_socket saved (a no-op for fd = -1).  errno is
 * preserved. */
void peer_restore_socket(const struct peer_saved *saved);

/*
 * The server side of the same figures on `c`'s session, one round trip
 * through the connection's seam (dbconn.h): tcp_keepalives_idle,
 * tcp_keepalives_interval, tcp_keepalives_count, tcp_user_timeout and
 * client_connection_check_interval, each only where the server has it (an
 * older server skips the ones it lacks, without an error).  `local`: for
 * the current transaction only (SET LOCAL: the lock transaction, where it
 * also cannot leak through a transaction pooler); otherwise for the
 * session.  `reset` puts the session's defaults back instead (`local` is
 * then ignored).  True when the statement succeeded; false when it
 * failed (the reason: dbconn_last_error(c)).  Silent: the caller logs.
 */
bool peer_tune_session(struct dbconn *c, bool local, bool reset) MUSTCHECK;

#endif
