/*
 * envpy — the version table an Alembic env.py names, read without running
 * Python.
 *
 * Alembic takes `version_table` and `version_table_schema` from the
 * keyword arguments of `context.configure(...)` in env.py; apps that share
 * a database with another app set them there and nowhere else.  This
 * reader understands the three common spellings of each argument:
 *
 *   context.configure(..., version_table="my_version")          a literal
 *   VERSION_TABLE = "my_version"  ...  version_table=VERSION_TABLE   a module constant
 *   version_table=config.get_main_option("version_table")       the ini's [alembic] key
 *                                  (with an optional literal default)
 *
 * and `None` (Alembic's default).  Anything else (an f-string, os.environ,
 * a function call) is "set, but unreadable": the caller says so, naming
 * the setting to add.  Several configure() calls (offline and online) must
 * agree, else the value is unreadable too.
 */
#ifndef MIGSHIM_ENVPY_H
#define MIGSHIM_ENVPY_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"

/* One argument as found. */
struct envpy_arg {
    enum { ENVPY_ABSENT = 0, ENVPY_VALUE, ENVPY_NONE, ENVPY_UNREADABLE } state;
    char value[CONFIG_NAME_MAX]; /* ENVPY_VALUE                          */
    int line;                    /* where it is set (1-based); 0 if absent */
    char how[80];                /* ENVPY_VALUE: "a literal", "VERSION_TABLE",
                                    "get_main_option(\"k\")"; UNREADABLE: the
                                    expression's beginning                  */
};

struct envpy_vt {
    struct envpy_arg table;      /* version_table        */
    struct envpy_arg schema;     /* version_table_schema */
};

/*
 * Read `text`, the source of an env.py (NUL-terminated), into `out`.
 * `ini_text` is the alembic.ini it belongs to (NULL if none), for
 * config.get_main_option("key"): its [alembic] section.  Never fails; what
 * was not found is ENVPY_ABSENT.
 *
 *   envpy_read("context.configure(connection=c, version_table='v1')", NULL, &vt)
 *       -> vt.table.state == ENVPY_VALUE, vt.table.value "v1", line 1
 */
void envpy_read(const char *text, const char *ini_text, struct envpy_vt *out);

/*
 * Take version_table / version_table_schema from `vt` (read from `path`)
 * into `cfg` where migshim's own settings (file, environment) left the
 * default; their source becomes CFG_ENV_PY.  An unreadable argument that
 * migshim's settings do not cover is one warning naming the key to set.
 */
void envpy_apply(struct config *cfg, const struct envpy_vt *vt, const char *path);

#endif
