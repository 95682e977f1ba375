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
 * pointers are resolved lazily, at the first call of any of them, with
 * dlsym(RTLD_NEXT) (the next definition after the shim: libc's), all at
 * once; each result is checked not to point into the shim itself.  The
 * default of every entry is the raw system call (syscall(2)): it answers
 * while the table is being resolved (a wrapper called from inside dlsym, a
 * signal handler or another thread meanwhile), and stands in for good
 * where dlsym finds nothing or finds the shim.  sysapi_override swaps an
 * entry (tests inject faults so).
 *
 * LIBC_WRAPPED_LIST is the one list of the interposed libc names: the
 * table, the accessors, the library's exports (the Makefile generates the
 * linker's version script and the build check's expected exports from it,
 * as from PQ_WRAPPED_LIST) are made from it.  Add a name here and a
 * wrapper in interpose_libc.c, nowhere else.
 *
 * Promises: an accessor is async-signal-safe and thread-safe once the
 * table is resolved, and never blocks before (a concurrent or reentrant
 * caller gets the default); errno is preserved across resolution.
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

/* The current pointers (NULL until resolved).  (hidden: one direct load) */
extern __attribute__((visibility("hidden"))) _Atomic(sysapi_fn) sysapi_slots[SYSI_COUNT];

/* Resolve the table (once) and return entry `i`'s current pointer; while
 * another caller resolves, entry i's default.  Never NULL. */
sysapi_fn sysapi_resolve(enum sysapi_index i);

/* Entry i's name ("write"). */
const char *sysapi_name(enum sysapi_index i);

/* Replace entry i's current pointer with `fn` (NULL: back to resolving);
 * returns the previous one.  For tests. */
sysapi_fn sysapi_override(enum sysapi_index i, sysapi_fn fn);

/* Did entry i resolve to a libc function (true), or does it stand on its
 * default, the raw system call (false)?  Resolves the table first. */
bool sysapi_is_real(enum sysapi_index i);

/* Entry i's current pointer, or NULL before the table is resolved: for a
 * wrapper's fast path, whose slow twin resolves (real_<name>). */
static inline sysapi_fn sysapi_fast(enum sysapi_index i)
{
    return atomic_load_explicit(&sysapi_slots[i], memory_order_acquire);
}

/* The typed accessors: real_write() etc. */
#define SYSAPI_ACCESSOR(name)                                                   \
    static inline __typeof__(name) *real_##name(void)                           \
    {                                                                           \
        sysapi_fn f_ = atomic_load_explicit(&sysapi_slots[SYSI_##name],          \
                                            memory_order_acquire);              \
        if (__builtin_expect(f_ == NULL, 0))                                    \
            f_ = sysapi_resolve(SYSI_##name);                                   \
        return (__typeof__(name) *)f_;                                          \
    }
LIBC_WRAPPED_LIST(SYSAPI_ACCESSOR)
#undef SYSAPI_ACCESSOR

#endif
