/*
 * sqlclass — see include/sqlclass.h.
 */
#include "sqlclass.h"

#include <ctype.h>
#include <string.h>
#include <strings.h>

static bool ident_char(unsigned char c) { return isalnum(c) || c == '_' || c == '$' || c >= 0x80; }

bool sqlclass_mentions(const char *sql, const char *name)
{
    if (!sql || !name || !*name)
        return false;
    size_t n = strlen(name);
    unsigned char first = (unsigned char)tolower((unsigned char)name[0]);
    for (size_t i = 0; i < SQLCLASS_SCAN_MAX && sql[i]; i++) {
        if ((unsigned char)tolower((unsigned char)sql[i]) != first)
            continue;
        if (i > 0 && ident_char((unsigned char)sql[i - 1]))
            continue;
        if (strncasecmp(sql + i, name, n) != 0)
            continue;
        if (!ident_char((unsigned char)sql[i + n]))
            return true;
    }
    return false;
}
