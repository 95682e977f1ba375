/*
 * sysapi — the real libc functions the wire layer interposes: one table.
 *
 * The preloaded library defines connect, close, dup*, read, write, readv,
 * writev, send*, recv* (src/interpose_libc.c) so that it sees the bytes of
 * drivers that speak the PostgreSQL protocol themselves (asyncpg, pg8000;
 * wire-protocol.md).  Each wrapper reaches the real function through this
 * table, never by name: under -Bsymbolic a call of `write` inside the shim
 * binds to the shim's own wrapper.
 *
 * Like SQLite's os_unix.c, every function is one entry of LIBC_WRAPPED_LIST
 * with a typed accessor beside it (real_write() returns a
 * `__typeof__(write) *`), a current pointer and a default.  The current
 * pointers are resolved all at once in the library's constructor
 * (sysapi.c, priority 101: before any other constructor of the library),
 * with dlsym(RTLD_NEXT) (the next definition after the shim: libc's); each
 * result is checked not to point into the shim itself.  The default of
 * every entry is the raw system call (syscall(2)): it answers the calls
 * made before the constructor ran (another library's constructor, a
 * thread or signal handler meanwhile), and stands in for good where dlsym
 * finds nothing or finds the shim.  The current pointers start out as the
 * defaults (a static initialiser: the loader's relocations have filled
 * them in before any code of the library can run, as they have every
 * other pointer of it), so a slot is never NULL and a wrapper's fast path
 * loads it and calls it without a test.
 *
 * Why not lazily, at the first call, as libpq's functions are
 * (resolve.h)?  dlsym is not async-signal-safe -- it takes the loader's
 * lock -- and read/write/close are: a write() from a signal handler as
 * the process's first I/O (a self-pipe), or one made while another thread
 * holds the loader's lock in dlopen, would call dlsym there and could
 * deadlock.  libpq is resolved lazily because it may not be loaded yet
 * when the shim starts (dlopen'ed by psycopg2's extension later); libc is
 * always loaded before any preloaded library's constructor runs, so its
 * table can be complete before the process's code makes a call.  After
 * the constructor nothing in this table ever calls dlsym.  sysapi_override
 * swaps an entry (tests inject faults so).
 *
 * LIBC_WRAPPED_LIST is the one list of the interposed libc names: the
 * table, the accessors, the library's exports (the Makefile generates the
 * linker's version script and the build check's expected exports from it,
 * as from PQ_WRAPPED_LIST) are made from it.  Add a name here and a
 * wrapper in interpose_libc.c, nowhere else.
 *
 * Promises: an accessor is async-signal-safe, thread-safe and lock-free at
 * every moment (before the constructor it returns the default); errno is
 * preserved by the resolution.
 */
#ifndef MIGSHIM_SYSAPI_H
#define MIGSHIM_SYSAPI_H

#include <stdatomic.h>
#include <stdbool.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "compiler.h"

/* X(name) */
#define LIBC_WRAPPED_LIST(X)                                                    \
    /* a socket's life: its state starts and ends here */                      \
    X(connect) X(close) X(dup) X(dup2) X(dup3)                                  \
    /* the bytes (asyncio: send/recv; uvloop: write/read, writev; pg8000:      \
     * send/recv; the rest for completeness of the same paths) */               \
    X(read) X(write) X(readv) X(writev)                                         \
    X(send) X(sendto) X(sendmsg) X(recv) X(recvfrom) X(recvmsg)

/* SYSI_<name>: an entry's index. */
enum sysapi_index {
#define SYSAPI_INDEX(name) SYSI_##name,
    LIBC_WRAPPED_LIST(SYSAPI_INDEX)
#undef SYSAPI_INDEX
    SYSI_COUNT
};

typedef void (*sysapi_fn)(void);

/* The current pointers: each entry's default until the constructor
 * resolved them, never NULL.  (hidden: one direct load) */
extern __attribute__((visibility("hidden"))) _Atomic(sysapi_fn) sysapi_slots[SYSI_COUNT];

/* What entry i stands on without an override: before the constructor ran
 * (or while it runs), entry i's default, the raw system call; after, what
 * the constructor resolved.  Never NULL, never calls dlsym,
 * async-signal-safe. */
sysapi_fn sysapi_unresolved(enum sysapi_index i);

/* Entry i's name ("write"). */
const char *sysapi_name(enum sysapi_index i);

/* Replace entry i's current pointer with `fn` (NULL: back to
 * sysapi_unresolved(i), what the constructor resolved, or the default
 * before it ran); returns the previous one.  For tests. */
sysapi_fn sysapi_override(enum sysapi_index i, sysapi_fn fn);

/* Has the constructor resolved the table? */
bool sysapi_ready(void);

/* Did entry i resolve to a libc function (true), or does it stand on its
 * default, the raw system call (false; so before the constructor ran)? */
bool sysapi_is_real(enum sysapi_index i);

/* Entry i's current pointer (never NULL: the default before the
 * constructor resolved the table): one load, for a wrapper's fast path. */
static inline sysapi_fn sysapi_fast(enum sysapi_index i)
{
    return atomic_load_explicit(&sysapi_slots[i], memory_order_acquire);
}

/* The typed accessors: real_write() etc.  One load, never NULL. */
#define SYSAPI_ACCESSOR(name)                                                   \
    static inline __typeof__(name) *real_##name(void)                           \
    {                                                                           \
        return (__typeof__(name) *)sysapi_fast(SYSI_##name);                    \
    }
LIBC_WRAPPED_LIST(SYSAPI_ACCESSOR)
#undef SYSAPI_ACCESSOR

#endif
