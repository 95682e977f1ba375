/*
 * libconfig_dl — libconfig, loaded only when a configuration file is read.
 *
 * libmigshim.so is a drop-in copied into someone else's image: it must load
 * wherever libc does, so it has no DT_NEEDED on libconfig.  The config
 * module asks for this table only when a configuration file is actually
 * present; the environment alone needs nothing.  The library is dlopen'ed
 * (RTLD_LOCAL) by the soname the build was compiled against
 * (MIGSHIM_LIBCONFIG_SONAME, "libconfig.so.9"), since config_t is laid out
 * by the caller and only that ABI matches the header used here.
 *
 * Like resolve.h's table for libpq, every function the shim calls is one
 * typed slot (declared once in LIBCONFIG_API_LIST), so the name and the
 * pointer cannot drift.  libconfig's accessors that are macros over the
 * structs (config_error_text, config_setting_name, config_root_setting, ...)
 * need no slot.  The library is never unloaded.
 */
#ifndef MIGSHIM_LIBCONFIG_DL_H
#define MIGSHIM_LIBCONFIG_DL_H

#include <libconfig.h>
#include <stdbool.h>
#include <stddef.h>

#include "compiler.h"

#ifndef MIGSHIM_LIBCONFIG_SONAME
#define MIGSHIM_LIBCONFIG_SONAME "libconfig.so.9"
#endif

#define LIBCONFIG_API_LIST(X)                                                   \
    X(config_init) X(config_destroy) X(config_read_file)                        \
    X(config_setting_length) X(config_setting_get_elem)                         \
    X(config_setting_get_string) X(config_setting_get_bool)                     \
    X(config_setting_get_int64) X(config_setting_get_float)

struct libconfig_api {
#define LIBCONFIG_API_MEMBER(name) __typeof__(name) *name;
    LIBCONFIG_API_LIST(LIBCONFIG_API_MEMBER)
#undef LIBCONFIG_API_MEMBER
};

/*
 * The table, loading libconfig on the first call (thread-safe, once per
 * process).  NULL when it cannot be loaded, with the reason in `err`
 * ("libconfig.so.9 cannot be loaded: <dlerror>", or the missing symbol);
 * later calls give the same answer without trying again.
 *
 *   const struct libconfig_api *lc = libconfig_dl(err, sizeof err);
 *   if (lc) lc->config_init(&c);
 */
const struct libconfig_api *libconfig_dl(char *err, size_t errsz) MUSTCHECK;

#endif
