/*
 * two_copies_helper MODULE — one process, two libpq copies.
 *
 * Links the system libpq; dlopen()s MODULE (libcopymod.so, linked against
 * libpqcopy.so.5) with RTLD_LOCAL|RTLD_NOW.  test_two_copies runs it with
 * and without LD_PRELOAD=libmigshim.so and reads:
 *   stdout  one "name: value" line per query result
 *   stderr  "helper: <step>" markers around each call, interleaved with the
 *           shim's own lines (both written unbuffered to fd 2, so the order
 *           in the file is the order of the calls)
 * Exit status 0 when every step worked, else 2..9 naming the failed step.
 */
#include <dlfcn.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void step(const char *what)
{
    dprintf(STDERR_FILENO, "helper: %s\n", what);
}

static int show(const char *name, PGconn *conn, PGresult *r)
{
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1 || PQnfields(r) != 1) {
        dprintf(STDERR_FILENO, "helper: %s failed: %s", name, PQerrorMessage(conn));
        PQclear(r);
        return 0;
    }
    printf("%s: %s\n", name, PQgetvalue(r, 0, 0));
    fflush(stdout);
    PQclear(r);
    return 1;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s MODULE\n", argv[0]);
        return 1;
    }

    step("sys connect");
    PGconn *sys = PQconnectdb("application_name=sysconn");
    if (PQstatus(sys) != CONNECTION_OK) {
        dprintf(STDERR_FILENO, "helper: sys connect failed: %s", PQerrorMessage(sys));
        return 2;
    }
    step("sys exec");
    if (!show("sys", sys, PQexec(sys, "SELECT 40 + 2")))
        return 3;

    step("dlopen");
    void *h = dlopen(argv[1], RTLD_LOCAL | RTLD_NOW);
    if (!h) {
        dprintf(STDERR_FILENO, "helper: dlopen failed: %s\n", dlerror());
        return 4;
    }
    PGconn *(*mod_connect)(const char *);
    PGresult *(*mod_exec)(PGconn *, const char *);
    *(void **)&mod_connect = dlsym(h, "copymod_connect");
    *(void **)&mod_exec = dlsym(h, "copymod_exec");
    if (!mod_connect || !mod_exec) {
        dprintf(STDERR_FILENO, "helper: dlsym failed\n");
        return 5;
    }

    step("mod connect");
    PGconn *mod = mod_connect("application_name=modconn");
    if (!mod || PQstatus(mod) != CONNECTION_OK) {
        dprintf(STDERR_FILENO, "helper: mod connect failed: %s", mod ? PQerrorMessage(mod) : "NULL\n");
        return 6;
    }
    step("mod exec");
    if (!show("mod", mod, mod_exec(mod, "SELECT current_setting('application_name')")))
        return 7;

    step("cross exec");
    if (!show("cross", mod,
              PQexec(mod, "SELECT current_setting('application_name') || ' via main'")))
        return 8;
    step("sys exec again");
    if (!show("sys2", sys, PQexec(sys, "SELECT current_setting('application_name')")))
        return 9;

    step("finish mod");
    PQfinish(mod);
    step("finish sys");
    PQfinish(sys);
    step("done");
    return 0;
}
