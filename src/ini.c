/*
 * ini — see include/ini.h.  One pass over the text, line by line; nothing
 * is kept between calls.
 */
#include "ini.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

char *ini_get(const char *text, const char *section, const char *key)
{
    bool in = false;
    bool cont = false; /* indented lines continue the value of `key` */
    char *val = NULL;
    for (const char *p = text; *p;) {
        const char *eol = p + strcspn(p, "\n");
        size_t len = (size_t)(eol - p);
        const char *s = p;
        while (s < eol && (*s == ' ' || *s == '\t'))
            s++;
        bool indented = s > p;
        if (s < eol && *s == '[') {
            const char *c = memchr(s, ']', (size_t)(eol - s));
            in = c && (size_t)(c - s - 1) == strlen(section) && strncmp(s + 1, section, strlen(section)) == 0;
            cont = false;
        } else if (in && cont && val && indented && s < eol && *s != '#' && *s != ';') {
            size_t old = strlen(val), add = (size_t)(eol - s);
            char *nv = realloc(val, old + add + 2);
            if (nv) {
                val = nv;
                val[old] = '\n';
                memcpy(val + old + 1, s, add);
                val[old + 1 + add] = '\0';
            }
        } else if (in && !indented && s < eol && *s != '#' && *s != ';') {
            size_t klen = strcspn(s, "=:\n");
            const char *ke = s + klen;
            while (ke > s && (ke[-1] == ' ' || ke[-1] == '\t'))
                ke--;
            if (s + klen < eol && (size_t)(ke - s) == strlen(key) && strncmp(s, key, strlen(key)) == 0) {
                const char *v = s + klen + 1;
                while (v < eol && (*v == ' ' || *v == '\t'))
                    v++;
                const char *ve = eol;
                while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t' || ve[-1] == '\r'))
                    ve--;
                free(val);
                val = strndup(v, (size_t)(ve - v));
                cont = true;
            } else {
                cont = false; /* a different key: its continuation lines are its own */
            }
        }
        (void)len;
        p = *eol ? eol + 1 : eol;
    }
    return val;
}
