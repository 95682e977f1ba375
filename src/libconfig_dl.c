/*
 * libconfig_dl — see include/libconfig_dl.h.
 *
 * dlopen/dlsym/dlerror are the only dl* calls the shim makes by name.
 * Inside libmigshim.so a call of dlsym binds to the shim's own dlsym
 * wrapper (src/interpose.c, -Bsymbolic), which forwards any name that is
 * not a libpq function to the real dlsym untouched: the lookups below go
 * straight through.  The handle is searched directly (not RTLD_NEXT), so
 * which module asks does not matter.
 */
#include "libconfig_dl.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

static pthread_once_t once = PTHREAD_ONCE_INIT;
static struct libconfig_api api;
static const struct libconfig_api *loaded; /* &api once complete, else NULL */
static char why[512];                      /* the reason when not loaded    */

static void load(void)
{
    void *h = dlopen(MIGSHIM_LIBCONFIG_SONAME, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *e = dlerror();
        snprintf(why, sizeof why, "%s cannot be loaded (%s)", MIGSHIM_LIBCONFIG_SONAME,
                 e ? e : "no reason given");
        return;
    }
    const char *missing = NULL;
#define LIBCONFIG_API_LOAD(name)                                                \
    if (!missing && !(api.name = (__typeof__(api.name))dlsym(h, #name)))      \
        missing = #name;
    LIBCONFIG_API_LIST(LIBCONFIG_API_LOAD)
#undef LIBCONFIG_API_LOAD
    if (missing) {
        snprintf(why, sizeof why, "%s has no function %s", MIGSHIM_LIBCONFIG_SONAME, missing);
        (void)dlerror(); /* consumed: leave no pending error behind */
        return;          /* the handle stays open: harmless, never used */
    }
    loaded = &api;
}

const struct libconfig_api *libconfig_dl(char *err, size_t errsz)
{
    pthread_once(&once, load);
    if (!loaded && errsz)
        snprintf(err, errsz, "%s", why);
    return loaded;
}
