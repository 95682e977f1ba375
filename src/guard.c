/*
 * guard — see include/guard.h.
 *
 * Per-connection state lives in a short table (connections that sent a
 * statement while the guard was on).  A connection is in one of three
 * modes:
 *
 *   WATCH   ordinary: gather what the app's transaction shows (an Alembic
 *           version-table statement; the version it started from; whether
 *           it set a savepoint) and judge the results that could be a race.
 *   ABSORB  a race was mapped: the app's transaction is rolled back and a
 *           READ ONLY transaction stands in for it up to its COMMIT/ROLLBACK.
 *           Statements whose success is certain and carries no data (DDL,
 *           savepoints, a plain INSERT ... VALUES, Alembic's version writes)
 *           are answered by the shim;
 *           everything else runs for real in the read-only transaction,
 *           where nothing can be written: a failure there gives the app the
 *           original error after all.
 *   DOOMED  the original error was handed over without running the
 *           statement (COMMIT AND CHAIN, PREPARE TRANSACTION in ABSORB): the
 *           read-only transaction stands in for a failed one until the app
 *           ends it.
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
#include <time.h>

#include "events.h"
#include "gate.h"
#include "lock.h"
#include "log.h"
#include "ownconn.h"
#include "shim.h"
#include "sqlclass.h"

#define MAX_GUARDED 64
#define TAG_MAX 64 /* libpq's CMDSTATUS_LEN */
#define STANDIN "SELECT NULL WHERE false"

enum mode { M_WATCH, M_ABSORB, M_DOOMED };

struct gconn {
    const PGconn *pg;
    enum mode mode;
    bool counted;           /* counted in guard_busy / shim_hooks               */
    /* what the app's current transaction showed (WATCH) */
    bool vt_txn;            /* it sent one of Alembic's version-table statements */
    bool s0_known;          /* the version table it started from is known:      */
    struct versions s0;     /* ... from its CREATE (none) or its read            */
    PGresult *orig;         /* ABSORB: the error the mapping answered            */
    /* the asynchronous path */
    bool sent;              /* a statement to judge is in flight, and:           */
    struct sqlclass cls;    /* ... what it was                                   */
    char tag[TAG_MAX];      /* ... its DDL tag ("" if it is not DDL)             */
    char value[64];         /* ... the version an INSERT writes                  */
    int result_format;      /* ... the result format it asked for                */
    bool in_txn;            /* ... sent inside a transaction block               */
    PGresult *pending;      /* a made result still to deliver                    */
    bool standin;           /* the statement sent in its place is still running  */
    bool pending_null;      /* then the NULL that ends the command               */
};

static struct gconn conns[MAX_GUARDED];
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

/* Connections not in WATCH, with a made result pending, or with a
 * statement in flight whose results are to be judged: the wrappers keep
 * calling the guard for them even after the gate stops watching. */
_Atomic int guard_busy;

static struct gconn *find(const PGconn *pg, bool add)
{
    struct gconn *free_slot = NULL;
    pthread_mutex_lock(&mu);
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
    if (m == M_WATCH) {
        g->vt_txn = g->s0_known = false;
    }
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
    pthread_mutex_lock(&mu);
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

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

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
 *       it), and that version is behind this process's target;
 *   (c) the failing statement is DDL (CREATE/ALTER) with a race SQLSTATE,
 *       Alembic's version INSERT with 23505, or its version UPDATE matching
 *       0 rows -- never the app's own data statements;
 *   (d) the version table as committed, read on another connection after
 *       the failure, holds exactly the target heads.
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
    if (!in_txn || !g->vt_txn || !g->s0_known || gate_at_target(&g->s0) || !res)
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
    if (gate_read_committed(c, pg, &v)) { /* this process holds the lock */
        describe_versions(&v, seen, seensz);
        return gate_at_target(&v);
    }
    struct ownconn *oc = ownconn_open(c, pg, "guard", err, sizeof err);
    if (!oc) {
        snprintf(seen, seensz, "unknown");
        log_warn("guard: cannot open a connection to verify the race (%s); the error passes through", err);
        return false;
    }
    bool ok = false;
    double start = now();
    for (;;) {
        if (!lock_read_versions(&c->api, ownconn_pg(oc), cfg, &v, err, sizeof err)) {
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
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    *waited = now() - start;
    ownconn_close(oc);
    return ok;
}

/* Judge a candidate (its command is complete: the connection is idle).
 * Returns what the app sees: `res` itself, or a made result. */
static PGresult *judge(const struct pq_copy *c, PGconn *pg, struct gconn *g,
                       const struct sqlclass *k, const char *ddl, const char *value,
                       int result_format, PGresult *res)
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

/* Before sending, in WATCH mode: classify and gather what the statement
 * shows.  Fills `k`, `ddl` (the DDL tag, or ""), `value` and `in_txn`. */
static void prepare(const struct pq_api *pq, PGconn *pg, struct gconn *g,
                    const struct pq_call *call, struct sqlclass *k, char *ddl, char *value,
                    size_t valsz, bool *in_txn)
{
    const struct config *cfg = shim_config();
    PGTransactionStatusType ts = pq->PQtransactionStatus(pg);
    memset(k, 0, sizeof *k);
    ddl[0] = value[0] = '\0';
    if (ts == PQTRANS_IDLE)
        g->vt_txn = g->s0_known = false; /* a new transaction */
    *in_txn = ts == PQTRANS_INTRANS;
    if (!*in_txn || !call->sql)
        return;
    if (call->mentions_vt) {
        sqlclass_classify(call->sql, cfg->version_table_schema, cfg->version_table, k);
        if (k->kind == SQL_VT_INSERT && !value_of(&k->value, call, value, valsz))
            k->kind = SQL_OTHER; /* cannot answer it: not Alembic's statement then */
        if (k->kind != SQL_OTHER)
            g->vt_txn = true;
        if (k->kind == SQL_VT_CREATE && !g->s0_known) {
            memset(&g->s0, 0, sizeof g->s0); /* Alembic creates it when it found none */
            g->s0_known = true;
        }
    }
    char tag[TAG_MAX];
    if (sqlclass_verb(call->sql, tag, sizeof tag) == VERB_DDL)
        snprintf(ddl, TAG_MAX, "%s", tag);
}

/* After a successful result, in WATCH mode: Alembic's read of the version
 * table tells where the transaction started. */
static void observe(const struct pq_api *pq, struct gconn *g, const struct sqlclass *k,
                    bool in_txn, const PGresult *r)
{
    if (!in_txn || g->s0_known || !r || pq->PQresultStatus(r) != PGRES_TUPLES_OK)
        return;
    if (k->kind == SQL_VT_EXISTS) {
        /* has_table found no table: the transaction starts from none (a
         * table it finds says nothing of its rows: Alembic's read will) */
        if (pq->PQntuples(r) == 0) {
            memset(&g->s0, 0, sizeof g->s0);
            g->s0_known = true;
        }
        return;
    }
    if (k->kind != SQL_VT_READ || pq->PQnfields(r) != 1)
        return;
    struct versions *v = &g->s0;
    memset(v, 0, sizeof *v);
    v->present = true;
    int n = pq->PQntuples(r);
    for (int i = 0; i < n; i++) {
        const char *s = pq->PQgetvalue(r, i, 0);
        if (v->n == sizeof v->v / sizeof v->v[0] || strlen(s) >= sizeof v->v[0]) {
            v->truncated = true;
            continue;
        }
        snprintf(v->v[v->n++], sizeof v->v[0], "%s", s);
    }
    g->s0_known = true;
}

/* --- standing in for the rest of a transaction ------------------------------------------- */

/* ABSORB / DOOMED: the shim's own answer to `call` (then `*real` is the
 * statement to run in its place: "ROLLBACK" to end the stand-in
 * transaction, NULL for nothing), or NULL: run the call for real. */
static PGresult *stand_in(const struct pq_api *pq, PGconn *pg, struct gconn *g,
                          const struct pq_call *call, const char **real)
{
    const struct config *cfg = shim_config();
    char tag[TAG_MAX];
    *real = NULL;
    if (call->kind == CALL_PREPARED || !call->sql || in_pipeline(pq, pg))
        return NULL;
    enum sql_verb verb = sqlclass_verb(call->sql, tag, sizeof tag);
    if (g->mode == M_DOOMED) {
        if (verb != VERB_COMMIT)
            return NULL; /* ROLLBACK and the rest run for real */
        *real = "ROLLBACK";
        return made(pq, pg, "ROLLBACK"); /* what COMMIT of a failed transaction answers */
    }
    switch (verb) {
    case VERB_COMMIT:
    case VERB_ROLLBACK:
        *real = "ROLLBACK";
        log_info("guard: %s answered; this process's migration transaction was rolled back and "
                 "the peer's migration stands", tag);
        return made(pq, pg, tag);
    case VERB_TXN_OTHER:
        /* AND CHAIN, PREPARE TRANSACTION: nothing to stand in for it */
        if (g->orig) {
            PGresult *r = g->orig;
            g->orig = NULL;
            log_warn("guard: %.40s cannot be answered for the rolled-back transaction; the "
                     "original error passes through", call->sql);
            set_mode(pq, g, M_DOOMED);
            return r;
        }
        return NULL;
    case VERB_DDL:
    case VERB_INSERT:
    case VERB_SAVEPOINT:
    case VERB_RELEASE:
    case VERB_ROLLBACK_TO: return made(pq, pg, tag);
    default: break;
    }
    if (!call->mentions_vt)
        return NULL;
    struct sqlclass k;
    char value[64];
    sqlclass_classify(call->sql, cfg->version_table_schema, cfg->version_table, &k);
    switch (k.kind) {
    case SQL_VT_INSERT:
        return value_of(&k.value, call, value, sizeof value)
                   ? made_insert(pq, pg, k.returning, value, call->result_format)
                   : NULL;
    case SQL_VT_UPDATE: return made(pq, pg, "UPDATE 1");
    case SQL_VT_DELETE: return made(pq, pg, "DELETE 1");
    default: return NULL;
    }
}

/* A real result while standing in.  An error in ABSORB means the
 * statement could not be answered faithfully: the app gets the original
 * error instead, and its (now really failed) transaction is its own again. */
static PGresult *real_result(const struct pq_api *pq, PGconn *pg, struct gconn *g, PGresult *r)
{
    if (!r || pq->PQresultStatus(r) != PGRES_FATAL_ERROR)
        return r;
    if (g->mode == M_ABSORB) {
        log_warn("guard: a statement of the rolled-back transaction could not be answered "
                 "without writing (%s); %s", sqlstate_of(pq, r),
                 g->orig ? "the original error passes through" : "its error passes through");
        if (g->orig) {
            pq->PQclear(r);
            r = g->orig;
            g->orig = NULL;
        }
    }
    set_mode(pq, g, M_WATCH); /* the real transaction has failed: the app's view */
    (void)pg;
    return r;
}

/* After a command that ran for real while standing in completed. */
static void real_done(const struct pq_api *pq, PGconn *pg, struct gconn *g)
{
    if (g->mode != M_WATCH && pq->PQtransactionStatus(pg) == PQTRANS_IDLE)
        set_mode(pq, g, M_WATCH); /* the app's own statement ended the transaction */
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
        const char *real;
        PGresult *r = stand_in(pq, pg, g, call, &real);
        if (r) {
            if (real)
                run_ok(pq, pg, real);
            real_done(pq, pg, g);
            return r;
        }
        r = real_result(pq, pg, g, real_call(pq, pg, call));
        real_done(pq, pg, g);
        return r;
    }
    if (!applies(c, pg) || in_pipeline(pq, pg))
        return real_call(pq, pg, call);
    if (!g && !(g = find(pg, true)))
        return real_call(pq, pg, call);
    struct sqlclass k;
    char ddl[TAG_MAX], value[64];
    bool in_txn;
    prepare(pq, pg, g, call, &k, ddl, value, sizeof value, &in_txn);
    PGresult *res = real_call(pq, pg, call);
    observe(pq, g, &k, in_txn, res);
    if (!candidate(pq, g, &k, ddl, in_txn, res))
        return res;
    return judge(c, pg, g, &k, ddl, value, call->result_format, res);
}

/* --- the asynchronous path ------------------------------------------------------------- */

int guard_send(const struct pq_copy *c, PGconn *pg, const struct pq_call *call)
{
    const struct pq_api *pq = &c->api;
    if (idle_guard())
        return real_send(pq, pg, call);
    struct gconn *g = find(pg, false);
    if (g && g->mode != M_WATCH) {
        const char *real;
        PGresult *r = stand_in(pq, pg, g, call, &real);
        if (!r)
            return real_send(pq, pg, call); /* its results: guard_get_result */
        if (!pq->PQsendQuery(pg, real ? real : STANDIN)) {
            pq->PQclear(r);
            return 0;
        }
        g->pending = r;
        g->standin = true;
        update_busy(g);
        return 1;
    }
    if (!applies(c, pg) || in_pipeline(pq, pg))
        return real_send(pq, pg, call);
    if (!g && !(g = find(pg, true)))
        return real_send(pq, pg, call);
    prepare(pq, pg, g, call, &g->cls, g->tag, g->value, sizeof g->value, &g->in_txn);
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
    if (g->mode != M_WATCH) {
        if (!r)
            real_done(pq, pg, g);
        return real_result(pq, pg, g, r);
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
    PGresult *out = judge(c, pg, g, &g->cls, g->tag, g->value, g->result_format, r);
    blocking_end(pq, pg, nb);
    g->pending_null = true; /* the NULL that ends the command */
    update_busy(g);
    return out;
}

PGTransactionStatusType guard_transaction_status(const struct pq_copy *c, const PGconn *pg)
{
    PGTransactionStatusType real = c->api.PQtransactionStatus(pg);
    if (!atomic_load_explicit(&guard_busy, memory_order_relaxed) || real != PQTRANS_INTRANS)
        return real;
    struct gconn *g = find(pg, false);
    return g && g->mode == M_DOOMED ? PQTRANS_INERROR : real;
}

void guard_atfork_prepare(void) { pthread_mutex_lock(&mu); }
void guard_atfork_parent(void) { pthread_mutex_unlock(&mu); }
void guard_atfork_child(void) { pthread_mutex_unlock(&mu); }
