/*
 * resolve — the real libpq functions, one table per libpq copy in the process.
 *
 * A process may hold several libpq copies (the system's, a wheel's bundled
 * copy with a renamed soname) and may have loaded them privately
 * (RTLD_LOCAL), where dlsym(RTLD_NEXT, ...) finds nothing.  So the shim never
 * asks the dynamic linker by name: it walks the loaded objects with
 * dl_iterate_phdr(), recognises libpq copies by the symbols they define, and
 * reads each copy's dynamic symbol table itself.  That also leaves dlerror()
 * untouched, which a dlsym() call would not.
 *
 * Like SQLite's os_unix.c syscall table, every real function is one typed
 * slot of `struct pq_api`, declared once in PQ_API_LIST; nothing else in the
 * shim may call a PQ* name directly (the link would bind it to the shim's
 * own wrapper).  Copies are never freed: libpq is not unloaded in practice
 * and a table must outlive every PGconn made through it.
 */
#ifndef MIGSHIM_RESOLVE_H
#define MIGSHIM_RESOLVE_H

#include <libpq-fe.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "compiler.h"

/* X(name, needed_by_shim): needed_by_shim = 1 when the gate/guard need the
 * function for their own work; a copy lacking one is passed through only. */

/* The functions the shim intercepts: src/interpose.c defines a wrapper of
 * each (its dlsym table is this list), and the library exports exactly
 * these names and dlsym -- the Makefile generates the linker's version
 * script and the build check's expected exports from this list.  Add a
 * name here and a wrapper there, nowhere else. */
#define PQ_WRAPPED_LIST(X)                                                      \
    /* connecting */                                                            \
    X(PQconnectdb, 0) X(PQconnectdbParams, 1) X(PQsetdbLogin, 0)               \
    X(PQconnectStart, 0) X(PQconnectStartParams, 0) X(PQconnectPoll, 0)        \
    X(PQreset, 0) X(PQresetStart, 0) X(PQresetPoll, 0) X(PQfinish, 1)          \
    /* statements */                                                            \
    X(PQexec, 1) X(PQexecParams, 1) X(PQexecPrepared, 0) X(PQprepare, 0)       \
    X(PQsendQuery, 0) X(PQsendQueryParams, 0) X(PQsendQueryPrepared, 0)        \
    X(PQsendPrepare, 0) X(PQgetResult, 1)                                      \
    X(PQtransactionStatus, 1)

/* Every real function the shim reaches: the intercepted ones, then the
 * ones it only calls. */
#define PQ_API_LIST(X)                                                          \
    PQ_WRAPPED_LIST(X)                                                          \
    /* state and results the shim reads */                                     \
    X(PQstatus, 1) X(PQconninfo, 1)                                            \
    X(PQconninfoFree, 1) X(PQerrorMessage, 1) X(PQsocket, 1)                   \
    X(PQbackendPID, 1) X(PQdb, 1) X(PQisnonblocking, 1)                        \
    X(PQsetnonblocking, 1) X(PQresultStatus, 1) X(PQresultErrorField, 1)       \
    X(PQntuples, 1) X(PQnfields, 1) X(PQgetvalue, 1) X(PQgetisnull, 1)         \
    X(PQclear, 1) X(PQlibVersion, 1) X(PQmakeEmptyPGresult, 1)                 \
    X(PQcmdStatus, 1) X(PQcmdTuples, 1) X(PQsetResultAttrs, 1) X(PQsetvalue, 1)  \
    X(PQpipelineStatus, 0) X(PQhost, 0) X(PQport, 0)

/* Typed slots; `slot[]` views the same pointers by index (resolve fills
 * them by name, in PQ_API_LIST order). */
struct pq_api {
    union {
        struct {
#define PQ_API_MEMBER(name, needed) __typeof__(name) *name;
            PQ_API_LIST(PQ_API_MEMBER)
#undef PQ_API_MEMBER
        };
#define PQ_API_ONE(name, needed) +1
        void (*slot[0 PQ_API_LIST(PQ_API_ONE)])(void);
#undef PQ_API_ONE
    };
};

#define PQ_API_COUNT (sizeof(((struct pq_api *)0)->slot) / sizeof(void (*)(void)))

/* PQI_<name>: a slot's index, e.g. PQI_PQexec. */
enum pq_api_index {
#define PQ_API_INDEX(name, needed) PQI_##name,
    PQ_API_LIST(PQ_API_INDEX)
#undef PQ_API_INDEX
    PQI_COUNT
};

/* The name of slot i ("PQexec"). */
const char *resolve_api_name(enum pq_api_index i);

/* One loaded libpq copy. */
struct pq_copy {
    struct pq_api api;       /* the real functions of this copy            */
    uintptr_t lo, hi;        /* its mapped address range                   */
    char soname[96];         /* DT_SONAME, e.g. "libpq.so.5"               */
    bool complete;           /* every needed_by_shim slot was found        */
    _Atomic uint64_t seen;   /* bit i: wrapper i already reported at debug */
};

/*
 * The copy a call coming from return address `ra` must reach:
 * - `ra` inside a libpq copy (libpq calling its own exported functions
 *   through the PLT): that copy;
 * - `ra` in a module whose DT_NEEDED names a loaded libpq copy: that copy;
 * - otherwise (ctypes/libffi, or a caller that got the function some other
 *   way): the copy last handed out through dlsym(), else the first copy.
 * Returns NULL only when no libpq is loaded at all.
 */
const struct pq_copy *resolve_for_caller(const void *ra) MUSTCHECK;

/* True when `ra` lies inside a libpq copy: the call is libpq's own nested
 * call (PQconnectdb -> PQconnectStart, PQexec -> PQgetResult, PQping ->
 * PQconnectStart, ...) and must pass straight through. */
bool resolve_is_internal(const void *ra);

/* True when `ra` lies inside a libpq copy, rescanning the loaded objects
 * (under resolve's mutex) when it lies in none known yet: the wire layer
 * asks once per connection, at its first write, whether libpq made it. */
bool resolve_is_libpq(const void *ra);

/* The copy when the process has exactly one (the common case, lock-free),
 * else NULL: the caller must then find the copy some other way. */
/* (hidden: the fast path loads it directly, not through the GOT) */
extern __attribute__((visibility("hidden"))) _Atomic(const struct pq_copy *) resolve_sole;
static inline const struct pq_copy *resolve_sole_copy(void)
{
    return atomic_load_explicit(&resolve_sole, memory_order_acquire);
}

/* The first libpq copy the process loaded, never NULL again once set and
 * never changed after: while shim_hooks has SHIM_HOOKS_NOSOLE clear
 * (shim.h), it is the sole copy.  For the wrappers' fast path, after an
 * acquire load of shim_hooks saw that bit clear (resolve.c publishes the
 * copy before it clears the bit). */
extern __attribute__((visibility("hidden"))) _Atomic(const struct pq_copy *) resolve_first;
static inline const struct pq_copy *resolve_first_copy(void)
{
    return atomic_load_explicit(&resolve_first, memory_order_relaxed);
}

/*
 * The ctypes path.  `real` is what the real dlsym(handle, name) returned.
 * When `real` is a function inside a libpq copy, record that copy as the
 * one ctypes callers reach and return true: the caller then hands out the
 * shim's wrapper instead.  Never calls dl* functions.
 */
bool resolve_note_dlsym(const void *real);

/* Address range of the shim itself (to prove no slot points back into it). */
bool resolve_in_shim(const void *addr);

/*
 * The function `name` as the next object would define it: its definition in
 * the first loaded object after the shim (in dl_iterate_phdr's order, the
 * dynamic linker's), else in any loaded object but the shim; NULL when none
 * defines it.  Read from the objects' symbol tables, without dlsym: it is
 * how interpose.c finds the real dlsym where there is no dlvsym (musl,
 * include/libc_compat.h).  Takes no lock of the shim's.
 */
void *resolve_next_symbol(const char *name);

/*
 * fork(): register the module's fork handlers (pthread_atfork), once; a
 * no-op after the first call.  resolve_mu is held across fork(), so a child
 * never inherits it locked by a thread it does not have.  The module calls
 * this itself before it first takes the mutex.  A module that calls into
 * this one with its own mutex held (the gate) calls it before registering
 * its own handlers: prepare handlers run last-registered first, so fork()
 * then takes the outer mutex before this one, in the order the threads take
 * them.  Never call it with a mutex of the shim held (pthread_atfork waits
 * for a fork in progress, whose prepare handlers may wait for that
 * mutex).  A failure to register is logged.
 */
void resolve_fork_init(void);

#endif
