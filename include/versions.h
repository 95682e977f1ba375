/*
 * versions — reading the version table: which revisions a database is at.
 *
 * Alembic's version table (the configured `version_table` in
 * `version_table_schema`, or a table of that shape a leader learned or a
 * leader published: holder.h), or, with a state expression (`expr`
 * below), another tool's state in its place (Django's: which migrations
 * are not recorded).  Every read is one round trip on a connection of the
 * caller's (the shim's lock connection or an app's), through its seam
 * (dbconn.h), and leaves no trace: no error, not even in the server log,
 * when the table is absent; no transaction opened or ended; no session
 * change; inside a transaction, nothing held (see versions_read_in).  Each
 * travels in the simple protocol (dbconn_send, dbconn_exec: one Query
 * message): an extended-protocol portal would keep a snapshot open that a
 * CREATE INDEX CONCURRENTLY of the leader's own migration would wait for.
 *
 * Every identifier is quoted (pgsql.h) and every name from the
 * configuration passed as a literal.  A read fills a `struct versions` of
 * the caller's; nothing it returns needs freeing unless it says so.
 */
#ifndef MIGSHIM_VERSIONS_H
#define MIGSHIM_VERSIONS_H

#include <stdbool.h>
#include <stddef.h>

#include "compiler.h"
#include "config.h"
#include "heads.h"
#include "dbconn.h"

/* The version table as read. */
struct versions {
    bool present;                     /* the table exists              */
    size_t n;
    char v[8][HEADS_REV_MAX];         /* its rows (8 heads is plenty)  */
    bool truncated;                   /* more than 8 rows              */
};

/* Which server and database a connection reached, as the server says:
 * not the client's spelling (a PgBouncer alias, a replica's address). */
struct server_id {
    char db[CONFIG_NAME_MAX];   /* current_database()                       */
    char cluster[48];           /* pg_postmaster_start_time(): one per server */
    bool standby;               /* pg_is_in_recovery()                      */
    char home[CONFIG_NAME_MAX]; /* current_schema() ("" when none)          */
    bool vt_elsewhere;          /* another schema than the one read has a
                                   table of the version table's name with a
                                   version_num column (always false for
                                   another tool's read)                     */
    long backend_pid;           /* pg_backend_pid(): the server process that
                                   answered (behind a pooler, not the one the
                                   BackendKeyData named: wiregate.h)       */
};

/*
 * The state read (`expr` of versions_read, versions_read_idle,
 * versions_idle_sql and lock.h's lock_step): NULL, the configured version
 * table (Alembic's); else another tool's state in its place (Django's:
 * which migrations are not recorded, migtool.h's state_expr), an SQL
 * expression of one text column, NULL when there is nothing yet, else
 * query_to_xml output whose <version_num> elements become struct
 * versions' rows.  The caller passes it to every such read; the reads of a
 * named table (versions_read_in, versions_resolve, versions_any_column)
 * take none.  It is not copied: the caller keeps it alive for the call.
 */

/*
 * Read the configured version table (cfg->version_table_schema,
 * cfg->version_table) when `expr` is NULL, else the tool's state `expr`
 * (above), on `c`
 * into *out, in one round trip; `c` may be idle or inside a transaction in
 * good order (then as versions_read_in).  True with *out filled (present
 * false when the table is absent); false on failure with *out cleared and
 * the reason (one line) in err.  The caller logs it.
 */
bool versions_read(struct dbconn *c, const struct config *cfg,
                   const char *expr, struct versions *out, char *err, size_t errsz) MUSTCHECK;

/*
 * The same for the version table `schema`.`table` ("" schema: the one the
 * search_path finds): the table a leader learned from
 * its migration's statements, or one a leader published.  Alembic's read
 * always (no state expression applies).  The table's existence is
 * read from pg_class with the statement's own snapshot, so it is right
 * inside a long transaction too; inside a transaction block (the lock
 * transaction in xact mode) the read runs in a savepoint rolled back at
 * once, which releases the ACCESS SHARE lock it took, and a failed read
 * leaves that transaction in good order.  Returns as versions_read.
 */
bool versions_read_in(struct dbconn *c, const char *schema, const char *table,
                      struct versions *out, char *err, size_t errsz) MUSTCHECK;

/*
 * versions_read, cheaper on a fresh backend, for a connection that is
 * outside any transaction block (where to_regclass() is current: inside a
 * long transaction it can keep answering "absent" after a peer created the
 * table).  The gate's one added round trip on the app's new connection.
 * With `id` (may be NULL), the same round trip also fills *id: which server
 * and database it reached, the backend's pid, the session's current_schema(), and whether a
 * schema other than the one read has a table of the version table's name
 * with a version_num column (per-schema version tables: gate.h).  Returns
 * as versions_read (*id is left unspecified on failure).
 */
bool versions_read_idle(struct dbconn *c, const struct config *cfg,
                        const char *expr, struct versions *out, struct server_id *id, char *err,
                        size_t errsz) MUSTCHECK;

/*
 * Where the app's session puts the version table `table` (per-schema
 * version tables: Alembic's multi-tenant recipe sets search_path in env.py,
 * after the connection's first read).  On `c` (the app's connection, idle
 * or in a transaction in good order), in one round trip: `schema` (ssz
 * bytes) the first schema of the search_path holding a table of that
 * name, else current_schema() (where Alembic's CREATE TABLE puts it), ""
 * when the search_path names no existing schema; `out` its rows (present
 * false when it does not exist).  Inside a transaction the read runs in a
 * savepoint rolled back at once: it leaves no error, lock or session
 * change in the app's transaction.  True on success; false on failure
 * with `schema` "", *out cleared and the reason in err.
 */
bool versions_resolve(struct dbconn *c, const char *table, char *schema,
                      size_t ssz, struct versions *out, char *err, size_t errsz) MUSTCHECK;

/*
 * Does any table in `c`'s database have a version_num column (a version
 * table of Alembic's shape under some name)?  One round trip; inside a
 * transaction, in a savepoint rolled back at once.  A hint only: false
 * when there is none and also when the query failed (logged at debug).
 */
bool versions_any_column(struct dbconn *c) MUSTCHECK;

/*
 * For a caller that sends the read as one statement of a longer message
 * (lock.h, lock_step's wait slice): the statement versions_read_idle sends
 * for `expr` without `id` (a SELECT of one row and one column, the table
 * as XML or NULL), malloc'ed: the caller frees it.  NULL when out of
 * memory.
 */
char *versions_idle_sql(const struct config *cfg, const char *expr) MUSTCHECK;

/*
 * Fill *out from `r`, the result of versions_idle_sql's statement (not
 * cleared: the caller keeps owning it).  False, with *out cleared, when
 * `r` is NULL or not one row of at least one column.
 */
bool versions_from_result(const struct dbconn *c, const struct dbres *r,
                          struct versions *out) MUSTCHECK;

#endif
