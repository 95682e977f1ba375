/*
 * sqlclass — see include/sqlclass.h.  A small tokenizer over a bounded
 * prefix of the text; statements are recognised by their leading keywords
 * only, which is all the version-table statements Alembic sends need.
 */
#include "sqlclass.h"

#include <ctype.h>
#include <string.h>
#include <strings.h>

static bool ident_char(unsigned char c) { return isalnum(c) || c == '_' || c == '$' || c >= 0x80; }
static bool ident_start(unsigned char c) { return isalpha(c) || c == '_' || c >= 0x80; }

/* Does the whole word `name` (n bytes, no NUL) start at sql[i]?  A match
 * may run past the scanned prefix: the text is NUL-terminated. */
static bool word_at(const char *sql, size_t i, const char *name, size_t n)
{
    return (i == 0 || !ident_char((unsigned char)sql[i - 1])) &&
           strncasecmp(sql + i, name, n) == 0 && !ident_char((unsigned char)sql[i + n]);
}

bool sqlclass_mentions(const char *sql, const char *name)
{
    if (!sql || !name || !*name)
        return false;
    /* A '"' in the name is doubled inside a quoted identifier: too rare to
     * match exactly; over-matching is the safe side. */
    if (strchr(name, '"'))
        return true;
    size_t n = strlen(name);
    size_t len = strnlen(sql, SQLCLASS_SCAN_MAX);
    /* Anchor on the name's first byte that is not a letter (the '_' of
     * alembic_version): case does not apply to it, so memchr finds its few
     * occurrences at memory speed, where a byte-by-byte case-folding scan
     * costs a few instructions per byte of a multi-megabyte INSERT. */
    size_t off = 0;
    while (name[off] && isalpha((unsigned char)name[off]))
        off++;
    if (name[off]) {
        const char *end = sql + len;
        for (const char *p = sql + off; p < end; p++) {
            p = memchr(p, name[off], (size_t)(end - p));
            if (!p)
                return false;
            if (word_at(sql, (size_t)(p - sql) - off, name, n))
                return true;
        }
        return false;
    }
    unsigned char first = (unsigned char)tolower((unsigned char)name[0]);
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)tolower((unsigned char)sql[i]) == first && word_at(sql, i, name, n))
            return true;
    return false;
}

const char *sqlclass_kind_name(enum sql_kind kind)
{
    static const char *const names[] = {"other", "CREATE TABLE", "INSERT", "UPDATE", "DELETE"};
    return names[kind];
}

/* --- tokens ------------------------------------------------------------------ */

enum tok_type { T_END, T_WORD, T_QIDENT, T_STRING, T_PUNCT };

struct lexer {
    const char *s;
    size_t i, end;
};

struct token {
    enum tok_type type;
    char text[128]; /* WORD: lower-cased; QIDENT/STRING: unescaped; PUNCT: the char */
    bool too_long;
};

static void put_char(struct token *t, size_t *n, char c)
{
    if (*n + 1 < sizeof t->text)
        t->text[(*n)++] = c;
    else
        t->too_long = true;
}

/* Skip white space and comments. */
static void skip_space(struct lexer *lx)
{
    for (;;) {
        while (lx->i < lx->end && isspace((unsigned char)lx->s[lx->i]))
            lx->i++;
        if (lx->i + 1 < lx->end && lx->s[lx->i] == '-' && lx->s[lx->i + 1] == '-') {
            while (lx->i < lx->end && lx->s[lx->i] != '\n')
                lx->i++;
            continue;
        }
        if (lx->i + 1 < lx->end && lx->s[lx->i] == '/' && lx->s[lx->i + 1] == '*') {
            int depth = 0;
            while (lx->i < lx->end) { /* block comments nest in PostgreSQL */
                if (lx->i + 1 < lx->end && lx->s[lx->i] == '/' && lx->s[lx->i + 1] == '*') {
                    depth++;
                    lx->i += 2;
                } else if (lx->i + 1 < lx->end && lx->s[lx->i] == '*' && lx->s[lx->i + 1] == '/') {
                    lx->i += 2;
                    if (--depth == 0)
                        break;
                } else {
                    lx->i++;
                }
            }
            continue;
        }
        return;
    }
}

/* A quoted run ending in `q`, doubled `q` standing for itself; with
 * `backslash`, \x escapes too (E'' strings). */
static void quoted(struct lexer *lx, struct token *t, char q, bool backslash)
{
    size_t n = 0;
    lx->i++; /* opening quote */
    while (lx->i < lx->end) {
        char c = lx->s[lx->i];
        if (backslash && c == '\\' && lx->i + 1 < lx->end) {
            put_char(t, &n, lx->s[lx->i + 1]);
            lx->i += 2;
            continue;
        }
        if (c == q) {
            if (lx->i + 1 < lx->end && lx->s[lx->i + 1] == q) {
                put_char(t, &n, q);
                lx->i += 2;
                continue;
            }
            lx->i++;
            break;
        }
        put_char(t, &n, c);
        lx->i++;
    }
    t->text[n] = '\0';
}

/* $tag$ ... $tag$ */
static bool dollar_quoted(struct lexer *lx, struct token *t)
{
    size_t j = lx->i + 1;
    while (j < lx->end && (ident_char((unsigned char)lx->s[j]) && lx->s[j] != '$'))
        j++;
    if (j >= lx->end || lx->s[j] != '$')
        return false;
    size_t taglen = j + 1 - lx->i;
    const char *tag = lx->s + lx->i;
    size_t body = j + 1, n = 0;
    for (size_t k = body; k + taglen <= lx->end; k++) {
        if (lx->s[k] == '$' && strncmp(lx->s + k, tag, taglen) == 0) {
            t->type = T_STRING;
            t->text[0] = '\0';
            for (size_t m = body; m < k; m++)
                put_char(t, &n, lx->s[m]);
            t->text[n] = '\0';
            lx->i = k + taglen;
            return true;
        }
    }
    lx->i = lx->end; /* unterminated: the rest is inside it */
    t->type = T_STRING;
    t->text[0] = '\0';
    return true;
}

static void next(struct lexer *lx, struct token *t)
{
    memset(t, 0, sizeof *t);
    skip_space(lx);
    if (lx->i >= lx->end) {
        t->type = T_END;
        return;
    }
    unsigned char c = (unsigned char)lx->s[lx->i];
    if ((c == 'e' || c == 'E') && lx->i + 1 < lx->end && lx->s[lx->i + 1] == '\'') {
        lx->i++;
        t->type = T_STRING;
        quoted(lx, t, '\'', true);
        return;
    }
    if (ident_start(c)) {
        size_t n = 0;
        while (lx->i < lx->end && ident_char((unsigned char)lx->s[lx->i]))
            put_char(t, &n, (char)tolower((unsigned char)lx->s[lx->i++]));
        t->text[n] = '\0';
        t->type = T_WORD;
        return;
    }
    if (c == '"') {
        t->type = T_QIDENT;
        quoted(lx, t, '"', false);
        return;
    }
    if (c == '\'') {
        t->type = T_STRING;
        quoted(lx, t, '\'', false);
        return;
    }
    if (c == '$' && dollar_quoted(lx, t))
        return;
    t->type = T_PUNCT;
    t->text[0] = (char)c;
    lx->i++;
}

static bool is_word(const struct token *t, const char *w)
{
    return t->type == T_WORD && strcmp(t->text, w) == 0;
}

/* Does the (already lexed) name token equal `want`?  Unquoted names were
 * folded to lower case, so they match only a lower-case `want`. */
static bool name_eq(const struct token *t, const char *want)
{
    return (t->type == T_WORD || t->type == T_QIDENT) && !t->too_long && strcmp(t->text, want) == 0;
}

/* Parse [schema.]table at the lexer and compare it. */
static bool target_matches(struct lexer *lx, struct token *t, const char *schema, const char *table)
{
    struct token first = *t;
    if (first.type != T_WORD && first.type != T_QIDENT)
        return false;
    size_t save = lx->i;
    struct token dot;
    next(lx, &dot);
    if (dot.type == T_PUNCT && dot.text[0] == '.') {
        struct token second;
        next(lx, &second);
        if (!name_eq(&second, table))
            return false;
        return !schema || !*schema || name_eq(&first, schema);
    }
    lx->i = save;
    return name_eq(&first, table);
}

/* Skip to the end of the current statement (a ';' outside quotes). */
static void skip_statement(struct lexer *lx, struct token *t)
{
    while (t->type != T_END && !(t->type == T_PUNCT && t->text[0] == ';'))
        next(lx, t);
}

static enum sql_kind statement(struct lexer *lx, struct token *t, const char *schema,
                               const char *table, char *value, size_t valsz)
{
    if (is_word(t, "create")) {
        next(lx, t);
        if (is_word(t, "global") || is_word(t, "local"))
            next(lx, t);
        if (is_word(t, "temp") || is_word(t, "temporary") || is_word(t, "unlogged"))
            next(lx, t);
        if (!is_word(t, "table"))
            return SQL_OTHER;
        next(lx, t);
        if (is_word(t, "if")) {
            next(lx, t); /* not */
            next(lx, t); /* exists */
            next(lx, t);
        }
        return target_matches(lx, t, schema, table) ? SQL_CREATE_TABLE : SQL_OTHER;
    }
    if (is_word(t, "insert")) {
        next(lx, t);
        if (!is_word(t, "into"))
            return SQL_OTHER;
        next(lx, t);
        if (!target_matches(lx, t, schema, table))
            return SQL_OTHER;
        /* the first string literal after VALUES ( */
        for (next(lx, t); t->type != T_END && !(t->type == T_PUNCT && t->text[0] == ';');
             next(lx, t)) {
            if (is_word(t, "values")) {
                next(lx, t);
                if (t->type == T_PUNCT && t->text[0] == '(') {
                    next(lx, t);
                    if (t->type == T_STRING && !t->too_long && strlen(t->text) < valsz)
                        strcpy(value, t->text);
                }
                break;
            }
        }
        return SQL_INSERT;
    }
    if (is_word(t, "update")) {
        next(lx, t);
        if (is_word(t, "only"))
            next(lx, t);
        return target_matches(lx, t, schema, table) ? SQL_UPDATE : SQL_OTHER;
    }
    if (is_word(t, "delete")) {
        next(lx, t);
        if (!is_word(t, "from"))
            return SQL_OTHER;
        next(lx, t);
        if (is_word(t, "only"))
            next(lx, t);
        return target_matches(lx, t, schema, table) ? SQL_DELETE : SQL_OTHER;
    }
    return SQL_OTHER;
}

void sqlclass_classify(const char *sql, const char *schema, const char *table,
                       struct sqlclass *out)
{
    memset(out, 0, sizeof *out);
    if (!sql || !table)
        return;
    size_t len = strnlen(sql, SQLCLASS_SCAN_MAX + 1);
    struct lexer lx = {sql, 0, len > SQLCLASS_SCAN_MAX ? SQLCLASS_SCAN_MAX : len};
    out->truncated = len > SQLCLASS_SCAN_MAX;
    struct token t;
    next(&lx, &t);
    while (t.type != T_END) {
        if (t.type == T_PUNCT && t.text[0] == ';') {
            next(&lx, &t);
            continue;
        }
        out->nstatements++;
        char value[sizeof out->value] = "";
        enum sql_kind k = statement(&lx, &t, schema, table, value, sizeof value);
        if (k != SQL_OTHER && out->kind == SQL_OTHER) {
            out->kind = k;
            memcpy(out->value, value, sizeof value);
        }
        skip_statement(&lx, &t);
    }
}
