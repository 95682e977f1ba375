/*
 * conn — what the shim knows about each app connection, keyed by its
 * PGconn pointer: the libpq copy that made it, so that a PGconn never
 * crosses copies when a process holds two.
 *
 * Entries are added when a connection is created through a wrapper and
 * removed by PQfinish.  A mutex guards the table; the per-call path only
 * consults it when the process holds more than one libpq copy.
 */
#ifndef MIGSHIM_CONN_H
#define MIGSHIM_CONN_H

#include <libpq-fe.h>

#include "compiler.h"
#include "resolve.h"

/* Remember that `pg` was made by `copy` (no-op for NULL). */
void conn_register(const PGconn *pg, const struct pq_copy *copy);

/* The copy that made `pg`, or NULL if the shim never saw it made. */
const struct pq_copy *conn_copy(const PGconn *pg);

/* Forget `pg` (it is being finished). */
void conn_forget(const PGconn *pg);

/*
 * Prepared statements carry no text when they run (PQexecPrepared,
 * PQsendQueryPrepared): while the wrappers see every call (shim.h's full
 * hooks), they note the text a statement was prepared with, per
 * connection and name ("" is the unnamed one), so that it can be
 * classified when it runs.  A bounded table: the oldest entries make room;
 * an unknown name is NULL.
 *
 * A note is trusted only while it cannot be stale: in the window of full
 * hooks it was made in (between windows the app's calls go unseen: a
 * DEALLOCATE and a PREPARE of the same name there would make the note
 * describe another statement, and the guard answer for the wrong one),
 * and until the app sends a statement text that may create or drop
 * prepared statements (conn_note_text).  Otherwise the name is unknown,
 * and the guard treats the statement as one it cannot classify.
 */
void conn_note_prepared(const PGconn *pg, const char *name, const char *sql);

/* The app sent `sql` on `pg` (PQexec, PQsendQuery and their Params
 * forms): a text that names PREPARE, DEALLOCATE or DISCARD anywhere, in
 * any case, forgets every note of `pg`. */
void conn_note_text(const PGconn *pg, const char *sql);

/* The text `name` was prepared with on `pg` in the current window,
 * malloc'ed (the caller frees it), or NULL. */
char *conn_prepared_sql(const PGconn *pg, const char *name) MUSTCHECK;

/*
 * fork(): register the module's fork handlers (pthread_atfork), once; a
 * no-op after the first call.  The table's mutex is held across fork(), so a
 * child never inherits it locked by a thread it does not have.  The module
 * calls this itself before it first takes the mutex.  A module that calls
 * into this one with its own mutex held (the gate) calls it before
 * registering its own handlers: prepare handlers run last-registered first,
 * so fork() then takes the outer mutex before this one, in the order the
 * threads take them.  Never call it with a mutex of the shim held
 * (pthread_atfork waits for a fork in progress, whose prepare handlers may
 * wait for that mutex).  A failure to register is logged.
 */
void conn_fork_init(void);

#endif
