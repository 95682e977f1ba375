/*
 * shim — see include/shim.h.
 */
#include "shim.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/auxv.h>

#include "conn.h"
#include "envpy.h"
#include "events.h"
#include "gate.h"
#include "guard.h"
#include "heads.h"
#include "heartbeat.h"
#include "log.h"
#include "ownconn.h"
#include "resolve.h"

#ifndef MIGSHIM_VERSION
#error "MIGSHIM_VERSION is set by the Makefile (from the file VERSION)"
#endif

extern char **environ;

static pthread_once_t once = PTHREAD_ONCE_INIT;
static bool active;
static struct config cfg;

/* Every mutex of the shim is taken before fork() and released on both
 * sides, so a child never inherits one held by a thread it does not have. */
static void atfork_prepare(void)
{
    gate_atfork_prepare(); /* outermost first: the gate calls into the others */
    guard_atfork_prepare();
    resolve_atfork_prepare();
    conn_atfork_prepare();
    ownconn_atfork_prepare();
    heartbeat_atfork_prepare(); /* innermost: the gate calls in with its mutex held */
}
static void atfork_parent(void)
{
    heartbeat_atfork_parent();
    ownconn_atfork_parent();
    conn_atfork_parent();
    resolve_atfork_parent();
    guard_atfork_parent();
    gate_atfork_parent();
}
static void atfork_child(void)
{
    heartbeat_atfork_child();
    ownconn_atfork_child();
    conn_atfork_child();
    resolve_atfork_child();
    guard_atfork_child();
    gate_atfork_child();
}

static void shim_init(void)
{
    int saved = errno;
    /* Even a pass-through resolves symbols under a mutex: always register. */
    pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
    config_defaults(&cfg);
    if (getauxval(AT_SECURE)) { /* setuid & co: never act on the environment */
        log_set_silent(true);
        errno = saved;
        return;
    }
    char err[512];
    bool ok = config_load(&cfg, environ, err, sizeof err);
    if (!ok) {
        log_set_level(LOG_LVL_ERROR);
        if (cfg.strict) {
            log_error("%s; exiting with status %d (strict = true)", err, CONFIG_EXIT_STRICT);
            exit(CONFIG_EXIT_STRICT);
        }
        log_error("%s; migshim is disabled for this process", err);
        log_set_silent(true);
        errno = saved;
        return;
    }
    if (cfg.disable) {
        log_set_silent(true);
        errno = saved;
        return;
    }
    log_set_level(cfg.log);
    heartbeat_configure(cfg.gunicorn_heartbeat);
    log_debug("libmigshim.so %s: active in this process (configuration file: %s)", MIGSHIM_VERSION,
              cfg.file[0] ? cfg.file : "none");
    /* the version table the app's env.py names, where migshim's settings
     * are silent: before anything reads cfg, which is fixed from here on */
    struct envpy_vt vt;
    char envpy_path[PATH_MAX + 8];
    if (heads_read_env_py(&cfg, &vt, envpy_path, sizeof envpy_path))
        envpy_apply(&cfg, &vt, envpy_path);
    events_init(&cfg);
    if (cfg.log >= LOG_LVL_DEBUG)
        shim_hooks_add(1); /* for good: every first call is noted */
    active = true;
    errno = saved;
}

bool shim_active(void)
{
    pthread_once(&once, shim_init);
    return active;
}

const struct config *shim_config(void) { return &cfg; }

_Atomic int shim_hooks;
