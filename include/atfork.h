/*
 * atfork — the one way a module registers its fork handlers.
 *
 * Each module with a mutex registers prepare (take it), parent and child
 * (release it; the child also forgets what belongs to threads it does not
 * have) once, from its own pthread_once, before it first takes the mutex,
 * and never with a mutex of the shim held (pthread_atfork waits for a fork
 * in progress, whose prepare handlers may wait for that mutex):
 *
 *   static pthread_once_t fork_once = PTHREAD_ONCE_INIT;
 *   static void fork_register(void)
 *   {
 *       atfork_register("conn", atfork_prepare, atfork_parent, atfork_child);
 *   }
 *   void conn_fork_init(void) { pthread_once(&fork_once, fork_register); }
 */
#ifndef MIGSHIM_ATFORK_H
#define MIGSHIM_ATFORK_H

#include <pthread.h>
#include <string.h>

#include "log.h"

/* pthread_atfork(prepare, parent, child); a failure (ENOMEM) is logged as
 * one warning naming `module`: its forks then run without the handlers. */
static inline void atfork_register(const char *module, void (*prepare)(void),
                                   void (*parent)(void), void (*child)(void))
{
    int rc = pthread_atfork(prepare, parent, child);
    if (rc != 0)
        log_warn("%s: cannot register the fork handlers: %s", module, strerror(rc));
}

#endif
