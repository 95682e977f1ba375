/*
 * gate_int — what the gate's files share, and nothing else may include.
 *
 * The gate (include/gate.h) is six files, one concern each; each calls
 * only the ones below it:
 *
 *   src/gate.c         the state machine and the public entry points of
 *                      gate.h: which database a connection belongs to (the
 *                      server's name, the client's address as an alias),
 *                      the decision at the first connection, each state's
 *                      answer to the app's statements and to the ends of
 *                      its commands, fork safety;
 *   src/gate_schema.c  per-schema version tables: the decision at each of
 *                      the migration's statements (G_SCHEMA), and where a
 *                      leader's table is;
 *   src/gate_learn.c   the version table learned from the leader's own
 *                      statements;
 *   src/gate_wait.c    waiting: the lock connection opened (waiting for a
 *                      connection slot) and the wait-for-version loop, the
 *                      I/O side of wait.h's step function;
 *   src/gate_lead.c    the lead: the app's connections tuned while it
 *                      leads, the leader's re-read of its table, the
 *                      migration run and its end, the lapse, the settler
 *                      thread and the exit;
 *   src/gate_db.c      what every part does to a database: the table of
 *                      them, set_state and the counters the wrappers read,
 *                      its lock connection, its dirty connections, the
 *                      schema its waits read, the held "leading" line.
 *
 *   gate.c ──▶ gate_schema ──▶ gate_wait, gate_lead ──▶ gate_db
 *         └──▶ gate_learn  ──▶ gate_lead
 *
 * Locking.  One mutex (gate_mu) guards every struct gdb and the state of
 * the parts; gate_cv is broadcast whenever a database leaves G_DECIDING.
 * gate.c's entry points, the settler thread and the exit handler
 * (gate_lead.c) take it; reacquire and schema_decide let it go for their
 * blocking work and take it again.  "Mutex held" below means: called with
 * gate_mu held, and returns with it held.  Blocking work (the wait loop, a
 * round trip on the app's connection) runs with the mutex released while
 * the database is G_DECIDING, or with it held for the short per-statement
 * checks of a leader; the lock connection is only ever used by the thread
 * that set G_DECIDING or under the mutex.
 *
 * Nothing here calls a PQ* name: the gate talks to every connection
 * through the seam (dbconn.h, seam() below).
 */
#ifndef MIGSHIM_GATE_INT_H
#define MIGSHIM_GATE_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "compiler.h"
#include "config.h"
#include "dbconn.h"
#include "events.h"
#include "gate.h"
#include "holder.h"
#include "log.h"
#include "migtool.h"
#include "peer.h"
#include "shim.h"
#include "versions.h"
#include "wait.h"

/* --- the state of one database (gate_db.c) -------------------------------- */

enum gstate { G_NEW, G_DECIDING, G_DONE, G_LEADING, G_LAPSED, G_UNKNOWN, G_UNGATED,
              G_SCHEMA /* decided per version-table statement, in its schema: see schema_decide */ };

#define MAX_DBS 8
#define MAX_DIRTY 16

struct gdb {
    char name[CONFIG_NAME_MAX];  /* the server's name for it (current_database()),
                                    or the client's when the gate did not read */
    char cluster[48];            /* which server ("" when unknown)              */
    enum gstate st;
    pid_t pid;               /* the process this state belongs to          */
    struct ownconn *own;     /* the lock connection (waiting/leading)       */
    int64_t key;
    double since;            /* when the lock was taken                     */
    double grace_deadline;
    bool saw_vt;             /* the leader sent a version-table statement   */
    double next_settle;      /* Django: the settler's next read             */
    struct {                 /* LEADING: which version table its migration uses */
        bool known;          /* an Alembic statement on it was seen          */
        bool learned;        /* ... and it is not the configured one: below  */
        bool warned;         /* the warning naming the settings was given    */
        char schema[CONFIG_NAME_MAX];
        char table[CONFIG_NAME_MAX];
    } vt;
    struct {                 /* LEADING with the configured table absent: the
                                "leading" line waits for the first version-table
                                statement (tell_lead) */
        bool pending;
        enum wait_msg msg;   /* the line's entry in wait.h's table: its level
                                and event                                    */
        char revs[512];
        char text[2048];
    } untold;
    struct {                 /* per-schema version tables (see schema_decide)   */
        bool on;             /* decide per statement (G_SCHEMA between leads)   */
        bool home_known;     /* the first connection's read found no table      */
        bool checked;        /* LEADING: its first statement was resolved       */
        bool wrote;          /* ... a per-schema lead wrote its table           */
        char home[CONFIG_NAME_MAX];   /* ... and its current_schema()           */
        char schema[CONFIG_NAME_MAX]; /* the schema a wait or lead is about, "" */
    } sp;
    PGconn *holder;          /* UNKNOWN: the connection whose transaction holds it */
    bool holder_locked;      /* ... and holds it for real (not after a timeout) */
    bool holder_wrote;       /* ... and its transaction wrote the version table */
    PGconn *dirty[MAX_DIRTY];/* connections with an uncommitted version-table write */
    bool dirty_wrote[MAX_DIRTY];  /* ... whose transaction wrote it (LEADING)      */
    bool dirty_failed[MAX_DIRTY]; /* ... whose transaction saw an error (LEADING)  */
    size_t ndirty;
    struct {                 /* LEADING: the end of the run (see run_ended)  */
        double ended;        /* when its last version-table transaction ended
                                short of the target; 0 = the run goes on     */
        PGconn *pg;          /* that transaction's connection (NULL: closed) */
        bool failed;         /* ... ended in an error, or a later one on pg did */
        enum holder_run told;  /* what the lock connection publishes           */
    } run;
    struct {                 /* LEADING: the app's connections tuned for a dead peer */
        PGconn *pg;
        struct peer_saved sock;
    } tuned[MAX_DIRTY];
    size_t ntuned;
};

/* Non-zero while gate_after has something to look at: a connection whose
 * version-table transaction holds the lock (UNKNOWN) or must be checked at
 * its end (LEADING, UNGATED), or a leader still inside leader_grace.  Kept
 * by refresh_pending() under the mutex; read without it. */
extern _Atomic int gate_pending;

/* Every database this process has met (gate_ndbs of them; an entry whose
 * pid is not getpid() is a forked parent's, adopted at its next use). */
extern struct gdb gate_dbs[MAX_DBS];
extern size_t gate_ndbs;

/* The gate's mutex and the condition a G_DECIDING database's waiters wait
 * on (see "Locking" above). */
extern pthread_mutex_t gate_mu;
extern pthread_cond_t gate_cv;

/* The migration tool (migtool.h): everything tool-specific is asked of it.
 * Chosen and loaded once per process at the first connection; Alembic's
 * table until then, whose target is unknown. */
extern const struct migtool *gate_tool;

/* How a wait ended (wait_loop). */
enum outcome { OUT_DONE, OUT_LEADING, OUT_FAILED, OUT_UNGATED /* behind, proceeding without the lock */,
               OUT_LAPSED /* the holder lapsed: proceed, take the lock at the first version-table statement */,
               OUT_INTERRUPTED /* SIGTERM & co. while waiting: fail, let the app's handler run */ };

/* One decision: one log line and, with `events` set, one event. */
#define NOTE(level, event, db, versions, ...)                                                     \
    do {                                                                                      \
        log_msg(level, __VA_ARGS__);                                                          \
        events_emit(event, db, versions, NULL);                                               \
    } while (0)

/* --- the tool's answers, in the gate's words (each one call) ------------- */

/* The lead ends when the process goes idle or exits (Django's rule): every
 * statement of the process is activity, the settler ends the lead. */
static inline bool ends_idle(void) { return gate_tool->lead_end == MIGTOOL_END_IDLE; }

/* g's migration lock key (the database's, whichever schema). */
static inline int64_t key_of(const struct gdb *g) { return gate_tool->key(shim_config(), g->name); }

enum cmp { AT_TARGET = MIGTOOL_AT_TARGET, BEHIND = MIGTOOL_BEHIND, AHEAD = MIGTOOL_AHEAD };

/* The state read, and the target, for the log (the tool's words). */
static inline void describe(const struct versions *v, char *buf, size_t sz)
{
    gate_tool->describe(v, buf, sz);
}
static inline void describe_target(char *buf, size_t sz) { gate_tool->describe_target(buf, sz); }

/* The state read against the target (known): AHEAD when a newer deploy
 * migrated it. */
static inline enum cmp compare(const struct versions *v) { return (enum cmp)gate_tool->compare(v); }

/* The tool's state read for versions.h's reads (NULL: the configured
 * version table). */
static inline const char *state_expr(void) { return migtool_state_expr(gate_tool); }

/* The seam of the app's connection `pg` (dbconn.h), made in `pc`: the gate
 * talks to every connection through one, the app's as its lock's. */
static inline struct dbconn *seam(struct dbconn_pq *pc, const struct pq_copy *copy,
                                  const PGconn *pg)
{
    /* the seam's operations that change a connection are only called on
     * one the caller may change: the const is the identity's (cmap) */
    return dbconn_pq_init(pc, &copy->api, (PGconn *)(uintptr_t)pg);
}

/* "schema"."table" or "table", for messages. */
static inline void vt_text(const char *schema, const char *table, char *out, size_t n)
{
    if (schema[0])
        snprintf(out, n, "\"%s\".\"%s\"", schema, table);
    else
        snprintf(out, n, "\"%s\"", table);
}

/* --- gate_db.c: what every part does to a database ------------------------ */

/* Change g's state, keeping gate_watching equal to the number of watched
 * databases and gate_guarding to the number of guarded ones, and the
 * heartbeat kept while leading (heartbeat.h).  Mutex held.  Call
 * refresh_pending() after. */
void set_state(struct gdb *g, enum gstate s);

/* Recompute what the wrappers must show the gate (every call, only the
 * statement texts, the learning statements) after any change of holders,
 * dirty connections, runs or states.  Asserts that the counters equal the
 * states.  Mutex held. */
void refresh_pending(void);

/* Close g's lock connection, if any (the server drops the lock with it).
 * Mutex held, or g DECIDING. */
void close_own(struct gdb *g);

/* Release the migration lock g holds on `c` (its lock connection, or the
 * app's connection a waiter took it on).  A failure is logged: the lock
 * then ends with that connection, which the caller closes or gives back
 * failed. */
void release_lock(const struct gdb *g, struct dbconn *c);

/* Have the server end g's lock session `own` once it stays idle for
 * `seconds` (`setting`: leader_grace or hold_timeout, for the log).  A
 * failure is logged: only this process's own checks then bound the lead. */
void limit_idle(const struct gdb *g, struct dbconn *own, const char *setting, double seconds);

/* Make the app's connection fail (on_timeout = fail, a signal): its socket
 * is shut down, so libpq sees the server go away and reports
 * CONNECTION_BAD. */
void fail_app_conn(const struct pq_copy *copy, PGconn *pg);

/* True when `pg` is one of g's connections with a version-table
 * transaction open ("dirty").  Mutex held, as for the four below. */
bool is_dirty(const struct gdb *g, const PGconn *pg);

/* Note `pg` as a connection of g with an uncommitted version-table
 * statement (at most MAX_DIRTY; more are not tracked).  Mutex held. */
void mark_dirty(struct gdb *g, PGconn *pg);

/* The slot of `pg` among g's dirty connections, or -1.  Mutex held. */
int dirty_slot(const struct gdb *g, const PGconn *pg);

/* `pg` is no longer one of g's dirty connections (a no-op if it was not). */
void clear_dirty(struct gdb *g, const PGconn *pg);

/* When `pg` is one of g's dirty connections: no longer, and what its
 * transaction did (`wrote`: wrote the table, `failed`: saw an error; each
 * may be NULL); true.  Else false, nothing changed. */
bool take_dirty(struct gdb *g, const PGconn *pg, bool *wrote, bool *failed);

/* The settings a wait or a lead of `g` reads the version table with: the
 * configured ones, or (per-schema, sp.schema set) the same with
 * version_table_schema = sp.schema.  The lock key stays the database's
 * (key_of): one migration at a time per database, whichever schema. */
const struct config *cfg_of(const struct gdb *g);

/* Make `schema` ("" for none) the one g's waits and lead read. */
void sp_use(struct gdb *g, const char *schema);

/* Say the "leading" line held back in g->untold (if any), with the level
 * and event of its entry in wait.h's table (untold.msg, set with the text
 * by the wait that took the lock).  Mutex held. */
void tell_lead(struct gdb *g);

/* --- gate_wait.c: waiting ------------------------------------------------- */

/*
 * The wait-for-version loop for g (g DECIDING, mutex released): slices of
 * lock steps decided by wait.h's wait_step, until the wait ends.  With
 * `on_app` (lock = xact, `app` a fresh connection outside any transaction)
 * it waits on the app's own connection and hands a lock it takes over to
 * a lock connection of its own; else on the lock connection, opened first
 * (with `fresh`, waiting for a connection slot while a peer migrates).
 * SIGTERM, SIGINT and SIGQUIT are recorded for its length only (waitsig.h):
 * a signal ends it with OUT_INTERRUPTED, and the caller, once it holds no
 * lock of ours, calls waitsig_redeliver().  The heartbeat is kept.
 * OUT_LEADING: g->own holds the exclusive lock, g->since is set and the
 * "leading" line is said or held (g->untold, tell_lead).  Every other end
 * has been said, and left no lock connection.  `why` ends the "leading"
 * line (NULL: nothing).
 */
enum outcome wait_loop(const struct pq_copy *copy, PGconn *app, struct gdb *g, const char *why,
                       bool on_app, bool fresh);

/* Take the lock again (G_LAPSED, G_UNKNOWN, G_SCHEMA) for the app's
 * statement on `pg`: g is G_DECIDING for the wait, which runs with the
 * mutex released (wait_loop, on a lock connection: `pg` may be
 * mid-transaction), then back in its state.  `why` ends the "leading"
 * line (NULL: nothing).  Mutex held. */
enum outcome reacquire(const struct pq_copy *copy, PGconn *pg, struct gdb *g, const char *why);

/* --- gate_lead.c: the lead and its end ------------------------------------ */

/* Read the version table a leader follows -- the one its migration was
 * seen to use (learned), else the configured one -- on its lock
 * connection `own` into `v`.  False (err set) when the read fails. */
bool read_lead_table(const struct gdb *g, struct dbconn *own, struct versions *v, char *err,
                     size_t errsz) MUSTCHECK;

/* While g leads, `pg` carries the migration: give it the server's side
 * (session keepalive settings) and the client's (socket options) of a
 * peer that vanishes (peer.h), once, when it is idle.  Undone by
 * untune_all.  A connection that cannot be tuned is logged (debug) and
 * left as it is.  Mutex held. */
void tune_app(const struct pq_copy *copy, struct gdb *g, PGconn *pg);

/* The lead is over: every tuned connection's socket gets its options back;
 * `idle`, the connection the caller may use now (outside a transaction),
 * also its session defaults.  Mutex held. */
void untune_all(const struct pq_copy *copy, struct gdb *g, PGconn *idle);

/* `pg` is being finished: forget it among g's tuned connections.  Mutex held. */
void forget_tuned(struct gdb *g, const PGconn *pg);

/* The leader's migration began (its first statement on its version
 * table): set hold_timeout on the lock connection and mark it migrating --
 * publishing `schema`.`table` when `table` is not NULL (a learned table) --
 * so that waiters never take this lead for a lapse.  Failures are logged.
 * Mutex held. */
void lead_migrating(struct gdb *g, const char *schema, const char *table);

/* The leader (g LEADING) is about to send one of the tool's statements on
 * its version table on `pg` (`writes`: one of its writes): the held
 * "leading" line is said at a write, the first one begins the migration
 * (lead_migrating), and under the run rule it is the run's activity
 * (lead_activity).  Mutex held. */
void lead_statement(struct gdb *g, PGconn *pg, bool writes);

/* A version-table statement of the leader on `pg` (Alembic's run rule):
 * `pg` is dirty (its transaction wrote the table with `writes`), and an
 * ended run goes on.  Mutex held. */
void lead_activity(struct gdb *g, PGconn *pg, bool writes);

/* The leader's transaction on `pg` is in error: when that transaction
 * ends, so does the run (failed); an ended run whose connection begins a
 * failing transaction (transaction_per_migration's next revision) is
 * failed now, and waiters get lead_settle to see it.  Mutex held. */
void lead_saw_error(struct gdb *g, PGconn *pg);

/* The leader's version-table transaction on `pg` ended, `pg` idle (`wrote`:
 * it wrote the table, `failed`: it saw an error): re-read the table on the
 * lock connection; at the target, release and say "migrated" (or "a peer
 * migrated it"); a per-schema lead that only read, release; short of it
 * after a write or an error, the run ended (the settle begins); a read
 * that fails twice releases (the waiters check for themselves).  Mutex
 * held, g LEADING. */
void lead_txn_ended(const struct pq_copy *copy, struct gdb *g, PGconn *pg, bool wrote,
                    bool failed);

/* The leader's version-table transaction on `pg` (NULL: the connection
 * closed) ended short of the target, having written or failed: the
 * settle begins (the settler ends the lead lead_settle later, unless the
 * run goes on).  Mutex held. */
void run_ended(const struct pq_copy *copy, struct gdb *g, PGconn *pg, bool failed);

/* No version-table statement within leader_grace (g LEADING, !saw_vt):
 * the server ended the idle lock session; g is LAPSED, the held "leading"
 * line said.  `idle` is the app connection the caller
 * may use now (or NULL).  With `say`, the warning naming the setting.
 * Mutex held. */
void lead_lapse(const struct pq_copy *copy, struct gdb *g, PGconn *idle, bool say);

/* Release g's lock (on its lock connection, if any), close that, untune
 * the app's connections (`idle` as in untune_all), and forget the dirty
 * connections, the run and the schema of the lead.  The caller sets the
 * next state and says why.  Mutex held. */
void lead_let_go(const struct pq_copy *copy, struct gdb *g, PGconn *idle);

/* Any statement of the process while a lead that ends when idle is on
 * (Django): the settler's clock starts again.  Lock-free. */
void note_activity(void);

/* A lead that the settler ends began (Django), or a run ended (Alembic):
 * make sure the settler thread runs and the exit handler is registered.
 * A thread that cannot start is logged (the lock is then held to the
 * process's exit).  Mutex held. */
void start_settler(const struct pq_copy *copy);

/* In a forked child (atfork, mutex held): the parent's settler thread is
 * not this process's. */
void settler_forget(void);

/* --- gate_schema.c: per-schema version tables ----------------------------- */

/* The first connection's read `v` of g (server identity `id`): note where
 * the table is absent (sp.home), and say whether another schema holds a
 * table of that name, so that g is decided per statement (G_SCHEMA).
 * Never with version_table_schema set, nor for a tool without decision
 * points.  g DECIDING. */
bool schema_mode(struct gdb *g, const struct versions *v, const struct server_id *id);

/* G_SCHEMA: the app is about to send `sql` on `pg`.  At a decision point,
 * read the table where the statement finds it; behind, take the lock or
 * wait for it (reacquire) and lead that schema's migration (g LEADING) or
 * go on once a peer brought it to the target; a wait that fails fails
 * `pg`.  Mutex held (released for the read and the wait). */
void schema_decide(const struct pq_copy *copy, PGconn *pg, struct gdb *g, const char *sql);

/* A leader whose first connection found no version table, at its first
 * unqualified Alembic statement on it: where does the session resolve the
 * table?  Elsewhere than sp.home: the lead follows that schema's table
 * (g decided per statement from then on); already at the target there
 * (a peer migrated it first): release and go on (true: the lead ended
 * here, g G_SCHEMA).  Mutex held (the read blocks on `pg` with it). */
bool lead_resolve(const struct pq_copy *copy, PGconn *pg, struct gdb *g, const char *sql);

/* --- gate_learn.c: the version table learned from the migration ----------- */

/* One of the tool's version-table statements in its exact shape, on
 * `schema`.`table`, writing it or not, by the leader g on `pg`: before the
 * first on the configured table, one on another table is learned (the
 * lead follows it, publishes it, and warns once, naming the settings);
 * after, the learned table's statements are the run's activity.  Mutex
 * held, g LEADING. */
void learn_statement(struct gdb *g, PGconn *pg, const char *schema, const char *table,
                     bool writes);

#endif
