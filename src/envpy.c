/*
 * envpy — see include/envpy.h.  A small Python tokenizer (names, strings
 * with their prefixes and triple quotes, comments, brackets, line numbers)
 * and two passes over its tokens: module-level string constants, then the
 * keyword arguments of every `configure(` call.  It guesses nothing: an
 * expression it does not recognise makes the argument unreadable.
 */
#include "envpy.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <string.h>

#include "ini.h"
#include "log.h"

enum ttype { T_END, T_NAME, T_STR, T_OP, T_OTHER };

struct tok {
    enum ttype type;
    const char *start;  /* in the text */
    size_t len;
    int line;
    bool line_start;    /* first token of a line, at column 0 */
    bool fstring;       /* T_STR: an f-string (not a constant) */
    char *str;          /* T_STR: the decoded value, malloc'ed (NULL if too long) */
};

struct toks {
    struct tok *v;
    size_t n, cap;
};

#define STR_MAX 1024
#define TOKS_MAX 200000 /* env.py is small; a huge file is read in part */

/* The token array lives outside malloc's heap, in an anonymous mapping
 * grown by mremap: read once at the first connection, a growing array
 * freed at the end left holes in the app's heap that libpq's per-result
 * block was then carved from on every statement (make bench, row 1c:
 * +209 instructions per statement of the app with the demo's 3.6 KiB
 * env.py). */
static bool push(struct toks *t, struct tok k)
{
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 256;
        if (cap > TOKS_MAX)
            return false;
        void *v = t->v ? mremap(t->v, t->cap * sizeof *t->v, cap * sizeof *t->v, MREMAP_MAYMOVE)
                       : mmap(NULL, cap * sizeof *t->v, PROT_READ | PROT_WRITE,
                              MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (v == MAP_FAILED)
            return false;
        t->v = v;
        t->cap = cap;
    }
    t->v[t->n++] = k;
    return true;
}

/* Give back the tokens' strings and the array of push. */
static void toks_free(struct toks *t)
{
    for (size_t i = 0; i < t->n; i++)
        free(t->v[i].str);
    if (t->v)
        munmap(t->v, t->cap * sizeof *t->v);
    t->v = NULL;
    t->n = t->cap = 0;
}

/* A string literal at p (after its prefix): returns the end, fills `k`. */
static const char *string_at(const char *p, bool raw, struct tok *k, int *line)
{
    char q = *p;
    bool triple = p[1] == q && p[2] == q;
    p += triple ? 3 : 1;
    char buf[STR_MAX];
    size_t n = 0;
    bool overflow = false;
    for (;;) {
        if (!*p)
            break;
        if (triple ? (p[0] == q && p[1] == q && p[2] == q) : *p == q) {
            p += triple ? 3 : 1;
            break;
        }
        if (*p == '\n') {
            (*line)++;
            if (!triple)
                break; /* unterminated: the line ends it */
        }
        char c = *p;
        if (c == '\\' && p[1]) {
            if (p[1] == '\n')
                (*line)++;
            if (raw) {
                if (n + 2 < sizeof buf) {
                    buf[n++] = c;
                    buf[n++] = p[1];
                } else {
                    overflow = true;
                }
                p += 2;
                continue;
            }
            c = p[1];
            switch (c) {
            case 'n': c = '\n'; break;
            case 't': c = '\t'; break;
            default: break;
            }
            p++;
        }
        if (n + 1 < sizeof buf)
            buf[n++] = c;
        else
            overflow = true;
        p++;
    }
    buf[n] = '\0';
    k->str = overflow ? NULL : strdup(buf);
    return p;
}

static void tokenize(const char *text, struct toks *out)
{
    const char *p = text;
    int line = 1;
    bool at_line_start = true;
    while (*p) {
        if (*p == '\n') {
            line++;
            p++;
            at_line_start = true;
            continue;
        }
        if (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\f') {
            at_line_start = false;
            p++;
            continue;
        }
        if (*p == '\\' && p[1] == '\n') { /* explicit line joining */
            line++;
            p += 2;
            continue;
        }
        if (*p == '#') {
            while (*p && *p != '\n')
                p++;
            continue;
        }
        struct tok k = {.start = p, .line = line, .line_start = at_line_start};
        at_line_start = false;
        /* a string, with an optional prefix of up to two letters */
        size_t pre = 0;
        while (pre < 2 && p[pre] && strchr("rRbBuUfF", p[pre]))
            pre++;
        if ((p[pre] == '\'' || p[pre] == '"') && (pre == 0 || !isalnum((unsigned char)p[pre]))) {
            bool raw = false, f = false;
            for (size_t i = 0; i < pre; i++) {
                raw |= p[i] == 'r' || p[i] == 'R';
                f |= p[i] == 'f' || p[i] == 'F';
            }
            k.type = T_STR;
            k.fstring = f;
            const char *end = string_at(p + pre, raw, &k, &line);
            k.len = (size_t)(end - p);
            p = end;
            if (!push(out, k)) {
                free(k.str);
                return;
            }
            continue;
        }
        if (isalpha((unsigned char)*p) || *p == '_' || (unsigned char)*p >= 0x80) {
            while (isalnum((unsigned char)*p) || *p == '_' || (unsigned char)*p >= 0x80)
                p++;
            k.type = T_NAME;
        } else if (strchr("()[]{},.=:*", *p)) {
            k.type = T_OP;
            /* == and := are not the = of a keyword argument or assignment */
            p += (p[1] == '=' && (*p == '=' || *p == ':' || *p == '!')) ? 2 : 1;
        } else {
            k.type = T_OTHER;
            p++;
        }
        k.len = (size_t)(p - k.start);
        if (!push(out, k))
            return;
    }
    push(out, (struct tok){.type = T_END, .start = p, .line = line});
}

static bool is_name(const struct tok *k, const char *name)
{
    return k->type == T_NAME && k->len == strlen(name) && strncmp(k->start, name, k->len) == 0;
}

static bool is_op(const struct tok *k, const char *op)
{
    return k->type == T_OP && k->len == strlen(op) && strncmp(k->start, op, k->len) == 0;
}

/* --- module-level constants ------------------------------------------------------ */

struct constant {
    const struct tok *name;
    const char *value;
};

#define CONSTANTS_MAX 64

/* NAME [: annotation] = "literal" at column 0, alone on its line. */
static size_t constants(const struct toks *t, struct constant *out)
{
    size_t n = 0;
    for (size_t i = 0; i + 2 < t->n && n < CONSTANTS_MAX; i++) {
        const struct tok *k = &t->v[i];
        if (!k->line_start || k->type != T_NAME)
            continue;
        size_t j = i + 1;
        if (is_op(&t->v[j], ":")) /* VERSION_TABLE: str = "..." */
            j += 2;
        if (j + 1 >= t->n || !is_op(&t->v[j], "="))
            continue;
        const struct tok *v = &t->v[j + 1];
        const struct tok *after = &t->v[j + 2 < t->n ? j + 2 : t->n - 1];
        if (v->type == T_STR && !v->fstring && v->str &&
            (after->type == T_END || after->line != v->line)) {
            /* a later assignment of the same name wins, as in Python */
            size_t m = 0;
            while (m < n && !(out[m].name->len == k->len &&
                              strncmp(out[m].name->start, k->start, k->len) == 0))
                m++;
            out[m] = (struct constant){k, v->str};
            if (m == n)
                n++;
        }
    }
    return n;
}

/* --- configure(...) keyword arguments ------------------------------------------------ */

static void set_value(struct envpy_arg *a, const char *v, int line, const char *how)
{
    a->state = ENVPY_VALUE;
    snprintf(a->value, sizeof a->value, "%s", v);
    a->line = line;
    snprintf(a->how, sizeof a->how, "%s", how);
    if (strlen(v) >= sizeof a->value) {
        a->state = ENVPY_UNREADABLE;
        snprintf(a->how, sizeof a->how, "a name longer than %zu bytes", sizeof a->value - 1);
    }
}

static void set_unreadable(struct envpy_arg *a, const struct tok *from, const struct tok *to)
{
    a->state = ENVPY_UNREADABLE;
    a->line = from->line;
    size_t len = (size_t)(to->start - from->start);
    if (len > 60)
        len = 60;
    size_t o = 0;
    for (size_t i = 0; i < len && o + 1 < sizeof a->how; i++) {
        char c = from->start[i];
        if (c == '\n' || c == '\t' || c == '\r')
            c = ' ';
        if ((unsigned char)c < 0x20 || c == 0x7f)
            c = '?';
        a->how[o++] = c;
    }
    a->how[o] = '\0';
}

/* The value tokens [v, end) of one keyword argument. */
static void argument(const struct tok *v, const struct tok *end, const struct constant *cs,
                     size_t ncs, const char *ini_text, struct envpy_arg *out)
{
    size_t n = (size_t)(end - v);
    struct envpy_arg a = {0};
    if (n >= 1 && v[0].type == T_STR) { /* "a" "b": adjacent literals join */
        char buf[2 * CONFIG_NAME_MAX] = "";
        size_t i = 0;
        bool fits = true;
        for (; i < n && v[i].type == T_STR && !v[i].fstring && v[i].str; i++) {
            fits = fits && strlen(buf) + strlen(v[i].str) < sizeof buf;
            if (fits)
                strcat(buf, v[i].str);
        }
        if (i == n && !fits) {
            a.state = ENVPY_UNREADABLE;
            a.line = v[0].line;
            snprintf(a.how, sizeof a.how, "a name longer than %d bytes", CONFIG_NAME_MAX - 1);
            goto done;
        }
        if (i == n) {
            set_value(&a, buf, v[0].line, "a literal");
            goto done;
        }
    } else if (n == 1 && is_name(&v[0], "None")) {
        a.state = ENVPY_NONE;
        a.line = v[0].line;
        goto done;
    } else if (n == 1 && v[0].type == T_NAME) {
        for (size_t i = 0; i < ncs; i++) {
            if (cs[i].name->len == v[0].len && strncmp(cs[i].name->start, v[0].start, v[0].len) == 0) {
                char how[80];
                snprintf(how, sizeof how, "%.*s", (int)v[0].len, v[0].start);
                set_value(&a, cs[i].value, v[0].line, how);
                goto done;
            }
        }
    } else if ((n == 6 || n == 8) && is_name(&v[0], "config") && is_op(&v[1], ".") &&
               is_name(&v[2], "get_main_option") && is_op(&v[3], "(") && v[4].type == T_STR &&
               v[4].str && !v[4].fstring && is_op(&v[n - 1], ")") &&
               (n == 6 || (is_op(&v[5], ",") && v[6].type == T_STR && v[6].str && !v[6].fstring))) {
        char how[80];
        snprintf(how, sizeof how, "get_main_option(\"%.40s\")", v[4].str);
        char *iv = ini_text ? ini_get(ini_text, "alembic", v[4].str) : NULL;
        if (iv && *iv)
            set_value(&a, iv, v[0].line, how);
        else if (n == 8)
            set_value(&a, v[6].str, v[0].line, how);
        else {
            a.state = ENVPY_NONE; /* get_main_option answers None */
            a.line = v[0].line;
        }
        free(iv);
        goto done;
    }
    set_unreadable(&a, v, end);
done:
    /* several configure() calls: they must agree */
    if (out->state == ENVPY_ABSENT)
        *out = a;
    else if (out->state != a.state ||
             (a.state == ENVPY_VALUE && strcmp(out->value, a.value) != 0)) {
        out->state = ENVPY_UNREADABLE;
        out->line = a.line;
        snprintf(out->how, sizeof out->how, "configure() calls that disagree");
    }
}

void envpy_read(const char *text, const char *ini_text, struct envpy_vt *out)
{
    memset(out, 0, sizeof *out);
    if (!text)
        return;
    struct toks t = {0};
    tokenize(text, &t);
    if (!t.n || t.v[t.n - 1].type != T_END)
        push(&t, (struct tok){.type = T_END, .start = text + strlen(text)});
    if (t.v && t.v[t.n - 1].type == T_END) {
        struct constant cs[CONSTANTS_MAX];
        size_t ncs = constants(&t, cs);
        for (size_t i = 1; i + 1 < t.n; i++) {
            if (!is_name(&t.v[i], "configure") || !is_op(&t.v[i - 1], ".") ||
                !is_op(&t.v[i + 1], "("))
                continue;
            /* the call's arguments: split at commas of depth 1 */
            int depth = 0;
            size_t arg = i + 2;
            for (size_t j = i + 1; j < t.n && t.v[j].type != T_END; j++) {
                const struct tok *k = &t.v[j];
                if (is_op(k, "(") || is_op(k, "[") || is_op(k, "{")) {
                    depth++;
                    continue;
                }
                bool close = is_op(k, ")") || is_op(k, "]") || is_op(k, "}");
                if (close)
                    depth--;
                if ((close && depth == 0) || (depth == 1 && is_op(k, ","))) {
                    /* one argument: t.v[arg .. j) */
                    if (j >= arg + 3 && t.v[arg].type == T_NAME && is_op(&t.v[arg + 1], "=")) {
                        struct envpy_arg *a = is_name(&t.v[arg], "version_table") ? &out->table
                                            : is_name(&t.v[arg], "version_table_schema")
                                                ? &out->schema
                                                : NULL;
                        if (a)
                            argument(&t.v[arg + 2], k, cs, ncs, ini_text, a);
                    }
                    arg = j + 1;
                }
                if (close && depth == 0)
                    break;
            }
        }
    }
    toks_free(&t);
}

static void apply_one(struct config *cfg, const char *key, char *field, size_t fieldsz,
                      const struct envpy_arg *a, const char *path)
{
    int i = config_key_index(key);
    if (i < 0 || a->state == ENVPY_ABSENT)
        return;
    if (cfg->source[i] != CFG_DEFAULT) {
        if (a->state == ENVPY_VALUE && strcmp(field, a->value) != 0)
            log_debug("%s:%d sets %s \"%s\"; migshim's own setting \"%s\" wins", path, a->line,
                      key, a->value, field);
        return;
    }
    switch (a->state) {
    case ENVPY_VALUE:
        snprintf(field, fieldsz, "%s", a->value);
        cfg->source[i] = CFG_ENV_PY;
        log_debug("%s \"%s\" from %s:%d (%s)", key, a->value, path, a->line, a->how);
        break;
    case ENVPY_UNREADABLE:
        log_warn("%s:%d: %s is set by an expression migshim cannot read (%s); set MIGSHIM_%s "
                 "(or %s in migshim.conf) to the name it gives", path, a->line, key, a->how,
                 strcmp(key, "version_table") == 0 ? "VERSION_TABLE" : "VERSION_TABLE_SCHEMA",
                 key);
        break;
    default: break; /* None: Alembic's default */
    }
}

void envpy_apply(struct config *cfg, const struct envpy_vt *vt, const char *path)
{
    apply_one(cfg, "version_table", cfg->version_table, sizeof cfg->version_table, &vt->table,
              path);
    apply_one(cfg, "version_table_schema", cfg->version_table_schema,
              sizeof cfg->version_table_schema, &vt->schema, path);
}
