/*
 * holder — the process that holds the migration lock, as the others see
 * it: what its lock connection publishes in application_name, and the
 * reads of that (and of its backend) by a waiter or by `migshim status`.
 *
 * Lapses.  A leader that never touches the version table gives the lock up
 * after leader_grace (the server ends its idle lock session); the next
 * waiter would lead and lapse the same way, N-1 times over a fleet.  A
 * leader that does touch it marks its lock connection (application_name
 * ends in HOLDER_MIGRATING_MARK); waiters look at the holder now and then
 * (holder_state): how long its lock connection has been idle, and whether
 * it is marked.
 *
 * The marks, in the lock connection's application_name (ownconn.h names it
 * `migshim lock pid=N host=H`), each a word after the one before:
 *
 *   migshim lock pid=N host=H migrating               HOLDER_MIGRATING_MARK
 *   migshim lock pid=N migrating vt=<name>            HOLDER_VT_MARK: the version
 *                                                     table it migrates
 *   migshim lock pid=N host=H migrating run=failed    HOLDER_RUN_MARK: how its
 *   migshim lock pid=N migrating run=ended vt=<name>  run ended
 *
 * application_name keeps 63 bytes of printable ASCII: the host is left out
 * to make room for a name, and what still does not fit is not published.
 * The holder is found by the lock's key in pg_locks (the exclusive
 * advisory lock lock.h takes), its backend in pg_stat_activity.  Every
 * statement is one round trip in the simple protocol; nothing here
 * allocates memory the caller must free.
 */
#ifndef MIGSHIM_HOLDER_H
#define MIGSHIM_HOLDER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "compiler.h"
#include "config.h"
#include "dbconn.h"

#define HOLDER_MIGRATING_MARK "migrating"
#define HOLDER_VT_MARK "vt="
#define HOLDER_RUN_MARK "run="

/* A version table a holder published (HOLDER_VT_MARK). */
struct holder_vt {
    bool known;                    /* false: none published, or unreadable */
    char schema[CONFIG_NAME_MAX];  /* "" when unqualified                   */
    char table[CONFIG_NAME_MAX];
};

/*
 * How a leader's migration run stands (gate_lead.c, "A lead ends when the
 * run ends"): going on, or ended short of the target -- its version-table
 * transaction committed (`ended`) or ended in an error (`failed`).
 */
enum holder_run { HOLDER_RUN_GOING, HOLDER_RUN_ENDED, HOLDER_RUN_FAILED };

/*
 * On `own`, the lock connection of a leader that touched the version
 * table: append " migrating" to its application_name (session-wide, the
 * rest of the name kept).  True when the server took it; false when the
 * statement failed (the reason: dbconn_last_error(own)).  Silent: the
 * caller logs.
 */
bool holder_mark_migrating(struct dbconn *own) MUSTCHECK;

/*
 * The same for a leader whose migration writes a version table other than
 * the configured one (gate_learn.c: learned from its statements),
 * publishing it for the waiters: application_name becomes
 * `migshim lock pid=N migrating vt=<name>` (holder_vt_format).  A name
 * that does not fit is not published: then as holder_mark_migrating.
 * `schema` ("" when unqualified) and `table` are not NULL.  Returns as
 * holder_mark_migrating.
 */
bool holder_mark_migrating_vt(struct dbconn *own, const char *schema,
                              const char *table) MUSTCHECK;

/*
 * Publish how the leader's run stands on `own`: application_name becomes
 * `migshim lock pid=N host=H migrating run=ended|failed`, or with a
 * version table (`table` not NULL or "") `migshim lock pid=N migrating
 * run=... vt=<name>`; HOLDER_RUN_GOING puts the plain mark back (the run
 * went on).  The vt name is kept when it fits; when both do not fit in 63
 * bytes the run token is left out (a waiter then counts no failure: it
 * leads, as before).  A waiter that sees `run=failed` and then the lock
 * freed with the database still behind counts one failed run
 * (lead_failures).  True when published; false, logged (warn), when the
 * name could not be built or the statement failed.
 */
bool holder_mark_run(struct dbconn *own, enum holder_run run,
                     const char *schema, const char *table) MUSTCHECK;

/*
 * Write the published form of the version table `schema`.`table` into
 * `out` (n bytes): `table` or `schema.table`, each part plain when it is a
 * lower-case identifier ([a-z_][a-z0-9_]*) and "quoted" ("" doubled)
 * otherwise.  False (out unspecified) when `table` is "", a part holds a
 * byte application_name would not keep (control, non-ASCII), or the
 * result does not fit.  Pure.
 *
 *   holder_vt_format("Ops", "v", buf, 64) -> true, "\"Ops\".v"
 */
bool holder_vt_format(const char *schema, const char *table, char *out, size_t n) MUSTCHECK;

/*
 * The inverse: read `text` (a published name, ended by NUL or a space)
 * into `schema` (ssz bytes; "" when unqualified) and `table` (tsz bytes).
 * False when it is malformed or a part does not fit.  Pure.
 */
bool holder_vt_parse(const char *text, char *schema, size_t ssz, char *table,
                     size_t tsz) MUSTCHECK;

/*
 * The holder of `key`'s exclusive lock, read on `c` (any connection to the
 * same database): *idle, how many seconds its lock connection has been in
 * its current state; *migrating, whether it is marked; with `vt` (may be
 * NULL) the version table it published (vt->known false when none).  True
 * when someone holds it; false when nobody does or the query failed (the
 * outputs but vt->known are then unspecified).
 */
bool holder_state(struct dbconn *c, int64_t key, double *idle,
                  bool *migrating, struct holder_vt *vt) MUSTCHECK;

/* holder_state, and (`run` not NULL) how the holder's run stands as it
 * published it (HOLDER_RUN_GOING when it published nothing). */
bool holder_state_run(struct dbconn *c, int64_t key, double *idle,
                      bool *migrating, struct holder_vt *vt, enum holder_run *run) MUSTCHECK;

/*
 * Describe who holds `key`'s exclusive lock, read on `own`, into `buf` (n
 * bytes): "backend pid 123 from 10.0.0.5, application_name 'x', since
 * 2026-01-01 12:00:01 UTC", or "nobody (it was just released)" -- also
 * when the query failed: it is for a log line, which says something
 * either way.
 */
void holder_describe(struct dbconn *own, int64_t key, char *buf, size_t n);

#endif
