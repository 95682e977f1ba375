/*
 * pgsql — the small vocabulary of the statements the shim sends on its own
 * behalf (the lock, the version-table reads, the holder's marks, the
 * keepalive settings): quoting names and text for SQL.  Running them, and
 * the one-line reason one failed, is the connection seam's (dbconn.h:
 * dbconn_run_ok, dbconn_exec, dbconn_error).
 *
 * Pure: nothing here talks to a server or logs.  No memory is allocated
 * here: every output goes to a buffer of the caller's.
 */
#ifndef MIGSHIM_PGSQL_H
#define MIGSHIM_PGSQL_H

#include <stdbool.h>
#include <stddef.h>

/*
 * Write `name` into `out` (n bytes) as PostgreSQL's quote_ident() would,
 * always quoted: "name", embedded double quotes doubled.  A name that does
 * not fit is cut short (still quoted and NUL-terminated); `out` is "" when
 * n < 3.  `name` must not be NULL.
 *
 *   pgsql_quote_ident("My \"T\"", buf, sizeof buf) -> "\"My \"\"T\"\"\""
 */
void pgsql_quote_ident(const char *name, char *out, size_t n);

/*
 * Write `text` into `out` (n bytes) as an SQL literal that reads the same
 * whatever standard_conforming_strings says: E'...' with single quotes and
 * backslashes doubled.  Cut short like pgsql_quote_ident; "" when n < 4.
 *
 *   pgsql_quote_literal("it's", buf, sizeof buf) -> "E'it''s'"
 */
void pgsql_quote_literal(const char *text, char *out, size_t n);

#endif
