/*
 * interpose — the only file that defines PQ* names (and dlsym).
 *
 * Each wrapper: find the real-function table of the libpq copy this call
 * must reach (resolve, conn), let the shim's hooks act when the shim is
 * active and the call is the app's own (not libpq calling itself), call
 * the real function, return its result unchanged.
 *
 * psycopg 3's pure-Python backend reaches libpq through ctypes, i.e.
 * dlsym(handle, "PQconnectStart"), which LD_PRELOAD alone never sees; the
 * dlsym wrapper below hands out these wrappers for libpq's names.
 */
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "conn.h"
#include "gate.h"
#include "guard.h"
#include "libc_compat.h"
#include "log.h"
#include "resolve.h"
#include "shim.h"
#include "sqlclass.h"

#define EXPORT __attribute__((visibility("default")))
#define RA __builtin_return_address(0)

/* --- finding the real function -------------------------------------------- */

/* Report, once per copy and function, that an app call (not libpq calling
 * itself) went through: the proof the tests look for that interception
 * happened. */
static void note_first(const struct pq_copy *c, enum pq_api_index i, const void *ra)
{
    if (resolve_is_internal(ra))
        return;
    uint64_t bit = (uint64_t)1 << i;
    struct pq_copy *mc = (struct pq_copy *)c;
    if (atomic_load_explicit(&mc->seen, memory_order_relaxed) & bit)
        return;
    if (atomic_fetch_or(&mc->seen, bit) & bit)
        return;
    if (shim_active())
        log_debug("%s -> %s (first call)", resolve_api_name(i), c->soname);
}

static const struct pq_copy *no_libpq(const char *fn)
{
    int saved = errno;
    log_error("%s called but no libpq is loaded in this process", fn);
    errno = saved;
    return NULL;
}

/* The copy for a call that has no PGconn (connecting). */
static inline const struct pq_copy *copy_for_caller(const void *ra, enum pq_api_index i)
{
    const struct pq_copy *c = resolve_for_caller(ra);
    if (!c)
        return no_libpq(resolve_api_name(i));
    note_first(c, i, ra);
    return c;
}

/* The copy for a call on `pg`: the one that made it. */
static inline const struct pq_copy *copy_for_conn(const PGconn *pg, const void *ra,
                                                  enum pq_api_index i)
{
    const struct pq_copy *c = resolve_sole_copy();
    if (!c)
        c = conn_copy(pg);
    if (!c)
        c = resolve_for_caller(ra);
    if (!c)
        return no_libpq(resolve_api_name(i));
    note_first(c, i, ra);
    return c;
}

/* A new connection: remember its copy (for processes with two copies). */
static PGconn *made(PGconn *pg, const struct pq_copy *c)
{
    conn_register(pg, c);
    return pg;
}

#define REAL(c, fn) ((c)->api.fn)

/* The steady state — one libpq copy, no hook wanted (shim.h) — is one
 * word's test (shim_hooks: no hook, not SHIM_HOOKS_NOSOLE), then the sole
 * copy's load and a tail call: libpq's own nested calls land in these
 * wrappers too (a PQexec passes through five), so every instruction here
 * counts several times.  Everything else lives in the wrapper's noinline
 * *_slow twin, which gets the caller's return address. */
#define FAST_PATH(fn, ...)                                                                     \
    do {                                                                                       \
        /* acquire: resolve.c published the copy before it cleared NOSOLE */                   \
        if (__builtin_expect(!(atomic_load_explicit(&shim_hooks, memory_order_acquire) &       \
                               SHIM_HOOKS_IDLE_MASK),                                          \
                             1)) {                                                             \
            /* (never NULL here: no assert, as it would cost this path a frame) */             \
            return resolve_first_copy()->api.fn(__VA_ARGS__);                                  \
        }                                                                                      \
    } while (0)
/* Does the app's statement `sql` name the version table?  (The name is
 * prepared once: gate.h.) */
static inline bool names_vt(const char *sql)
{
    return sqlclass_mentions_name(sql, gate_vt_name_get());
}

/* The text-only hook's question, cheapest first: can the app's statement
 * `sql` not name the version table?  A text shorter than the name
 * (BEGIN, COMMIT, SELECT 1) is answered by its length alone.  Asked only
 * on the fn##_text path, i.e. after an acquire load of shim_hooks saw
 * SHIM_HOOKS_SQL bits, which the gate sets only once gate_vt_name is
 * prepared (gate.h): the name is read without a test. */
static inline bool text_clean(const char *sql)
{
    if (__builtin_expect(!sql, 0))
        return true;
    size_t len = strnlen(sql, SQLCLASS_SCAN_MAX);
    return sqlclass_too_short(len, &gate_vt_name) ||
           !sqlclass_mentions_name_len(sql, len, &gate_vt_name);
}

/* Does a text parameter name the version table exactly?  SQLAlchemy 2.x's
 * has_table through psycopg 3 sends "... relname = $1::VARCHAR ..." with
 * the table's name as $1: a text that does not name the table may still
 * ask for it.  Only an exact value counts (a parameter is a value, not
 * SQL), so a long one costs one length-bounded compare. */
static inline bool params_name_vt(int nparams, const char *const *values, const int *formats)
{
    if (nparams <= 0 || !values)
        return false;
    const char *vt = gate_vt_name.name; /* (ready: text_clean or names_vt came first) */
    for (int i = 0; i < nparams; i++)
        if (values[i] && !(formats && formats[i]) && strcmp(values[i], vt) == 0)
            return true;
    return false;
}

/* As text_clean, for a statement with parameters. */
static inline bool params_clean(const char *sql, int nparams, const char *const *values,
                                const int *formats)
{
    return text_clean(sql) && !params_name_vt(nparams, values, formats);
}

/* A call made by libpq itself (PQexec -> PQsendQuery, PQexecFinish ->
 * PQgetResult): its return address lies inside copy `c`.  Its text was
 * the app's, already looked at (or it is libpq's own). */
static inline bool from_copy(const struct pq_copy *c, const void *ra)
{
    return (uintptr_t)ra >= c->lo && (uintptr_t)ra < c->hi;
}

/* The same for the wrappers that carry SQL text: while only statement
 * texts are wanted (SHIM_HOOKS_SQL), fn##_text looks at the app's
 * statement out of line (so that the fast path stays a bare tail call);
 * libpq's own nested call with that text passes straight through. */
#define FAST_PATH_SQL(fn, ...)                                                                 \
    do {                                                                                       \
        const struct pq_copy *fast_ = resolve_sole_copy();                                     \
        if (__builtin_expect(fast_ != NULL, 1)) {                                              \
            /* acquire: what the gate set up before it asked for the texts */                  \
            int hooks_ = atomic_load_explicit(&shim_hooks, memory_order_acquire);              \
            if (__builtin_expect(!hooks_, 1))                                                  \
                return fast_->api.fn(__VA_ARGS__);                                             \
            if (!(hooks_ & SHIM_HOOKS_IDLE_MASK)) {                                            \
                if (from_copy(fast_, RA))                                                      \
                    return fast_->api.fn(__VA_ARGS__);                                         \
                return fn##_text(__VA_ARGS__, RA);                                             \
            }                                                                                  \
        }                                                                                      \
    } while (0)

/* fn##_text's body: a statement that does not name the version table
 * (`clean`: text_clean, or params_clean for one with parameters) runs at
 * once (a tail call); one that does takes the slow path, and so does a
 * call that finds no sole copy any more (a second libpq was loaded). */
#define CLEAN_ONLY(fn, clean, slow_call, ...)                                                  \
    do {                                                                                       \
        if (__builtin_expect(clean, 1)) {                                                      \
            const struct pq_copy *c_ = resolve_sole_copy();                                    \
            if (__builtin_expect(c_ != NULL, 1))                                               \
                return c_->api.fn(__VA_ARGS__);                                                \
        }                                                                                      \
        return slow_call;                                                                      \
    } while (0)
#define SLOW static __attribute__((noinline))

/* --- the hooks ---------------------------------------------------------------
 * Each acts only for the app's own calls (not libpq calling itself) in an
 * active shim; the statement hooks only while the gate watches (one load). */

static inline bool app_call(const void *ra) { return !resolve_is_internal(ra) && shim_active(); }

/* A connection is up: the gate decides.  Returns pg either way: a failed
 * gate has made it CONNECTION_BAD, which is what the app will see. */
static PGconn *connected(PGconn *pg, const struct pq_copy *c, const void *ra)
{
    conn_register(pg, c);
    if (pg && app_call(ra) && c->api.PQstatus(pg) == CONNECTION_OK && !gate_connected(c, pg))
        log_debug("the gate failed the new connection on purpose (its reason logged above)");
    return pg;
}

/* The statement hooks run only while the gate watches some database or
 * the guard has a connection standing in for a transaction: two loads on the common path. */
static inline bool watching(void)
{
    return atomic_load_explicit(&gate_watching, memory_order_relaxed) |
           atomic_load_explicit(&guard_busy, memory_order_relaxed);
}

/* Does the statement name the version table?  Asked once per statement:
 * the gate and the guard both act only on those (a 1 MB INSERT is scanned
 * once, by memchr). */
static bool mentions_vt(struct pq_call *call)
{
    call->mentions_vt = call->sql && (names_vt(call->sql) ||
                                      params_name_vt(call->nparams, call->values, call->formats));
    return call->mentions_vt;
}

/* While a leader learns which version table its migration uses: show the
 * gate the statements that mention version_num (a leader's slow path only). */
static struct sqlclass_name vt_column;
static pthread_once_t vt_column_once = PTHREAD_ONCE_INIT;
static void vt_column_init(void) { sqlclass_name_init(&vt_column, "version_num"); }

static void learn_vt(const struct pq_copy *c, PGconn *pg, const struct pq_call *call)
{
    if (!atomic_load_explicit(&gate_learning, memory_order_relaxed) || !call->sql)
        return;
    pthread_once(&vt_column_once, vt_column_init);
    if (sqlclass_mentions_name(call->sql, &vt_column))
        gate_learn(c, pg, call->sql);
}

/* A synchronous statement under the gate and the guard. */
static PGresult *exec_hooked(const struct pq_copy *c, PGconn *pg, struct pq_call *call)
{
    learn_vt(c, pg, call);
    if (mentions_vt(call))
        gate_before(c, pg, call->sql);
    PGresult *r = guard_exec(c, pg, call);
    gate_after(c, pg);
    return r;
}

static int send_hooked(const struct pq_copy *c, PGconn *pg, struct pq_call *call)
{
    learn_vt(c, pg, call);
    if (mentions_vt(call))
        gate_before(c, pg, call->sql);
    return guard_send(c, pg, call);
}

/* --- connecting --------------------------------------------------------------- */

EXPORT PGconn *PQconnectdb(const char *conninfo)
{
    const struct pq_copy *c = copy_for_caller(RA, PQI_PQconnectdb);
    if (!c)
        return NULL;
    return connected(REAL(c, PQconnectdb)(conninfo), c, RA);
}

EXPORT PGconn *PQconnectdbParams(const char *const *keywords, const char *const *values,
                                 int expand_dbname)
{
    const struct pq_copy *c = copy_for_caller(RA, PQI_PQconnectdbParams);
    if (!c)
        return NULL;
    return connected(REAL(c, PQconnectdbParams)(keywords, values, expand_dbname), c, RA);
}

EXPORT PGconn *PQsetdbLogin(const char *pghost, const char *pgport, const char *pgoptions,
                            const char *pgtty, const char *dbName, const char *login,
                            const char *pwd)
{
    const struct pq_copy *c = copy_for_caller(RA, PQI_PQsetdbLogin);
    if (!c)
        return NULL;
    return connected(REAL(c, PQsetdbLogin)(pghost, pgport, pgoptions, pgtty, dbName, login, pwd), c, RA);
}

EXPORT PGconn *PQconnectStart(const char *conninfo)
{
    const struct pq_copy *c = copy_for_caller(RA, PQI_PQconnectStart);
    if (!c)
        return NULL;
    return made(REAL(c, PQconnectStart)(conninfo), c);
}

EXPORT PGconn *PQconnectStartParams(const char *const *keywords, const char *const *values,
                                    int expand_dbname)
{
    const struct pq_copy *c = copy_for_caller(RA, PQI_PQconnectStartParams);
    if (!c)
        return NULL;
    return made(REAL(c, PQconnectStartParams)(keywords, values, expand_dbname), c);
}

EXPORT PostgresPollingStatusType PQconnectPoll(PGconn *conn)
{
    const struct pq_copy *c = copy_for_conn(conn, RA, PQI_PQconnectPoll);
    if (!c)
        return PGRES_POLLING_FAILED;
    PostgresPollingStatusType st = REAL(c, PQconnectPoll)(conn);
    if (st == PGRES_POLLING_OK && app_call(RA) && !gate_connected(c, conn))
        return PGRES_POLLING_FAILED;
    return st;
}

EXPORT void PQreset(PGconn *conn)
{
    const struct pq_copy *c = copy_for_conn(conn, RA, PQI_PQreset);
    if (c)
        REAL(c, PQreset)(conn);
}

EXPORT int PQresetStart(PGconn *conn)
{
    const struct pq_copy *c = copy_for_conn(conn, RA, PQI_PQresetStart);
    return c ? REAL(c, PQresetStart)(conn) : 0;
}

EXPORT PostgresPollingStatusType PQresetPoll(PGconn *conn)
{
    const struct pq_copy *c = copy_for_conn(conn, RA, PQI_PQresetPoll);
    return c ? REAL(c, PQresetPoll)(conn) : PGRES_POLLING_FAILED;
}

EXPORT void PQfinish(PGconn *conn)
{
    const struct pq_copy *c = copy_for_conn(conn, RA, PQI_PQfinish);
    if (!c)
        return;
    conn_forget(conn);
    if (conn && app_call(RA)) {
        gate_forget(c, conn);
        guard_forget(c, conn);
    }
    REAL(c, PQfinish)(conn);
}

/* --- statements ------------------------------------------------------------------ */

SLOW PGresult *PQexec_slow(PGconn *conn, const char *query, const void *ra)
{
    const struct pq_copy *c = copy_for_conn(conn, ra, PQI_PQexec);
    if (!c)
        return NULL;
    if (conn && app_call(ra))
        conn_note_text(conn, query); /* (PREPARE, DEALLOCATE: conn.h) */
    if (watching() && conn && app_call(ra))
        return exec_hooked(c, conn, &(struct pq_call){.kind = CALL_EXEC, .sql = query});
    return REAL(c, PQexec)(conn, query);
}

SLOW PGresult *PQexec_text(PGconn *conn, const char *query, const void *ra)
{
    CLEAN_ONLY(PQexec, text_clean(query), PQexec_slow(conn, query, ra), conn, query);
}

EXPORT PGresult *PQexec(PGconn *conn, const char *query)
{
    FAST_PATH_SQL(PQexec, conn, query);
    return PQexec_slow(conn, query, RA);
}

SLOW PGresult *PQexecParams_slow(PGconn *conn, const char *command, int nParams,
                              const Oid *paramTypes, const char *const *paramValues,
                              const int *paramLengths, const int *paramFormats, int resultFormat, const void *ra)
{
    const struct pq_copy *c = copy_for_conn(conn, ra, PQI_PQexecParams);
    if (!c)
        return NULL;
    if (conn && app_call(ra))
        conn_note_text(conn, command); /* (PREPARE, DEALLOCATE: conn.h) */
    if (watching() && conn && app_call(ra))
        return exec_hooked(c, conn,
                           &(struct pq_call){.kind = CALL_PARAMS, .sql = command, .nparams = nParams,
                                             .types = paramTypes, .values = paramValues,
                                             .lengths = paramLengths, .formats = paramFormats,
                                             .result_format = resultFormat});
    return REAL(c, PQexecParams)(conn, command, nParams, paramTypes, paramValues, paramLengths,
                                 paramFormats, resultFormat);
}

SLOW PGresult *PQexecParams_text(PGconn *conn, const char *command,
                                 int nParams, const Oid *paramTypes,
                                 const char *const *paramValues, const int *paramLengths,
                                 const int *paramFormats, int resultFormat, const void *ra)
{
    CLEAN_ONLY(PQexecParams, params_clean(command, nParams, paramValues, paramFormats),
              PQexecParams_slow(conn, command, nParams, paramTypes, paramValues, paramLengths,
                                paramFormats, resultFormat, ra),
              conn, command, nParams, paramTypes, paramValues, paramLengths, paramFormats,
              resultFormat);
}

EXPORT PGresult *PQexecParams(PGconn *conn, const char *command, int nParams,
                              const Oid *paramTypes, const char *const *paramValues,
                              const int *paramLengths, const int *paramFormats, int resultFormat)
{
    FAST_PATH_SQL(PQexecParams, conn, command, nParams, paramTypes, paramValues, paramLengths, paramFormats, resultFormat);
    return PQexecParams_slow(conn, command, nParams, paramTypes, paramValues, paramLengths, paramFormats, resultFormat, RA);
}

SLOW PGresult *PQexecPrepared_slow(PGconn *conn, const char *stmtName, int nParams,
                                const char *const *paramValues, const int *paramLengths,
                                const int *paramFormats, int resultFormat, const void *ra)
{
    const struct pq_copy *c = copy_for_conn(conn, ra, PQI_PQexecPrepared);
    if (!c)
        return NULL;
    if (watching() && conn && app_call(ra)) {
        char *sql = conn_prepared_sql(conn, stmtName); /* classified like any other */
        PGresult *r = exec_hooked(c, conn,
                                  &(struct pq_call){.kind = CALL_PREPARED, .sql = sql,
                                                    .stmt_name = stmtName, .nparams = nParams,
                                                    .values = paramValues,
                                                    .lengths = paramLengths,
                                                    .formats = paramFormats,
                                                    .result_format = resultFormat});
        free(sql);
        return r;
    }
    return REAL(c, PQexecPrepared)(conn, stmtName, nParams, paramValues, paramLengths,
                                   paramFormats, resultFormat);
}

EXPORT PGresult *PQexecPrepared(PGconn *conn, const char *stmtName, int nParams,
                                const char *const *paramValues, const int *paramLengths,
                                const int *paramFormats, int resultFormat)
{
    FAST_PATH(PQexecPrepared, conn, stmtName, nParams, paramValues, paramLengths, paramFormats, resultFormat);
    return PQexecPrepared_slow(conn, stmtName, nParams, paramValues, paramLengths, paramFormats, resultFormat, RA);
}

SLOW PGresult *PQprepare_slow(PGconn *conn, const char *stmtName, const char *query, int nParams,
                           const Oid *paramTypes, const void *ra)
{
    const struct pq_copy *c = copy_for_conn(conn, ra, PQI_PQprepare);
    if (!c)
        return NULL;
    if (conn && app_call(ra)) /* (watched or not: see conn.h) */
        conn_note_prepared(conn, stmtName, query);
    return REAL(c, PQprepare)(conn, stmtName, query, nParams, paramTypes);
}

EXPORT PGresult *PQprepare(PGconn *conn, const char *stmtName, const char *query, int nParams,
                           const Oid *paramTypes)
{
    FAST_PATH(PQprepare, conn, stmtName, query, nParams, paramTypes);
    return PQprepare_slow(conn, stmtName, query, nParams, paramTypes, RA);
}

SLOW int PQsendQuery_slow(PGconn *conn, const char *query, const void *ra)
{
    const struct pq_copy *c = copy_for_conn(conn, ra, PQI_PQsendQuery);
    if (!c)
        return 0;
    if (conn && app_call(ra))
        conn_note_text(conn, query); /* (PREPARE, DEALLOCATE: conn.h) */
    if (watching() && conn && app_call(ra))
        return send_hooked(c, conn, &(struct pq_call){.kind = CALL_EXEC, .sql = query});
    return REAL(c, PQsendQuery)(conn, query);
}

SLOW int PQsendQuery_text(PGconn *conn, const char *query, const void *ra)
{
    CLEAN_ONLY(PQsendQuery, text_clean(query), PQsendQuery_slow(conn, query, ra), conn, query);
}

EXPORT int PQsendQuery(PGconn *conn, const char *query)
{
    FAST_PATH_SQL(PQsendQuery, conn, query);
    return PQsendQuery_slow(conn, query, RA);
}

SLOW int PQsendQueryParams_slow(PGconn *conn, const char *command, int nParams,
                             const Oid *paramTypes, const char *const *paramValues,
                             const int *paramLengths, const int *paramFormats, int resultFormat, const void *ra)
{
    const struct pq_copy *c = copy_for_conn(conn, ra, PQI_PQsendQueryParams);
    if (!c)
        return 0;
    if (conn && app_call(ra))
        conn_note_text(conn, command); /* (PREPARE, DEALLOCATE: conn.h) */
    if (watching() && conn && app_call(ra))
        return send_hooked(c, conn,
                           &(struct pq_call){.kind = CALL_PARAMS, .sql = command, .nparams = nParams,
                                             .types = paramTypes, .values = paramValues,
                                             .lengths = paramLengths, .formats = paramFormats,
                                             .result_format = resultFormat});
    return REAL(c, PQsendQueryParams)(conn, command, nParams, paramTypes, paramValues,
                                      paramLengths, paramFormats, resultFormat);
}

SLOW int PQsendQueryParams_text(PGconn *conn, const char *command,
                                int nParams, const Oid *paramTypes,
                                const char *const *paramValues, const int *paramLengths,
                                const int *paramFormats, int resultFormat, const void *ra)
{
    CLEAN_ONLY(PQsendQueryParams, params_clean(command, nParams, paramValues, paramFormats),
              PQsendQueryParams_slow(conn, command, nParams, paramTypes, paramValues,
                                     paramLengths, paramFormats, resultFormat, ra),
              conn, command, nParams, paramTypes, paramValues, paramLengths, paramFormats,
              resultFormat);
}

EXPORT int PQsendQueryParams(PGconn *conn, const char *command, int nParams,
                             const Oid *paramTypes, const char *const *paramValues,
                             const int *paramLengths, const int *paramFormats, int resultFormat)
{
    FAST_PATH_SQL(PQsendQueryParams, conn, command, nParams, paramTypes, paramValues, paramLengths, paramFormats, resultFormat);
    return PQsendQueryParams_slow(conn, command, nParams, paramTypes, paramValues, paramLengths, paramFormats, resultFormat, RA);
}

SLOW int PQsendQueryPrepared_slow(PGconn *conn, const char *stmtName, int nParams,
                               const char *const *paramValues, const int *paramLengths,
                               const int *paramFormats, int resultFormat, const void *ra)
{
    const struct pq_copy *c = copy_for_conn(conn, ra, PQI_PQsendQueryPrepared);
    if (!c)
        return 0;
    if (watching() && conn && app_call(ra)) { /* (psycopg 3 runs prepared statements so) */
        char *sql = conn_prepared_sql(conn, stmtName);
        int ok = send_hooked(c, conn,
                             &(struct pq_call){.kind = CALL_PREPARED, .sql = sql,
                                               .stmt_name = stmtName, .nparams = nParams,
                                               .values = paramValues, .lengths = paramLengths,
                                               .formats = paramFormats,
                                               .result_format = resultFormat});
        free(sql);
        return ok;
    }
    return REAL(c, PQsendQueryPrepared)(conn, stmtName, nParams, paramValues, paramLengths,
                                        paramFormats, resultFormat);
}

EXPORT int PQsendQueryPrepared(PGconn *conn, const char *stmtName, int nParams,
                               const char *const *paramValues, const int *paramLengths,
                               const int *paramFormats, int resultFormat)
{
    FAST_PATH(PQsendQueryPrepared, conn, stmtName, nParams, paramValues, paramLengths, paramFormats, resultFormat);
    return PQsendQueryPrepared_slow(conn, stmtName, nParams, paramValues, paramLengths, paramFormats, resultFormat, RA);
}

SLOW int PQsendPrepare_slow(PGconn *conn, const char *stmtName, const char *query, int nParams,
                         const Oid *paramTypes, const void *ra)
{
    const struct pq_copy *c = copy_for_conn(conn, ra, PQI_PQsendPrepare);
    if (!c)
        return 0;
    if (conn && app_call(ra)) /* (watched or not: see conn.h) */
        conn_note_prepared(conn, stmtName, query);
    return REAL(c, PQsendPrepare)(conn, stmtName, query, nParams, paramTypes);
}

EXPORT int PQsendPrepare(PGconn *conn, const char *stmtName, const char *query, int nParams,
                         const Oid *paramTypes)
{
    FAST_PATH(PQsendPrepare, conn, stmtName, query, nParams, paramTypes);
    return PQsendPrepare_slow(conn, stmtName, query, nParams, paramTypes, RA);
}

SLOW PGresult *PQgetResult_slow(PGconn *conn, const void *ra)
{
    const struct pq_copy *c = copy_for_conn(conn, ra, PQI_PQgetResult);
    if (!c)
        return NULL;
    if (!(watching() && conn && app_call(ra)))
        return REAL(c, PQgetResult)(conn);
    PGresult *r = guard_get_result(c, conn);
    if (!r)
        gate_after(c, conn); /* the command's last result was delivered */
    return r;
}

EXPORT PGresult *PQgetResult(PGconn *conn)
{
    FAST_PATH(PQgetResult, conn);
    return PQgetResult_slow(conn, RA);
}

/* The server's status is what the app must see, also while the guard
 * stands in for its transaction: the stand-in is a real transaction, and
 * giving up makes it fail for real. */
SLOW PGTransactionStatusType PQtransactionStatus_slow(const PGconn *conn, const void *ra)
{
    const struct pq_copy *c = copy_for_conn(conn, ra, PQI_PQtransactionStatus);
    if (!c)
        return PQTRANS_UNKNOWN;
    return REAL(c, PQtransactionStatus)(conn);
}

EXPORT PGTransactionStatusType PQtransactionStatus(const PGconn *conn)
{
    FAST_PATH(PQtransactionStatus, conn);
    return PQtransactionStatus_slow(conn, RA);
}

/* --- the ctypes path: dlsym --------------------------------------------------- */

/* The names dlsym hands out wrappers for: exactly the functions above,
 * PQ_WRAPPED_LIST (include/resolve.h).  A listed name without a wrapper
 * here is an undefined reference: the link fails (-z defs). */
static const struct {
    const char *name;
    void (*wrapper)(void);
} wrappers[] = {
#define W(fn, needed) {#fn, (void (*)(void))fn},
    PQ_WRAPPED_LIST(W)
#undef W
};

typedef void *dlsym_fn(void *, const char *);

/* Used by the assembly entry point below: keep them global (hidden).
 * A sanitizer runtime calls dlsym while it starts, before its own shadow
 * memory is ready: the dlsym path must not be instrumented. */
#if defined(__clang__) || defined(__GNUC__)
#define NO_SANITIZE __attribute__((no_sanitize("address", "undefined")))
#else
#define NO_SANITIZE
#endif
__attribute__((visibility("hidden"))) dlsym_fn *migshim_real_dlsym;
__attribute__((visibility("hidden"))) NO_SANITIZE dlsym_fn *migshim_real_dlsym_init(void);
__attribute__((visibility("hidden"))) NO_SANITIZE void *migshim_dlsym(void *handle,
                                                                     const char *name);

dlsym_fn *migshim_real_dlsym_init(void)
{
    dlsym_fn *f = NULL;
#if MIGSHIM_HAVE_DLVSYM
    /* dlsym moved from libdl to libc in glibc 2.34; older versions on
     * x86_64 and aarch64 carry GLIBC_2.2.5 / GLIBC_2.17. */
    static const char *const versions[] = {"GLIBC_2.34", "GLIBC_2.2.5", "GLIBC_2.17"};
    for (size_t i = 0; !f && i < sizeof versions / sizeof versions[0]; i++)
        f = (dlsym_fn *)dlvsym(RTLD_NEXT, "dlsym", versions[i]);
#else
    /* musl has no dlvsym, and a dlsym call here would be the shim's own:
     * libc's definition, read from its symbol table.  musl's dlsym, like
     * glibc's, takes the caller from the return address, which the entry
     * point below leaves in place for RTLD_NEXT. */
    f = (dlsym_fn *)resolve_next_symbol("dlsym");
#endif
    migshim_real_dlsym = f; /* racing initialisers store the same value */
    return f;
}

void *migshim_dlsym(void *handle, const char *name)
{
    dlsym_fn *real = migshim_real_dlsym ? migshim_real_dlsym : migshim_real_dlsym_init();
    void *r = real(handle, name);
    if (!r || !name || name[0] != 'P' || name[1] != 'Q')
        return r;
    for (size_t i = 0; i < sizeof wrappers / sizeof wrappers[0]; i++) {
        if (strcmp(name, wrappers[i].name) != 0)
            continue;
        /* Already ours (e.g. RTLD_DEFAULT), or not a libpq copy's: as is.
         * In a pass-through the real function is the purest answer. */
        if (resolve_in_shim(r) || !shim_active() || !resolve_note_dlsym(r))
            return r;
        return (void *)wrappers[i].wrapper;
    }
    return r;
}

/*
 * dlsym(RTLD_NEXT, ...) answers relative to the module that called dlsym,
 * found from the return address.  So for RTLD_NEXT the entry point jumps to
 * the real dlsym with the caller's own return address still on the stack:
 * a tail jump, written in assembly because C cannot promise one.
 */
#if defined(__x86_64__)
__asm__(".text\n"
        ".globl dlsym\n"
        ".type dlsym,@function\n"
        "dlsym:\n"
        "    cmpq $-1, %rdi\n" /* RTLD_NEXT */
        "    je 1f\n"
        "    jmp migshim_dlsym\n"
        "1:  movq migshim_real_dlsym(%rip), %rax\n"
        "    testq %rax, %rax\n"
        "    jz 2f\n"
        "    jmp *%rax\n"
        "2:  pushq %rdi\n"
        "    pushq %rsi\n"
        "    subq $8, %rsp\n"
        "    call migshim_real_dlsym_init\n"
        "    addq $8, %rsp\n"
        "    popq %rsi\n"
        "    popq %rdi\n"
        "    jmp *%rax\n"
        ".size dlsym, .-dlsym\n");
#else
/* Elsewhere: RTLD_NEXT lookups made by other modules are answered as if
 * made from the shim (documented in docs/design.md, Limits). */
EXPORT void *dlsym(void *handle, const char *name) { return migshim_dlsym(handle, name); }
#endif
