/*
 * libpq_dl — a libpq for the `migshim` command, loaded only when it needs one.
 *
 * The command links no libpq: `-- COMMAND`, `heads`, `timeline`, `--help`
 * and `--version` run where there is none (an image whose only libpq sits
 * inside the app's psycopg2-binary or psycopg[binary] wheel).  `status`
 * calls libpq_dl_load(), which tries, in order:
 *
 *   1. the file given with --libpq PATH (and nothing else when given);
 *   2. the system's libpq, dlopen("libpq.so.5") (LD_LIBRARY_PATH and the
 *      ld.so cache apply, as for any program);
 *   3. a copy bundled in a wheel: <dir>/<name>.libs/libpq*.so* (auditwheel's
 *      layout: psycopg2_binary.libs/libpq-<hash>.so.5.16,
 *      psycopg_binary.libs/...) for every <dir> of the module search path
 *      of the `python3` the app would run with (the first on PATH, or
 *      $VIRTUAL_ENV/bin/python3), then of the usual site-packages folders.
 *
 * The copy is loaded RTLD_LOCAL and its functions are read into a
 * `struct pq_api` (include/resolve.h), the same typed table the library
 * fills; lock.c and the rest take that table.  Nothing is unloaded.
 */
#ifndef MIGSHIM_LIBPQ_DL_H
#define MIGSHIM_LIBPQ_DL_H

#include <stdbool.h>
#include <stddef.h>

#include "compiler.h"
#include "resolve.h"

#define LIBPQ_DL_SONAME "libpq.so.5"

/*
 * Load a libpq as above and fill every slot of `api`.  On success returns
 * true and writes what was loaded into `where` ("/usr/lib/.../libpq.so.5.15
 * (the system's)", "/app/.venv/.../libpq-1a2b.so.5.16 (a wheel's copy)").
 * On failure returns false with one line in `err` saying what was tried.
 * `explicit_path` may be NULL.
 */
bool libpq_dl_load(const char *explicit_path, struct pq_api *api, char *where, size_t wheresz,
                   char *err, size_t errsz) MUSTCHECK;

#endif
