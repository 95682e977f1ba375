/*
 * wiregate — the gate for connections the wire layer follows (asyncpg,
 * pg8000: issue 22, phase 2a), over their own connection (wireconn.h).
 *
 * What it is for: a process whose migration connection is not libpq's is
 * serialized through the same PostgreSQL advisory lock, with the same
 * key, the same wait slices (lock.h's lock_step), the same decisions
 * (wait.h's wait_step) and the same log lines as the libpq gate, plus
 * where: "(asyncpg/pg8000 connection on fd 7, tcp)".
 *
 * Where the lock lives.  The shim cannot open a connection of its own for
 * such a process (under SCRAM only proofs cross the wire: wire-protocol.md),
 * so the lock is taken, waited for and held on the app's connection,
 * always as a SESSION lock whatever `lock` says: an xact lock would have
 * to live in a transaction of the app's.  wait_step's hand-over (moving a
 * lock taken on the app's connection to a connection of the shim's own)
 * is answered "taken where it is"; nothing is published for waiters
 * (application_name is the app's), so a waiter reads the version table
 * only, and looks at the holder in pg_locks/pg_stat_activity for its
 * lines.  The lock is released when the connection closes (NullPool: the
 * server drops it), or by wiregate_settle at the leading connection's next
 * idle statement after a transaction ended, once the version table shows
 * the target.
 *
 * Behind a pooler.  A connection whose server BackendKeyData pid (wire.h:
 * wire_backend_pid, from the start-up) is not the pg_backend_pid() of the
 * gate's first round trip goes through a connection pooler (PgBouncer
 * fakes the cancel key; a direct connection's are always equal).  There a
 * session lock would land on whichever server connection served the
 * statement, and stay on it after the app is gone (transaction pooling
 * resets nothing): every fleet after would wait until wait_timeout.  Such
 * a connection is not gated: no lock, one warn line (once per process and
 * database, only where the gate would have taken or waited for the lock),
 * and the app's statement goes on.
 *
 * Per (process, database), as the libpq gate: a process decides once per
 * database (the StartupMessage's name); its later connections pass, and a
 * connection that meets the decision under way waits for it (bounded by
 * the caller's stop flag).  A forked child decides again.  Across both
 * layers (gate.h: gate_share_claim): where the gate would take or wait for
 * the lock, it first asks the libpq gate's table, under the server's name
 * (versions_read_idle's server_id): a database this process's libpq gate
 * leads or decided passes (a debug line); one it decides now is waited
 * for, bounded by the caller's stop flag and by that decision's own
 * wait_timeout; and the wire gate's own decision is recorded there, so
 * that this process's libpq connections pass while a wire connection
 * leads, and wait while one decides.
 *
 * What it must never do: leave a transaction, a setting (lock_timeout:
 * the slices use SET LOCAL inside their own transaction) or a shared lock
 * in the app's session; gate a connection inside a transaction block (the
 * caller checks: the app's first statement outside one).
 *
 * Thread safety: any thread; one call at a time per connection.
 */
#ifndef MIGSHIM_WIREGATE_H
#define MIGSHIM_WIREGATE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "compiler.h"
#include "config.h"
#include "dbconn.h"

#define WIREGATE_PEER_MAX 112 /* a server's address as wirefd_peer writes it */

enum wiregate_end {
    WIREGATE_PASS, /* go on: nothing held (at the target, decided already, ungated) */
    WIREGATE_LEAD, /* this connection holds the migration lock (lead below)        */
    WIREGATE_FAIL, /* the connection was failed (on_timeout = fail) or broke       */
};

/* What a leading connection holds. */
struct wiregate_lead {
    int64_t key;
    char db[CONFIG_NAME_MAX]; /* the server's name for the database */
    double since;             /* clock_now() when taken              */
};

/*
 * How a gate waits besides its own lock slices (any may be NULL):
 *   stop(arg)  asked while waiting: true ends the wait (the app closed the
 *              connection);
 *   idle(arg)  while another connection of this process decides the
 *              database: spend a slice (about 50 ms) with no lock of the
 *              shim's held; false ends the wait (the connection broke).
 *              NULL: a plain timed wait.  A connection whose server
 *              replies are what wakes the app to move the gate's bytes
 *              (wiressl.h: a memory BIO) spends it in a server round trip
 *              (pg_sleep): a wait of the gate's own would hold the app's
 *              next statement until nothing woke it.
 */
struct wiregate_hooks {
    bool (*stop)(void *arg);
    bool (*idle)(void *arg);
    void *arg;
};

/*
 * The gate at the first statement of a connection, on `c` (idle outside a
 * transaction block): `cdb` is the StartupMessage's database (NULL:
 * unknown: passes), `peer` the server's address as the socket names it
 * (wirefd_peer: "127.0.0.1:5432", "/run/postgresql/.s.PGSQL.5432"; "":
 * unknown): with `cdb`, the key of this process's decision -- the same
 * name on two servers is two databases (the same server reached two ways
 * is one: the server's own names settle it, gate_share_claim), `key_pid` the server's BackendKeyData pid (0: none
 * came: not the server's own session either), `where` names the connection in the lines,
 * `h` how it waits (above; NULL: no hooks).  With `signals` (a wait inline in the app's own
 * thread: a blocking socket), SIGTERM, SIGINT and SIGQUIT are recorded for
 * the wait's length (waitsig.h): one ends the wait after its slice, the
 * connection is failed, and the signal is handed back to the app before
 * this returns; a gate thread (signals blocked) leaves them to the app.
 * WIREGATE_LEAD fills *lead.  Logs its decision.
 */
enum wiregate_end wiregate_first(struct dbconn *c, const char *cdb, const char *peer,
                                 uint32_t key_pid, const char *where,
                                 const struct wiregate_hooks *h, bool signals,
                                 struct wiregate_lead *lead) MUSTCHECK;

/*
 * Would wiregate_first pass a connection to `cdb` (the StartupMessage's
 * database, NULL: unknown) at `peer` without a round trip?  True when lock = off,
 * `cdb` is NULL, or this process decided `cdb` already (it passed, or one
 * of its connections leads): the same answer wiregate_first gives, with
 * the same debug line (`where` names the connection).  False: a decision
 * is under way or none was made -- call wiregate_first.  For the callers'
 * short cut: a connection that passes needs no descriptor of the gate's
 * and no thread.  No I/O; any thread.
 */
bool wiregate_decided(const char *cdb, const char *peer, const char *where);

/*
 * A leading connection `c`, idle outside a transaction block after one
 * ended: read the version table; when it is at (or ahead of) the target,
 * release the lock (pg_advisory_unlock) and say so.  True when the
 * connection holds no lock any more (released, or the read showed it is
 * not worth keeping); false while the lead goes on, or when the round
 * trip failed (logged; the lock then goes with the connection).
 */
bool wiregate_settle(struct dbconn *c, const struct wiregate_lead *lead, const char *where)
    MUSTCHECK;

/*
 * Start fn(arg) in a detached thread with every signal blocked (the app's
 * handlers never run in a gate's thread: the app's own threads take its
 * signals).  False (errno-free; the caller says so) when it cannot start.
 */
bool wiregate_thread(void *(*fn)(void *), void *arg) MUSTCHECK;

#endif
