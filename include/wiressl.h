/*
 * wiressl — PostgreSQL connections over TLS that the wire layer follows
 * above the TLS layer, through OpenSSL's SSL_write_ex/SSL_read_ex (issue
 * 22: asyncpg and pg8000 with ssl; sslapi.h has why those calls), and
 * their gate (wiregate.h), as wirefd.h does for a plaintext socket.
 *
 * Recognition.  An SSL object is followed from the SSL_write_ex that
 * carries a whole StartupMessage (wire_first: protocol 3.x) as its first
 * plaintext; any other SSL object (HTTPS, SMTP, ...) is never followed and
 * costs its calls one load (no connection followed) or one look in a
 * small table under a mutex (some followed).  libpq writes with SSL_write,
 * not _ex: its connections are never seen here.  A process where the shim
 * is inactive follows nothing.
 *
 * The gate, at the app's first statement (a Query or Parse at an idle
 * point, outside a transaction block), before its bytes go out:
 *   - a blocking socket under the SSL object (pg8000: SSL_get_fd gives
 *     it, O_NONBLOCK unset): the gate runs inline in the app's
 *     SSL_write_ex, its statements written and its replies read with the
 *     real SSL_write_ex/SSL_read_ex on the same SSL object (wireconn.h's
 *     io), SIGTERM & co. recorded as on a plaintext blocking socket;
 *   - otherwise (asyncpg: asyncio's and uvloop's memory BIOs, no fd): the
 *     app's bytes are kept and reported written, and the gate runs in a
 *     detached thread (all signals blocked) that never touches the SSL
 *     object: its statements go into a channel, and the APP's thread moves
 *     them -- inside the app's own SSL_write_ex/SSL_read_ex calls, the
 *     real ones -- so the SSL object is only ever used by the app's thread.
 *     The wait is driven by the server's replies: each reply wakes the
 *     app's event loop (the socket is readable), its SSL_read_ex hands the
 *     plaintext to the gate, waits until the gate has taken it and written
 *     what comes next (bounded: WIRESSL_PUMP_MS; the gate thread only
 *     computes between two replies), writes that, and answers the app
 *     with one more real SSL_read_ex, which wants more (all that had come
 *     was read: the object's own SSL_get_error says so): the loop
 *     flushes the new ciphertext (asyncio's and uvloop's _do_read do, after
 *     every read) and sleeps until the next reply.  Never a blocking wait
 *     in the loop's thread.
 * When the gate is done, the kept bytes go out (the real SSL_write_ex) and
 * the connection is not followed any more -- unless it leads: then until
 * its lock is released (at its next idle statement after a transaction,
 * once the version table is at the target: wiregate_settle, the same two
 * ways) or it is freed.  Asynchronous messages met in the shim's exchange
 * are handed to the app's next SSL_read_ex first.  A gate that failed the
 * connection (on_timeout = fail, a broken exchange) answers the app's next
 * call with a failure (SSL_ERROR_SYSCALL: Python raises SSLEOFError, the
 * driver sees its connection lost), and on a socket shuts it down.
 *
 * SSL_free of a followed object forgets it; a gate thread still running
 * on it stops at its next look (its channel says broken).  After fork()
 * the child follows none of its parent's connections.
 *
 * Logging: debug lines when a connection is recognised and when it stops
 * being followed; the gate's lines are wiregate's, with where: "(asyncpg/
 * pg8000 connection over TLS)" or "(... on fd 7, TLS)".
 *
 * Thread safety: any thread, any SSL object; one table under one mutex
 * (only while some connection is followed).
 */
#ifndef MIGSHIM_WIRESSL_H
#define MIGSHIM_WIRESSL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sslapi.h"

#define WIRESSL_CONNS 64      /* TLS connections followed at once             */
#define WIRESSL_PUMP_MS 2000  /* the app's thread waits this long at most for
                                 the gate thread's next statement             */
#define WIRESSL_STASH_MAX (1u << 20) /* the app's bytes kept while held        */

/* Connections followed now (hidden: the wrappers load it directly); 0
 * is the fast path. */
extern __attribute__((visibility("hidden"))) _Atomic unsigned wiressl_live;

static inline bool wiressl_quiet(void)
{
    return __builtin_expect(atomic_load_explicit(&wiressl_live, memory_order_acquire) == 0, 1);
}

/* Could `buf` (`num` bytes, an SSL_write_ex's) be a StartupMessage?  Two
 * loads and compares: the cheap test of a write on an object not followed. */
static inline bool wiressl_maybe_startup(const void *buf, size_t num)
{
    const uint8_t *p = buf;
    return num >= 8 && p && p[0] == 0 && p[4] == 0 && p[5] == 3;
}

/*
 * The slow paths of the four wrappers (interpose_ssl.c), each the whole
 * call: they make the real call themselves when it is due.  Same contract
 * as OpenSSL's function of the same name; errno is the real call's, or set
 * for an answer made here (ECONNRESET with a failure).
 */
int wiressl_write_ex(SSL *s, const void *buf, size_t num, size_t *written);
int wiressl_read_ex(SSL *s, void *buf, size_t num, size_t *readbytes);
int wiressl_get_error(const SSL *s, int ret);
void wiressl_free(SSL *s);

/* For tests: is `s` followed right now? */
bool wiressl_followed(const SSL *s);

#endif
