/*
 * elflibc — which C library an ELF file was built for, read from the file.
 *
 * Used by the command only (src/cli.c): `migshim -- COMMAND` must not put
 * a library built for glibc into LD_PRELOAD of a musl process, or the
 * reverse.  musl's loader does not skip such a library: it reports
 * `Error relocating ...: symbol not found` for each glibc-only symbol and
 * the process exits 127 -- every process that inherits LD_PRELOAD, the
 * shell included.  glibc's loader fails a musl library's program the same
 * way.  So the wrapper refuses with one line instead (elflibc_preload_ok).
 *
 * How each side is read, from the files alone (nothing is loaded):
 *  - the library: its DT_NEEDED entries; libc.so.6 is glibc, libc.so (musl
 *    as Debian's musl-gcc links it) or libc.musl-<arch>.so.1 (Alpine) is
 *    musl.
 *  - the process: the command execvp would run (found on PATH as execvp
 *    finds it), by its program interpreter (PT_INTERP), with symlinks
 *    resolved: ld-musl-* is musl, ld-linux-* / ld64.so.* is glibc.  A #!
 *    script is judged by its interpreter (through `/usr/bin/env NAME`), at
 *    most four levels deep.  A command that says nothing (a static binary
 *    such as tini-static, not found, not ELF) is judged by this system's
 *    libc: the interpreter of the running command itself (/proc/self/exe),
 *    else the libc it was compiled for (MIGSHIM_LIBC).
 * Only ELF64 files of this machine's byte order are read; anything else is
 * "unknown", and unknown on either side never refuses: the check adds no
 * failure where it cannot be sure.
 */
#ifndef MIGSHIM_ELFLIBC_H
#define MIGSHIM_ELFLIBC_H

#include <stdbool.h>
#include <stddef.h>

#include "compiler.h"

enum elflibc { ELFLIBC_UNKNOWN, ELFLIBC_GLIBC, ELFLIBC_MUSL };

/* "glibc", "musl" or "unknown". */
const char *elflibc_name(enum elflibc l);

/* A shared library's libc, from its DT_NEEDED; `what` gets the entry that
 * decided ("libc.so.6"), or "" when unknown. */
enum elflibc elflibc_of_library(const char *path, char *what, size_t whatsz);

/* The libc a program runs with: its PT_INTERP (symlinks resolved), or a
 * #! script's interpreter's; `what` gets the interpreter's path as the
 * program names it ("/lib/ld-musl-x86_64.so.1"), or "" when unknown
 * (no interpreter: a static program). */
enum elflibc elflibc_of_program(const char *path, char *what, size_t whatsz);

/*
 * May `lib` be preloaded into `command` (as execvp would find it)?  True
 * when both sides are the same libc or either is unknown.  False on a
 * mismatch, with one line in `why` (no "migshim: " prefix, no newline):
 *   refusing to preload /x/libmigshim.so: built for glibc (NEEDED
 *   libc.so.6), but gunicorn (/usr/bin/gunicorn) runs on musl
 *   (/lib/ld-musl-x86_64.so.1); use the library built for musl
 */
bool elflibc_preload_ok(const char *lib, const char *command, char *why, size_t whysz) MUSTCHECK;

#endif
