/*
 * shim — see include/shim.h.
 */
#include "shim.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/auxv.h>

#include "envpy.h"
#include "events.h"
#include "heads.h"
#include "heartbeat.h"
#include "log.h"

#ifndef MIGSHIM_VERSION
#error "MIGSHIM_VERSION is set by the Makefile (from the file VERSION)"
#endif

extern char **environ;

static pthread_once_t once = PTHREAD_ONCE_INIT;
static bool active;
static struct config cfg;

static void shim_init(void)
{
    int saved = errno;
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

_Atomic int shim_hooks = SHIM_HOOKS_NOSOLE; /* no libpq copy known yet (resolve.c) */
_Atomic unsigned shim_hooks_epoch;
