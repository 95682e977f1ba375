/*
 * connlat — one process's first connection: PQconnectdb until it returns
 * CONNECTION_OK (with the shim preloaded, that includes the gate's
 * decision), and the process's resident set size right after it.
 *
 *   connlat CONNINFO [SQL...]
 *
 * Prints "latency_us=<float> rss_kb=<n> hwm_kb=<n>", and with SQL
 * statements "then_us=<float>": from the start until they all returned
 * (the app's own first work on the connection, which pays the same
 * catalog-cache warm-up of a fresh backend that the gate's read does).
 * One process per sample: the gate decides once per (process, database).
 */
#include <libpq-fe.h>

#include "common.h"

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s CONNINFO [SQL...]\n", argv[0]);
        return 2;
    }
    double t0 = mono_s();
    PGconn *pg = PQconnectdb(argv[1]);
    double t1 = mono_s();
    if (PQstatus(pg) != CONNECTION_OK) {
        fprintf(stderr, "connlat: %s", PQerrorMessage(pg));
        return 1;
    }
    long rss = proc_status_kb("VmRSS"), hwm = proc_status_kb("VmHWM");
    for (int i = 2; i < argc; i++) {
        PGresult *r = PQexec(pg, argv[i]);
        ExecStatusType st = PQresultStatus(r);
        if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
            fprintf(stderr, "connlat: %s: %s", argv[i], PQerrorMessage(pg));
            return 1;
        }
        PQclear(r);
    }
    double t2 = mono_s();
    PQfinish(pg);
    printf("latency_us=%.1f rss_kb=%ld hwm_kb=%ld", (t1 - t0) * 1e6, rss, hwm);
    if (argc > 2)
        printf(" then_us=%.1f", (t2 - t0) * 1e6);
    printf("\n");
    return 0;
}
