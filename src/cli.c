/*
 * cli — the `migshim` command: run a command with the shim preloaded.
 *
 *   migshim [--config FILE] [--log LEVEL] -- COMMAND [ARGS...]
 *
 * Like eatmydata and proxychains4 it prepends the library to LD_PRELOAD,
 * keeping what was there, and execs COMMAND.  (--wire, which chose an
 * opt-in variant library before the wire layer became part of the one
 * library, is accepted and changes nothing.)
 *
 *   migshim heads                  the target heads computed from the scripts
 *   migshim status [CONNINFO|URL]  heads, the database's version, the lock holder,
 *                                  the effective configuration and its sources
 *
 * heads and status share the library's own config, heads and lock code.
 * Like the library, the command links nothing but libc: libconfig is loaded
 * when there is a configuration file (src/libconfig_dl.c), libpq only by
 * `status` (src/libpq_dl.c: the system's, or a psycopg wheel's copy).
 */
#include <errno.h>
#include <link.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "dbconn.h"
#include "django.h"
#include "elflibc.h"
#include "envpy.h"
#include "heads.h"
#include "holder.h"
#include "libpq_dl.h"
#include "lock.h"
#include "migtool.h"
#include "log.h"
#include "timeline.h"
#include "versions.h"

#ifndef MIGSHIM_LIBDIR
#define MIGSHIM_LIBDIR "/usr/local/lib"
#endif
/* The library directory relative to the command's own (BINDIR -> LIBDIR,
 * e.g. "../lib/x86_64-linux-gnu"): an installed tree that was moved (a
 * package unpacked into another root) still finds its own library. */
#ifndef MIGSHIM_LIBDIR_REL
#define MIGSHIM_LIBDIR_REL "../lib"
#endif
#ifndef MIGSHIM_VERSION
#error "MIGSHIM_VERSION is set by the Makefile (from the file VERSION)"
#endif

/* Exit codes (documented in migshim(1) and --help). */
enum {
    EXIT_BEHIND = 1,     /* status: the database is not at the target      */
    EXIT_UNKNOWN = 2,    /* heads/status: the target heads are unknown      */
    EXIT_NOCONN = 3,     /* status: cannot connect or read the version table */
    EXIT_USAGE = 64,
    EXIT_REFUSED = 125,  /* -- COMMAND: the library is for the other libc */
    EXIT_NOEXEC = 126,
    EXIT_NOTFOUND = 127,
};

static void usage(FILE *f)
{
    fprintf(f,
            "usage: migshim [--config FILE] [--log LEVEL] -- COMMAND [ARGS...]\n"
            "       migshim [--config FILE] heads [--django [-o FILE]]\n"
            "       migshim [--config FILE] [--libpq PATH] status [CONNINFO|URL]\n"
            "       migshim timeline EVENTS_FILE -o OUT.svg\n"
            "       migshim --lib-path\n"
            "       migshim --help | --version\n"
            "\n"
            "Runs COMMAND with libmigshim.so prepended to LD_PRELOAD, so every PostgreSQL\n"
            "connection of the process and its children (libpq's, asyncpg's, pg8000's) goes\n"
            "through the start-up gate.\n"
            "`heads` prints the target heads computed from the Alembic scripts found from\n"
            "the current directory; `heads --django` (or `heads` in a Django project) asks\n"
            "the project's own Python for its migration graph and writes the target file\n"
            "the shim reads at start-up (django_target, default ./.migshim-django.target,\n"
            "or FILE); `status` also shows the database's version table, who\n"
            "holds the migration lock, and the effective configuration (default CONNINFO:\n"
            "$DATABASE_URL, else the PG* variables).  `timeline` draws the events written\n"
            "with MIGSHIM_EVENTS=path as an SVG: one lane per process.  `--lib-path` prints\n"
            "the library `--` would preload (for a Dockerfile's ENV LD_PRELOAD=...).\n"
            "\n"
            "  --config FILE  configuration file (sets MIGSHIM_CONFIG)\n"
            "  --log LEVEL    error, warn, info or debug (sets MIGSHIM_LOG)\n"
            "  --libpq PATH   the libpq `status` loads (default: the system's libpq.so.5,\n"
            "                 else the copy in a psycopg2/psycopg wheel on python3's path)\n"
            "\n"
            "exit status: -- COMMAND: COMMAND's own; 125 not run: libmigshim.so was built for\n"
            "the other C library (glibc or musl) than COMMAND's; 126 COMMAND cannot run;\n"
            "127 not found.\n"
            "heads/status: 0 known heads (status: database at head, or ahead: a newer\n"
            "deploy migrated it); 1 database behind; 2 target heads unknown; 3 cannot connect or read (timeline: cannot read\n"
            "or write a file); 78 bad configuration.\n"
            "--lib-path: 0 printed; 1 no library there.  64 usage error.\n");
}

/* The library's file name. */
static const char library_name[] = "libmigshim.so";

/* The library: next to this executable (a build tree, the Python wheel's
 * package directory), else where the installed tree puts it relative to the
 * executable, else LIBDIR.  False when there is no readable file at any of
 * them (`out` then holds LIBDIR's path). */
static bool library_path(char *out, size_t n) MUSTCHECK;
static bool library_path(char *out, size_t n)
{
    const char *name = library_name;
    char exe[PATH_MAX];
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (len > 0) {
        exe[len] = '\0';
        const char *dir = dirname(exe);
        snprintf(out, n, "%s/%s", dir, name);
        if (access(out, R_OK) == 0)
            return true;
        char rel[PATH_MAX + 64];
        snprintf(rel, sizeof rel, "%s/%s/%s", dir, MIGSHIM_LIBDIR_REL, name);
        char real[PATH_MAX];
        if (realpath(rel, real) && access(real, R_OK) == 0) {
            snprintf(out, n, "%s", real);
            return true;
        }
    }
    snprintf(out, n, "%s/%s", MIGSHIM_LIBDIR, name);
    return access(out, R_OK) == 0;
}

/* LD_PRELOAD splits its list at spaces and colons and has no escape, so a
 * library whose path holds a space (a virtualenv under "My Projects") goes
 * in by its bare name, its directory first in LD_LIBRARY_PATH, which splits
 * at colons and semicolons only.  `name` gets what LD_PRELOAD is to hold.
 * False, with the reason in `err`, for a path no list can hold. */
static bool preload_name(const char *lib, char *name, size_t n, char *err, size_t errn) MUSTCHECK;
static bool preload_name(const char *lib, char *name, size_t n, char *err, size_t errn)
{
    if (!strpbrk(lib, " :")) {
        snprintf(name, n, "%s", lib);
        return true;
    }
    const char *slash = strrchr(lib, '/');
    if (strpbrk(lib, ":;") || !slash || strpbrk(slash + 1, " ")) {
        snprintf(err, errn, "cannot preload '%s': LD_PRELOAD cannot hold a path with a "
                 "space or ':', nor LD_LIBRARY_PATH one with ':' or ';'", lib);
        return false;
    }
    snprintf(name, n, "%s", slash + 1);
    const char *old = getenv("LD_LIBRARY_PATH");
    size_t dirlen = (size_t)(slash - lib), m = dirlen + (old ? strlen(old) : 0) + 2;
    char *llp = malloc(m);
    if (!llp) {
        snprintf(err, errn, "cannot preload '%s': out of memory", lib);
        return false;
    }
    snprintf(llp, m, "%.*s%s%s", (int)dirlen, lib, old && *old ? ":" : "", old && *old ? old : "");
    setenv("LD_LIBRARY_PATH", llp, 1);
    free(llp);
    return true;
}

/* A sanitized build (`make SANITIZE=...`): this command runs with the
 * sanitizer runtimes its library links too; an uninstrumented COMMAND must
 * get them ahead of the library, or ASan refuses to start.  Appends the
 * loaded runtimes' paths, each followed by ':', to `out`; nothing for a
 * normal build. */
static int add_runtime(struct dl_phdr_info *info, size_t size, void *arg)
{
    (void)size;
    struct {
        char *out;
        size_t n;
    } *a = arg;
    const char *name = info->dlpi_name, *base = name ? strrchr(name, '/') : NULL;
    if (!base)
        return 0;
    base++;
    static const char *const rts[] = {"libasan.so", "libubsan.so", "libtsan.so", "liblsan.so"};
    for (size_t i = 0; i < sizeof rts / sizeof rts[0]; i++) {
        if (strncmp(base, rts[i], strlen(rts[i])) == 0) {
            size_t used = strlen(a->out);
            snprintf(a->out + used, a->n - used, "%s:", name);
            break;
        }
    }
    return 0;
}

static void sanitizer_runtimes(char *out, size_t n)
{
    struct {
        char *out;
        size_t n;
    } a = {out, n};
    out[0] = '\0';
    dl_iterate_phdr(add_runtime, &a);
}

extern char **environ;

static bool load_config(struct config *cfg)
{
    char err[512];
    if (!config_load(cfg, environ, err, sizeof err)) {
        fprintf(stderr, "migshim: %s\n", err);
        return false;
    }
    struct envpy_vt vt; /* as the library does (src/shim.c) */
    char path[PATH_MAX + 8];
    if (heads_read_env_py(cfg, &vt, path, sizeof path))
        envpy_apply(cfg, &vt, path);
    return true;
}

/* `heads --django`: ask the project's Python, write the target file. */
static int cmd_heads_django(const struct config *cfg, const char *out)
{
    char project[PATH_MAX], path[PATH_MAX], err[1024];
    django_project_dir(project, sizeof project);
    if (out)
        snprintf(path, sizeof path, "%s", out);
    else
        django_target_path(cfg, project, path, sizeof path);
    char *text = django_compute(cfg->django_python, project, err, sizeof err);
    if (!text) {
        fprintf(stderr, "migshim: Django target unknown: %s\n", err);
        return EXIT_UNKNOWN;
    }
    struct django_target t;
    int r = django_parse_target(text, false, &t, err, sizeof err);
    if (r != 1) {
        fprintf(stderr, "migshim: Django target unknown: malformed migration list (%s)\n", err);
        free(text);
        return EXIT_UNKNOWN;
    }
    bool ok = path[0] && django_write_target(path, text, err, sizeof err);
    free(text);
    if (!ok) {
        fprintf(stderr, "migshim: cannot write the Django target: %s\n", path[0] ? err : "path too long");
        django_target_free(&t);
        return EXIT_NOCONN;
    }
    printf("%zu Django migrations; target written to %s\n", t.n, path);
    django_target_free(&t);
    return 0;
}

static int cmd_heads(bool django, const char *out)
{
    struct config cfg;
    if (!load_config(&cfg))
        return CONFIG_EXIT_STRICT;
    log_set_level(LOG_LVL_WARN); /* file warnings, not the info lines */
    if (django || django_tool(&cfg, true))
        return cmd_heads_django(&cfg, out);
    struct heads h;
    heads_load(&cfg, &h);
    if (!h.known) {
        fprintf(stderr, "migshim: target heads unknown (no readable Alembic scripts; see the warnings)\n");
        heads_free(&h);
        return EXIT_UNKNOWN;
    }
    for (size_t i = 0; i < h.nheads; i++)
        printf("%s\n", h.heads[i]);
    heads_free(&h);
    return 0;
}

static int cmd_status(const char *conninfo, const char *libpq)
{
    static const char *const sources[] = {"default", "file", "environment", "env.py"};
    struct config cfg;
    if (!load_config(&cfg))
        return CONFIG_EXIT_STRICT;
    log_set_level(LOG_LVL_WARN);
    /* the library's own tool: the same target, reads, comparison and key */
    const struct migtool *tool = migtool_pick(&cfg, true);
    printf("tool:            %s\n", tool->name);
    tool->load(&cfg);
    tool->print_target(stdout);
    bool known = tool->known();

    if (!conninfo)
        conninfo = getenv("DATABASE_URL");
    /* A SQLAlchemy URL (postgresql+psycopg2://...) names a driver libpq
     * does not know: drop the "+driver" part. */
    char url[4096];
    const char *plus = conninfo ? strchr(conninfo, '+') : NULL;
    const char *scheme_end = conninfo ? strstr(conninfo, "://") : NULL;
    if (plus && scheme_end && plus < scheme_end && strncmp(conninfo, "postgres", 8) == 0) {
        snprintf(url, sizeof url, "%.*s%s", (int)(plus - conninfo), conninfo, scheme_end);
        conninfo = url;
    }
    /* A libmigshim.so preloaded into this command (an image with ENV
     * LD_PRELOAD) must not gate status's own connection: it would wait for
     * the lock when the database is behind.  The shim reads its settings at
     * the first libpq call, after this. */
    setenv("MIGSHIM_DISABLE", "true", 1);
    struct pq_api api;
    char where[PATH_MAX + 128], why[4096];
    if (!libpq_dl_load(libpq, &api, where, sizeof where, why, sizeof why)) {
        printf("database:        cannot connect: %s\n", why);
        return EXIT_NOCONN;
    }
    printf("libpq:           %s\n", where);
    PGconn *c = api.PQconnectdb(conninfo ? conninfo : "");
    int rc = known ? 0 : EXIT_UNKNOWN;
    if (api.PQstatus(c) != CONNECTION_OK) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", api.PQerrorMessage(c));
        msg[strcspn(msg, "\n")] = '\0';
        printf("database:        cannot connect: %s\n", msg);
        api.PQfinish(c);
        return EXIT_NOCONN;
    }
    struct dbconn_pq dpc;
    struct dbconn *db = dbconn_pq_init(&dpc, &api, c); /* the lock modules' seam */
    printf("database:        \"%s\"\n", dbconn_dbname(db));
    struct versions v;
    char err[256];
    if (!known && tool->state_needs_target) {
        /* no state read without the target */
    } else if (!versions_read(db, &cfg, migtool_state_expr(tool), &v, err, sizeof err)) {
        printf("version table:   cannot read: %s\n", err);
        rc = EXIT_NOCONN;
    } else {
        tool->print_state(stdout, &cfg, &v);
        if (known) {
            /* as the library decides: ahead proceeds like at head */
            switch (tool->compare(&v)) {
            case MIGTOOL_AT_TARGET:
                printf("at head:         yes\n");
                break;
            case MIGTOOL_AHEAD:
                printf("at head:         ahead (revisions the local scripts do not know: a newer "
                       "deploy migrated it; the shim proceeds)\n");
                break;
            case MIGTOOL_BEHIND:
                printf("at head:         no\n");
                rc = EXIT_BEHIND;
                break;
            }
        }
    }
    /* the key from the server's name for the database, as the library's */
    char dbname[CONFIG_NAME_MAX];
    snprintf(dbname, sizeof dbname, "%s", dbconn_dbname(db));
    struct dbres *dr = dbconn_exec(db, "SELECT pg_catalog.current_database()");
    if (dr && dbres_kind(db, dr) == DBRES_ROWS && dbres_nrows(db, dr) == 1)
        snprintf(dbname, sizeof dbname, "%s", dbres_value(db, dr, 0, 0));
    dbres_free(db, dr);
    int64_t key = tool->key(&cfg, dbname);
    char holder[256];
    holder_describe(db, key, holder, sizeof holder);
    if (strncmp(holder, "nobody", 6) == 0)
        snprintf(holder, sizeof holder, "free");
    printf("migration lock:  key %lld: %s\n", (long long)key, holder);
    api.PQfinish(c);

    printf("configuration:   %s\n", cfg.file[0] ? cfg.file : "(no file)");
    for (size_t i = 0; i < config_key_count(); i++) {
        char val[1100];
        config_key_value(&cfg, i, val, sizeof val);
        printf("  %-22s %-24s (%s)\n", config_key_name(i), val[0] ? val : "\"\"", sources[cfg.source[i]]);
    }
    return rc;
}

int main(int argc, char **argv)
{
    const char *libpq = NULL;
    int i = 1;
    for (; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--") == 0) {
            i++;
            break;
        } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(a, "--version") == 0) {
            printf("migshim %s\n", MIGSHIM_VERSION);
            return 0;
        } else if (strcmp(a, "--lib-path") == 0 && i + 1 == argc) {
            char path[PATH_MAX + 32];
            if (!library_path(path, sizeof path)) {
                fprintf(stderr, "migshim: no %s next to this command, nor at %s\n", library_name,
                        path);
                return 1;
            }
            printf("%s\n", path);
            return 0;
        } else if (strcmp(a, "--wire") == 0) {
            /* accepted for command lines written for the former opt-in
             * variant: the wire layer is part of the library */
        } else if (strcmp(a, "--config") == 0 && i + 1 < argc) {
            setenv("MIGSHIM_CONFIG", argv[++i], 1);
        } else if (strcmp(a, "--libpq") == 0 && i + 1 < argc) {
            libpq = argv[++i];
        } else if (strcmp(a, "--log") == 0 && i + 1 < argc) {
            enum log_level l;
            if (!log_level_parse(argv[++i], &l)) {
                fprintf(stderr, "migshim: --log takes error, warn, info or debug, not '%s'\n", argv[i]);
                return EXIT_USAGE;
            }
            setenv("MIGSHIM_LOG", argv[i], 1);
        } else if (strcmp(a, "heads") == 0 && i + 1 == argc) {
            return cmd_heads(false, NULL);
        } else if (strcmp(a, "heads") == 0 && strcmp(argv[i + 1], "--django") == 0 &&
                   (i + 2 == argc || (i + 4 == argc && strcmp(argv[i + 2], "-o") == 0))) {
            return cmd_heads(true, i + 4 == argc ? argv[i + 3] : NULL);
        } else if (strcmp(a, "timeline") == 0) {
            if (!(i + 4 == argc && strcmp(argv[i + 2], "-o") == 0)) {
                fprintf(stderr, "migshim: usage: migshim timeline EVENTS_FILE -o OUT.svg\n");
                return EXIT_USAGE;
            }
            char err[512];
            if (!timeline_render(argv[i + 1], argv[i + 3], err, sizeof err)) {
                fprintf(stderr, "migshim: %s\n", err);
                return EXIT_NOCONN;
            }
            return 0;
        } else if (strcmp(a, "status") == 0 && i + 2 >= argc) {
            return cmd_status(i + 1 < argc ? argv[i + 1] : NULL, libpq);
        } else {
            fprintf(stderr, "migshim: unexpected argument '%s' (try --help)\n", a);
            return EXIT_USAGE;
        }
    }
    if (i >= argc) {
        fprintf(stderr, "migshim: no command given (usage: migshim [OPTIONS] -- COMMAND [ARGS...])\n");
        return EXIT_USAGE;
    }
    char lib[PATH_MAX + 32], name[PATH_MAX + 32], rts[4 * PATH_MAX], err[PATH_MAX + 160];
    if (!library_path(lib, sizeof lib)) {
        /* none found: LIBDIR's path all the same, as always; ld.so names the
         * missing file on the command's stderr and the command runs unshimmed */
    }
    /* A glibc library in a musl process (or the reverse) fails every
     * process that inherits LD_PRELOAD: refuse rather than run. */
    char why[3 * PATH_MAX];
    if (!elflibc_preload_ok(lib, argv[i], why, sizeof why)) {
        fprintf(stderr, "migshim: %s\n", why);
        return EXIT_REFUSED;
    }
    if (!preload_name(lib, name, sizeof name, err, sizeof err)) {
        fprintf(stderr, "migshim: %s\n", err);
        return EXIT_NOEXEC;
    }
    sanitizer_runtimes(rts, sizeof rts);
    const char *old = getenv("LD_PRELOAD");
    size_t n = strlen(rts) + strlen(name) + (old ? strlen(old) : 0) + 2;
    char *preload = malloc(n);
    if (!preload)
        return EXIT_NOEXEC;
    snprintf(preload, n, "%s%s%s%s", rts, name, old && *old ? ":" : "", old && *old ? old : "");
    setenv("LD_PRELOAD", preload, 1);
    free(preload);
    execvp(argv[i], argv + i);
    int e = errno;
    fprintf(stderr, "migshim: cannot run '%s': %s\n", argv[i], strerror(e));
    return e == ENOENT ? EXIT_NOTFOUND : EXIT_NOEXEC;
}
