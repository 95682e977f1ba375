/*
 * peer — see include/peer.h.  setsockopt on a socket libpq owns changes
 * nothing in libpq's state: it reads and writes the socket as before, the
 * kernel only gives up on a dead peer sooner.  The server's side is one
 * set_config() per setting the server has, from pg_settings.
 */
#include "peer.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include "dbconn.h"

static int get_int(int fd, int level, int name, int *out)
{
    socklen_t len = sizeof *out;
    return getsockopt(fd, level, name, out, &len);
}

bool peer_tune_socket(int fd, struct peer_saved *s)
{
    int saved_errno = errno;
    s->fd = -1;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (fd < 0 || getsockname(fd, (struct sockaddr *)&ss, &sl) != 0 ||
        (ss.ss_family != AF_INET && ss.ss_family != AF_INET6)) {
        errno = saved_errno;
        return false;
    }
    int ut = 0;
    if (get_int(fd, SOL_SOCKET, SO_KEEPALIVE, &s->keepalive) != 0 ||
        get_int(fd, IPPROTO_TCP, TCP_KEEPIDLE, &s->idle) != 0 ||
        get_int(fd, IPPROTO_TCP, TCP_KEEPINTVL, &s->interval) != 0 ||
        get_int(fd, IPPROTO_TCP, TCP_KEEPCNT, &s->count) != 0 ||
        get_int(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &ut) != 0) {
        errno = saved_errno;
        return false;
    }
    s->user_timeout = (unsigned)ut;
    s->fd = fd;
    int one = 1, idle = PEER_KEEPALIVE_IDLE, intv = PEER_KEEPALIVE_INTERVAL,
        cnt = PEER_KEEPALIVE_COUNT;
    unsigned user = PEER_USER_TIMEOUT_MS;
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intv, sizeof intv);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof cnt);
    setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user, sizeof user);
    errno = saved_errno;
    return true;
}

void peer_restore_socket(const struct peer_saved *s)
{
    if (s->fd < 0)
        return;
    int saved_errno = errno;
    setsockopt(s->fd, SOL_SOCKET, SO_KEEPALIVE, &s->keepalive, sizeof s->keepalive);
    setsockopt(s->fd, IPPROTO_TCP, TCP_KEEPIDLE, &s->idle, sizeof s->idle);
    setsockopt(s->fd, IPPROTO_TCP, TCP_KEEPINTVL, &s->interval, sizeof s->interval);
    setsockopt(s->fd, IPPROTO_TCP, TCP_KEEPCNT, &s->count, sizeof s->count);
    setsockopt(s->fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &s->user_timeout, sizeof s->user_timeout);
    errno = saved_errno;
}

bool peer_tune_session(struct dbconn *c, bool local, bool reset)
{
    
    char sql[768];
    if (reset)
        snprintf(sql, sizeof sql,
                 "SELECT count(pg_catalog.set_config(name, reset_val, false)) FROM pg_catalog.pg_settings "
                 "WHERE name IN ('tcp_keepalives_idle', 'tcp_keepalives_interval', "
                 "'tcp_keepalives_count', 'tcp_user_timeout', 'client_connection_check_interval')");
    else
        snprintf(sql, sizeof sql,
                 "SELECT count(pg_catalog.set_config(name, CASE name "
                 "WHEN 'tcp_keepalives_idle' THEN '%d' WHEN 'tcp_keepalives_interval' THEN '%d' "
                 "WHEN 'tcp_keepalives_count' THEN '%d' WHEN 'tcp_user_timeout' THEN '%d' "
                 "ELSE '%d' END, %s)) FROM pg_catalog.pg_settings "
                 "WHERE name IN ('tcp_keepalives_idle', 'tcp_keepalives_interval', "
                 "'tcp_keepalives_count', 'tcp_user_timeout', 'client_connection_check_interval')",
                 PEER_KEEPALIVE_IDLE, PEER_KEEPALIVE_INTERVAL, PEER_KEEPALIVE_COUNT,
                 PEER_USER_TIMEOUT_MS, PEER_CHECK_INTERVAL_MS, local ? "true" : "false");
    return dbconn_run_ok(c, sql);
}
