/*
 * pgsql — the small vocabulary of the statements the shim sends on its own
 * behalf (the lock, the version-table reads, the holder's marks, the
 * keepalive settings): quoting names and text for SQL, running a statement
 * through a libpq table, and the one-line reason one failed.
 *
 * Every function takes the real libpq table `pq` (resolve.h); none of them
 * logs: the caller knows what the statement was for, and logs that.  No
 * memory is allocated here: every output goes to a buffer of the caller's.
 */
#ifndef MIGSHIM_PGSQL_H
#define MIGSHIM_PGSQL_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>

#include "compiler.h"
#include "resolve.h"

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

/*
 * The reason a statement on `c` failed, as one line into `err` (errsz
 * bytes, errsz > 0): the server's primary message from `r` when there is
 * one (`r` may be NULL), else the first line of libpq's own message for
 * `c`, else "the connection was lost" (a lost connection leaves an error
 * result without fields).  Never empty.
 */
void pgsql_error_text(const struct pq_api *pq, PGconn *c, const PGresult *r, char *err,
                      size_t errsz);

/*
 * Run `sql` (one or several statements, simple protocol) on `c` and clear
 * its result.  True when the last result is PGRES_COMMAND_OK or
 * PGRES_TUPLES_OK; false when it is anything else or the connection
 * failed (the reason: pgsql_error_text(pq, c, NULL, ...)).  Silent.
 */
bool pgsql_run_ok(const struct pq_api *pq, PGconn *c, const char *sql) MUSTCHECK;

#endif
