/*
 * The lock protocol without a server: lock.c, versions.c and holder.c
 * driven through a scripted fake connection seam (dbconn.h).  Each test
 * is a script: the messages the module must send, in order (each checked
 * against the substrings it must contain, or its exact text), and for
 * each the results a server would answer, one by one, and the
 * transaction status it would leave.  A message the script does not
 * expect, a message left unsent, or a result not freed fails the test.
 */
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "config.h"
#include "dbconn.h"
#include "holder.h"
#include "lock.h"
#include "versions.h"

/* --- the fake ------------------------------------------------------------------ */

#define MAXROWS 4
#define MAXCOLS 7

/* One statement's canned result.  A NULL value is SQL NULL. */
struct fres {
    enum dbres_kind kind;
    int nrows, ncols;
    const char *v[MAXROWS][MAXCOLS];
    const char *sqlstate; /* DBRES_ERROR */
    const char *msg;      /* DBRES_ERROR: the server's primary message */
};

/* One message: what it must be, and what the server answers. */
struct step {
    const char *exact;     /* the whole text, or NULL                       */
    const char *has[4];    /* substrings it must contain (NULL-ended)       */
    const char *lacks;     /* a substring it must not contain, or NULL      */
    struct fres res[6];
    int nres;
    enum dbconn_txn after; /* the transaction status once answered          */
};

struct fake {
    struct dbconn base;
    const struct step *script;
    int n, at;          /* steps, and the next one                           */
    int res_at;         /* the next result of the message in flight (-1: none) */
    int outstanding;    /* results handed out and not freed                  */
    enum dbconn_txn txn;
};

#define F(c) ((struct fake *)(void *)(c))
#define FC(c) ((const struct fake *)(const void *)(c))
#define RS(r) ((const struct fres *)(const void *)(r))

static bool f_send(struct dbconn *c, const char *sql)
{
    struct fake *f = F(c);
    cr_assert(f->res_at < 0, "sent while results were unread: %s", sql);
    cr_assert(f->at < f->n, "unexpected message #%d: %s", f->at + 1, sql);
    const struct step *s = &f->script[f->at];
    if (s->exact)
        cr_assert_str_eq(sql, s->exact, "message #%d", f->at + 1);
    for (int i = 0; i < 4 && s->has[i]; i++)
        cr_assert(strstr(sql, s->has[i]), "message #%d lacks \"%s\": %s", f->at + 1, s->has[i],
                  sql);
    if (s->lacks)
        cr_assert(!strstr(sql, s->lacks), "message #%d has \"%s\": %s", f->at + 1, s->lacks, sql);
    f->res_at = 0;
    f->txn = DBCONN_BUSY;
    return true;
}

static struct dbres *f_next(struct dbconn *c)
{
    struct fake *f = F(c);
    if (f->res_at < 0)
        return NULL;
    const struct step *s = &f->script[f->at];
    if (f->res_at == s->nres) { /* the message is answered */
        f->txn = s->after;
        f->res_at = -1;
        f->at++;
        return NULL;
    }
    f->outstanding++;
    return (struct dbres *)(uintptr_t)&s->res[f->res_at++];
}

static enum dbres_kind f_kind(const struct dbconn *c, const struct dbres *r)
{
    (void)c;
    return RS(r)->kind;
}

static int f_nrows(const struct dbconn *c, const struct dbres *r)
{
    (void)c;
    return RS(r)->kind == DBRES_ROWS ? RS(r)->nrows : 0;
}

static int f_ncols(const struct dbconn *c, const struct dbres *r)
{
    (void)c;
    return RS(r)->kind == DBRES_ROWS ? RS(r)->ncols : 0;
}

static const char *f_value(const struct dbconn *c, const struct dbres *r, int row, int col)
{
    (void)c;
    cr_assert(row < RS(r)->nrows && col < RS(r)->ncols, "value (%d, %d) out of range", row, col);
    const char *v = RS(r)->v[row][col];
    return v ? v : "";
}

static bool f_isnull(const struct dbconn *c, const struct dbres *r, int row, int col)
{
    (void)c;
    return RS(r)->v[row][col] == NULL;
}

static const char *f_sqlstate(const struct dbconn *c, const struct dbres *r)
{
    (void)c;
    return RS(r)->sqlstate ? RS(r)->sqlstate : "";
}

static const char *f_message(const struct dbconn *c, const struct dbres *r)
{
    (void)c;
    return RS(r)->msg ? RS(r)->msg : "";
}

static void f_free(const struct dbconn *c, struct dbres *r)
{
    (void)r;
    F((uintptr_t)c)->outstanding--;
}

static enum dbconn_txn f_txn(const struct dbconn *c) { return FC(c)->txn; }
static int f_backend_pid(const struct dbconn *c) { (void)c; return 4242; }
static const char *f_last_error(const struct dbconn *c) { (void)c; return ""; }
static bool f_nonblocking(const struct dbconn *c) { (void)c; return false; }
static bool f_set_nonblocking(struct dbconn *c, bool on) { (void)c; (void)on; return true; }
static int f_socket(const struct dbconn *c) { (void)c; return -1; }
static const char *f_dbname(const struct dbconn *c) { (void)c; return "app"; }
static void f_address(const struct dbconn *c, char *buf, size_t n)
{
    (void)c;
    snprintf(buf, n, "::/app");
}
static bool f_pipelined(const struct dbconn *c) { (void)c; return false; }
static void f_fail(struct dbconn *c) { (void)c; }

static const struct dbconn_ops fake_ops = {
    .send = f_send, .next = f_next, .kind = f_kind, .nrows = f_nrows, .ncols = f_ncols,
    .value = f_value, .isnull = f_isnull, .sqlstate = f_sqlstate, .message = f_message,
    .free = f_free, .txn = f_txn, .backend_pid = f_backend_pid, .last_error = f_last_error,
    .nonblocking = f_nonblocking, .set_nonblocking = f_set_nonblocking, .socket = f_socket,
    .dbname = f_dbname, .address = f_address, .pipelined = f_pipelined, .fail = f_fail,
};

static struct dbconn *fake_init(struct fake *f, const struct step *script, int n,
                                enum dbconn_txn txn)
{
    *f = (struct fake){.base = {.ops = &fake_ops}, .script = script, .n = n, .res_at = -1,
                       .txn = txn};
    return &f->base;
}

/* Every message of the script was sent, and every result freed. */
static void fake_done(const struct fake *f)
{
    cr_assert_eq(f->at, f->n, "%d of %d messages sent", f->at, f->n);
    cr_assert_eq(f->outstanding, 0, "%d results not freed", f->outstanding);
}

#define N(a) ((int)(sizeof(a) / sizeof((a)[0])))
#define CMD {.kind = DBRES_COMMAND}
#define ONE(val) {.kind = DBRES_ROWS, .nrows = 1, .ncols = 1, .v = {{val}}}
#define ERR(state, text) {.kind = DBRES_ERROR, .sqlstate = state, .msg = text}

static struct config cfg_of(enum lock_mode mode)
{
    struct config cfg;
    config_defaults(&cfg);
    cfg.lock = mode;
    return cfg;
}

/* --- versions ------------------------------------------------------------------ */

Test(seam, versions_read_absent_table)
{
    static const struct step script[] = {
        {.has = {"SELECT CASE WHEN EXISTS", "c.relname = E'alembic_version'",
                 "query_to_xml(E'SELECT version_num AS v FROM \"alembic_version\"'"},
         .lacks = "SAVEPOINT", .res = {ONE(NULL)}, .nres = 1, .after = DBCONN_IDLE},
    };
    struct fake f;
    struct dbconn *c = fake_init(&f, script, N(script), DBCONN_IDLE);
    struct config cfg = cfg_of(LOCK_XACT);
    struct versions v;
    char err[256] = "";
    cr_assert(versions_read(c, &cfg, NULL, &v, err, sizeof err), "%s", err);
    cr_assert(!v.present);
    cr_assert_eq(v.n, 0);
    fake_done(&f);
}

Test(seam, versions_read_rows_in_a_transaction)
{
    /* inside the lock transaction: in a savepoint rolled back at once, the
     * answer the message's one row set */
    static const struct step script[] = {
        {.has = {"SAVEPOINT migshim_read; SELECT CASE WHEN EXISTS",
                 "; ROLLBACK TO SAVEPOINT migshim_read; RELEASE SAVEPOINT migshim_read"},
         .res = {CMD, ONE("<table><row><v>ae10</v></row><row><v>b&amp;2</v></row></table>"), CMD,
                 CMD},
         .nres = 4, .after = DBCONN_INTRANS},
    };
    struct fake f;
    struct dbconn *c = fake_init(&f, script, N(script), DBCONN_INTRANS);
    struct config cfg = cfg_of(LOCK_XACT);
    struct versions v;
    char err[256] = "";
    cr_assert(versions_read(c, &cfg, NULL, &v, err, sizeof err), "%s", err);
    cr_assert(v.present);
    cr_assert_eq(v.n, 2);
    cr_assert_str_eq(v.v[0], "ae10");
    cr_assert_str_eq(v.v[1], "b&2");
    fake_done(&f);
}

Test(seam, versions_read_failed_undoes_the_savepoint)
{
    static const struct step script[] = {
        {.has = {"SAVEPOINT migshim_read; SELECT CASE"},
         .res = {CMD, ERR("42501", "permission denied for table alembic_version")}, .nres = 2,
         .after = DBCONN_INERROR},
        {.exact = "ROLLBACK TO SAVEPOINT migshim_read; RELEASE SAVEPOINT migshim_read",
         .res = {CMD, CMD}, .nres = 2, .after = DBCONN_INTRANS},
    };
    struct fake f;
    struct dbconn *c = fake_init(&f, script, N(script), DBCONN_INTRANS);
    struct config cfg = cfg_of(LOCK_XACT);
    struct versions v;
    char err[256] = "";
    cr_assert(!versions_read(c, &cfg, NULL, &v, err, sizeof err));
    cr_assert_str_eq(err, "permission denied for table alembic_version");
    cr_assert(!v.present);
    fake_done(&f);
}

Test(seam, versions_read_the_tools_state)
{
    /* a tool's state expression (Django's) in place of the version table */
    static const struct step script[] = {
        {.exact = "SELECT 'the state'", .res = {ONE("<r><version_num>0002_x</version_num></r>")},
         .nres = 1, .after = DBCONN_IDLE},
    };
    struct fake f;
    struct dbconn *c = fake_init(&f, script, N(script), DBCONN_IDLE);
    struct config cfg = cfg_of(LOCK_XACT);
    struct versions v;
    char err[256] = "";
    cr_assert(versions_read(c, &cfg, "'the state'", &v, err, sizeof err), "%s", err);
    cr_assert(v.present);
    cr_assert_eq(v.n, 1);
    cr_assert_str_eq(v.v[0], "0002_x");
    fake_done(&f);
}

Test(seam, versions_read_idle_with_the_server_id)
{
    /* the gate's one round trip on the app's new connection: the table
     * and which server, database, schema and backend it reached */
    static const struct step script[] = {
        {.has = {"SELECT pg_catalog.table_to_xml(pg_catalog.to_regclass(E'\"alembic_version\"')",
                 "pg_catalog.current_database()", "a.attname = 'version_num'",
                 "pg_catalog.pg_backend_pid()"},
         .res = {{.kind = DBRES_ROWS, .nrows = 1, .ncols = 7,
                  .v = {{"<t><row><version_num>abc</version_num></row></t>", "app",
                         "2026-12-07 14:00:00+00", "f", "public", "t", "4242"}}}},
         .nres = 1, .after = DBCONN_IDLE},
        {.has = {"SELECT pg_catalog.table_to_xml("}, .lacks = "pg_backend_pid",
         .res = {ONE(NULL)}, .nres = 1, .after = DBCONN_IDLE},
    };
    struct fake f;
    struct dbconn *c = fake_init(&f, script, N(script), DBCONN_IDLE);
    struct config cfg = cfg_of(LOCK_XACT);
    struct versions v;
    struct server_id id;
    char err[256] = "";
    cr_assert(versions_read_idle(c, &cfg, NULL, &v, &id, err, sizeof err), "%s", err);
    cr_assert(v.present);
    cr_assert_eq(v.n, 1);
    cr_assert_str_eq(v.v[0], "abc");
    cr_assert_str_eq(id.db, "app");
    cr_assert_str_eq(id.cluster, "2026-12-07 14:00:00+00");
    cr_assert(!id.standby);
    cr_assert_str_eq(id.home, "public");
    cr_assert(id.vt_elsewhere);
    cr_assert_eq(id.backend_pid, 4242);
    cr_assert(versions_read_idle(c, &cfg, NULL, &v, NULL, err, sizeof err), "%s", err);
    cr_assert(!v.present);
    fake_done(&f);
}

Test(seam, versions_read_wrong_shape_is_a_failure)
{
    static const struct step script[] = {
        {.has = {"SELECT CASE WHEN EXISTS"}, .res = {CMD}, .nres = 1, .after = DBCONN_IDLE},
    };
    struct fake f;
    struct dbconn *c = fake_init(&f, script, N(script), DBCONN_IDLE);
    struct config cfg = cfg_of(LOCK_XACT);
    struct versions v;
    char err[256] = "";
    cr_assert(!versions_read(c, &cfg, NULL, &v, err, sizeof err));
    cr_assert_str_eq(err, "the connection was lost"); /* no server message, no client one */
    fake_done(&f);
}

/* --- lock_step ------------------------------------------------------------------ */

static int waits;
static void before_wait(void *arg)
{
    (void)arg;
    waits++;
}

#define TRY_XACT "BEGIN ISOLATION LEVEL READ COMMITTED; SELECT pg_catalog.pg_try_advisory_xact_lock(42)"
#define SLICE_HAS "SET LOCAL lock_timeout = '250ms'; DO $migshim$BEGIN PERFORM pg_catalog.pg_advisory_xact_lock_shared(42); "
#define XML_AB "<t><row><version_num>a</version_num></row><row><version_num>b</version_num></row></t>"

Test(seam, lock_step_taken)
{
    static const struct step script[] = {
        {.exact = TRY_XACT, .res = {CMD, ONE("t")}, .nres = 2, .after = DBCONN_INTRANS},
    };
    struct fake f;
    struct dbconn *c = fake_init(&f, script, N(script), DBCONN_IDLE);
    struct config cfg = cfg_of(LOCK_XACT);
    struct versions v;
    bool have_v = true;
    char err[256] = "";
    waits = 0;
    cr_assert_eq(lock_step(c, &cfg, NULL, 42, before_wait, NULL, &v, &have_v, err, sizeof err),
                 LOCK_TAKEN);
    cr_assert(!have_v);
    cr_assert_eq(waits, 0);
    cr_assert_eq(dbconn_txn(c), DBCONN_INTRANS); /* the lock transaction stays open */
    fake_done(&f);
}

/* A slice: the try said "f", the wait slice's five results with
 * try_shared's answer `shared`, the read's XML_AB. */
static enum lock_result slice(const char *shared, struct versions *v, bool *have_v)
{
    const struct step script[] = {
        {.exact = TRY_XACT, .res = {CMD, ONE("f")}, .nres = 2, .after = DBCONN_INTRANS},
        {.has = {SLICE_HAS, "SELECT pg_catalog.pg_try_advisory_xact_lock_shared(42); COMMIT; ",
                 "SELECT pg_catalog.table_to_xml("},
         .res = {CMD, CMD, ONE(shared), CMD, ONE(XML_AB)}, .nres = 5, .after = DBCONN_IDLE},
    };
    struct fake f;
    struct dbconn *c = fake_init(&f, script, N(script), DBCONN_IDLE);
    struct config cfg = cfg_of(LOCK_XACT);
    char err[256] = "";
    waits = 0;
    enum lock_result r = lock_step(c, &cfg, NULL, 42, before_wait, NULL, v, have_v, err,
                                   sizeof err);
    cr_assert_eq(waits, 1);
    fake_done(&f);
    return r;
}

Test(seam, lock_step_busy)
{
    struct versions v;
    bool have_v = false;
    cr_assert_eq(slice("f", &v, &have_v), LOCK_BUSY);
    cr_assert(have_v);
    cr_assert(v.present);
    cr_assert_eq(v.n, 2);
    cr_assert_str_eq(v.v[1], "b");
}

Test(seam, lock_step_freed)
{
    struct versions v;
    bool have_v = false;
    cr_assert_eq(slice("t", &v, &have_v), LOCK_FREED);
    cr_assert(have_v);
    cr_assert_str_eq(v.v[0], "a");
}

Test(seam, lock_step_session_mode_waits_in_a_transaction_of_its_own)
{
    static const struct step script[] = {
        {.exact = "SELECT pg_catalog.pg_try_advisory_lock(42)", .res = {ONE("f")}, .nres = 1,
         .after = DBCONN_IDLE},
        {.exact = "BEGIN ISOLATION LEVEL READ COMMITTED", .res = {CMD}, .nres = 1,
         .after = DBCONN_INTRANS},
        {.has = {SLICE_HAS}, .res = {CMD, CMD, ONE("f"), CMD, ONE(NULL)}, .nres = 5,
         .after = DBCONN_IDLE},
    };
    struct fake f;
    struct dbconn *c = fake_init(&f, script, N(script), DBCONN_IDLE);
    struct config cfg = cfg_of(LOCK_SESSION);
    struct versions v;
    bool have_v = false;
    char err[256] = "";
    cr_assert_eq(lock_step(c, &cfg, NULL, 42, NULL, NULL, &v, &have_v, err, sizeof err),
                 LOCK_BUSY);
    cr_assert(have_v);
    cr_assert(!v.present); /* the table absent: NULL */
    fake_done(&f);
}

Test(seam, lock_step_error_rolls_back)
{
    static const struct step script[] = {
        {.exact = TRY_XACT, .res = {CMD, ERR("57014", "canceling statement due to user request")},
         .nres = 2, .after = DBCONN_INERROR},
        {.exact = "ROLLBACK", .res = {CMD}, .nres = 1, .after = DBCONN_IDLE},
    };
    struct fake f;
    struct dbconn *c = fake_init(&f, script, N(script), DBCONN_IDLE);
    struct config cfg = cfg_of(LOCK_XACT);
    struct versions v;
    bool have_v = true;
    char err[256] = "";
    cr_assert_eq(lock_step(c, &cfg, NULL, 42, NULL, NULL, &v, &have_v, err, sizeof err),
                 LOCK_ERROR);
    cr_assert(!have_v);
    cr_assert_str_eq(err, "canceling statement due to user request");
    fake_done(&f);
}

Test(seam, lock_step_without_plpgsql_falls_back)
{
    /* the DO block refused (42704): busy this slice, the transaction
     * rolled back, and from then on the plain form */
    static const struct step script[] = {
        {.exact = TRY_XACT, .res = {CMD, ONE("f")}, .nres = 2, .after = DBCONN_INTRANS},
        {.has = {SLICE_HAS}, .res = {CMD, ERR("42704", "language \"plpgsql\" does not exist")},
         .nres = 2, .after = DBCONN_INERROR},
        {.exact = "ROLLBACK", .res = {CMD}, .nres = 1, .after = DBCONN_IDLE},
        {.exact = TRY_XACT, .res = {CMD, ONE("f")}, .nres = 2, .after = DBCONN_INTRANS},
        {.has = {"SET LOCAL lock_timeout = '250ms'; SELECT pg_catalog.pg_advisory_xact_lock_shared(42); COMMIT; "},
         .lacks = "DO $migshim$", .res = {CMD, ONE(""), CMD, ONE(XML_AB)}, .nres = 4,
         .after = DBCONN_IDLE},
    };
    struct fake f;
    struct dbconn *c = fake_init(&f, script, N(script), DBCONN_IDLE);
    struct config cfg = cfg_of(LOCK_XACT);
    struct versions v;
    bool have_v;
    char err[256] = "";
    cr_assert_eq(lock_step(c, &cfg, NULL, 42, NULL, NULL, &v, &have_v, err, sizeof err),
                 LOCK_BUSY);
    cr_assert(!have_v);
    cr_assert_eq(lock_step(c, &cfg, NULL, 42, NULL, NULL, &v, &have_v, err, sizeof err),
                 LOCK_FREED); /* without PL/pgSQL a slice that answered got the lock */
    cr_assert(have_v);
    fake_done(&f);
}

Test(seam, lock_release_and_limit)
{
    static const struct step script[] = {
        {.exact = "ROLLBACK", .res = {CMD}, .nres = 1, .after = DBCONN_IDLE},
        {.exact = "SELECT pg_catalog.pg_advisory_unlock(42)", .res = {ONE("t")}, .nres = 1,
         .after = DBCONN_IDLE},
        {.exact = "SET LOCAL idle_in_transaction_session_timeout = 2500", .res = {CMD}, .nres = 1,
         .after = DBCONN_INTRANS},
        {.exact = "SET idle_session_timeout = 0", .res = {ERR("42704", "unrecognized")},
         .nres = 1, .after = DBCONN_IDLE},
    };
    struct fake f;
    struct dbconn *c = fake_init(&f, script, N(script), DBCONN_INTRANS);
    cr_assert(lock_release(c, LOCK_XACT, 42));
    cr_assert(lock_release(c, LOCK_SESSION, 42));
    cr_assert(lock_limit_idle(c, LOCK_XACT, 2.5));
    cr_assert(!lock_limit_idle(c, LOCK_SESSION, 1e10)); /* beyond the range: 0; refused */
    fake_done(&f);
}

/* --- holder ---------------------------------------------------------------------- */

Test(seam, holder_state_parses_the_marks)
{
    static const struct step script[] = {
        {.has = {"a.application_name", "l.classid = 0::pg_catalog.oid AND l.objid = 42::pg_catalog.oid"},
         .res = {{.kind = DBRES_ROWS, .nrows = 1, .ncols = 2,
                  .v = {{"12.5", "migshim lock pid=7 migrating run=failed vt=\"Ops\".v"}}}},
         .nres = 1, .after = DBCONN_IDLE},
    };
    struct fake f;
    struct dbconn *c = fake_init(&f, script, N(script), DBCONN_IDLE);
    double idle = 0;
    bool migrating = false;
    struct holder_vt vt;
    enum holder_run run = HOLDER_RUN_GOING;
    cr_assert(holder_state_run(c, 42, &idle, &migrating, &vt, &run));
    cr_assert_float_eq(idle, 12.5, 1e-9);
    cr_assert(migrating);
    cr_assert_eq(run, HOLDER_RUN_FAILED);
    cr_assert(vt.known);
    cr_assert_str_eq(vt.schema, "Ops");
    cr_assert_str_eq(vt.table, "v");
    fake_done(&f);
}

Test(seam, holder_state_plain_and_nobody)
{
    static const struct step script[] = {
        {.has = {"a.application_name"},
         .res = {{.kind = DBRES_ROWS, .nrows = 1, .ncols = 2,
                  .v = {{"0.25", "migshim lock pid=7 host=h migratingx"}}}},
         .nres = 1, .after = DBCONN_IDLE},
        {.has = {"a.application_name"}, .res = {{.kind = DBRES_ROWS, .nrows = 0, .ncols = 2}},
         .nres = 1, .after = DBCONN_IDLE},
        {.has = {"a.pid, coalesce(pg_catalog.host(a.client_addr), 'local')"},
         .res = {ERR("57P01", "terminating connection")}, .nres = 1, .after = DBCONN_IDLE},
    };
    struct fake f;
    struct dbconn *c = fake_init(&f, script, N(script), DBCONN_IDLE);
    double idle = 0;
    bool migrating = true;
    struct holder_vt vt;
    enum holder_run run = HOLDER_RUN_FAILED;
    cr_assert(holder_state_run(c, 42, &idle, &migrating, &vt, &run));
    cr_assert(!migrating); /* "migratingx" is not the mark */
    cr_assert(!vt.known);
    cr_assert_eq(run, HOLDER_RUN_GOING);
    cr_assert(!holder_state(c, 42, &idle, &migrating, NULL)); /* nobody holds it */
    char buf[128];
    holder_describe(c, 42, buf, sizeof buf);
    cr_assert_str_eq(buf, "nobody (it was just released)");
    fake_done(&f);
}

Test(seam, holder_describe_someone)
{
    static const struct step script[] = {
        {.has = {"to_char(coalesce(a.xact_start, a.backend_start)"},
         .res = {{.kind = DBRES_ROWS, .nrows = 1, .ncols = 4,
                  .v = {{"123", "10.0.0.5", "migshim lock pid=7 host=h", "2026-12-07 14:00:01 UTC"}}}},
         .nres = 1, .after = DBCONN_IDLE},
    };
    struct fake f;
    struct dbconn *c = fake_init(&f, script, N(script), DBCONN_IDLE);
    char buf[256];
    holder_describe(c, 42, buf, sizeof buf);
    cr_assert_str_eq(buf, "backend pid 123 from 10.0.0.5, application_name 'migshim lock pid=7 "
                          "host=h', since 2026-12-07 14:00:01 UTC");
    fake_done(&f);
}

/* --- the seam's own helpers ------------------------------------------------------ */

Test(seam, exec_keeps_the_first_failure_else_the_last)
{
    /* PQexec's answer: the last result, or the failure that ended the message */
    static const struct step script[] = {
        {.exact = "SELECT 1; SELECT 2", .res = {ONE("1"), ONE("2")}, .nres = 2,
         .after = DBCONN_IDLE},
        {.exact = "BEGIN; SELECT x; SELECT 3",
         .res = {CMD, ERR("42703", "column \"x\" does not exist"), ERR("XX000", "later")},
         .nres = 3, .after = DBCONN_INERROR},
        {.exact = "ROLLBACK", .res = {CMD}, .nres = 1, .after = DBCONN_IDLE},
    };
    struct fake f;
    struct dbconn *c = fake_init(&f, script, N(script), DBCONN_IDLE);
    struct dbres *r = dbconn_exec(c, "SELECT 1; SELECT 2");
    cr_assert(dbres_is_value(c, r, "2"));
    dbres_free(c, r);
    r = dbconn_exec(c, "BEGIN; SELECT x; SELECT 3");
    cr_assert_eq(dbres_kind(c, r), DBRES_ERROR);
    cr_assert_str_eq(dbres_sqlstate(c, r), "42703");
    char err[64];
    dbconn_error(c, r, err, sizeof err);
    cr_assert_str_eq(err, "column \"x\" does not exist");
    dbres_free(c, r);
    cr_assert(dbconn_run_ok(c, "ROLLBACK"));
    fake_done(&f);
}

Test(seam, exec_reads_what_an_earlier_message_left)
{
    static const struct step script[] = {
        {.exact = "SELECT 1", .res = {ONE("1")}, .nres = 1, .after = DBCONN_IDLE},
        {.exact = "SELECT 2", .res = {ONE("2")}, .nres = 1, .after = DBCONN_IDLE},
    };
    struct fake f;
    struct dbconn *c = fake_init(&f, script, N(script), DBCONN_IDLE);
    cr_assert(dbconn_send(c, "SELECT 1")); /* its result left unread */
    struct dbres *r = dbconn_exec(c, "SELECT 2");
    cr_assert(dbres_is_value(c, r, "2"));
    dbres_free(c, r);
    fake_done(&f);
}
