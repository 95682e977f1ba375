/*
 * selectloop — the steady-state statement path: PQexec("SELECT 1") in a loop
 * on one connection whose gate has already decided.
 *
 *   selectloop CONNINFO ITERATIONS [WARMUP]
 *
 * Prints "ns_per_call=<float> cpu_ns_per_call=<float> iterations=N": wall time
 * and this process's CPU time (CLOCK_PROCESS_CPUTIME_ID), i.e. the client
 * side alone, which is all a preloaded shim can add.  The timed loop is its own
 * noinline function, bench_loop(), so callgrind can collect exactly it
 * (--collect-atstart=no --toggle-collect=bench_loop).
 */
#include <libpq-fe.h>

#include "common.h"

__attribute__((noinline)) static long bench_loop(PGconn *pg, long n)
{
    long bad = 0;
    for (long i = 0; i < n; i++) {
        PGresult *r = PQexec(pg, "SELECT 1");
        if (PQresultStatus(r) != PGRES_TUPLES_OK)
            bad++;
        PQclear(r);
    }
    return bad;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s CONNINFO ITERATIONS [WARMUP]\n", argv[0]);
        return 2;
    }
    long n = atol(argv[2]), warm = argc > 3 ? atol(argv[3]) : 200;
    PGconn *pg = PQconnectdb(argv[1]);
    if (PQstatus(pg) != CONNECTION_OK) {
        fprintf(stderr, "selectloop: %s", PQerrorMessage(pg));
        return 1;
    }
    if (bench_loop(pg, warm)) {
        fprintf(stderr, "selectloop: warm-up failed: %s", PQerrorMessage(pg));
        return 1;
    }
    double c0 = cpu_s(), t0 = mono_s();
    long bad = bench_loop(pg, n);
    double t1 = mono_s(), c1 = cpu_s();
    PQfinish(pg);
    if (bad) {
        fprintf(stderr, "selectloop: %ld failed statements\n", bad);
        return 1;
    }
    printf("ns_per_call=%.1f cpu_ns_per_call=%.1f iterations=%ld\n", (t1 - t0) * 1e9 / (double)n,
           (c1 - c0) * 1e9 / (double)n, n);
    return 0;
}
