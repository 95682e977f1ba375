/*
 * heads — the target Alembic heads: from the `heads` key, or computed from
 * the app's own revision files, found the way Alembic finds them.
 *
 * Config discovery: `alembic_ini` if set, else ./alembic.ini, else
 * ./migrations/alembic.ini (Flask-Migrate: no script_location, the ini's
 * own folder is the script location), else [tool.alembic] in
 * ./pyproject.toml.  Honours script_location (with %(here)s),
 * version_locations (+ version_path_separator) and
 * recursive_version_locations.  Heads are the revisions that no revision
 * names as its down_revision; depends_on and branch_labels do not count.
 * Any file that cannot be parsed leaves the target unknown.
 */
#ifndef MIGSHIM_HEADS_H
#define MIGSHIM_HEADS_H

#include <stdbool.h>
#include <stddef.h>

#include "compiler.h"
#include "config.h"

#define HEADS_REV_MAX 64 /* Alembic's version_num is VARCHAR(32) */

/* One revision file, as parsed. */
struct revfile {
    char revision[HEADS_REV_MAX];
    char (*down)[HEADS_REV_MAX]; /* ndown entries, malloc'ed */
    size_t ndown;
    int line; /* line of the `revision =` assignment */
};

/* The target. */
struct heads {
    bool known;            /* false: target unknown                       */
    bool graph;            /* revs[] lists every local revision           */
    char (*revs)[HEADS_REV_MAX];
    size_t nrevs;
    char (*heads)[HEADS_REV_MAX];
    size_t nheads;
    char where[PATH_MAX + 32]; /* "heads key", or the versions folder    */
};

/*
 * Parse the Python source `text` of one revision file.  Returns 1 with
 * `out` filled, 0 when the file assigns no `revision` (not a revision
 * file), -1 on a malformed assignment with `*errline` and `err` set.
 * Understands either quote style, `revision: str = "x"`, None, tuples and
 * lists (merges), comments, docstrings; ignores everything else.
 */
int heads_parse_revision(const char *text, struct revfile *out, int *errline, char *err,
                         size_t errsz) MUSTCHECK;
void heads_revfile_free(struct revfile *rf);

/*
 * Compute heads from `files` (n of them).  Returns false (with err) on a
 * duplicate revision or a down_revision naming no known revision.
 */
bool heads_compute(const struct revfile *files, size_t n, struct heads *out, char *err,
                   size_t errsz) MUSTCHECK;

/* Load the target for this process per `cfg`, logging warnings for files
 * that cannot be parsed.  Never fails: out->known says what was found. */
void heads_load(const struct config *cfg, struct heads *out);

/*
 * The configuration readers heads_load() uses besides include/ini.h's,
 * exposed for the unit tests and the fuzzer (tests/fuzz/fuzz_ini.c).  Each
 * returns a malloc'ed string or NULL.
 *
 * heads_pyproject_script_location: `script_location = "..."` of
 * [tool.alembic] in a pyproject.toml text.
 * heads_interpolate: `v` (a value ini_get read) with %(here)s replaced by
 * `here` and %% by %; NULL with `err` set for any other interpolation.
 */
char *heads_pyproject_script_location(const char *text) MUSTCHECK;
char *heads_interpolate(const char *v, const char *here, char *err, size_t errsz) MUSTCHECK;

struct envpy_vt;

/*
 * Find the app's env.py (script_location/env.py of the configuration found
 * as above) and read the version table it names (include/envpy.h).
 * Returns false when there is no env.py; `path` gets its path.  Silent.
 */
bool heads_read_env_py(const struct config *cfg, struct envpy_vt *out, char *path,
                       size_t pathsz) MUSTCHECK;

/* True when this process has an Alembic configuration: the heads key, or
 * an ini/pyproject found as above (silent). */
bool heads_alembic_found(const struct config *cfg);

/* True when `rev` is one of h->revs (only meaningful when h->graph). */
bool heads_has_rev(const struct heads *h, const char *rev);

void heads_free(struct heads *h);

#endif
