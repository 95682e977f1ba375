/*
 * sslapi — the real OpenSSL functions the wire layer uses: one table.
 *
 * Python's _ssl module moves a TLS connection's plaintext through
 * SSL_write_ex and SSL_read_ex (asyncpg, through asyncio's or uvloop's
 * memory BIOs; pg8000, through a socket BIO on its blocking socket:
 * wire-protocol.md).  The library defines those names (and
 * SSL_get_error, SSL_free: src/interpose_ssl.c) to see the plaintext of a
 * PostgreSQL connection over TLS (wiressl.h); each wrapper reaches the
 * real function through this table, never by name.  libpq's own TLS uses
 * SSL_read and SSL_write, which are not interposed: a libpq connection is
 * never seen here.
 *
 * Unlike libc (sysapi.h), libssl is usually not loaded when the shim
 * starts (Python loads it with the ssl module), so an entry is resolved at
 * its first use, from the loaded objects' symbol tables
 * (resolve_next_symbol: the definition after the shim's, never the
 * shim's), and kept.  A wrapper is only ever called by code linked against
 * libssl, so its entry resolves then; an entry that finds nothing stays
 * NULL and the caller says what it cannot do.  None of this is
 * async-signal-safe (nor is OpenSSL).
 *
 * SSL_WRAPPED_LIST is the one list of the interposed OpenSSL names: the
 * table, the accessors, and the library's exports (the Makefile
 * generates its version script from it, as from LIBC_WRAPPED_LIST); the
 * names only called (SSL_USED_LIST) are resolved the same way and never
 * exported.  OpenSSL's headers are not needed: the prototypes below are
 * OpenSSL 1.1.1's and 3's, and SSL is opaque.
 */
#ifndef MIGSHIM_SSLAPI_H
#define MIGSHIM_SSLAPI_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct ssl_st SSL;

int SSL_write_ex(SSL *s, const void *buf, size_t num, size_t *written);
int SSL_read_ex(SSL *s, void *buf, size_t num, size_t *readbytes);
int SSL_get_error(const SSL *s, int ret);
void SSL_free(SSL *s);
int SSL_get_fd(const SSL *s);
int SSL_has_pending(const SSL *s);
size_t SSL_get_client_random(const SSL *s, unsigned char *out, size_t outlen);

/* SSL_get_error's answers the wire layer uses (OpenSSL's values) */
#define SSLAPI_ERROR_NONE 0
#define SSLAPI_ERROR_SSL 1
#define SSLAPI_ERROR_WANT_READ 2
#define SSLAPI_ERROR_WANT_WRITE 3
#define SSLAPI_ERROR_SYSCALL 5
#define SSLAPI_ERROR_ZERO_RETURN 6

/* X(name) */
#define SSL_WRAPPED_LIST(X) X(SSL_write_ex) X(SSL_read_ex) X(SSL_get_error) X(SSL_free)
#define SSL_USED_LIST(X) X(SSL_get_fd) X(SSL_has_pending) X(SSL_get_client_random)

enum sslapi_index {
#define SSLAPI_INDEX(name) SSLI_##name,
    SSL_WRAPPED_LIST(SSLAPI_INDEX) SSL_USED_LIST(SSLAPI_INDEX)
#undef SSLAPI_INDEX
    SSLI_COUNT
};

typedef void (*sslapi_fn)(void);

/* The resolved pointers (hidden: the accessors load them directly). */
extern __attribute__((visibility("hidden"))) _Atomic(sslapi_fn) sslapi_slots[SSLI_COUNT];

/* Entry i's slow path: resolve it now (and keep it). */
sslapi_fn sslapi_resolve(enum sslapi_index i);

/*
 * Entry i: resolved at the first call (then kept: one load after that),
 * NULL when no loaded object but the shim defines it.  Thread-safe (racing
 * resolutions store the same pointer).
 */
static inline sslapi_fn sslapi_get(enum sslapi_index i)
{
    sslapi_fn f = atomic_load_explicit(&sslapi_slots[i], memory_order_acquire);
    return __builtin_expect(f != NULL, 1) ? f : sslapi_resolve(i);
}

/* Entry i's name ("SSL_write_ex"). */
const char *sslapi_name(enum sslapi_index i);

/*
 * Can the shim see this process's TLS plaintext?  True when a shared
 * libssl that defines SSL_write_ex and SSL_read_ex is loaded: the calls of
 * Python's _ssl then reach the wrappers.  False when none is (an
 * interpreter with OpenSSL linked into it statically, as
 * python-build-standalone's: its calls never leave it).
 */
bool sslapi_visible(void);

/* The typed accessors: real_SSL_write_ex() etc. (NULL when unresolved) */
#define SSLAPI_ACCESSOR(name)                                                   \
    static inline __typeof__(name) *real_##name(void)                           \
    {                                                                           \
        return (__typeof__(name) *)sslapi_get(SSLI_##name);                     \
    }
SSL_WRAPPED_LIST(SSLAPI_ACCESSOR)
SSL_USED_LIST(SSLAPI_ACCESSOR)
#undef SSLAPI_ACCESSOR

#endif
