/*
 * libcopymod.so — a module linked against a second copy of libpq
 * (DT_NEEDED libpqcopy.so.5, RUNPATH $ORIGIN), like a Python extension that
 * bundles its own libpq.  two_copies_helper dlopen()s it RTLD_LOCAL.
 *
 * Its query goes through PQexecParams, not PQexec, so that the first
 * PQexec to reach libpqcopy.so.5 is the main program's call on this
 * module's connection: the shim's "(first call)" line then proves that
 * call was routed to the copy that made the connection.
 *
 * No call here may be a tail call: the shim tells the module apart from its
 * caller by the return address, and `return PQconnectdb(...)` compiled as
 * a jump would leave the helper's own return address on the stack.  The
 * volatile counter after each call keeps it a real call at any -O.
 */
#include <libpq-fe.h>

#define EXPORT __attribute__((visibility("default")))

static volatile int calls;

EXPORT PGconn *copymod_connect(const char *conninfo);
EXPORT PGresult *copymod_exec(PGconn *conn, const char *query);

PGconn *copymod_connect(const char *conninfo)
{
    PGconn *c = PQconnectdb(conninfo);
    calls++;
    return c;
}

PGresult *copymod_exec(PGconn *conn, const char *query)
{
    PGresult *r = PQexecParams(conn, query, 0, NULL, NULL, NULL, NULL, 0);
    calls++;
    return r;
}
