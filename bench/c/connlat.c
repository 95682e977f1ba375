/*
 * connlat — one process's first connection: PQconnectdb until it returns
 * CONNECTION_OK (with the shim preloaded, that includes the gate's
 * decision), and the process's resident set size right after it.
 *
 *   connlat CONNINFO
 *
 * Prints "latency_us=<float> rss_kb=<n> hwm_kb=<n>".  One process per
 * sample: the gate decides once per (process, database).
 */
#include <libpq-fe.h>

#include "common.h"

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s CONNINFO\n", argv[0]);
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
    PQfinish(pg);
    printf("latency_us=%.1f rss_kb=%ld hwm_kb=%ld\n", (t1 - t0) * 1e6, rss, hwm);
    return 0;
}
