/*
 * cli — the `migshim` command: run a command with the shim preloaded.
 *
 *   migshim [--config FILE] [--log LEVEL] -- COMMAND [ARGS...]
 *
 * Like eatmydata and proxychains4 it prepends the library to LD_PRELOAD,
 * keeping what was there, and execs COMMAND.
 */
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "log.h"

#ifndef MIGSHIM_LIBDIR
#define MIGSHIM_LIBDIR "/usr/local/lib"
#endif
#define MIGSHIM_VERSION "0.1.0"

/* Exit codes (documented in README and --help). */
enum { EXIT_USAGE = 64, EXIT_NOEXEC = 126, EXIT_NOTFOUND = 127 };

static void usage(FILE *f)
{
    fprintf(f,
            "usage: migshim [--config FILE] [--log LEVEL] -- COMMAND [ARGS...]\n"
            "       migshim --help | --version\n"
            "\n"
            "Runs COMMAND with libmigshim.so prepended to LD_PRELOAD, so every libpq\n"
            "connection of the process and its children goes through the start-up gate.\n"
            "\n"
            "  --config FILE  configuration file (sets MIGSHIM_CONFIG)\n"
            "  --log LEVEL    error, warn, info or debug (sets MIGSHIM_LOG)\n"
            "\n"
            "exit status: COMMAND's own; 64 usage error; 126 COMMAND cannot run;\n"
            "127 COMMAND not found.\n");
}

/* The library: next to this executable (a build tree), else the installed one. */
static void library_path(char *out, size_t n)
{
    char exe[PATH_MAX];
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (len > 0) {
        exe[len] = '\0';
        snprintf(out, n, "%s/libmigshim.so", dirname(exe));
        if (access(out, R_OK) == 0)
            return;
    }
    snprintf(out, n, "%s/libmigshim.so", MIGSHIM_LIBDIR);
}

int main(int argc, char **argv)
{
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
        } else if (strcmp(a, "--config") == 0 && i + 1 < argc) {
            setenv("MIGSHIM_CONFIG", argv[++i], 1);
        } else if (strcmp(a, "--log") == 0 && i + 1 < argc) {
            enum log_level l;
            if (!log_level_parse(argv[++i], &l)) {
                fprintf(stderr, "migshim: --log takes error, warn, info or debug, not '%s'\n", argv[i]);
                return EXIT_USAGE;
            }
            setenv("MIGSHIM_LOG", argv[i], 1);
        } else {
            fprintf(stderr, "migshim: unexpected argument '%s' (try --help)\n", a);
            return EXIT_USAGE;
        }
    }
    if (i >= argc) {
        fprintf(stderr, "migshim: no command given (usage: migshim [OPTIONS] -- COMMAND [ARGS...])\n");
        return EXIT_USAGE;
    }
    char lib[PATH_MAX + 32];
    library_path(lib, sizeof lib);
    const char *old = getenv("LD_PRELOAD");
    size_t n = strlen(lib) + (old ? strlen(old) : 0) + 2;
    char *preload = malloc(n);
    if (!preload)
        return EXIT_NOEXEC;
    snprintf(preload, n, "%s%s%s", lib, old && *old ? ":" : "", old && *old ? old : "");
    setenv("LD_PRELOAD", preload, 1);
    free(preload);
    execvp(argv[i], argv + i);
    int e = errno;
    fprintf(stderr, "migshim: cannot run '%s': %s\n", argv[i], strerror(e));
    return e == ENOENT ? EXIT_NOTFOUND : EXIT_NOEXEC;
}
