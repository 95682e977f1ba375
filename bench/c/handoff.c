/*
 * handoff — the hand-off: one holder holds the migration lock while N
 * processes wait; it commits; every waiter records when it woke.
 *
 *   handoff holder --conninfo CI --n N --key K --from V1 --to V2 --mode shim|bare
 *                  [--lib PATH] [--timeout S] [--settle S]
 *   handoff waiter MODE CONNINFO KEY RESULT_FD GO_FD      (started by the holder)
 *
 * The holder (never preloaded) resets the version table to V1, then in one
 * transaction takes pg_advisory_xact_lock(K) and writes V2 — exactly what a
 * leading migration does — and starts N waiters:
 *
 *   shim  each waiter runs with LD_PRELOAD=PATH (MIGSHIM_HEADS=V2 and
 *         MIGSHIM_LOCK_KEY=K come from the environment the holder was given)
 *         and calls PQconnectdb: the gate finds the database behind and waits.
 *         Its time is when PQconnectdb returned.
 *   bare  the floor: a plain libpq process, already connected, blocks in
 *         SELECT pg_advisory_xact_lock_shared(K).  Its time is when that
 *         statement returned.
 *
 * Once pg_locks shows all N waiting on K (and --settle seconds more, 0.2 by
 * default, for the start-up storm to die down), the holder records CLOCK_REALTIME,
 * sends COMMIT, records it again when COMMIT returned, and collects the
 * waiters' CLOCK_REALTIME stamps through a pipe.  It also counts the
 * waiters' server connections while they wait (all N waiting) and after
 * every waiter returned (the gate done), before letting them exit.
 *
 * Output (stdout):
 *   trial mode=M n=N t_before=S t_after=S during=C after=C ready_s=S commit_ms=F
 *         complete=0|1 lines=N
 *   waiter pid=P t=S ok=0|1 conn_ms=F           (N lines)
 */
#include <errno.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"

extern char **environ;

static void die(const char *what, PGconn *pg)
{
    fprintf(stderr, "handoff: %s: %s", what, pg ? PQerrorMessage(pg) : "\n");
    exit(1);
}

static PGconn *connect_or_die(const char *ci)
{
    PGconn *pg = PQconnectdb(ci);
    if (PQstatus(pg) != CONNECTION_OK)
        die("connect", pg);
    return pg;
}

static void exec_ok(PGconn *pg, const char *sql)
{
    PGresult *r = PQexec(pg, sql);
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        fprintf(stderr, "handoff: %s: %s", sql, PQerrorMessage(pg));
        exit(1);
    }
    PQclear(r);
}

static long query_long(PGconn *pg, const char *sql)
{
    PGresult *r = PQexec(pg, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
        fprintf(stderr, "handoff: %s: %s", sql, PQerrorMessage(pg));
        exit(1);
    }
    long v = atol(PQgetvalue(r, 0, 0));
    PQclear(r);
    return v;
}

static void quiet(void *arg, const char *msg)
{
    (void)arg;
    (void)msg;
}

/* --- the waiter ------------------------------------------------------------- */

static int waiter(int argc, char **argv)
{
    if (argc != 7)
        return 2;
    const char *mode = argv[2], *ci = argv[3], *key = argv[4];
    int rfd = atoi(argv[5]), gfd = atoi(argv[6]);
    char line[256];
    int ok = 0;
    double t, conn_ms;
    PGconn *pg;
    if (strcmp(mode, "shim") == 0) {
        double t0 = mono_s();
        pg = PQconnectdb(ci); /* the gate waits in here */
        t = real_s();
        conn_ms = (mono_s() - t0) * 1e3;
        ok = PQstatus(pg) == CONNECTION_OK;
    } else {
        double t0 = mono_s();
        pg = PQconnectdb(ci);
        conn_ms = (mono_s() - t0) * 1e3;
        char sql[128];
        snprintf(sql, sizeof sql, "SELECT pg_catalog.pg_advisory_xact_lock_shared(%s)", key);
        PGresult *r = PQexec(pg, sql); /* blocks until the holder commits */
        t = real_s();
        ok = PQresultStatus(r) == PGRES_TUPLES_OK;
        PQclear(r);
    }
    int n = snprintf(line, sizeof line, "waiter pid=%d t=%.6f ok=%d conn_ms=%.3f\n", (int)getpid(),
                     t, ok, conn_ms);
    if (write(rfd, line, (size_t)n) != n)
        return 1;
    close(rfd);
    char b;
    while (read(gfd, &b, 1) > 0) /* until the holder closes it */
        ;
    PQfinish(pg);
    return ok ? 0 : 1;
}

/* --- the holder ------------------------------------------------------------- */

static const char *opt(int argc, char **argv, const char *name, const char *def)
{
    for (int i = 2; i + 1 < argc; i++)
        if (strcmp(argv[i], name) == 0)
            return argv[i + 1];
    if (!def) {
        fprintf(stderr, "handoff: %s is required\n", name);
        exit(2);
    }
    return def;
}

static int holder(int argc, char **argv)
{
    const char *ci = opt(argc, argv, "--conninfo", NULL);
    int n = atoi(opt(argc, argv, "--n", NULL));
    long long key = atoll(opt(argc, argv, "--key", NULL));
    const char *from = opt(argc, argv, "--from", NULL), *to = opt(argc, argv, "--to", NULL);
    const char *mode = opt(argc, argv, "--mode", NULL);
    const char *lib = opt(argc, argv, "--lib", "");
    double timeout = atof(opt(argc, argv, "--timeout", "60"));
    double settle = atof(opt(argc, argv, "--settle", "0.2"));
    bool shim = strcmp(mode, "shim") == 0;
    if (n <= 0 || (shim && !lib[0])) {
        fprintf(stderr, "handoff: bad arguments\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);

    PGconn *mon = connect_or_die(ci), *hold = connect_or_die(ci);
    PQsetNoticeProcessor(mon, quiet, NULL);
    char sql[512];
    /* the database behind: version V1, committed */
    exec_ok(mon, "CREATE TABLE IF NOT EXISTS alembic_version (version_num varchar(32) NOT NULL PRIMARY KEY)");
    snprintf(sql, sizeof sql, "BEGIN; DELETE FROM alembic_version; INSERT INTO alembic_version VALUES ('%s'); COMMIT", from);
    exec_ok(mon, sql);
    /* the leader: lock + the version write, uncommitted */
    exec_ok(hold, "BEGIN");
    snprintf(sql, sizeof sql, "SELECT pg_catalog.pg_advisory_xact_lock(%lld)", key);
    exec_ok(hold, sql);
    snprintf(sql, sizeof sql, "UPDATE alembic_version SET version_num = '%s'", to);
    exec_ok(hold, sql);
    int others[2] = {PQbackendPID(mon), PQbackendPID(hold)};

    int res[2], go[2];
    if (pipe(res) || pipe(go))
        die("pipe", NULL);
    fcntl(res[0], F_SETFD, FD_CLOEXEC);
    fcntl(go[1], F_SETFD, FD_CLOEXEC);

    /* the waiters' environment: ours, plus the preload for shim waiters */
    size_t ne = 0;
    while (environ[ne])
        ne++;
    char **env = calloc(ne + 2, sizeof *env);
    size_t k = 0;
    for (size_t i = 0; i < ne; i++)
        if (strncmp(environ[i], "LD_PRELOAD=", 11) != 0)
            env[k++] = environ[i];
    char preload[4200];
    if (shim) {
        snprintf(preload, sizeof preload, "LD_PRELOAD=%s", lib);
        env[k++] = preload;
    }
    env[k] = NULL;

    char wci[2048], keys[32], rfds[16], gfds[16], self[4096];
    snprintf(wci, sizeof wci, "%s application_name=handoff_waiter", ci);
    snprintf(keys, sizeof keys, "%lld", key);
    snprintf(rfds, sizeof rfds, "%d", res[1]);
    snprintf(gfds, sizeof gfds, "%d", go[0]);
    ssize_t sl = readlink("/proc/self/exe", self, sizeof self - 1);
    if (sl <= 0)
        die("readlink /proc/self/exe", NULL);
    self[sl] = '\0';

    pid_t *pids = calloc((size_t)n, sizeof *pids);
    for (int i = 0; i < n; i++) {
        pid_t p = fork();
        if (p < 0)
            die("fork", NULL);
        if (p == 0) {
            char *av[] = {self, (char *)"waiter", (char *)mode, wci, keys, rfds, gfds, NULL};
            execve(self, av, env);
            _exit(127);
        }
        pids[i] = p;
    }
    close(res[1]);
    close(go[0]);

    /* all N waiting on the key? */
    uint64_t u = (uint64_t)key;
    char waiting_sql[512], conns_sql[512];
    snprintf(waiting_sql, sizeof waiting_sql,
             "SELECT count(*) FROM pg_catalog.pg_locks WHERE locktype = 'advisory' AND NOT granted "
             "AND database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database()) "
             "AND classid = %llu AND objid = %llu AND objsubid = 1",
             (unsigned long long)(u >> 32), (unsigned long long)(u & 0xffffffffu));
    snprintf(conns_sql, sizeof conns_sql,
             "SELECT count(*) FROM pg_catalog.pg_stat_activity WHERE datname = current_database() "
             "AND backend_type = 'client backend' AND pid NOT IN (%d, %d)",
             others[0], others[1]);
    double t0 = mono_s();
    int complete = 0;
    long during = -1;
    while (mono_s() - t0 < timeout) {
        if (query_long(mon, waiting_sql) >= n) {
            during = query_long(mon, conns_sql);
            complete = 1;
            break;
        }
        usleep(2000);
    }
    double ready_s = mono_s() - t0;
    if (!complete)
        during = query_long(mon, conns_sql);
    /* let the start-up storm die down: every waiter is now blocked */
    if (settle > 0)
        usleep((useconds_t)(settle * 1e6));

    double t_before = real_s();
    exec_ok(hold, "COMMIT");
    double t_after = real_s();

    /* collect the N stamps */
    char *buf = calloc((size_t)n + 1, 256);
    size_t len = 0, cap = ((size_t)n + 1) * 256;
    int lines = 0;
    double deadline = mono_s() + timeout;
    while (lines < n && mono_s() < deadline) {
        struct pollfd pf = {res[0], POLLIN, 0};
        if (poll(&pf, 1, 200) <= 0)
            continue;
        ssize_t r = read(res[0], buf + len, cap - len - 1);
        if (r <= 0)
            break;
        for (ssize_t i = 0; i < r; i++)
            lines += buf[len + (size_t)i] == '\n';
        len += (size_t)r;
    }
    buf[len] = '\0';

    /* connections after the gate: each waiter back to its one connection */
    long after = -1;
    double t_settle = mono_s();
    do {
        after = query_long(mon, conns_sql);
        if (after <= n)
            break;
        usleep(10000);
    } while (mono_s() - t_settle < 3.0);

    close(go[1]);
    for (int i = 0; i < n; i++) {
        int st;
        while (waitpid(pids[i], &st, 0) < 0 && errno == EINTR)
            ;
    }
    printf("trial mode=%s n=%d t_before=%.6f t_after=%.6f during=%ld after=%ld ready_s=%.3f "
           "commit_ms=%.3f complete=%d lines=%d\n",
           mode, n, t_before, t_after, during, after, ready_s, (t_after - t_before) * 1e3, complete,
           lines);
    fputs(buf, stdout);
    PQfinish(hold);
    PQfinish(mon);
    return lines == n ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "waiter") == 0)
        return waiter(argc, argv);
    if (argc >= 2 && strcmp(argv[1], "holder") == 0)
        return holder(argc, argv);
    fprintf(stderr, "usage: %s holder --conninfo CI --n N --key K --from V1 --to V2 --mode shim|bare "
                    "[--lib PATH] [--timeout S]\n", argv[0]);
    return 2;
}
