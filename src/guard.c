/*
 * guard — see include/guard.h.
 *
 * Per-connection state lives in a short table (connections that sent a
 * statement while the guard was on).  A connection is in one of two modes:
 *
 *   WATCH   ordinary: follow what the app's transaction shows -- an Alembic
 *           version-table statement, the version it started from, the
 *           version it has written since (its "view"), work of its own
 *           before the migration began -- and judge the results that could
 *           be a race.
 *   ABSORB  a race was mapped: the app's transaction is rolled back and a
 *           READ ONLY transaction stands in for it up to its COMMIT/ROLLBACK.
 *           While the app's view is still short of the target, statements
 *           whose success is certain and carries no data (DDL, savepoints,
 *           a plain INSERT ... VALUES, Alembic's version writes) are
 *           answered, and Alembic's read of the version table gets the
 *           view.  Anything else -- a read of the app's tables, any
 *           statement once the view is at the target (the app's own work
 *           after its migration) -- is not answered: the stand-in
 *           transaction is made to fail for real and the app gets the
 *           original error, as without the shim.
 *
 * Made results are built with PQmakeEmptyPGresult on the app's own
 * connection (so its notice hooks and events carry over) with the command
 * tag the real statement would have produced.  On the asynchronous path a
 * made result replaces the result of a statement really sent in its place
 * (an async client waits for the socket to become readable).
 */
#include "guard.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "atfork.h"
#include "clock.h"
#include "dbconn.h"
#include "events.h"
#include "gate.h"
#include "log.h"
#include "ownconn.h"
#include "shim.h"
#include "sqlclass.h"
#include "versions.h"

#define MAX_GUARDED 64
#define TAG_MAX 64 /* libpq's CMDSTATUS_LEN */
#define STANDIN "SELECT NULL WHERE false"

enum mode { M_WATCH, M_ABSORB };

struct gconn {
    const PGconn *pg;
    enum mode mode;
    bool counted;           /* counted in guard_busy / shim_hooks               */
    /* what the app's current transaction showed (WATCH) */
    bool vt_txn;            /* it sent one of Alembic's version-table statements */
    bool s0_known;          /* the version table it started from is known:      */
    struct versions s0;     /* ... from its CREATE or has_table (none), its read */
    struct versions view;   /* ... and as its own writes have left it since     */
    bool view_done;         /* the view is at the target: the migration is over  */
    bool own_work;          /* it wrote before its first version-table statement */
    bool schema_known;      /* where its version table is, as the app's session
                               resolved it at its first version-table statement: */
    char schema[CONFIG_NAME_MAX]; /* ... the schema the proof reads (resolve_schema) */
    bool path_set;          /* the connection's search_path may have been set (a
                               statement naming search_path, or one whose text is
                               unknown, was seen on it): for the life of the
                               connection, an unqualified version table may be
                               another than the one the guard's proof reads */
    int sp_depth;           /* ABSORB: answered savepoints still open            */
    bool sp_failed;         /* ABSORB: a statement in one of them got the original
                               error: as in PostgreSQL, only ROLLBACK TO (or the
                               end of the transaction) goes on from here        */
    PGresult *orig;         /* ABSORB: the error the mapping answered            */
    /* the asynchronous path */
    bool sent;              /* a statement to judge is in flight, and:           */
    struct sqlclass cls;    /* ... what it was                                   */
    char tag[TAG_MAX];      /* ... its DDL tag ("" if it is not DDL)             */
    char value[64];         /* ... the version an INSERT / UPDATE writes         */
    char from[64];          /* ... the version an UPDATE / DELETE matches        */
    int result_format;      /* ... the result format it asked for                */
    bool in_txn;            /* ... sent inside a transaction block               */
    PGresult *pending;      /* a made result still to deliver                    */
    bool standin;           /* the statement sent in its place is still running  */
    bool pending_null;      /* then the NULL that ends the command               */
};

static struct gconn conns[MAX_GUARDED];
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

/* fork(): the mutex is held across it, so a child never inherits it locked
 * by a thread it does not have.  Registered before the mutex is first
 * taken; the guard calls no other module with it held, so its place among
 * the other modules' handlers does not matter. */
static void atfork_prepare(void) { pthread_mutex_lock(&mu); }
static void atfork_parent(void) { pthread_mutex_unlock(&mu); }
static void atfork_child(void) { pthread_mutex_unlock(&mu); }

static pthread_once_t fork_once = PTHREAD_ONCE_INIT;
static void fork_register(void)
{
    atfork_register("guard", atfork_prepare, atfork_parent, atfork_child);
}

/* Take the mutex, the fork handlers registered first. */
static void lock(void)
{
    pthread_once(&fork_once, fork_register);
    pthread_mutex_lock(&mu);
}

/* Connections not in WATCH, with a made result pending, or with a
 * statement in flight whose results are to be judged: the wrappers keep
 * calling the guard for them even after the gate stops watching. */
_Atomic int guard_busy;

static struct gconn *find(const PGconn *pg, bool add)
{
    struct gconn *free_slot = NULL;
    lock();
    for (size_t i = 0; i < MAX_GUARDED; i++) {
        if (conns[i].pg == pg) {
            pthread_mutex_unlock(&mu);
            return &conns[i];
        }
        if (!conns[i].pg && !free_slot)
            free_slot = &conns[i];
    }
    if (add && free_slot) {
        memset(free_slot, 0, sizeof *free_slot);
        free_slot->pg = pg;
    } else {
        free_slot = NULL;
    }
    pthread_mutex_unlock(&mu);
    return free_slot;
}

/* Keep guard_busy (and shim_hooks) counting exactly the connections whose
 * every call the guard must see.  Called after any change of state. */
static void update_busy(struct gconn *g)
{
    bool busy = g->mode != M_WATCH || g->pending || g->standin || g->pending_null || g->sent;
    if (busy == g->counted)
        return;
    g->counted = busy;
    atomic_fetch_add(&guard_busy, busy ? 1 : -1);
    shim_hooks_add(busy ? 1 : -1);
}

static void set_mode(const struct pq_api *pq, struct gconn *g, enum mode m)
{
    g->mode = m;
    if (m != M_ABSORB && g->orig) {
        pq->PQclear(g->orig);
        g->orig = NULL;
    }
    if (m == M_WATCH)
        g->vt_txn = g->s0_known = g->view_done = g->own_work = g->sp_failed = g->schema_known =
            false;
    if (m == M_WATCH)
        g->sp_depth = 0;
    update_busy(g);
}

void guard_forget(const struct pq_copy *c, const PGconn *pg)
{
    struct gconn *g = find(pg, false);
    if (!g)
        return;
    if (g->pending)
        c->api.PQclear(g->pending);
    g->pending = NULL;
    g->standin = g->pending_null = g->sent = false;
    set_mode(&c->api, g, M_WATCH); /* uncounts it */
    lock();
    memset(g, 0, sizeof *g);
    pthread_mutex_unlock(&mu);
}

bool guard_is_race_sqlstate(const char *s)
{
    static const char *const codes[] = {"23505", "42P07", "42701", "42710", "42P06", "42723"};
    if (!s)
        return false;
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++)
        if (strcmp(s, codes[i]) == 0)
            return true;
    return false;
}

/* --- helpers on the real connection ----------------------------------------------- */

static bool run_ok(const struct pq_api *pq, PGconn *pg, const char *sql)
{
    PGresult *r = pq->PQexec(pg, sql);
    bool ok = r && pq->PQresultStatus(r) == PGRES_COMMAND_OK;
    if (r)
        pq->PQclear(r);
    return ok;
}

/* The guard's own statements on the app's connection run in blocking mode
 * even when the app uses non-blocking mode (psycopg 3 does). */
static int blocking_begin(const struct pq_api *pq, PGconn *pg)
{
    int nb = pq->PQisnonblocking(pg);
    if (nb)
        pq->PQsetnonblocking(pg, 0);
    return nb;
}

static void blocking_end(const struct pq_api *pq, PGconn *pg, int nb)
{
    if (nb)
        pq->PQsetnonblocking(pg, 1);
}

/* Pipeline mode (libpq 14+): results arrive per queued statement and
 * PQexec is refused, so the guard never acts there. */
static bool in_pipeline(const struct pq_api *pq, PGconn *pg)
{
    return pq->PQpipelineStatus && pq->PQpipelineStatus(pg) != PQ_PIPELINE_OFF;
}

static PGresult *real_call(const struct pq_api *pq, PGconn *pg, const struct pq_call *k)
{
    switch (k->kind) {
    case CALL_EXEC: return pq->PQexec(pg, k->sql);
    case CALL_PARAMS:
        return pq->PQexecParams(pg, k->sql, k->nparams, k->types, k->values, k->lengths,
                                k->formats, k->result_format);
    default:
        return pq->PQexecPrepared(pg, k->stmt_name, k->nparams, k->values, k->lengths,
                                  k->formats, k->result_format);
    }
}

static int real_send(const struct pq_api *pq, PGconn *pg, const struct pq_call *k)
{
    switch (k->kind) {
    case CALL_EXEC: return pq->PQsendQuery(pg, k->sql);
    case CALL_PARAMS:
        return pq->PQsendQueryParams(pg, k->sql, k->nparams, k->types, k->values, k->lengths,
                                     k->formats, k->result_format);
    default:
        return pq->PQsendQueryPrepared(pg, k->stmt_name, k->nparams, k->values, k->lengths,
                                       k->formats, k->result_format);
    }
}

static const char *sqlstate_of(const struct pq_api *pq, const PGresult *r)
{
    const char *s = r ? pq->PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    return s ? s : "";
}

static double now(void) { return clock_now(); }

/* --- what a statement is ------------------------------------------------------------ */

/* The text of a version-table value: the literal, or parameter $n sent as
 * text.  False when it cannot be known. */
static bool value_of(const struct sqlval *v, const struct pq_call *call, char *out, size_t n)
{
    if (!v->param) {
        snprintf(out, n, "%s", v->text);
        return true;
    }
    int i = v->param - 1;
    if (call->kind == CALL_EXEC || i >= call->nparams || !call->values || !call->values[i] ||
        (call->formats && call->formats[i] != 0) || strlen(call->values[i]) >= n)
        return false;
    snprintf(out, n, "%s", call->values[i]);
    return true;
}

static void describe_versions(const struct versions *v, char *buf, size_t sz)
{
    size_t o = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < v->n && o < sz; i++)
        o += (size_t)snprintf(buf + o, sz - o, "%s%s", i ? "," : "", v->v[i]);
    if (!v->n)
        snprintf(buf, sz, v->present ? "(empty)" : "(no table)");
}

static bool same_versions(const struct versions *a, const struct versions *b)
{
    if (a->present != b->present || a->n != b->n || a->truncated || b->truncated)
        return false;
    for (size_t i = 0; i < a->n; i++) {
        bool found = false;
        for (size_t j = 0; j < b->n && !found; j++)
            found = strcmp(a->v[i], b->v[j]) == 0;
        if (!found)
            return false;
    }
    return true;
}

/* --- made results ------------------------------------------------------------------------ */

/* A COMMAND_OK result carrying `tag`, made on the app's connection. */
static PGresult *made(const struct pq_api *pq, PGconn *pg, const char *tag)
{
    PGresult *r = pq->PQmakeEmptyPGresult(pg, PGRES_COMMAND_OK);
    if (r)
        snprintf(pq->PQcmdStatus(r), TAG_MAX, "%s", tag);
    return r;
}

/* Alembic's INSERT INTO <vt> (version_num) VALUES (v) [RETURNING
 * <vt>.version_num]: "INSERT 0 1" and, with RETURNING, the one row as the
 * server returns it (a varchar, in the format the app asked for: text and
 * binary are the same bytes for varchar).  NULL when it cannot be made. */
static PGresult *made_insert(const struct pq_api *pq, PGconn *pg, bool returning,
                             const char *value, int result_format)
{
    if (!returning)
        return made(pq, pg, "INSERT 0 1");
    PGresult *r = pq->PQmakeEmptyPGresult(pg, PGRES_TUPLES_OK);
    PGresAttDesc attr = {.name = (char *)"version_num", .format = result_format ? 1 : 0,
                         .typid = 1043 /* varchar */, .typlen = -1, .atttypmod = 36 /* 32 + 4 */};
    if (!r || !pq->PQsetResultAttrs(r, 1, &attr) ||
        !pq->PQsetvalue(r, 0, 0, (char *)value, (int)strlen(value))) {
        if (r)
            pq->PQclear(r);
        return NULL;
    }
    snprintf(pq->PQcmdStatus(r), TAG_MAX, "INSERT 0 1");
    return r;
}

/* --- the one rule ---------------------------------------------------------------------------
 *
 * The app's statement failed with a race error, or Alembic's version UPDATE
 * matched no row.  The shim answers it with success, rolls the app's
 * transaction back and stands in for the rest of it, only when all of this
 * holds:
 *
 *   (a) it was sent inside a transaction block (so none of the
 *       transaction's work is committed yet, and all of it can be undone);
 *   (b) that transaction is an Alembic migration: it sent one of Alembic's
 *       own version-table statements, and showed the version it started
 *       from (its CREATE TABLE of the version table: none; or its read of
 *       it), and that version is behind this process's target; and before
 *       that first statement it sent only read-only probes (allowed_before:
 *       an allowlist of exact words), so the rollback destroys nothing but
 *       the migration's own work, which the peer's commit stands for;
 *   (c) the failing statement is DDL (CREATE/ALTER) with a race SQLSTATE,
 *       Alembic's version INSERT with 23505, or its version UPDATE matching
 *       0 rows -- never the app's own data statements;
 *   (d) the version table as committed, read on another connection after
 *       the failure, holds exactly the target heads -- the same table the
 *       app's statements name: in the schema the statement names, or
 *       the app's session resolved at the transaction's first version-
 *       table statement (resolve_schema), and the session did not set its
 *       search_path since (a statement naming search_path, or one of
 *       unknown text, on the connection).
 *
 * (b) and (d) together prove that someone else migrated this database from
 * where this transaction started to the target while it ran (this process
 * has not: its own commit at the target would have ended the guard's
 * window).  So the end state equals a world where this process's
 * transaction never ran and the peer's did; the rest of the transaction
 * either gets answers that carry no data, or runs in a read-only
 * transaction, or gets the original error.
 *
 * A genuine error passes at once: when the committed version is still
 * where this transaction started (nobody moved it), or when this process
 * holds the migration lock (no shimmed peer can be in flight), one read
 * decides.  Only a version that moved but has not reached the target (a
 * peer that commits each revision on its own) is waited for, up to
 * race_wait.
 */

/* (a)-(c): is `res`, the answer to the statement of class `k` (DDL tag
 * `ddl`), a candidate? */
static bool candidate(const struct pq_api *pq, const struct gconn *g, const struct sqlclass *k,
                      const char *ddl, bool in_txn, const PGresult *res)
{
    if (!in_txn || !g->vt_txn || !g->s0_known || gate_at_target(&g->s0) || g->own_work ||
        g->view_done || !res)
        return false;
    /* (d) reads the version table on another connection, in its own
     * search_path: only the same table when the app's session kept the
     * one it connected with (the lock connection is made with the same
     * options), or when the table is qualified by version_table_schema */
    if (!g->schema_known || (g->path_set && !shim_config()->version_table_schema[0]))
        return false;
    ExecStatusType st = pq->PQresultStatus(res);
    if (st == PGRES_FATAL_ERROR) {
        const char *state = sqlstate_of(pq, res);
        if (k->kind == SQL_VT_INSERT)
            return strcmp(state, "23505") == 0;
        return (strncmp(ddl, "CREATE ", 7) == 0 || strncmp(ddl, "ALTER ", 6) == 0) &&
               guard_is_race_sqlstate(state);
    }
    return k->kind == SQL_VT_UPDATE && st == PGRES_COMMAND_OK &&
           strcmp(pq->PQcmdTuples((PGresult *)res), "0") == 0;
}

/* (d), waiting for a peer in flight.  `seen`: the committed version table,
 * for the log; `*waited`: how long a peer in flight was waited for. */
static bool proven(const struct pq_copy *c, PGconn *pg, struct gconn *g, char *seen,
                   size_t seensz, double *waited)
{
    const struct config *cfg = shim_config();
    struct versions v;
    char err[256];
    *waited = 0;
    if (gate_read_committed(c, pg, g->schema, &v)) { /* this process holds the lock */
        describe_versions(&v, seen, seensz);
        return gate_at_target(&v);
    }
    /* No connection slot free: someone's disconnect ends that, so the
     * slot is waited for within race_wait, like a peer in flight. */
    double start = now();
    struct backoff pause = BACKOFF_INIT;
    struct ownconn *oc;
    while (!(oc = ownconn_open(c, pg, "guard", err, sizeof err)) && ownconn_no_slot(err) &&
           now() - start < cfg->race_wait)
        backoff_pause(&pause);
    if (!oc) {
        snprintf(seen, seensz, "unknown");
        if (ownconn_no_slot(err))
            log_warn("guard: no connection slot to verify the race within race_wait (%g s): %s; the "
                     "error passes through", cfg->race_wait, err);
        else
            log_warn("guard: cannot open a connection to verify the race (%s); the error passes through", err);
        return false;
    }
    if (backoff_paused(&pause))
        log_info("guard: waited %.3f s for a connection slot to verify the race", now() - start);
    bool ok = false;
    for (;;) {
        if (!versions_read_in(ownconn_db(oc), g->schema, cfg->version_table, &v,
                              err, sizeof err)) {
            snprintf(seen, seensz, "unreadable: %s", err);
            break;
        }
        describe_versions(&v, seen, seensz);
        if ((ok = gate_at_target(&v)))
            break;
        /* Nobody moved it since this transaction read it: the error is the
         * app's own.  Moved but not at the target: a peer committing one
         * revision at a time, still in flight.  The app's failed transaction
         * keeps its locks meanwhile (ending it early would change what the
         * app sees if the peer never arrives), so the wait is bounded. */
        if (same_versions(&v, &g->s0) || now() - start >= cfg->race_wait)
            break;
        clock_pause_ms(50);
    }
    *waited = now() - start;
    ownconn_close(oc);
    return ok;
}

/* Judge a candidate (its command is complete: the connection is idle).
 * Returns what the app sees: `res` itself, or a made result. */
static void apply_view(struct gconn *g, enum sql_kind kind, const char *value,
                       const char *from);

static PGresult *judge(const struct pq_copy *c, PGconn *pg, struct gconn *g,
                       const struct sqlclass *k, const char *ddl, const char *value,
                       const char *vfrom, int result_format, PGresult *res)
{
    const struct pq_api *pq = &c->api;
    char seen[512], from[512];
    double waited;
    bool failed = pq->PQresultStatus(res) == PGRES_FATAL_ERROR;
    const char *what = k->kind != SQL_OTHER ? sqlclass_kind_name(k->kind) : ddl;
    const char *state = failed ? sqlstate_of(pq, res) : "UPDATE 0";
    describe_versions(&g->s0, from, sizeof from);

    if (proven(c, pg, g, seen, sizeof seen, &waited)) {
        PGresult *answer = k->kind == SQL_VT_INSERT
                               ? made_insert(pq, pg, k->returning, value, result_format)
                               : made(pq, pg, k->kind == SQL_VT_UPDATE ? "UPDATE 1" : ddl);
        if (!answer || !run_ok(pq, pg, "ROLLBACK; BEGIN READ ONLY")) {
            if (answer)
                pq->PQclear(answer);
            log_warn("guard: %s on %s: cannot stand in for the transaction (%s); the error "
                     "passes through", state, what, pq->PQerrorMessage(pg));
            return res;
        }
        set_mode(pq, g, M_ABSORB);
        apply_view(g, k->kind, value, vfrom); /* the answered write, in the app's eyes */
        if (failed)
            g->orig = res;
        else
            pq->PQclear(res);
        log_warn("guard: %s on %s in a migration transaction that started at %s; verified the "
                 "database at the target (%s); rolled this transaction back and answering the "
                 "rest of it up to COMMIT/ROLLBACK", state, what, from, seen);
        events_emit("guard", pq->PQdb(pg), seen, state);
        return answer;
    }
    if (waited >= shim_config()->race_wait)
        log_warn("guard: %s on %s: waited %.1f s (race_wait) for a peer to reach the target; "
                 "version table at %s; the error passes through", state, what, waited, seen);
    else
        log_debug("guard: %s on %s: version table at %s (this transaction started at %s); "
                  "not a race that can be answered; the error passes through", state, what,
                  seen, from);
    return res;
}

/* --- watching a transaction ------------------------------------------------------------- */

/* The allowlist of what a transaction may have sent before its first
 * version-table statement for a race in it to be answered (rule (b)):
 * SQLAlchemy's and its drivers' read-only probes (sqlclass_probe), in
 * their exact words.  Anything else -- a function call that writes, a
 * setting, an advisory lock, a temporary table, NOTIFY, a prepared
 * statement whose text is unknown -- is state the rollback would destroy
 * behind the app's back: a SELECT can write, so no list of "harmless"
 * statements could be complete. */
static bool allowed_before(const struct pq_call *call) { return sqlclass_probe(call->sql); }

/* The app's view of the version table after one of Alembic's writes. */
static void apply_view(struct gconn *g, enum sql_kind kind, const char *value, const char *from)
{
    struct versions *v = &g->view;
    if (!g->s0_known)
        return;
    if ((kind == SQL_VT_UPDATE || kind == SQL_VT_DELETE) && from[0]) {
        for (size_t i = 0; i < v->n; i++) {
            if (strcmp(v->v[i], from) == 0) {
                memmove(v->v[i], v->v[i + 1], (v->n - i - 1) * sizeof v->v[0]);
                v->n--;
                break;
            }
        }
    }
    if ((kind == SQL_VT_INSERT || kind == SQL_VT_UPDATE) && value[0] &&
        v->n < sizeof v->v / sizeof v->v[0])
        snprintf(v->v[v->n++], sizeof v->v[0], "%s", value);
    if (kind == SQL_VT_CREATE || kind == SQL_VT_INSERT || kind == SQL_VT_UPDATE ||
        kind == SQL_VT_DELETE)
        v->present = true;
    g->view_done = gate_at_target(v);
}

static void start_from(struct gconn *g, const struct versions *s0)
{
    g->s0 = *s0;
    g->view = *s0;
    g->s0_known = true;
}

/* Where the transaction's version table is, as the app's session resolves
 * it, at its first version-table statement (rule (d) reads that table, on
 * another connection whose search_path may differ: a tenant's, set in a
 * connect hook or by a function).  The schema the statement names, or
 * version_table_schema; else one round trip on the app's connection, in
 * its transaction, in a savepoint rolled back at once (versions_resolve:
 * nothing of it can fail or change the app's transaction).  Unknown (a
 * has_table whose schema is a parameter, a failed read): no race in this
 * transaction is mapped. */
static void resolve_schema(const struct pq_api *pq, PGconn *pg, struct gconn *g,
                           const struct pq_call *call, const struct sqlclass *k)
{
    const struct config *cfg = shim_config();
    char table[CONFIG_NAME_MAX], err[256];
    struct sqlclass named;
    struct versions v;
    g->schema[0] = '\0';
    g->schema_known = false;
    if (cfg->version_table_schema[0]) {
        snprintf(g->schema, sizeof g->schema, "%s", cfg->version_table_schema);
        g->schema_known = true;
        return;
    }
    if (k->kind == SQL_VT_EXISTS ? !sqlclass_has_table_schema(call->sql, g->schema, sizeof g->schema)
                                 : !sqlclass_vt_statement(call->sql, g->schema, sizeof g->schema,
                                                          table, sizeof table, &named)) {
        log_debug("guard: the schema of this transaction's version table is not shown; a race "
                  "in it passes through");
        return;
    }
    if (g->schema[0]) { /* named by the statement */
        g->schema_known = true;
        return;
    }
    int nb = blocking_begin(pq, pg);
    struct dbconn_pq pc;
    bool ok = versions_resolve(dbconn_pq_init(&pc, pq, pg), cfg->version_table, g->schema, sizeof g->schema, &v,
                               err, sizeof err);
    blocking_end(pq, pg, nb);
    g->schema_known = ok && g->schema[0];
    if (!g->schema_known)
        log_debug("guard: cannot tell where this transaction's version table is (%s); a race in "
                  "it passes through", ok ? "the search_path names no schema" : err);
}

/* Before sending, in WATCH mode: classify and gather what the statement
 * shows.  Fills `k`, `ddl` (the DDL tag, or ""), g->value / g->from (the
 * versions a write names) and `in_txn`. */
static void prepare(const struct pq_api *pq, PGconn *pg, struct gconn *g,
                    const struct pq_call *call, struct sqlclass *k, char *ddl, bool *in_txn)
{
    const struct config *cfg = shim_config();
    PGTransactionStatusType ts = pq->PQtransactionStatus(pg);
    memset(k, 0, sizeof *k);
    ddl[0] = g->value[0] = g->from[0] = '\0';
    if (!call->sql || sqlclass_mentions(call->sql, "search_path"))
        g->path_set = true;
    if (ts == PQTRANS_IDLE) { /* a new transaction */
        g->vt_txn = g->s0_known = g->view_done = g->schema_known = false;
        /* A text that opens a transaction and works in it at once ("BEGIN;
         * SELECT record_boot(1)" as one string) is the app's own work too:
         * only a bare BEGIN (or a probe, which leaves none open) carries
         * nothing into the transaction. */
        g->own_work = !sqlclass_begin(call->sql) && !allowed_before(call);
    }
    *in_txn = ts == PQTRANS_INTRANS;
    if (!*in_txn)
        return;
    if (!call->sql) { /* a prepared statement: what it does is unknown */
        if (!g->vt_txn)
            g->own_work = true;
        return;
    }
    if (call->mentions_vt) {
        sqlclass_classify(call->sql, cfg->version_table_schema, cfg->version_table, k);
        /* a write whose versions cannot be known is not Alembic's */
        bool vals = value_of(&k->value, call, g->value, sizeof g->value) &&
                    value_of(&k->from, call, g->from, sizeof g->from);
        if ((k->kind == SQL_VT_INSERT || k->kind == SQL_VT_UPDATE || k->kind == SQL_VT_DELETE) &&
            !vals)
            k->kind = SQL_OTHER;
    }
    if (k->kind == SQL_VT_EXISTS && k->value.param) {
        /* has_table with the name as a parameter: only the version table's */
        char name[64];
        if (!value_of(&k->value, call, name, sizeof name) || strcmp(name, cfg->version_table) != 0)
            k->kind = SQL_OTHER;
    }
    if (k->kind == SQL_OTHER && !g->vt_txn && !allowed_before(call))
        g->own_work = true;
    if (k->kind != SQL_OTHER && !g->vt_txn)
        resolve_schema(pq, pg, g, call, k);
    if (k->kind != SQL_OTHER)
        g->vt_txn = true;
    if (k->kind == SQL_VT_CREATE && !g->s0_known) {
        struct versions none = {0}; /* Alembic creates it when it found none */
        start_from(g, &none);
    }
    char tag[TAG_MAX];
    if (sqlclass_verb(call->sql, tag, sizeof tag) == VERB_DDL)
        snprintf(ddl, TAG_MAX, "%s", tag);
}

/* After a successful result, in WATCH mode: where the transaction
 * started (has_table finding none, Alembic's read) and what its own
 * version writes left. */
static void observe(const struct pq_api *pq, struct gconn *g, const struct sqlclass *k,
                    bool in_txn, const PGresult *r)
{
    if (!in_txn || !r)
        return;
    ExecStatusType st = pq->PQresultStatus(r);
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK)
        return;
    if (k->kind == SQL_VT_INSERT || k->kind == SQL_VT_UPDATE || k->kind == SQL_VT_DELETE) {
        if (strcmp(pq->PQcmdTuples((PGresult *)r), "0") != 0)
            apply_view(g, k->kind, g->value, g->from);
        return;
    }
    if (g->s0_known || st != PGRES_TUPLES_OK)
        return;
    if (k->kind == SQL_VT_EXISTS) {
        /* has_table found no table: the transaction starts from none (a
         * table it finds says nothing of its rows: Alembic's read will) */
        if (pq->PQntuples(r) == 0) {
            struct versions none = {0};
            start_from(g, &none);
        }
        return;
    }
    if (k->kind != SQL_VT_READ || pq->PQnfields(r) != 1)
        return;
    struct versions v = {.present = true};
    int n = pq->PQntuples(r);
    for (int i = 0; i < n; i++) {
        const char *s = pq->PQgetvalue(r, i, 0);
        if (v.n == sizeof v.v / sizeof v.v[0] || strlen(s) >= sizeof v.v[0]) {
            v.truncated = true;
            continue;
        }
        snprintf(v.v[v.n++], sizeof v.v[0], "%s", s);
    }
    start_from(g, &v);
}

/* --- standing in for the rest of a transaction ------------------------------------------- */

/* Alembic's read of the version table, answered from the app's view. */
static PGresult *made_versions(const struct pq_api *pq, PGconn *pg, const struct versions *v,
                               int result_format)
{
    PGresult *r = pq->PQmakeEmptyPGresult(pg, PGRES_TUPLES_OK);
    PGresAttDesc attr = {.name = (char *)"version_num", .format = result_format ? 1 : 0,
                         .typid = 1043 /* varchar */, .typlen = -1, .atttypmod = 36};
    if (!r || !pq->PQsetResultAttrs(r, 1, &attr)) {
        if (r)
            pq->PQclear(r);
        return NULL;
    }
    for (size_t i = 0; i < v->n; i++) {
        if (!pq->PQsetvalue(r, (int)i, 0, (char *)v->v[i], (int)strlen(v->v[i]))) {
            pq->PQclear(r);
            return NULL;
        }
    }
    snprintf(pq->PQcmdStatus(r), TAG_MAX, "SELECT %zu", v->n);
    return r;
}

/* Make the stand-in transaction fail for real, so that from here on the
 * server answers the app as it would have after the original error: every
 * statement 25P02, COMMIT "ROLLBACK".  (One ERROR in the server log, as the
 * app's own next statement would have made.) */
#define FAIL_STANDIN                                                                             \
    "DO $migshim$BEGIN RAISE EXCEPTION USING ERRCODE = '25P02', MESSAGE = 'migshim: the "        \
    "transaction failed earlier with the error the app was given; it can only be rolled back'; " \
    "END$migshim$"
/* The same when there is no original error left to give (a version
 * UPDATE that matched no row was answered, or the error was given inside
 * a savepoint): this one, a serialization failure, as for any transaction
 * that lost a race. */
#define FAIL_STANDIN_RACE                                                                        \
    "DO $migshim$BEGIN RAISE EXCEPTION USING ERRCODE = '40001', MESSAGE = 'migshim: this "       \
    "transaction lost a race: a peer migrated the database while it ran; it was rolled back, "   \
    "and this statement cannot be answered in its place'; END$migshim$"

enum answer { ANSWERED, RUN_REAL, GIVE_UP };

/* ABSORB: answer `call` in place of the rolled-back transaction (`*made`,
 * with `*real` the statement to run instead: "ROLLBACK" to end the
 * stand-in, or NULL), run it for real (a read of no table), or give up. */
static enum answer stand_in(const struct pq_api *pq, PGconn *pg, struct gconn *g,
                            const struct pq_call *call, PGresult **made_r, const char **real)
{
    const struct config *cfg = shim_config();
    char tag[TAG_MAX];
    *made_r = NULL;
    *real = NULL;
    if (!call->sql || in_pipeline(pq, pg))
        return GIVE_UP; /* a prepared statement, a pipeline: nothing can be answered */
    enum sql_verb verb = sqlclass_verb(call->sql, tag, sizeof tag);
    if (verb == VERB_COMMIT || verb == VERB_ROLLBACK) {
        *real = "ROLLBACK";
        log_info("guard: %s answered; this process's migration transaction was rolled back and "
                 "the peer's migration stands", tag);
        /* COMMIT of a failed transaction answers ROLLBACK */
        *made_r = made(pq, pg, g->sp_failed ? "ROLLBACK" : tag);
        return *made_r ? ANSWERED : GIVE_UP;
    }
    if (g->sp_failed) { /* only ROLLBACK TO SAVEPOINT goes on */
        if (verb != VERB_ROLLBACK_TO || !(*made_r = made(pq, pg, tag)))
            return GIVE_UP;
        g->sp_failed = false;
        return ANSWERED;
    }
    bool vt_read = false;
    struct sqlclass k;
    if (call->mentions_vt) {
        sqlclass_classify(call->sql, cfg->version_table_schema, cfg->version_table, &k);
        vt_read = k.kind == SQL_VT_READ;
    }
    if (vt_read) { /* exactly what the app's own writes left */
        *made_r = made_versions(pq, pg, &g->view, call->result_format);
        return *made_r ? ANSWERED : GIVE_UP;
    }
    bool local;
    if (sqlclass_inert(call->sql, &local)) {
        if (local && g->sp_depth > 0)
            return GIVE_UP; /* an answered ROLLBACK TO could not undo it */
        return RUN_REAL; /* pg_sleep(), SHOW, SET LOCAL: the same either way */
    }
    /* DEALLOCATE ALL / DEALLOCATE <name> (psycopg 3 after a result tagged
     * ALTER, DROP, ROLLBACK or DISCARD: the made ones too): it drops the
     * session's prepared statements, touches no table and is not undone by
     * a rollback, so run for real it leaves the session exactly as in the
     * app's own transaction (the statements gone, as the driver believes);
     * answered without running, it would leave them on the server.  Even
     * once the migration is over: no work of the app's is lost by it.  Its
     * own error (no such statement) gives the app the original one. */
    if (sqlclass_deallocate(call->sql)) {
        log_debug("guard: \"%.50s\" runs for real in the stand-in transaction (session state, "
                  "not transactional)", call->sql);
        return RUN_REAL;
    }
    if (g->view_done)
        return GIVE_UP; /* the migration is over: this is the app's own work */
    switch (verb) {
    case VERB_SAVEPOINT: g->sp_depth++; break;
    case VERB_RELEASE: g->sp_depth -= g->sp_depth > 0; break;
    default: break;
    }
    switch (verb) {
    case VERB_DDL:
    case VERB_INSERT:
    case VERB_SAVEPOINT:
    case VERB_RELEASE:
    case VERB_ROLLBACK_TO: *made_r = made(pq, pg, tag); return *made_r ? ANSWERED : GIVE_UP;
    default: break;
    }
    if (!call->mentions_vt)
        return GIVE_UP;
    char value[64], from[64];
    if (!value_of(&k.value, call, value, sizeof value) ||
        !value_of(&k.from, call, from, sizeof from))
        return GIVE_UP;
    switch (k.kind) {
    case SQL_VT_INSERT:
        *made_r = made_insert(pq, pg, k.returning, value, call->result_format);
        break;
    case SQL_VT_UPDATE: *made_r = made(pq, pg, "UPDATE 1"); break;
    case SQL_VT_DELETE: *made_r = made(pq, pg, "DELETE 1"); break;
    default: return GIVE_UP;
    }
    if (!*made_r)
        return GIVE_UP;
    apply_view(g, k.kind, value, from);
    return ANSWERED;
}

/* Giving up inside an answered savepoint: the app may catch the error and
 * roll back to it, as it could in PostgreSQL.  Then the original error is
 * given without failing the stand-in, which only ROLLBACK TO (or the end)
 * continues.  True when that is the way (the caller hands over g->orig). */
static bool soft_give_up(struct gconn *g)
{
    if (g->sp_depth == 0 || !g->orig)
        return false;
    g->sp_failed = true;
    return true;
}

static void log_give_up(const struct gconn *g, const struct pq_call *call)
{
    log_warn("guard: \"%.50s\" cannot be answered in place of the rolled-back transaction%s; "
             "%s", call->sql ? call->sql : "(a prepared statement)",
             g->view_done ? " (its migration is over)" : "",
             g->orig ? "the original error passes through"
                     : "the transaction fails now (40001: no original error is left to give)");
}

/* A real result while standing in: an error (the statement failed on its
 * own) hands the app the original error instead; the failed stand-in is
 * then the app's transaction again. */
static PGresult *real_result(const struct pq_api *pq, struct gconn *g, PGresult *r)
{
    if (!r || pq->PQresultStatus(r) != PGRES_FATAL_ERROR || g->mode == M_WATCH)
        return r;
    log_warn("guard: a statement run in the stand-in transaction failed (%s); %s",
             sqlstate_of(pq, r), g->orig ? "the original error passes through" : "its error passes through");
    if (g->orig) {
        pq->PQclear(r);
        r = g->orig;
        g->orig = NULL;
    }
    set_mode(pq, g, M_WATCH);
    return r;
}

/* After a command that ran for real while standing in completed. */
static void real_done(const struct pq_api *pq, PGconn *pg, struct gconn *g)
{
    if (g->mode != M_WATCH && pq->PQtransactionStatus(pg) != PQTRANS_INTRANS)
        set_mode(pq, g, M_WATCH); /* ended, or failed: the app's own again */
}

static bool applies(const struct pq_copy *c, PGconn *pg)
{
    return shim_config()->guard && gate_guards(c, pg);
}

/* --- the synchronous path -------------------------------------------------------------- */

/* Nothing stood in for and no database in the guard's window: the common
 * case while the gate only watches (target unknown), two loads. */
static bool idle_guard(void)
{
    return !atomic_load_explicit(&guard_busy, memory_order_relaxed) &&
           !atomic_load_explicit(&gate_guarding, memory_order_relaxed);
}

PGresult *guard_exec(const struct pq_copy *c, PGconn *pg, const struct pq_call *call)
{
    const struct pq_api *pq = &c->api;
    if (idle_guard())
        return real_call(pq, pg, call);
    struct gconn *g = find(pg, false);
    if (g && g->mode != M_WATCH) {
        PGresult *r;
        const char *real;
        enum answer a = stand_in(pq, pg, g, call, &r, &real);
        if (a == ANSWERED) {
            if (real)
                run_ok(pq, pg, real);
            real_done(pq, pg, g);
            return r;
        }
        if (a == RUN_REAL) {
            r = real_result(pq, g, real_call(pq, pg, call));
            real_done(pq, pg, g);
            return r;
        }
        log_give_up(g, call);
        if (soft_give_up(g)) { /* in a savepoint: the app may roll back to it */
            r = g->orig;
            g->orig = NULL;
            return r;
        }
        int nb = blocking_begin(pq, pg);
        PGresult *fail = pq->PQexec(pg, g->orig ? FAIL_STANDIN : FAIL_STANDIN_RACE);
        blocking_end(pq, pg, nb);
        if (g->orig) {
            if (fail)
                pq->PQclear(fail);
            fail = g->orig;
            g->orig = NULL;
        }
        set_mode(pq, g, M_WATCH);
        return fail;
    }
    if (!applies(c, pg) || in_pipeline(pq, pg))
        return real_call(pq, pg, call);
    if (!g && !(g = find(pg, true)))
        return real_call(pq, pg, call);
    struct sqlclass k;
    char ddl[TAG_MAX];
    bool in_txn;
    prepare(pq, pg, g, call, &k, ddl, &in_txn);
    PGresult *res = real_call(pq, pg, call);
    observe(pq, g, &k, in_txn, res);
    if (!candidate(pq, g, &k, ddl, in_txn, res))
        return res;
    return judge(c, pg, g, &k, ddl, g->value, g->from, call->result_format, res);
}

/* --- the asynchronous path ------------------------------------------------------------- */

int guard_send(const struct pq_copy *c, PGconn *pg, const struct pq_call *call)
{
    const struct pq_api *pq = &c->api;
    if (idle_guard())
        return real_send(pq, pg, call);
    struct gconn *g = find(pg, false);
    if (g && g->mode != M_WATCH) {
        PGresult *r;
        const char *real;
        enum answer a = stand_in(pq, pg, g, call, &r, &real);
        if (a == RUN_REAL)
            return real_send(pq, pg, call); /* its results: guard_get_result */
        bool answered = a == ANSWERED, soft = false;
        if (!answered) {
            log_give_up(g, call);
            soft = soft_give_up(g);
            real = soft ? NULL : g->orig ? FAIL_STANDIN : FAIL_STANDIN_RACE;
            r = g->orig; /* NULL: the stand-in's own error reaches the app */
            g->orig = NULL;
        }
        /* An async client waits for the socket: send a real statement in
         * the place of the answered one (the extended protocol: pipeline
         * mode refuses the simple one). */
        if (!pq->PQsendQueryParams(pg, real ? real : STANDIN, 0, NULL, NULL, NULL, NULL, 0)) {
            if (r)
                pq->PQclear(r);
            return 0;
        }
        g->pending = r;
        g->standin = true;
        if (!answered && !soft)
            set_mode(pq, g, M_WATCH); /* the real transaction fails: the app's view */
        update_busy(g);
        return 1;
    }
    if (!applies(c, pg) || in_pipeline(pq, pg))
        return real_send(pq, pg, call);
    if (!g && !(g = find(pg, true)))
        return real_send(pq, pg, call);
    prepare(pq, pg, g, call, &g->cls, g->tag, &g->in_txn);
    g->result_format = call->result_format;
    int ok = real_send(pq, pg, call);
    g->sent = ok && g->in_txn && (g->cls.kind != SQL_OTHER || g->tag[0]);
    update_busy(g); /* its results must reach guard_get_result */
    return ok;
}

PGresult *guard_get_result(const struct pq_copy *c, PGconn *pg)
{
    const struct pq_api *pq = &c->api;
    if (idle_guard())
        return pq->PQgetResult(pg);
    struct gconn *g = find(pg, false);
    if (!g)
        return pq->PQgetResult(pg);
    if (g->standin) { /* the stand-in's result becomes the made one */
        PGresult *real = pq->PQgetResult(pg);
        if (real) {
            if (!g->pending)
                return real; /* (a give-up without an original error) */
            pq->PQclear(real);
            PGresult *r = g->pending;
            g->pending = NULL;
            update_busy(g);
            return r;
        }
        g->standin = false; /* its NULL ends the command */
        real_done(pq, pg, g);
        update_busy(g);
        return NULL;
    }
    if (g->pending_null) {
        g->pending_null = false;
        update_busy(g);
        return NULL;
    }
    PGresult *r = pq->PQgetResult(pg);
    if (g->mode != M_WATCH) { /* run for real (or sent around the guard: PQsendPrepare) */
        if (!r)
            real_done(pq, pg, g);
        return real_result(pq, g, r);
    }
    if (!g->sent)
        return r;
    if (!r) { /* the command is complete */
        g->sent = false;
        update_busy(g);
        return NULL;
    }
    observe(pq, g, &g->cls, g->in_txn, r);
    if (!candidate(pq, g, &g->cls, g->tag, g->in_txn, r))
        return r;
    /* Finish the command first: the connection must be idle to act. */
    for (PGresult *more; (more = pq->PQgetResult(pg));)
        pq->PQclear(more);
    g->sent = false; /* (still busy: pending_null follows) */
    int nb = blocking_begin(pq, pg);
    PGresult *out = judge(c, pg, g, &g->cls, g->tag, g->value, g->from, g->result_format, r);
    blocking_end(pq, pg, nb);
    g->pending_null = true; /* the NULL that ends the command */
    update_busy(g);
    return out;
}

