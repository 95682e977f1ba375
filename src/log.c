/*
 * log — see include/log.h.  Formatting happens into a stack buffer and goes
 * out in one write(2); the level is a plain int read without locking (it is
 * set once, before any other thread can reach the shim's decisions).
 */
#include "log.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

static int log_threshold = LOG_LVL_INFO;
static bool log_silent;

static const char *const level_names[] = {"error", "warn", "info", "debug"};

void log_set_level(enum log_level level) { log_threshold = (int)level; }
void log_set_silent(bool silent) { log_silent = silent; }

bool log_enabled(enum log_level level)
{
    return !log_silent && (int)level <= log_threshold;
}

bool log_level_parse(const char *s, enum log_level *out)
{
    for (int i = 0; i <= LOG_LVL_DEBUG; i++) {
        if (strcasecmp(s, level_names[i]) == 0) {
            *out = (enum log_level)i;
            return true;
        }
    }
    return false;
}

void log_msg(enum log_level level, const char *fmt, ...)
{
    if (!log_enabled(level))
        return;
    int saved = errno;
    char buf[1024];
    int n = snprintf(buf, sizeof buf, "migshim[%ld]: %s: ", (long)getpid(),
                     level_names[level]);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(buf + n, sizeof buf - (size_t)n - 1, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof buf - 2)
        len = sizeof buf - 2;
    for (size_t i = (size_t)n; i < len; i++)
        if (buf[i] == '\n' || buf[i] == '\r')
            buf[i] = ' ';
    buf[len++] = '\n';
    for (size_t off = 0; off < len;) {
        ssize_t w = write(STDERR_FILENO, buf + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break;
        off += (size_t)w;
    }
    errno = saved;
}

/* --- redaction ----------------------------------------------------------- */

struct outbuf {
    char *p;
    size_t n, cap;
};

static void out_mem(struct outbuf *o, const char *s, size_t len)
{
    while (len-- && o->n + 1 < o->cap)
        o->p[o->n++] = *s++;
    o->p[o->n] = '\0';
}

static void out_str(struct outbuf *o, const char *s) { out_mem(o, s, strlen(s)); }

static bool is_uri(const char *s)
{
    return strncmp(s, "postgresql://", 13) == 0 || strncmp(s, "postgres://", 11) == 0;
}

/* True when a keyword names a secret: it contains "password" in any case
 * (password, sslpassword, and anything malformed around them: redacting
 * too much is harmless, too little is not).  `decode`: the keyword is a URI
 * query keyword, which libpq percent-decodes. */
static bool is_secret_key(const char *k, size_t len, bool decode)
{
    char key[256];
    size_t n = 0;
    for (size_t i = 0; i < len && n + 1 < sizeof key; i++) {
        int c = (unsigned char)k[i];
        if (decode && c == '%' && i + 2 < len && isxdigit((unsigned char)k[i + 1]) &&
            isxdigit((unsigned char)k[i + 2])) {
            char hex[3] = {k[i + 1], k[i + 2], 0};
            c = (int)strtol(hex, NULL, 16);
            i += 2;
        }
        key[n++] = (char)tolower(c);
    }
    key[n] = '\0';
    return strstr(key, "password") != NULL;
}

/* URI: scheme://[user[:password]@]hosts[/db][?k=v&...]  libpq takes the
 * user info up to the first '@' before the first '/' ('?' and '#' may
 * stand in a password); we redact from the first ':' up to the *last* '@'
 * before that '/', so a raw '@' in a password leaks nothing either. */
static void redact_uri(const char *s, struct outbuf *o)
{
    const char *auth = strstr(s, "://") + 3;
    out_mem(o, s, (size_t)(auth - s));
    const char *slash = auth + strcspn(auth, "/");
    const char *at = NULL;
    for (const char *p = auth; p < slash; p++)
        if (*p == '@')
            at = p;
    const char *p = auth;
    if (at) {
        const char *colon = memchr(auth, ':', (size_t)(at - auth));
        if (colon) {
            out_mem(o, auth, (size_t)(colon - auth));
            out_str(o, ":***");
            p = at;
        }
    }
    /* rest: copy, but redact the value of any password query parameter */
    const char *q = strchr(at ? at : p, '?');
    if (!q) {
        out_str(o, p);
        return;
    }
    out_mem(o, p, (size_t)(q + 1 - p));
    for (const char *k = q + 1; *k;) {
        size_t plen = strcspn(k, "&");
        const char *eq = memchr(k, '=', plen);
        if (eq && is_secret_key(k, (size_t)(eq - k), true)) {
            out_mem(o, k, (size_t)(eq + 1 - k));
            out_str(o, "***");
        } else {
            out_mem(o, k, plen);
        }
        k += plen;
        if (*k == '&') {
            out_str(o, "&");
            k++;
        }
    }
}

/* Keyword form, tokenised the way libpq's conninfo_parse does it:
 * key [ws] = [ws] (bare value up to white space | 'quoted \' value'). */
static void redact_keywords(const char *s, struct outbuf *o)
{
    const char *p = s;
    while (*p) {
        const char *ws = p;
        while (isspace((unsigned char)*p))
            p++;
        out_mem(o, ws, (size_t)(p - ws));
        if (!*p)
            break;
        const char *key = p;
        while (*p && *p != '=' && !isspace((unsigned char)*p))
            p++;
        size_t klen = (size_t)(p - key);
        while (isspace((unsigned char)*p))
            p++;
        if (*p != '=') { /* malformed: copy the rest verbatim */
            out_mem(o, key, (size_t)(p - key));
            continue;
        }
        p++;
        while (isspace((unsigned char)*p))
            p++;
        const char *val = p;
        if (*p == '\'') {
            p++;
            while (*p && *p != '\'') {
                if (*p == '\\' && p[1])
                    p++;
                p++;
            }
            if (*p == '\'')
                p++;
        } else {
            while (*p && !isspace((unsigned char)*p)) {
                if (*p == '\\' && p[1])
                    p++;
                p++;
            }
        }
        bool secret = is_secret_key(key, klen, false);
        out_mem(o, key, klen);
        out_str(o, "=");
        if (secret)
            out_str(o, "***");
        else
            out_mem(o, val, (size_t)(p - val));
    }
}

char *log_redact_conninfo(const char *in, char *out, size_t outsz)
{
    if (outsz == 0)
        return out;
    struct outbuf o = {out, 0, outsz};
    out[0] = '\0';
    if (!in)
        return out;
    if (is_uri(in))
        redact_uri(in, &o);
    else
        redact_keywords(in, &o);
    return out;
}
