/*
 * ini — a value of an ini file (alembic.ini), read the way Python's
 * configparser reads it, without interpolation: the section header
 * `[name]`, `key = value` or `key: value`, comments (`#`, `;`) on their
 * own line, and indented continuation lines, which belong to the key
 * above them.  Used for alembic.ini's [alembic] keys (src/heads.c) and for
 * env.py's config.get_main_option("key") (src/envpy.c).  Reads text only:
 * the caller reads the file.
 */
#ifndef MIGSHIM_INI_H
#define MIGSHIM_INI_H

#include "compiler.h"

/*
 * The value of `key` in [section] of the ini text `text` (NUL-terminated),
 * white space around it trimmed, continuation lines joined with '\n'; the
 * last assignment wins.  Returns a malloc'ed string (free it), or NULL when
 * the key is not there (or memory ran out).  Never longer than `text`.
 *
 *   ini_get("[alembic]\nscript_location = migrations\n", "alembic",
 *           "script_location")  -> "migrations"
 */
char *ini_get(const char *text, const char *section, const char *key) MUSTCHECK;

#endif
