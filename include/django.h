/*
 * django — the target for Django: every node of the app's migration graph,
 * exactly as Django's own MigrationLoader lists it (INSTALLED_APPS
 * conditionals, MIGRATION_MODULES, apps in site-packages and squashes
 * included: C cannot know those, so the app's own Python is asked).
 *
 * The list lives in a target file: `migshim heads --django` writes it (a
 * Dockerfile RUN step), or the shim computes it at the process's first
 * connection (~0.3 s) and caches it.  The file carries a key, the mtime of
 * every migration folder and file and of the settings module; a file whose
 * key no longer matches the disk is computed again, never trusted.
 *
 * File format (text, one record per line):
 *
 *   migshim-django-target 1
 *   dir <mtime_ns> <path>
 *   file <mtime_ns> <size> <path>
 *   node <app_label> <migration_name>
 *   end <number of nodes>
 *
 * "Every node recorded" is then one read of django_migrations (versions.h's
 * read, with the expression django_read_expr builds).
 */
#ifndef MIGSHIM_DJANGO_H
#define MIGSHIM_DJANGO_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>

#include "compiler.h"
#include "config.h"

#define DJANGO_NAME_MAX 128 /* an app label or a migration name */

struct django_node {
    char app[DJANGO_NAME_MAX];
    char name[DJANGO_NAME_MAX];
};

struct django_target {
    bool known;
    struct django_node *nodes; /* malloc'ed */
    size_t n;
    char path[PATH_MAX]; /* the target file it came from (or was cached in) */
};

/*
 * Is the tool Django?  `tool` when set; auto: no Alembic configuration
 * (heads.h) and DJANGO_SETTINGS_MODULE set (manage.py sets it before its
 * first connection), or, with `manage_py`, a ./manage.py (the command
 * line's `migshim heads`, run in the project folder).
 */
bool django_tool(const struct config *cfg, bool manage_py);

/*
 * Parse the text of a target file.  With `check_key`, every dir/file line
 * must still match the disk (mtime, size).  Returns 1 with `out` filled,
 * 0 when the key is stale (err says which path), -1 when the text is
 * malformed (err names the line).
 */
int django_parse_target(const char *text, bool check_key, struct django_target *out, char *err,
                        size_t errsz) MUSTCHECK;

/* The project directory: the folder of `manage.py` when the process runs
 * it (its command line), else the current directory. */
void django_project_dir(char *out, size_t n);

/* The target file's path for `project`: django_target if set, else
 * <project>/.migshim-django.target. */
void django_target_path(const struct config *cfg, const char *project, char *out, size_t n);

/* The per-user fallback cache file for `project` (the project folder is
 * not writable at run time in many images): /tmp/migshim-<uid>/django-<hash>.target. */
void django_cache_path(const char *project, char *out, size_t n);

/* What django_choose_python looks at; any field may be NULL or "". */
struct django_python_facts {
    const char *configured;  /* django_python                                   */
    const char *argv0;       /* this process's argv[0], as invoked              */
    const char *path;        /* PATH, to search an argv[0] without a slash      */
    const char *cwd;         /* for an argv[0] with a slash that is relative    */
    const char *exe;         /* the binary running (/proc/self/exe, resolved)   */
    const char *virtual_env; /* VIRTUAL_ENV                                     */
    const char *execfn;      /* the path execve() ran (getauxval(AT_EXECFN))    */
};

/*
 * The interpreter that lists the graph: the one the app runs, with its
 * virtualenv.  A venv's bin/python is a symlink (venv, virtualenv, uv,
 * Poetry), so /proc/self/exe names the base interpreter, which lacks the
 * venv's packages; Python finds its venv from the path it was invoked as
 * (pyvenv.cfg beside it or one folder up), so that path is the answer:
 *
 *   1. `configured`, as it is;
 *   2. argv[0] made absolute (against cwd, or searched in PATH when it has
 *      no slash, as Python does), when it resolves to `exe`;
 *   3. argv[0] rewritten (setproctitle: Gunicorn's "gunicorn: worker [app]"
 *      when python3-setproctitle is installed): the path execve() ran, which
 *      setproctitle leaves alone -- the interpreter itself, or a script
 *      (bin/gunicorn) with python3 (or python) beside it -- when it resolves
 *      to `exe`;
 *   4. <VIRTUAL_ENV>/bin/python3 (or python), when it resolves to `exe`;
 *   5. `exe` itself, when its name starts with "python";
 *   6. this process is no Python (the command line, an embedding server):
 *      <VIRTUAL_ENV>/bin/python3 when executable, else "python3" (searched
 *      in PATH by the spawn).
 *
 * (Not the running Python's Py_GetPrefix(): inside a venv it is the base
 * interpreter's prefix -- site.py sets sys.prefix later, in Python -- and
 * reading sys.prefix itself would need the GIL inside a libpq call.)
 *
 * Writes the path into `out` and one phrase saying why into `why` ("argv[0]
 * as invoked; a virtualenv: /v/pyvenv.cfg").  Reads the file system only
 * (realpath, access): no process state.
 */
void django_choose_python(const struct django_python_facts *f, char *out, size_t n, char *why,
                          size_t whysz);

/*
 * Run the app's Python (`python`; "" = django_choose_python's pick for
 * this process, logged in one debug line) to list the graph, with
 * `project` on sys.path, the shim removed from LD_PRELOAD and a timeout.
 * Returns the target file's text (malloc'ed) or NULL with a one-line
 * reason in err (the last line of Python's error output, and how the
 * interpreter was chosen).
 */
char *django_compute(const char *python, const char *project, char *err, size_t errsz) MUSTCHECK;

/* Write `text` to `path` atomically (a temporary file, then rename).
 * False with err set. */
bool django_write_target(const char *path, const char *text, char *err, size_t errsz) MUSTCHECK;

/*
 * The whole load for the shim: a valid target file (django_target, or the
 * project's, or the cache), else computed and cached.  Logs what it did
 * and why the target is unknown when it is.  Never fails: out->known says.
 */
void django_load(const struct config *cfg, struct django_target *out);

/*
 * The SQL expression of one text column (malloc'ed) that versions.h's reads
 * evaluate: NULL when there is no django_migrations table in the
 * search_path, else query_to_xml output whose <version_num> elements are
 * the first nodes ("app.name") not recorded, at most 9.  No error in the
 * server log when the table is absent.
 */
char *django_read_expr(const struct django_target *t) MUSTCHECK;

void django_target_free(struct django_target *t);

#endif
