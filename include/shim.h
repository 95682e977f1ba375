/*
 * shim — the process-wide life of the shim: decided once, on the first
 * intercepted call (never in a constructor: a process that never touches
 * libpq pays nothing, and every exec'd child that inherits LD_PRELOAD
 * starts clean).
 *
 * Inert (pure pass-through, silent) when the process runs in secure-
 * execution mode (setuid/setgid, AT_SECURE) or MIGSHIM_DISABLE is true.
 * A bad configuration prints one error line and disables the shim for the
 * process, or exits with status 78 when `strict` is set.
 */
#ifndef MIGSHIM_SHIM_H
#define MIGSHIM_SHIM_H

#include <assert.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "config.h"

/* True when the shim does its work in this process; false for a pure
 * pass-through.  The first call decides (thread-safe, once). */
bool shim_active(void);

/* The process's configuration (valid once shim_active() was called). */
const struct config *shim_config(void);

/*
 * The per-call hooks, one word (one load for every wrapper).
 *
 * Low 16 bits (SHIM_HOOKS_ALL): non-zero while some per-call hook must
 * run: a database the gate watches, a connection the guard is busy with,
 * or debug logging (the first-call notes).  Zero is the steady state after
 * start-up: the wrappers then test only this word, load the sole libpq
 * copy (resolve_first_copy) and tail-call the real function.  Each reason adds 1 while it holds and
 * takes it back after (shim_hooks_add).
 *
 * High bits (SHIM_HOOKS_SQL each): non-zero while only the app's
 * statement texts must be seen (the gate watches a database whose target
 * is unknown, for the first statement naming the version table): the
 * wrappers that carry SQL text (PQexec, PQexecParams, PQsendQuery,
 * PQsendQueryParams) look at the text, all the others stay on the fast
 * path (shim_hooks_sql_add).
 *
 * SHIM_HOOKS_NOSOLE: set while the process has no sole libpq copy (none
 * known yet, the initial value, or two or more: resolve.h), so that one
 * test of this word (ALL | NOSOLE zero) tells a wrapper that it may call
 * resolve_first_copy() at once.  Only resolve.c changes it: cleared after
 * the first copy is published, set for good when a second one is found.
 */
extern __attribute__((visibility("hidden"))) _Atomic int shim_hooks; /* (a direct load) */

#define SHIM_HOOKS_ALL 0xffff
#define SHIM_HOOKS_SQL 0x10000
#define SHIM_HOOKS_NOSOLE 0x40000000 /* above any count of SQL watchers */
#define SHIM_HOOKS_IDLE_MASK (SHIM_HOOKS_ALL | SHIM_HOOKS_NOSOLE)

/*
 * Which window of full hooks this is: bumped before every change of the
 * SHIM_HOOKS_ALL part from zero to non-zero becomes visible.  Between two
 * windows the wrappers take the fast path and see nothing of the app's
 * calls, so what a wrapper noted in an earlier window (conn.h's prepared
 * texts) may be stale in this one: a note carries the epoch it was made
 * in and is trusted only in that epoch.
 */
extern __attribute__((visibility("hidden"))) _Atomic unsigned shim_hooks_epoch;

static inline unsigned shim_hooks_window(void)
{
    return atomic_load_explicit(&shim_hooks_epoch, memory_order_acquire);
}

static inline void shim_hooks_add(int delta)
{
    int old = atomic_load_explicit(&shim_hooks, memory_order_relaxed);
    do {
        if (delta > 0 && !(old & SHIM_HOOKS_ALL)) /* a new window: before it is seen */
            atomic_fetch_add_explicit(&shim_hooks_epoch, 1, memory_order_release);
    } while (!atomic_compare_exchange_weak(&shim_hooks, &old, old + delta));
}
static inline void shim_hooks_sql_add(int delta)
{
    int old = atomic_fetch_add(&shim_hooks, delta * SHIM_HOOKS_SQL);
    (void)old;
    assert((old & ~(SHIM_HOOKS_IDLE_MASK)) + delta * SHIM_HOOKS_SQL < SHIM_HOOKS_NOSOLE);
}

#endif
