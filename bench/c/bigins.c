/*
 * bigins — big statements through PQexec: an INSERT of SIZE bytes of text,
 * REPS times, each timed (a TRUNCATE, untimed, after each).
 *
 *   bigins CONNINFO SIZE REPS TABLE
 *
 * The table (v text, STORAGE EXTERNAL: no compression, so the server's own
 * work is as small as it gets and client-side costs show) must exist.
 * Prints one "us=<wall> cpu_us=<this process's CPU>" line per repetition: the
 * CPU time (CLOCK_PROCESS_CPUTIME_ID) is the client side alone, what a
 * preloaded shim can add, free of the server's noise.
 */
#include <libpq-fe.h>

#include "common.h"

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: %s CONNINFO SIZE REPS TABLE\n", argv[0]);
        return 2;
    }
    size_t size = (size_t)atol(argv[2]);
    long reps = atol(argv[3]);
    const char *table = argv[4];
    PGconn *pg = PQconnectdb(argv[1]);
    if (PQstatus(pg) != CONNECTION_OK) {
        fprintf(stderr, "bigins: %s", PQerrorMessage(pg));
        return 1;
    }
    char head[256], trunc[256];
    int hl = snprintf(head, sizeof head, "INSERT INTO %s (v) VALUES ('", table);
    snprintf(trunc, sizeof trunc, "TRUNCATE %s", table);
    char *sql = malloc((size_t)hl + size + 4);
    if (!sql)
        return 1;
    memcpy(sql, head, (size_t)hl);
    unsigned x = 12345; /* letters, not one repeated byte: nothing to shortcut */
    for (size_t i = 0; i < size; i++) {
        x = x * 1103515245u + 12345u;
        sql[hl + i] = (char)('a' + (x >> 16) % 26);
    }
    memcpy(sql + hl + size, "')", 3);
    for (long i = 0; i < reps; i++) {
        double c0 = cpu_s(), t0 = mono_s();
        PGresult *r = PQexec(pg, sql);
        double t1 = mono_s(), c1 = cpu_s();
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            fprintf(stderr, "bigins: %s", PQerrorMessage(pg));
            return 1;
        }
        PQclear(r);
        printf("us=%.1f cpu_us=%.1f\n", (t1 - t0) * 1e6, (c1 - c0) * 1e6);
        r = PQexec(pg, trunc);
        PQclear(r);
    }
    free(sql);
    PQfinish(pg);
    return 0;
}
