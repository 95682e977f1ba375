/*
 * pgsql — see include/pgsql.h.  The quoting the lock, versions and holder
 * modules share to build their own statements.
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
