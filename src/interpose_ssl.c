/*
 * interpose_ssl — the only file that defines OpenSSL names: exactly those
 * of SSL_WRAPPED_LIST (include/sslapi.h), through which Python's _ssl
 * moves a TLS connection's plaintext (asyncpg, pg8000 with ssl:
 * wire-protocol.md).  Every process the library is preloaded into has
 * these wrappers.
 *
 * Each wrapper's fast path, while no TLS connection is followed: one load
 * (and, for SSL_write_ex, a look at the first bytes: a StartupMessage
 * starts a connection), then the real function through the table.
 * Otherwise wiressl.c's slow path makes the whole call (wiressl.h).
 */
#include <errno.h>

#include "sslapi.h"
#include "wiressl.h"

#define EXPORT __attribute__((visibility("default")))

EXPORT int SSL_write_ex(SSL *s, const void *buf, size_t num, size_t *written)
{
    __typeof__(SSL_write_ex) *real = real_SSL_write_ex();
    if (wiressl_quiet() && !wiressl_maybe_startup(buf, num) && real)
        return real(s, buf, num, written);
    return wiressl_write_ex(s, buf, num, written);
}

EXPORT int SSL_read_ex(SSL *s, void *buf, size_t num, size_t *readbytes)
{
    __typeof__(SSL_read_ex) *real = real_SSL_read_ex();
    if (wiressl_quiet() && real)
        return real(s, buf, num, readbytes);
    return wiressl_read_ex(s, buf, num, readbytes);
}

EXPORT int SSL_get_error(const SSL *s, int ret)
{
    __typeof__(SSL_get_error) *real = real_SSL_get_error();
    if (wiressl_quiet() && real)
        return real(s, ret);
    return wiressl_get_error(s, ret);
}

EXPORT void SSL_free(SSL *s)
{
    __typeof__(SSL_free) *real = real_SSL_free();
    if (wiressl_quiet() && real) {
        real(s);
        return;
    }
    wiressl_free(s);
}
