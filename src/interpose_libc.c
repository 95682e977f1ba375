/*
 * interpose_libc — the only file that defines libc names: exactly those of
 * LIBC_WRAPPED_LIST (include/sysapi.h), the calls that carry the bytes of
 * drivers that speak the PostgreSQL protocol themselves, and the calls
 * that begin and end a socket's life (wire-protocol.md; issue 22).  Every
 * process the library is preloaded into has these wrappers.
 *
 * Each wrapper first looks at the fd's state word (wirefd.h): for an fd
 * the wire layer does not follow -- every fd of every program but a
 * connected socket not yet written to or a recognised PostgreSQL
 * connection -- that is a compare and a load, then a tail call of the real
 * function through the table (sysapi.h): its result and errno reach the
 * caller as they came.  Otherwise the wrapper's out-of-line twin calls the
 * real function and the wirefd hook looks at the bytes after the fact
 * and restores errno itself.  On a followed fd the gate (phase 2a) looks
 * first (wirefd_before_write/_read): at the app's first statement it runs
 * the gate before the app's bytes go out, and while it holds a
 * non-blocking connection it answers the app's reads (EAGAIN, or bytes it
 * kept for the app) and keeps its writes.  close and dup2/dup3 reset the fd's state before
 * the real call (after it, the number may already be another thread's new
 * socket).
 *
 * Async-signal-safety: read, write, close and dup2 are safe to call from a
 * signal handler and stay so on the NONE path: no lock, no allocation, no
 * pthread_once, and no dlsym (the table is resolved in the library's
 * constructor; a call before it takes the raw system call, each slot's
 * initial value, so a slot is never NULL and is not tested: sysapi.h).
 */
#include <errno.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "sysapi.h"
#include "wirefd.h"

#define EXPORT __attribute__((visibility("default")))
#define RA __builtin_return_address(0)
#define QUIET(st) __builtin_expect((st) == WIREFD_NONE, 1)
#define UNFOLLOWED(st) __builtin_expect((st) < WIREFD_FOLLOWED, 1)
/* The rest of a call the wire layer looks at, out of line: the fast path
 * stays a test and a tail call. */
#define SLOW static __attribute__((noinline))

/* --- a socket's life ------------------------------------------------------------ */

EXPORT int connect(int fd, const struct sockaddr *addr, socklen_t len)
{
    int r = real_connect()(fd, addr, len);
    wirefd_connected(fd, r, r == 0 ? 0 : errno, RA);
    return r;
}

EXPORT int close(int fd)
{
    unsigned st = wirefd_get(fd);
    if (!QUIET(st))
        wirefd_closing(fd, st);
    return real_close()(fd);
}

EXPORT int dup(int fd)
{
    int r = real_dup()(fd);
    unsigned st = wirefd_get(fd);
    if (!UNFOLLOWED(st) && r >= 0)
        wirefd_duplicated(fd, st);
    return r;
}

EXPORT int dup2(int fd, int fd2)
{
    unsigned st2 = wirefd_get(fd2);
    if (!QUIET(st2) && fd2 != fd)
        wirefd_closing(fd2, st2);
    int r = real_dup2()(fd, fd2);
    unsigned st = wirefd_get(fd);
    if (!UNFOLLOWED(st) && r >= 0 && fd2 != fd)
        wirefd_duplicated(fd, st);
    return r;
}

EXPORT int dup3(int fd, int fd2, int flags)
{
    unsigned st2 = wirefd_get(fd2);
    if (!QUIET(st2) && fd2 != fd)
        wirefd_closing(fd2, st2);
    int r = real_dup3()(fd, fd2, flags);
    unsigned st = wirefd_get(fd);
    if (!UNFOLLOWED(st) && r >= 0)
        wirefd_duplicated(fd, st);
    return r;
}

/* --- the bytes written ----------------------------------------------------------- */

/* The gate's look before a write on a followed fd (wirefd_before_write):
 * answered there, or the state afresh for the real call. */
#define BEFORE_WRITE(iov, cnt, flags)                                           \
    do {                                                                        \
        if (!UNFOLLOWED(st) && wirefd_write_watched(st)) {                      \
            ssize_t a_;                                                         \
            if (wirefd_before_write(fd, st, iov, cnt, flags, &a_))              \
                return a_;                                                      \
            st = wirefd_get(fd);                                                \
        }                                                                       \
    } while (0)
#define BEFORE_READ(iov, cnt, flags)                                            \
    do {                                                                        \
        if (!UNFOLLOWED(st) && wirefd_read_watched(st)) {                       \
            ssize_t a_;                                                         \
            if (wirefd_before_read(fd, st, iov, cnt, flags, &a_))               \
                return a_;                                                      \
        }                                                                       \
    } while (0)

SLOW ssize_t write_slow(int fd, const void *buf, size_t n, const void *ra)
{
    unsigned st = wirefd_get(fd);
    struct iovec v_ = {.iov_base = (void *)buf, .iov_len = n};
    BEFORE_WRITE(&v_, 1, 0);
    ssize_t r = real_write()(fd, buf, n);
    if (!QUIET(st))
        wirefd_wrote(fd, st, buf, n, r, 0, ra);
    return r;
}

EXPORT ssize_t write(int fd, const void *buf, size_t n)
{
    sysapi_fn f = sysapi_fast(SYSI_write);
    if (__builtin_expect(!QUIET(wirefd_get(fd)), 0))
        return write_slow(fd, buf, n, RA);
    return ((__typeof__(write) *)f)(fd, buf, n);
}

SLOW ssize_t send_slow(int fd, const void *buf, size_t n, int flags, const void *ra)
{
    unsigned st = wirefd_get(fd);
    struct iovec v_ = {.iov_base = (void *)buf, .iov_len = n};
    BEFORE_WRITE(&v_, 1, flags);
    ssize_t r = real_send()(fd, buf, n, flags);
    if (!QUIET(st))
        wirefd_wrote(fd, st, buf, n, r, flags, ra);
    return r;
}

EXPORT ssize_t send(int fd, const void *buf, size_t n, int flags)
{
    sysapi_fn f = sysapi_fast(SYSI_send);
    if (__builtin_expect(!QUIET(wirefd_get(fd)), 0))
        return send_slow(fd, buf, n, flags, RA);
    return ((__typeof__(send) *)f)(fd, buf, n, flags);
}

SLOW ssize_t sendto_slow(int fd, const void *buf, size_t n, int flags, const struct sockaddr *addr,
                      socklen_t alen, const void *ra)
{
    unsigned st = wirefd_get(fd);
    struct iovec v_ = {.iov_base = (void *)buf, .iov_len = n};
    BEFORE_WRITE(&v_, 1, flags);
    ssize_t r = real_sendto()(fd, buf, n, flags, addr, alen);
    if (!QUIET(st))
        wirefd_wrote(fd, st, buf, n, r, flags, ra);
    return r;
}

EXPORT ssize_t sendto(int fd, const void *buf, size_t n, int flags, const struct sockaddr *addr,
                      socklen_t alen)
{
    sysapi_fn f = sysapi_fast(SYSI_sendto);
    if (__builtin_expect(!QUIET(wirefd_get(fd)), 0))
        return sendto_slow(fd, buf, n, flags, addr, alen, RA);
    return ((__typeof__(sendto) *)f)(fd, buf, n, flags, addr, alen);
}

SLOW ssize_t writev_slow(int fd, const struct iovec *iov, int iovcnt, const void *ra)
{
    unsigned st = wirefd_get(fd);
    if (iov && iovcnt > 0)
        BEFORE_WRITE(iov, iovcnt, 0);
    ssize_t r = real_writev()(fd, iov, iovcnt);
    if (!QUIET(st))
        wirefd_wrotev(fd, st, iov, iovcnt, r, 0, ra);
    return r;
}

EXPORT ssize_t writev(int fd, const struct iovec *iov, int iovcnt)
{
    sysapi_fn f = sysapi_fast(SYSI_writev);
    if (__builtin_expect(!QUIET(wirefd_get(fd)), 0))
        return writev_slow(fd, iov, iovcnt, RA);
    return ((__typeof__(writev) *)f)(fd, iov, iovcnt);
}

SLOW ssize_t sendmsg_slow(int fd, const struct msghdr *msg, int flags, const void *ra)
{
    unsigned st = wirefd_get(fd);
    if (msg && msg->msg_iov && msg->msg_iovlen > 0 && !msg->msg_controllen)
        BEFORE_WRITE(msg->msg_iov, (int)msg->msg_iovlen, flags);
    ssize_t r = real_sendmsg()(fd, msg, flags);
    if (!QUIET(st))
        wirefd_wrotev(fd, st, msg ? msg->msg_iov : NULL, msg ? (int)msg->msg_iovlen : 0, r, flags,
                      ra);
    return r;
}

EXPORT ssize_t sendmsg(int fd, const struct msghdr *msg, int flags)
{
    sysapi_fn f = sysapi_fast(SYSI_sendmsg);
    if (__builtin_expect(!QUIET(wirefd_get(fd)), 0))
        return sendmsg_slow(fd, msg, flags, RA);
    return ((__typeof__(sendmsg) *)f)(fd, msg, flags);
}

/* --- the bytes read ------------------------------------------------------------------ */

SLOW ssize_t read_slow(int fd, void *buf, size_t n)
{
    unsigned st = wirefd_get(fd);
    struct iovec v_ = {.iov_base = buf, .iov_len = n};
    BEFORE_READ(&v_, 1, 0);
    ssize_t r = real_read()(fd, buf, n);
    if (!UNFOLLOWED(st))
        wirefd_read(fd, st, buf, r, 0);
    return r;
}

EXPORT ssize_t read(int fd, void *buf, size_t n)
{
    sysapi_fn f = sysapi_fast(SYSI_read);
    if (__builtin_expect(!UNFOLLOWED(wirefd_get(fd)), 0))
        return read_slow(fd, buf, n);
    return ((__typeof__(read) *)f)(fd, buf, n);
}

SLOW ssize_t recv_slow(int fd, void *buf, size_t n, int flags)
{
    unsigned st = wirefd_get(fd);
    struct iovec v_ = {.iov_base = buf, .iov_len = n};
    BEFORE_READ(&v_, 1, flags);
    ssize_t r = real_recv()(fd, buf, n, flags);
    if (!UNFOLLOWED(st))
        wirefd_read(fd, st, buf, r, flags);
    return r;
}

EXPORT ssize_t recv(int fd, void *buf, size_t n, int flags)
{
    sysapi_fn f = sysapi_fast(SYSI_recv);
    if (__builtin_expect(!UNFOLLOWED(wirefd_get(fd)), 0))
        return recv_slow(fd, buf, n, flags);
    return ((__typeof__(recv) *)f)(fd, buf, n, flags);
}

SLOW ssize_t recvfrom_slow(int fd, void *restrict buf, size_t n, int flags,
                        struct sockaddr *restrict addr, socklen_t *restrict alen)
{
    unsigned st = wirefd_get(fd);
    struct iovec v_ = {.iov_base = buf, .iov_len = n};
    BEFORE_READ(&v_, 1, flags); /* (a connected stream: no address to give) */
    ssize_t r = real_recvfrom()(fd, buf, n, flags, addr, alen);
    if (!UNFOLLOWED(st))
        wirefd_read(fd, st, buf, r, flags);
    return r;
}

EXPORT ssize_t recvfrom(int fd, void *restrict buf, size_t n, int flags,
                        struct sockaddr *restrict addr, socklen_t *restrict alen)
{
    sysapi_fn f = sysapi_fast(SYSI_recvfrom);
    if (__builtin_expect(!UNFOLLOWED(wirefd_get(fd)), 0))
        return recvfrom_slow(fd, buf, n, flags, addr, alen);
    return ((__typeof__(recvfrom) *)f)(fd, buf, n, flags, addr, alen);
}

SLOW ssize_t readv_slow(int fd, const struct iovec *iov, int iovcnt)
{
    unsigned st = wirefd_get(fd);
    if (iov && iovcnt > 0)
        BEFORE_READ(iov, iovcnt, 0);
    ssize_t r = real_readv()(fd, iov, iovcnt);
    if (!UNFOLLOWED(st))
        wirefd_readv(fd, st, iov, iovcnt, r, 0);
    return r;
}

EXPORT ssize_t readv(int fd, const struct iovec *iov, int iovcnt)
{
    sysapi_fn f = sysapi_fast(SYSI_readv);
    if (__builtin_expect(!UNFOLLOWED(wirefd_get(fd)), 0))
        return readv_slow(fd, iov, iovcnt);
    return ((__typeof__(readv) *)f)(fd, iov, iovcnt);
}

SLOW ssize_t recvmsg_slow(int fd, struct msghdr *msg, int flags)
{
    unsigned st = wirefd_get(fd);
    if (msg && msg->msg_iov && msg->msg_iovlen > 0) {
        msg->msg_flags = 0;
        BEFORE_READ(msg->msg_iov, (int)msg->msg_iovlen, flags);
    }
    ssize_t r = real_recvmsg()(fd, msg, flags);
    if (!UNFOLLOWED(st))
        wirefd_readv(fd, st, msg ? msg->msg_iov : NULL, msg ? (int)msg->msg_iovlen : 0, r,
                     flags | (msg ? msg->msg_flags & MSG_TRUNC : 0));
    return r;
}

EXPORT ssize_t recvmsg(int fd, struct msghdr *msg, int flags)
{
    sysapi_fn f = sysapi_fast(SYSI_recvmsg);
    if (__builtin_expect(!UNFOLLOWED(wirefd_get(fd)), 0))
        return recvmsg_slow(fd, msg, flags);
    return ((__typeof__(recvmsg) *)f)(fd, msg, flags);
}
