/*
 * pgsql — see include/pgsql.h.  The helpers the lock, versions, holder and
 * peer modules share to build and run their own statements.
 */
#include "pgsql.h"

#include <assert.h>
#include <stdio.h>
#include <string.h>

void pgsql_quote_ident(const char *name, char *out, size_t n)
{
    assert(name && (out || n == 0));
    size_t o = 0;
    if (n < 3) {
        if (n)
            out[0] = '\0';
        return;
    }
    out[o++] = '"';
    for (const char *p = name; *p && o + 3 < n; p++) {
        if (*p == '"')
            out[o++] = '"';
        out[o++] = *p;
    }
    out[o++] = '"';
    out[o] = '\0';
}

void pgsql_quote_literal(const char *text, char *out, size_t n)
{
    assert(text && (out || n == 0));
    size_t o = 0;
    if (n < 4) {
        if (n)
            out[0] = '\0';
        return;
    }
    out[o++] = 'E';
    out[o++] = '\'';
    for (const char *p = text; *p && o + 3 < n; p++) {
        if (*p == '\'' || *p == '\\')
            out[o++] = *p;
        out[o++] = *p;
    }
    out[o++] = '\'';
    out[o] = '\0';
}

/* The first line of `msg` (NULL: "") into err. */
static void first_line(const char *msg, char *err, size_t errsz)
{
    if (!msg)
        msg = "";
    snprintf(err, errsz, "%.*s", (int)strcspn(msg, "\n"), msg);
}

void pgsql_error_text(const struct pq_api *pq, PGconn *c, const PGresult *r, char *err,
                      size_t errsz)
{
    assert(pq && err && errsz > 0);
    const char *m = r ? pq->PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    first_line(m && *m ? m : pq->PQerrorMessage(c), err, errsz);
    if (!err[0])
        snprintf(err, errsz, "the connection was lost");
}

bool pgsql_run_ok(const struct pq_api *pq, PGconn *c, const char *sql)
{
    assert(pq && sql);
    PGresult *r = pq->PQexec(c, sql);
    bool ok = r && (pq->PQresultStatus(r) == PGRES_COMMAND_OK ||
                    pq->PQresultStatus(r) == PGRES_TUPLES_OK);
    if (r)
        pq->PQclear(r);
    return ok;
}
