/*
 * guard — see include/guard.h.
 *
 * Per-connection state lives in a short table (connections that sent a
 * statement while the guard was on).  Results the app must see as success
 * are made with PQmakeEmptyPGresult on the app's own connection (so its
 * notice hooks and events carry over) and given the command tag the real
 * statement would have produced; a RETURNING row comes from a real SELECT
 * of the row that is proven to exist.
 */
#include "guard.h"

#include <ctype.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "events.h"
#include "gate.h"
#include "lock.h"
#include "log.h"
#include "ownconn.h"
#include "shim.h"
#include "sqlclass.h"

#define MAX_GUARDED 64
#define SAVEPOINT "migshim_guard"
#define TAG_MAX 64 /* libpq's CMDSTATUS_LEN */

struct gconn {
    const PGconn *pg;
    bool vt_txn;            /* the current transaction referenced the version table */
    bool absorb;            /* rolled back: answer the rest up to COMMIT/ROLLBACK */
    /* the asynchronous path */
    bool sent;              /* a guarded command is in flight                    */
    struct sqlclass cls;    /* ... and what it was                               */
    char sql[1024];         /* ... its text's beginning (tags, RETURNING)        */
    bool savepoint;         /* ... wrapped in our savepoint                      */
    bool in_txn;            /* ... sent inside a transaction block               */
    PGresult *pending;      /* a made result still to deliver                    */
    bool standin;           /* a stand-in statement was sent for it              */
    bool pending_null;      /* then the NULL that ends the command               */
};

static struct gconn conns[MAX_GUARDED];
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

/* Connections absorbing or with a made result pending: the wrappers keep
 * calling the guard for them even after the gate stops watching. */
_Atomic int guard_busy;

static struct gconn *find(const PGconn *pg, bool add)
{
    struct gconn *free_slot = NULL;
    for (size_t i = 0; i < MAX_GUARDED; i++) {
        if (conns[i].pg == pg)
            return &conns[i];
        if (!conns[i].pg && !free_slot)
            free_slot = &conns[i];
    }
    if (!add || !free_slot)
        return NULL;
    memset(free_slot, 0, sizeof *free_slot);
    free_slot->pg = pg;
    return free_slot;
}

static void set_busy(struct gconn *g, bool absorb, PGresult *pending, bool pending_null)
{
    bool was = g->absorb || g->pending || g->pending_null;
    g->absorb = absorb;
    g->pending = pending;
    g->pending_null = pending_null;
    bool now = g->absorb || g->pending || g->pending_null;
    if (was && !now) {
        atomic_fetch_sub(&guard_busy, 1);
        shim_hooks_add(-1);
    } else if (!was && now) {
        atomic_fetch_add(&guard_busy, 1);
        shim_hooks_add(1);
    }
}

void guard_forget(const struct pq_copy *c, const PGconn *pg)
{
    pthread_mutex_lock(&mu);
    struct gconn *g = find(pg, false);
    if (g) {
        if (g->pending)
            c->api.PQclear(g->pending);
        set_busy(g, false, NULL, false);
        memset(g, 0, sizeof *g);
    }
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

/* --- proof ----------------------------------------------------------------------------- */

/*
 * Re-check on a connection of the shim's own (the app's may be in an
 * aborted transaction) that the database is at the target, waiting up to
 * race_wait for a peer still in flight.  For rule 1 `need_row` names the
 * version row that must exist instead (NULL: the table must exist).
 */
enum proof { PROVE_TARGET, PROVE_TABLE, PROVE_ROW };

static bool prove(const struct pq_copy *c, PGconn *app, enum proof what, const char *row,
                  char *seen, size_t seensz)
{
    const struct config *cfg = shim_config();
    char err[256];
    struct ownconn *oc = ownconn_open(c, app, "guard", err, sizeof err);
    if (!oc) {
        log_warn("guard: cannot open a connection to verify the race (%s); the error passes through", err);
        return false;
    }
    double deadline = now() + (what == PROVE_TARGET ? cfg->race_wait : 0);
    bool ok = false;
    for (;;) {
        struct versions v;
        if (!lock_read_versions(&c->api, ownconn_pg(oc), cfg, &v, err, sizeof err))
            break;
        size_t o = 0;
        seen[0] = '\0';
        for (size_t i = 0; i < v.n && o < seensz; i++)
            o += (size_t)snprintf(seen + o, seensz - o, "%s%s", i ? "," : "", v.v[i]);
        if (!v.n)
            snprintf(seen, seensz, v.present ? "(empty)" : "(no table)");
        if (what == PROVE_TABLE)
            ok = v.present;
        else if (what == PROVE_ROW) {
            for (size_t i = 0; i < v.n && !ok; i++)
                ok = strcmp(v.v[i], row) == 0;
        } else {
            ok = gate_at_target(&v);
        }
        if (ok || now() >= deadline)
            break;
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    ownconn_close(oc);
    return ok;
}

/* --- made results ------------------------------------------------------------------------ */

/* The command tag PostgreSQL gives `sql` when it succeeds: "CREATE TABLE",
 * "ALTER TABLE", "INSERT 0 1", "UPDATE 1", ... (one row for DML: the
 * count the migration expects). */
static void tag_for(const char *sql, char *tag, size_t n)
{
    char w[3][32] = {"", "", ""};
    const char *p = sql ? sql : "";
    int nw = 0;
    while (*p && nw < 3) {
        while (*p && !isalpha((unsigned char)*p))
            p++;
        size_t l = 0;
        while (isalpha((unsigned char)*p) || *p == '_') {
            if (l + 1 < sizeof w[0])
                w[nw][l++] = (char)toupper((unsigned char)*p);
            p++;
        }
        w[nw][l] = '\0';
        if (!l)
            break;
        /* modifiers that never appear in a tag */
        if (nw >= 1 && (!strcmp(w[nw], "OR") || !strcmp(w[nw], "REPLACE") || !strcmp(w[nw], "UNIQUE") ||
                        !strcmp(w[nw], "TEMP") || !strcmp(w[nw], "TEMPORARY") ||
                        !strcmp(w[nw], "UNLOGGED") || !strcmp(w[nw], "GLOBAL") || !strcmp(w[nw], "LOCAL")))
            continue;
        nw++;
    }
    if (!strcmp(w[0], "INSERT"))
        snprintf(tag, n, "INSERT 0 1");
    else if (!strcmp(w[0], "UPDATE") || !strcmp(w[0], "DELETE"))
        snprintf(tag, n, "%s 1", w[0]);
    else if (!strcmp(w[0], "CREATE") || !strcmp(w[0], "ALTER") || !strcmp(w[0], "DROP"))
        snprintf(tag, n, "%s %s", w[0], w[1]);
    else if (!strcmp(w[0], "END"))
        snprintf(tag, n, "COMMIT");
    else if (!strcmp(w[0], "ABORT"))
        snprintf(tag, n, "ROLLBACK");
    else
        snprintf(tag, n, "%s", w[0]);
}

/* A COMMAND_OK result carrying `tag`, made on the app's connection. */
static PGresult *made(const struct pq_api *pq, PGconn *pg, const char *tag)
{
    PGresult *r = pq->PQmakeEmptyPGresult(pg, PGRES_COMMAND_OK);
    if (r)
        snprintf(pq->PQcmdStatus(r), TAG_MAX, "%s", tag);
    return r;
}

/* INSERT ... RETURNING: the row the app inserted, as the server would
 * return it (a varchar version_num), tagged as the insert.  Made rather
 * than read: under rule 2 a peer may already have moved the version on. */
static PGresult *made_insert(const struct pq_api *pq, PGconn *pg, const char *sql,
                             const char *value)
{
    if (!sqlclass_mentions(sql, "returning") || !value[0])
        return made(pq, pg, "INSERT 0 1");
    PGresult *r = pq->PQmakeEmptyPGresult(pg, PGRES_TUPLES_OK);
    PGresAttDesc attr = {.name = (char *)"version_num", .format = 0, .typid = 1043 /* varchar */,
                         .typlen = -1, .atttypmod = -1};
    if (!r || !pq->PQsetResultAttrs(r, 1, &attr) ||
        !pq->PQsetvalue(r, 0, 0, (char *)value, (int)strlen(value))) {
        if (r)
            pq->PQclear(r);
        return made(pq, pg, "INSERT 0 1");
    }
    snprintf(pq->PQcmdStatus(r), TAG_MAX, "INSERT 0 1");
    return r;
}

static bool is_read(const char *sql)
{
    while (sql && *sql && isspace((unsigned char)*sql))
        sql++;
    return sql && (!strncasecmp(sql, "select", 6) || !strncasecmp(sql, "show", 4) ||
                   !strncasecmp(sql, "values", 6) || !strncasecmp(sql, "table", 5));
}

/* In absorb mode: the answer to one statement, and whether it ends it. */
static PGresult *absorb_one(const struct pq_copy *c, PGconn *pg, struct gconn *g,
                            const struct pq_call *call)
{
    const struct pq_api *pq = &c->api;
    char tag[TAG_MAX];
    if (call->kind == CALL_PREPARED || is_read(call->sql))
        return real_call(pq, pg, call); /* reads are answered truthfully */
    tag_for(call->sql, tag, sizeof tag);
    if (!strcmp(tag, "COMMIT") || !strcmp(tag, "ROLLBACK") || !strcmp(tag, "END")) {
        set_busy(g, false, g->pending, g->pending_null);
        g->vt_txn = false;
        log_info("guard: %s of the rolled-back transaction answered; the peer's migration stands",
                 tag);
        return made(pq, pg, tag);
    }
    struct sqlclass k;
    sqlclass_classify(call->sql, shim_config()->version_table_schema,
                      shim_config()->version_table, &k);
    if (k.kind == SQL_INSERT)
        return made_insert(pq, pg, call->sql, k.value);
    return made(pq, pg, tag);
}

/*
 * Decide what the app sees for `res`, the real result of `call` (already
 * complete: the connection is idle).  `in_txn`: sent inside a transaction
 * block; `sp`: wrapped in our savepoint.  Returns `res` or a made result
 * (then `res` is cleared).
 */
static PGresult *judge(const struct pq_copy *c, PGconn *pg, struct gconn *g,
                       const struct pq_call *call, const struct sqlclass *k, bool in_txn,
                       bool sp, PGresult *res)
{
    const struct pq_api *pq = &c->api;
    ExecStatusType st = res ? pq->PQresultStatus(res) : PGRES_FATAL_ERROR;
    const char *state = sqlstate_of(pq, res);
    bool failed = st == PGRES_FATAL_ERROR;
    char seen[512] = "", tag[TAG_MAX];

    if (!failed) {
        if (sp)
            run_ok(pq, pg, "RELEASE SAVEPOINT " SAVEPOINT);
        /* an UPDATE of the version table that matched nothing: a peer moved it */
        bool zero_update = k->kind == SQL_UPDATE && st == PGRES_COMMAND_OK &&
                           strcmp(pq->PQcmdTuples(res), "0") == 0;
        if (!zero_update)
            return res;
        if (!prove(c, pg, PROVE_TARGET, NULL, seen, sizeof seen))
            return res;
        if (in_txn) {
            run_ok(pq, pg, "ROLLBACK");
            set_busy(g, true, g->pending, g->pending_null);
        }
        log_warn("guard: UPDATE of the version table matched 0 rows; verified the database at "
                 "the target (%s)%s; reporting UPDATE 1", seen,
                 in_txn ? ", rolled back this transaction and absorbing it up to COMMIT/ROLLBACK" : "");
        events_emit("guard", pq->PQdb(pg), seen, "UPDATE matched 0 rows");
        pq->PQclear(res);
        return made(pq, pg, "UPDATE 1");
    }

    /* Rule 1: the version table's own CREATE / INSERT. */
    bool r1 = (k->kind == SQL_CREATE_TABLE && (!strcmp(state, "42P07") || !strcmp(state, "23505"))) ||
              (k->kind == SQL_INSERT && !strcmp(state, "23505") && k->value[0]);
    if (r1 && (sp || !in_txn)) {
        bool ok = k->kind == SQL_CREATE_TABLE ? prove(c, pg, PROVE_TABLE, NULL, seen, sizeof seen)
                                              : prove(c, pg, PROVE_ROW, k->value, seen, sizeof seen);
        if (ok && (!sp || run_ok(pq, pg, "ROLLBACK TO SAVEPOINT " SAVEPOINT "; RELEASE SAVEPOINT " SAVEPOINT))) {
            log_warn("guard: %s %s on the version table; verified %s (version table: %s); "
                     "reporting success", state, sqlclass_kind_name(k->kind),
                     k->kind == SQL_CREATE_TABLE ? "the table exists" : "the row exists", seen);
            events_emit("guard", pq->PQdb(pg), seen, state);
            pq->PQclear(res);
            if (k->kind == SQL_INSERT)
                return made_insert(pq, pg, call->sql, k->value);
            return made(pq, pg, "CREATE TABLE");
        }
    }

    /* Rule 2: a race anywhere in a transaction that referenced the table. */
    if (in_txn && g->vt_txn && guard_is_race_sqlstate(state) &&
        prove(c, pg, PROVE_TARGET, NULL, seen, sizeof seen)) {
        run_ok(pq, pg, "ROLLBACK");
        set_busy(g, true, g->pending, g->pending_null);
        tag_for(call->sql, tag, sizeof tag);
        log_warn("guard: %s on %s in a migration transaction; verified the database at the "
                 "target (%s); rolled back and absorbing the transaction up to COMMIT/ROLLBACK",
                 state, tag, seen);
        events_emit("guard", pq->PQdb(pg), seen, state);
        pq->PQclear(res);
        if (k->kind == SQL_INSERT)
            return made_insert(pq, pg, call->sql, k->value);
        return made(pq, pg, tag);
    }
    return res; /* Rule 3: unchanged */
}

/* Before sending: classify, track the transaction, open our savepoint.
 * Returns false when the guard does not apply to this call. */
static bool prepare(const struct pq_copy *c, PGconn *pg, struct gconn *g, const struct pq_call *call,
                    struct sqlclass *k, bool *in_txn, bool *sp)
{
    const struct config *cfg = shim_config();
    const struct pq_api *pq = &c->api;
    PGTransactionStatusType ts = pq->PQtransactionStatus(pg);
    *in_txn = ts == PQTRANS_INTRANS;
    *sp = false;
    memset(k, 0, sizeof *k);
    if (ts == PQTRANS_IDLE)
        g->vt_txn = false;
    if (call->sql && call->mentions_vt) {
        sqlclass_classify(call->sql, cfg->version_table_schema, cfg->version_table, k);
        g->vt_txn = true;
    }
    if (*in_txn && ts == PQTRANS_INTRANS && k->nstatements == 1 &&
        (k->kind == SQL_CREATE_TABLE || k->kind == SQL_INSERT))
        *sp = run_ok(pq, pg, "SAVEPOINT " SAVEPOINT);
    return true;
}

static bool applies(const struct pq_copy *c, PGconn *pg)
{
    return shim_config()->guard && gate_guards(c, pg);
}

PGresult *guard_exec(const struct pq_copy *c, PGconn *pg, const struct pq_call *call)
{
    const struct pq_api *pq = &c->api;
    pthread_mutex_lock(&mu);
    struct gconn *g = find(pg, false);
    pthread_mutex_unlock(&mu);
    if (g && g->absorb)
        return absorb_one(c, pg, g, call);
    if (!applies(c, pg))
        return real_call(pq, pg, call);
    pthread_mutex_lock(&mu);
    g = find(pg, true);
    pthread_mutex_unlock(&mu);
    if (!g)
        return real_call(pq, pg, call);
    struct sqlclass k;
    bool in_txn, sp;
    prepare(c, pg, g, call, &k, &in_txn, &sp);
    PGresult *res = real_call(pq, pg, call);
    return judge(c, pg, g, call, &k, in_txn, sp, res);
}

int guard_send(const struct pq_copy *c, PGconn *pg, const struct pq_call *call)
{
    const struct pq_api *pq = &c->api;
    pthread_mutex_lock(&mu);
    struct gconn *g = find(pg, false);
    pthread_mutex_unlock(&mu);
    if (g && g->absorb) {
        if (call->kind == CALL_PREPARED || is_read(call->sql))
            return real_send(pq, pg, call); /* reads are answered truthfully */
        /* Make the answer now, but still send a real (harmless) statement:
         * an async client waits for the socket to become readable, and
         * its one result is what gets replaced by the made one. */
        int nb = blocking_begin(pq, pg);
        PGresult *r = absorb_one(c, pg, g, call);
        blocking_end(pq, pg, nb);
        if (!pq->PQsendQuery(pg, "SELECT NULL WHERE false")) {
            pq->PQclear(r);
            return 0;
        }
        g->standin = true;
        set_busy(g, g->absorb, r, false);
        return 1;
    }
    if (!applies(c, pg))
        return real_send(pq, pg, call);
    pthread_mutex_lock(&mu);
    g = find(pg, true);
    pthread_mutex_unlock(&mu);
    if (!g)
        return real_send(pq, pg, call);
    int nb = blocking_begin(pq, pg);
    prepare(c, pg, g, call, &g->cls, &g->in_txn, &g->savepoint);
    blocking_end(pq, pg, nb);
    snprintf(g->sql, sizeof g->sql, "%s", call->sql ? call->sql : "");
    int ok = real_send(pq, pg, call);
    g->sent = ok && (g->cls.kind != SQL_OTHER || g->vt_txn || g->savepoint);
    return ok;
}

PGresult *guard_get_result(const struct pq_copy *c, PGconn *pg)
{
    const struct pq_api *pq = &c->api;
    pthread_mutex_lock(&mu);
    struct gconn *g = find(pg, false);
    pthread_mutex_unlock(&mu);
    if (g && g->standin) { /* the stand-in's result becomes the made one */
        PGresult *real = pq->PQgetResult(pg);
        if (real) {
            pq->PQclear(real);
            PGresult *r = g->pending;
            set_busy(g, g->absorb, NULL, false);
            return r;
        }
        g->standin = false; /* its NULL ends the command */
        set_busy(g, g->absorb, NULL, false);
        return NULL;
    }
    if (g && g->pending) {
        PGresult *r = g->pending;
        set_busy(g, g->absorb, NULL, true);
        return r;
    }
    if (g && g->pending_null) {
        set_busy(g, g->absorb, NULL, false);
        return NULL;
    }
    PGresult *r = pq->PQgetResult(pg);
    if (!g || !g->sent)
        return r;
    if (!r) { /* the command is complete */
        g->sent = false;
        if (g->savepoint) {
            int nb = blocking_begin(pq, pg);
            run_ok(pq, pg, "RELEASE SAVEPOINT " SAVEPOINT);
            blocking_end(pq, pg, nb);
        }
        return NULL;
    }
    ExecStatusType st = pq->PQresultStatus(r);
    bool interesting = st == PGRES_FATAL_ERROR ||
                       (g->cls.kind == SQL_UPDATE && st == PGRES_COMMAND_OK &&
                        strcmp(pq->PQcmdTuples(r), "0") == 0);
    if (!interesting)
        return r;
    /* Finish the command first: the connection must be idle to act. */
    for (PGresult *more; (more = pq->PQgetResult(pg));)
        pq->PQclear(more);
    g->sent = false;
    struct pq_call sent = {.kind = CALL_EXEC, .sql = g->sql};
    int nb = blocking_begin(pq, pg);
    PGresult *out = judge(c, pg, g, &sent, &g->cls, g->in_txn, g->savepoint, r);
    blocking_end(pq, pg, nb);
    set_busy(g, g->absorb, NULL, true); /* the NULL that ends the command */
    return out;
}

PGTransactionStatusType guard_transaction_status(const struct pq_copy *c, const PGconn *pg)
{
    PGTransactionStatusType real = c->api.PQtransactionStatus(pg);
    if (!atomic_load_explicit(&guard_busy, memory_order_relaxed))
        return real;
    pthread_mutex_lock(&mu);
    struct gconn *g = find(pg, false);
    bool absorbing = g && g->absorb;
    pthread_mutex_unlock(&mu);
    return absorbing && real == PQTRANS_IDLE ? PQTRANS_INTRANS : real;
}
