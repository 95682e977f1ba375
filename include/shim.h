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

#include <stdbool.h>

#include "config.h"

/* True when the shim does its work in this process; false for a pure
 * pass-through.  The first call decides (thread-safe, once). */
bool shim_active(void);

/* The process's configuration (valid once shim_active() was called). */
const struct config *shim_config(void);

#endif
