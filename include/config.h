/*
 * config — every setting of the shim, from one table of keys.
 *
 * A key `foo_bar` is `foo_bar = ...;` in the libconfig file and
 * MIGSHIM_FOO_BAR in the environment; the environment wins over the file,
 * the file over the default.  The file is MIGSHIM_CONFIG if set, else
 * ./migshim.conf, else /etc/migshim.conf (either only if it exists).
 * Unknown keys or MIGSHIM_* variables, wrong types and out-of-range values
 * are errors naming the file and line, or the variable.
 *
 * The configuration is loaded once per process and never changes after.
 */
#ifndef MIGSHIM_CONFIG_H
#define MIGSHIM_CONFIG_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>

#include "compiler.h"
#include "log.h"

/* Where a value came from (`migshim status` prints it). */
enum config_source { CFG_DEFAULT = 0, CFG_FILE, CFG_ENV, CFG_ENV_PY /* the app's env.py */ };

/* The exit status of a process whose configuration is bad under strict. */
#define CONFIG_EXIT_STRICT 78 /* EX_CONFIG */

#define CONFIG_MAX_KEYS 32

enum lock_mode { LOCK_XACT = 0, LOCK_SESSION, LOCK_OFF };
enum on_timeout { ON_TIMEOUT_PROCEED = 0, ON_TIMEOUT_FAIL };
enum tool { TOOL_AUTO = 0, TOOL_ALEMBIC, TOOL_DJANGO };

#define CONFIG_NAME_MAX 128 /* identifiers, database names */

struct config {
    bool disable;         /* pure pass-through                            */
    enum log_level log;   /* log threshold                                */
    bool strict;          /* bad configuration: exit 78 instead of disable */

    /* the start-up gate */
    char heads[1024];                 /* target heads, comma-separated; "" = from scripts */
    char alembic_ini[PATH_MAX];       /* "" = ./alembic.ini, ./migrations/alembic.ini     */
    char version_table[CONFIG_NAME_MAX];
    char version_table_schema[CONFIG_NAME_MAX]; /* "" = the search_path's   */
    char database[CONFIG_NAME_MAX];   /* gate only this database; "" = all  */
    enum lock_mode lock;
    long long lock_key;               /* valid when lock_key_set            */
    bool lock_key_set;
    double wait_timeout;              /* seconds                            */
    double hold_timeout;              /* seconds; 0 = until target or exit  */
    double leader_grace;              /* seconds                            */
    double lead_settle;               /* seconds with no version-table activity after a
                                         leader's run ended short of the target     */
    int lead_failures;                /* failed runs a waiter sees before it proceeds
                                         without the gate; 0 = never               */
    enum on_timeout on_timeout;

    /* the race guard */
    bool guard;                       /* map proven races to success        */
    double race_wait;                 /* seconds to wait for a peer in flight */

    char events[PATH_MAX];            /* JSON-lines event file; "" = none   */

    /* which migration tool (include/migtool.h: migtool_pick) */
    enum tool tool;                   /* auto: Alembic's ini, else Django's settings */
    char django_target[PATH_MAX];     /* "" = .migshim-django.target in the project */
    double django_settle;             /* seconds idle before an in-process leader releases */
    char django_python[PATH_MAX];     /* "" = the app's Python as invoked (django.h) */

    /* a Gunicorn worker that waits or leads keeps its heartbeat (heartbeat.h) */
    bool gunicorn_heartbeat;

    /* the wire layer (wirefd.h, wiressl.h) follows and gates the connections
     * of drivers that speak the protocol themselves (asyncpg, pg8000);
     * false: it follows none (its libc and OpenSSL wrappers pass through) */
    bool wire;

    char file[PATH_MAX];  /* the configuration file read, or ""          */
    enum config_source source[CONFIG_MAX_KEYS]; /* per key, table order  */
};

/* Fill `cfg` with the defaults. */
void config_defaults(struct config *cfg);

/*
 * Read the libconfig file at `path` over `cfg`.  On error returns false
 * with one line in `err` ("path:line: message").  Keys that were valid
 * before the error are applied, so `strict` is known even then.
 */
bool config_apply_file(struct config *cfg, const char *path, char *err, size_t errsz) MUSTCHECK;

/*
 * Apply every MIGSHIM_* variable of `envp` (NULL-terminated, as environ)
 * over `cfg`.  MIGSHIM_CONFIG names the file and is not a key.  On error
 * returns false with one line in `err` ("MIGSHIM_X: message"); the other
 * valid variables are still applied.
 */
bool config_apply_env(struct config *cfg, char *const *envp, char *err, size_t errsz) MUSTCHECK;

/*
 * The whole load: defaults, then the file (chosen as above, relative paths
 * against the current directory), then the environment.  Returns false on
 * the first error, with `err` set; `cfg` then holds what could be applied.
 */
bool config_load(struct config *cfg, char *const *envp, char *err, size_t errsz) MUSTCHECK;

/* Number of keys, and the name of key i (table order). */
size_t config_key_count(void);
/* The table index of key `name`, or -1. */
int config_key_index(const char *name);
const char *config_key_name(size_t i);

/* Write key i's effective value as text into buf.  Returns buf. */
char *config_key_value(const struct config *cfg, size_t i, char *buf, size_t n);

#endif
