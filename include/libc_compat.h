/*
 * libc_compat — the differences between glibc and musl, in one place.
 *
 * The library and the command build against either C library: glibc (the
 * default build, `make`) or musl (`make musl` with Debian's musl-gcc, or a
 * plain `make` on Alpine).  A module that needs something one of them
 * lacks takes it from here; no other file tests __GLIBC__.  What the code
 * uses that musl has too (dl_iterate_phdr with dlpi_adds, dladdr,
 * getauxval, pipe2, pthread_atfork, glob) needs nothing.
 *
 * MIGSHIM_LIBC       "glibc" or "musl": the C library this object was built
 *                    for (musl defines no macro of its own: not glibc on
 *                    Linux is musl here).
 * MIGSHIM_HAVE_DLVSYM  glibc's dlvsym(): interpose.c finds the real dlsym
 *                    with it; without it (musl), by reading the loaded
 *                    objects' symbol tables (resolve_next_symbol).
 * GLOB_ONLYDIR       a GNU glob() flag (a hint: non-directories may still
 *                    match); 0 where the libc has none.
 *
 * Never here: fortify (_FORTIFY_SOURCE) or any other glibc-only symbol in
 * the musl build; the build check reads every undefined symbol of the musl
 * library against musl's libc (tests/musl/check-build.sh).
 */
#ifndef MIGSHIM_LIBC_COMPAT_H
#define MIGSHIM_LIBC_COMPAT_H

#include <glob.h>
#include <stddef.h>

#if defined(__GLIBC__)
#define MIGSHIM_LIBC "glibc"
#define MIGSHIM_HAVE_DLVSYM 1
#else
#define MIGSHIM_LIBC "musl"
#define MIGSHIM_HAVE_DLVSYM 0
#endif

#ifndef GLOB_ONLYDIR
#define GLOB_ONLYDIR 0
#endif

#endif
