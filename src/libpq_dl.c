/*
 * libpq_dl — see include/libpq_dl.h.  Used by the command only (src/cli.c),
 * never by the library: the library finds the app's own libpq copies in
 * the process (src/resolve.c).
 */
#include "libpq_dl.h"

#include <dlfcn.h>
#include <glob.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "libc_compat.h"

/* Fill `api` from the handle; false (the handle closed) and the missing
 * name in err when the object is not a usable libpq. */
static bool fill(void *h, const char *what, struct pq_api *api, char *err, size_t errsz)
{
    const char *missing = NULL;
#define LIBPQ_DL_SLOT(name, needed)                                             \
    if (!missing && !(api->name = (__typeof__(api->name))dlsym(h, #name)))     \
        missing = #name;
    PQ_API_LIST(LIBPQ_DL_SLOT)
#undef LIBPQ_DL_SLOT
    if (!missing)
        return true;
    snprintf(err, errsz, "%s has no function %s (not a libpq)", what, missing);
    dlclose(h);
    return false;
}

/* dlopen `file` and fill `api`; where = its path + `how`. */
static bool try_open(const char *file, const char *how, struct pq_api *api, char *where,
                     size_t wheresz, char *err, size_t errsz)
{
    void *h = dlopen(file, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *e = dlerror();
        snprintf(err, errsz, "%s", e ? e : "cannot be loaded");
        return false;
    }
    if (!fill(h, file, api, err, errsz))
        return false;
    Dl_info info;
    const char *path = dladdr((void *)api->PQlibVersion, &info) && info.dli_fname ? info.dli_fname
                                                                                 : file;
    snprintf(where, wheresz, "%s (%s)", path, how);
    return true;
}

/* The module search path of the python that would run the app, one folder
 * per line in `out` (empty when there is no such python). */
static void python_path(char *out, size_t n)
{
    out[0] = '\0';
    const char *venv = getenv("VIRTUAL_ENV");
    char py[PATH_MAX] = "python3";
    if (venv && *venv) {
        snprintf(py, sizeof py, "%s/bin/python3", venv);
        if (access(py, X_OK) != 0)
            snprintf(py, sizeof py, "python3");
    }
    char cmd[PATH_MAX + 128];
    /* -c reads no app code; the shell quoting keeps a path with spaces */
    snprintf(cmd, sizeof cmd,
             "'%s' -c 'import sys; print(\"\\n\".join(p for p in sys.path if p))' "
             "</dev/null 2>/dev/null",
             py);
    if (strchr(py, '\''))
        return;
    FILE *f = popen(cmd, "r");
    if (!f)
        return;
    size_t len = fread(out, 1, n - 1, f);
    out[len] = '\0';
    pclose(f);
}

/* Try every wheel copy under the folder `dir`: true when one loaded. */
static bool try_dir(const char *dir, struct pq_api *api, char *where, size_t wheresz,
                    char *tried, size_t triedsz)
{
    char pattern[PATH_MAX];
    snprintf(pattern, sizeof pattern, "%s/*.libs/libpq*.so*", dir);
    glob_t g;
    if (glob(pattern, 0, NULL, &g) != 0)
        return false;
    bool ok = false;
    for (size_t i = 0; i < g.gl_pathc && !ok; i++) {
        /* <dir>/psycopg2_binary.libs/libpq-...: "the psycopg2_binary wheel's copy" */
        const char *p = g.gl_pathv[i], *file = strrchr(p, '/'), *folder = file;
        while (folder > p && folder[-1] != '/')
            folder--;
        char how[PATH_MAX], why[512];
        snprintf(how, sizeof how, "the %.*s wheel's copy", (int)(file - folder) - 5, folder);
        ok = try_open(p, how, api, where, wheresz, why, sizeof why);
        if (!ok) {
            size_t used = strlen(tried);
            snprintf(tried + used, triedsz - used, "; %s: %s", p, why);
        }
    }
    globfree(&g);
    return ok;
}

bool libpq_dl_load(const char *explicit_path, struct pq_api *api, char *where, size_t wheresz,
                   char *err, size_t errsz)
{
    char why[1024];
    if (explicit_path) {
        if (try_open(explicit_path, "--libpq", api, where, wheresz, why, sizeof why))
            return true;
        snprintf(err, errsz, "no libpq: --libpq %s: %s", explicit_path, why);
        return false;
    }
    if (try_open(LIBPQ_DL_SONAME, "the system's", api, where, wheresz, why, sizeof why))
        return true;
    char tried[2048];
    snprintf(tried, sizeof tried, "%s", why);

    static char dirs[16384];
    python_path(dirs, sizeof dirs);
    size_t used = strlen(dirs);
    /* the usual places, for an app whose python is not first on PATH */
    static const char *const fixed[] = {
        "/usr/local/lib/python3*/site-packages", "/usr/local/lib/python3*/dist-packages",
        "/usr/lib/python3/dist-packages", "/usr/lib/python3*/site-packages",
        "/opt/venv/lib/python3*/site-packages", "/app/.venv/lib/python3*/site-packages",
    };
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++) {
        glob_t g;
        if (glob(fixed[i], GLOB_ONLYDIR, NULL, &g) != 0)
            continue;
        for (size_t j = 0; j < g.gl_pathc; j++) {
            int w = snprintf(dirs + used, sizeof dirs - used, "%s%s", used ? "\n" : "",
                             g.gl_pathv[j]);
            if (w > 0 && (size_t)w < sizeof dirs - used)
                used += (size_t)w;
        }
        globfree(&g);
    }
    for (char *line = dirs, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        if (*line == '/' && try_dir(line, api, where, wheresz, tried, sizeof tried))
            return true;
    }
    snprintf(err, errsz,
             "no libpq: not the system's (%s), nor a psycopg2/psycopg wheel's copy "
             "(<site-packages>/*.libs/libpq*.so* on python3's sys.path); install libpq5 "
             "or pass --libpq PATH",
             tried);
    return false;
}
