/*
 * log — one line per decision, on stderr, as `migshim[PID]: LEVEL: message`.
 *
 * Every line is written with a single write(2) so lines from the workers of
 * one fleet never interleave mid-line.  errno is preserved: logging from
 * inside an intercepted libpq call must not change what the app observes.
 * Nothing here ever prints a password: conninfo strings and URIs go through
 * log_redact_conninfo() before they reach a log line.
 */
#ifndef MIGSHIM_LOG_H
#define MIGSHIM_LOG_H

#include <stdbool.h>
#include <stddef.h>

#include "compiler.h"

enum log_level { LOG_LVL_ERROR = 0, LOG_LVL_WARN, LOG_LVL_INFO, LOG_LVL_DEBUG };

/* Set the threshold: messages above it are dropped.  Also used to silence
 * the shim completely (pure pass-through) with log_set_silent(true). */
void log_set_level(enum log_level level);
void log_set_silent(bool silent);

/* True when a message at `level` would be printed: lets callers skip
 * building expensive arguments. */
bool log_enabled(enum log_level level);

/* Parse "error" | "warn" | "info" | "debug" (case-insensitive).  Returns
 * false and leaves *out untouched for anything else. */
bool log_level_parse(const char *s, enum log_level *out) MUSTCHECK;

/* Print one line (a trailing newline is added; embedded newlines are
 * replaced by spaces so one decision stays one line). */
void log_msg(enum log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define log_error(...) log_msg(LOG_LVL_ERROR, __VA_ARGS__)
#define log_warn(...)  log_msg(LOG_LVL_WARN, __VA_ARGS__)
#define log_info(...)  log_msg(LOG_LVL_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_LVL_DEBUG, __VA_ARGS__)

/*
 * Copy `in` (a libpq keyword/value conninfo string or a postgres:// URI)
 * into `out`, replacing every password with "***": the `password` keyword's
 * value (bare or single-quoted with backslash escapes), the password part of
 * a URI's user info, and a URI's `password=` query parameter.  The output is
 * always NUL-terminated and truncated to `outsz`; truncation never leaves a
 * partial password behind because the password is never copied at all.
 * Returns `out`.
 *
 *   log_redact_conninfo("host=db password='a b'", buf, sizeof buf)
 *     -> "host=db password=***"
 */
char *log_redact_conninfo(const char *in, char *out, size_t outsz);

#endif
