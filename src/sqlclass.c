/*
 * sqlclass — see include/sqlclass.h.  A small tokenizer over a bounded
 * prefix of the text; statements are recognised by their leading keywords
 * only, which is all the version-table statements Alembic sends need.
 */
#include "sqlclass.h"

#include <ctype.h>
#include <stdio.h>
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

void sqlclass_name_init(struct sqlclass_name *nm, const char *name)
{
    nm->name = name ? name : "";
    nm->n = strlen(nm->name);
    /* A '"' in the name is doubled inside a quoted identifier: too rare to
     * match exactly; over-matching is the safe side. */
    nm->quoted = strchr(nm->name, '"') != NULL;
    nm->shortest = nm->quoted ? 0 : nm->n;
    /* Anchor on the name's first byte that is not a letter (the '_' of
     * alembic_version): case does not apply to it, so memchr finds its few
     * occurrences at memory speed, where a byte-by-byte case-folding scan
     * costs a few instructions per byte of a multi-megabyte INSERT. */
    nm->off = 0;
    while (nm->name[nm->off] && isalpha((unsigned char)nm->name[nm->off]))
        nm->off++;
}

bool sqlclass_mentions_name_len(const char *sql, size_t len, const struct sqlclass_name *nm)
{
    if (!sql || !nm->n)
        return false;
    if (nm->quoted)
        return true;
    if (len < nm->n)
        return false;
    const char *name = nm->name;
    size_t n = nm->n, off = nm->off;
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

bool sqlclass_mentions_name(const char *sql, const struct sqlclass_name *nm)
{
    return sql && sqlclass_mentions_name_len(sql, strnlen(sql, SQLCLASS_SCAN_MAX), nm);
}

bool sqlclass_mentions(const char *sql, const char *name)
{
    if (!name)
        return false;
    struct sqlclass_name nm;
    sqlclass_name_init(&nm, name);
    return sqlclass_mentions_name(sql, &nm);
}

const char *sqlclass_kind_name(enum sql_kind kind)
{
    static const char *const names[] = {"other", "CREATE TABLE", "SELECT", "SELECT", "INSERT",
                                        "UPDATE", "DELETE"};
    return names[kind];
}

/* --- tokens ------------------------------------------------------------------ */

enum tok_type { T_END, T_WORD, T_QIDENT, T_STRING, T_PARAM, T_PUNCT };

struct lexer {
    const char *s;
    size_t i, end;
};

struct token {
    enum tok_type type;
    char text[128]; /* WORD: lower-cased; QIDENT/STRING: unescaped; PUNCT: the char */
    bool too_long;
    int param;      /* PARAM: n of $n */
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
    if (c == '$' && lx->i + 1 < lx->end && isdigit((unsigned char)lx->s[lx->i + 1])) {
        t->type = T_PARAM;
        lx->i++;
        while (lx->i < lx->end && isdigit((unsigned char)lx->s[lx->i])) {
            if (t->param < 100000)
                t->param = t->param * 10 + (lx->s[lx->i] - '0');
            lx->i++;
        }
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

static bool is_punct(const struct token *t, char c) { return t->type == T_PUNCT && t->text[0] == c; }

/* The text ends here: nothing but ';'s follow.  Consumes nothing. */
static bool at_end(struct lexer *lx, const struct token *t)
{
    struct lexer l = *lx;
    struct token u = *t;
    while (is_punct(&u, ';'))
        next(&l, &u);
    return u.type == T_END;
}

/* Expect the word `w` and step past it. */
static bool eat(struct lexer *lx, struct token *t, const char *w)
{
    if (!is_word(t, w))
        return false;
    next(lx, t);
    return true;
}

static bool eat_punct(struct lexer *lx, struct token *t, char c)
{
    if (!is_punct(t, c))
        return false;
    next(lx, t);
    return true;
}

/* [schema.]table matching the version table, then step past it. */
static bool eat_vt(struct lexer *lx, struct token *t, const char *schema, const char *table)
{
    if (!target_matches(lx, t, schema, table))
        return false;
    next(lx, t);
    return true;
}

/* [schema.]<vt>.version_num: a column reference qualified by the table. */
static bool eat_vt_column(struct lexer *lx, struct token *t, const char *schema, const char *table)
{
    /* up to three names joined by dots; the last is version_num, the rest the table */
    struct token names[3];
    size_t n = 0;
    for (;;) {
        if ((t->type != T_WORD && t->type != T_QIDENT) || t->too_long || n == 3)
            return false;
        names[n++] = *t;
        next(lx, t);
        if (!is_punct(t, '.'))
            break;
        next(lx, t);
    }
    if (n < 2 || !name_eq(&names[n - 1], "version_num") || !name_eq(&names[n - 2], table))
        return false;
    return n == 2 || !schema || !*schema || name_eq(&names[0], schema);
}

/* 'literal' or $n, with an optional ::varchar / ::character varying cast. */
static bool eat_value(struct lexer *lx, struct token *t, struct sqlval *v)
{
    memset(v, 0, sizeof *v);
    if (t->type == T_STRING && !t->too_long && strlen(t->text) < sizeof v->text)
        strcpy(v->text, t->text);
    else if (t->type == T_PARAM && t->param > 0)
        v->param = t->param;
    else
        return false;
    next(lx, t);
    if (is_punct(t, ':')) {
        next(lx, t);
        if (!eat_punct(lx, t, ':'))
            return false;
        if (eat(lx, t, "character"))
            return eat(lx, t, "varying");
        if (!eat(lx, t, "varchar") && !eat(lx, t, "text"))
            return false;
    }
    return true;
}

/* --- probes --------------------------------------------------------------------
 *
 * The words a read-only probe may use: what SQLAlchemy 1.4 and 2.x send
 * to initialise a dialect and for has_table (through psycopg2, with
 * literals, and psycopg 3, with parameters), psycopg2's hstore lookup,
 * psycopg 3's TypeInfo fetch, and a pool's ping ("SELECT 1").  It is an
 * allowlist: keywords that cannot write, the catalog tables and columns
 * those statements read, and the built-in functions they call, each of
 * which only reads.  A statement made of these words, literals,
 * parameters and punctuation reads catalogs and nothing else; any other
 * word (a function of the app's, a table of its own, INTO, FOR UPDATE, a
 * quoted name) makes it something else.
 */
static const char *const probe_words[] = {
    /* keywords */
    "select", "from", "join", "inner", "left", "outer", "on", "where", "and", "or", "not", "as",
    "cast", "any", "array", "is", "null", "in", "order", "by", "asc", "desc", "limit", "true",
    "false", "distinct", "character", "varying",
    /* catalogs, their columns, the aliases SQLAlchemy and the drivers give them */
    "pg_catalog", "pg_class", "pg_namespace", "pg_type", "relname", "relnamespace", "relkind",
    "oid", "nspname", "typname", "typnamespace", "typarray", "typdelim", "c", "n", "t", "ns",
    "anon_1", "name", "array_oid", "delimiter",
    /* types of casts */
    "varchar", "text", "regtype", "integer", "int", "int4", "bool", "boolean",
    /* built-in functions that only read */
    "version", "current_schema", "pg_table_is_visible", "to_regtype", NULL};

static bool probe_token(const struct token *t)
{
    switch (t->type) {
    case T_STRING:
    case T_PARAM: return true;
    case T_PUNCT: /* digits, casts, comparisons, lists; never ';' inside */
        return strchr("0123456789.,()[]=<>!:*", t->text[0]) != NULL;
    case T_WORD:
        if (t->too_long)
            return false;
        for (const char *const *w = probe_words; *w; w++)
            if (strcmp(t->text, *w) == 0)
                return true;
        return false;
    default: return false;
    }
}

/* psycopg 3 wraps its own start-up lookups in SAVEPOINT "_pg3_<n>" and
 * RELEASE "_pg3_<n>": a savepoint of that name, quoted as psycopg quotes it. */
static bool pg3_savepoint(const struct token *t)
{
    if (t->type != T_QIDENT || t->too_long || strncmp(t->text, "_pg3_", 5) != 0 || !t->text[5])
        return false;
    for (const char *p = t->text + 5; *p; p++)
        if (!isdigit((unsigned char)*p))
            return false;
    return true;
}

static void lexer_init(struct lexer *lx, const char *sql, bool *truncated);

/* Start lexing `sql` as a whole (NULL, or longer than the scan limit:
 * false, nothing is guessed), the lexer at its first token. */
static bool lex_whole(const char *sql, struct lexer *lx, struct token *t)
{
    bool truncated;
    if (!sql)
        return false;
    lexer_init(lx, sql, &truncated);
    if (truncated)
        return false;
    next(lx, t);
    return true;
}

bool sqlclass_probe(const char *sql)
{
    struct lexer lx;
    struct token t;
    if (!lex_whole(sql, &lx, &t))
        return false;
    if (eat(&lx, &t, "show")) { /* SHOW reads one setting: nothing else */
        if (t.type != T_WORD)
            return false;
        for (; t.type == T_WORD; next(&lx, &t))
            ;
        return at_end(&lx, &t);
    }
    if (eat(&lx, &t, "savepoint") || (eat(&lx, &t, "release") && (eat(&lx, &t, "savepoint"), true))) {
        if (!pg3_savepoint(&t))
            return false;
        next(&lx, &t);
        return at_end(&lx, &t);
    }
    if (!eat(&lx, &t, "select"))
        return false;
    for (; t.type != T_END && !is_punct(&t, ';'); next(&lx, &t))
        if (!probe_token(&t))
            return false;
    return at_end(&lx, &t);
}

bool sqlclass_begin(const char *sql)
{
    struct lexer lx;
    struct token t;
    if (!lex_whole(sql, &lx, &t))
        return false;
    if (eat(&lx, &t, "start")) {
        if (!eat(&lx, &t, "transaction"))
            return false;
    } else if (eat(&lx, &t, "begin")) {
        if (!eat(&lx, &t, "work"))
            eat(&lx, &t, "transaction");
    } else {
        return false;
    }
    /* transaction modes: ISOLATION LEVEL ..., READ WRITE|ONLY, [NOT] DEFERRABLE */
    static const char *const modes[] = {"isolation", "level",     "serializable", "repeatable",
                                        "read",      "committed", "uncommitted",  "write",
                                        "only",      "not",       "deferrable",   NULL};
    for (; t.type != T_END && !is_punct(&t, ';'); next(&lx, &t)) {
        if (is_punct(&t, ','))
            continue;
        bool ok = false;
        for (const char *const *m = modes; *m && !ok; m++)
            ok = is_word(&t, *m);
        if (!ok)
            return false;
    }
    return at_end(&lx, &t);
}

/* One statement in Alembic's shape (see enum sql_kind), the lexer at its
 * first token; on a match the statement must also end the text. */
static enum sql_kind alembic_shape(struct lexer *lx, struct token *t, const char *schema,
                                   const char *table, struct sqlclass *c)
{
    if (eat(lx, t, "create")) {
        /* the rest of the definition is Alembic's; its first column names it */
        return eat(lx, t, "table") && eat_vt(lx, t, schema, table) && eat_punct(lx, t, '(') &&
                       name_eq(t, "version_num")
                   ? SQL_VT_CREATE
                   : SQL_OTHER;
    }
    if (eat(lx, t, "select")) {
        struct lexer save = *lx;
        struct token first = *t;
        if (eat_vt_column(lx, t, schema, table) && eat(lx, t, "from") &&
            eat_vt(lx, t, schema, table) && at_end(lx, t))
            return SQL_VT_READ;
        /* has_table: a probe (only catalog words) of pg_class naming the
         * table as a literal, or comparing relname to a parameter (its
         * value, which the caller checks, in c->value) */
        *lx = save;
        *t = first;
        bool catalog = false, named = false;
        struct token prev2 = {0}, prev = {0};
        for (; t->type != T_END && !is_punct(t, ';'); next(lx, t)) {
            if (!probe_token(t))
                return SQL_OTHER;
            catalog |= is_word(t, "pg_class");
            named |= t->type == T_STRING && !t->too_long && strcmp(t->text, table) == 0;
            if (t->type == T_PARAM && t->param > 0 && is_punct(&prev, '=') &&
                is_word(&prev2, "relname") && !c->value.param) {
                c->value.param = t->param;
                named = true;
            }
            prev2 = prev;
            prev = *t;
        }
        return catalog && named && at_end(lx, t) ? SQL_VT_EXISTS : SQL_OTHER;
    }
    if (eat(lx, t, "insert")) {
        if (!(eat(lx, t, "into") && eat_vt(lx, t, schema, table) && eat_punct(lx, t, '(') &&
              name_eq(t, "version_num")))
            return SQL_OTHER;
        next(lx, t);
        if (!(eat_punct(lx, t, ')') && eat(lx, t, "values") && eat_punct(lx, t, '(') &&
              eat_value(lx, t, &c->value) && eat_punct(lx, t, ')')))
            return SQL_OTHER;
        if (eat(lx, t, "returning")) {
            if (!eat_vt_column(lx, t, schema, table))
                return SQL_OTHER;
            c->returning = true;
        }
        return at_end(lx, t) ? SQL_VT_INSERT : SQL_OTHER;
    }
    if (eat(lx, t, "update")) {
        if (!(eat_vt(lx, t, schema, table) && eat(lx, t, "set") && name_eq(t, "version_num")))
            return SQL_OTHER;
        next(lx, t);
        return eat_punct(lx, t, '=') && eat_value(lx, t, &c->value) && eat(lx, t, "where") &&
                       eat_vt_column(lx, t, schema, table) && eat_punct(lx, t, '=') &&
                       eat_value(lx, t, &c->from) && at_end(lx, t)
                   ? SQL_VT_UPDATE
                   : SQL_OTHER;
    }
    if (eat(lx, t, "delete")) {
        return eat(lx, t, "from") && eat_vt(lx, t, schema, table) && eat(lx, t, "where") &&
                       eat_vt_column(lx, t, schema, table) && eat_punct(lx, t, '=') &&
                       eat_value(lx, t, &c->from) && at_end(lx, t)
                   ? SQL_VT_DELETE
                   : SQL_OTHER;
    }
    return SQL_OTHER;
}

static void lexer_init(struct lexer *lx, const char *sql, bool *truncated)
{
    size_t len = strnlen(sql, SQLCLASS_SCAN_MAX + 1);
    lx->s = sql;
    lx->i = 0;
    lx->end = len > SQLCLASS_SCAN_MAX ? SQLCLASS_SCAN_MAX : len;
    *truncated = len > SQLCLASS_SCAN_MAX;
}

void sqlclass_classify(const char *sql, const char *schema, const char *table,
                       struct sqlclass *out)
{
    memset(out, 0, sizeof *out);
    if (!sql || !table)
        return;
    struct lexer lx;
    lexer_init(&lx, sql, &out->truncated);
    struct token t;
    next(&lx, &t);
    struct sqlclass first;
    memset(&first, 0, sizeof first);
    while (t.type != T_END) {
        if (is_punct(&t, ';')) {
            next(&lx, &t);
            continue;
        }
        out->nstatements++;
        if (out->nstatements == 1)
            first.kind = alembic_shape(&lx, &t, schema, table, &first);
        skip_statement(&lx, &t);
    }
    if (out->nstatements == 1 && !out->truncated) {
        out->kind = first.kind;
        out->returning = first.returning;
        out->value = first.value;
        out->from = first.from;
    }
}

/* --- which version table ----------------------------------------------------- */

/* A name token, as PostgreSQL reads it, into out. */
static bool take_name(const struct token *t, char *out, size_t n)
{
    if ((t->type != T_WORD && t->type != T_QIDENT) || t->too_long || !t->text[0] ||
        strlen(t->text) >= n)
        return false;
    strcpy(out, t->text);
    return true;
}

/* [schema.]table at the lexer: into schema ("" when unqualified) and table. */
static bool take_qualified(struct lexer *lx, struct token *t, char *schema, size_t ssz,
                           char *table, size_t tsz)
{
    char first[sizeof t->text];
    if (!take_name(t, first, sizeof first))
        return false;
    next(lx, t);
    if (!is_punct(t, '.')) {
        schema[0] = '\0';
        return strlen(first) < tsz && strcpy(table, first);
    }
    next(lx, t);
    return strlen(first) < ssz && strcpy(schema, first) && take_name(t, table, tsz);
}

bool sqlclass_vt_statement(const char *sql, char *schema, size_t ssz, char *table, size_t tsz,
                           struct sqlclass *out)
{
    memset(out, 0, sizeof *out);
    if (!sql || !ssz || !tsz)
        return false;
    struct lexer lx;
    bool truncated;
    lexer_init(&lx, sql, &truncated);
    struct token t;
    next(&lx, &t);
    bool found = false;
    if (eat(&lx, &t, "create")) {
        found = eat(&lx, &t, "table") &&
                take_qualified(&lx, &t, schema, ssz, table, tsz);
    } else if (eat(&lx, &t, "insert")) {
        found = eat(&lx, &t, "into") && take_qualified(&lx, &t, schema, ssz, table, tsz);
    } else if (eat(&lx, &t, "update")) {
        found = take_qualified(&lx, &t, schema, ssz, table, tsz);
    } else if (eat(&lx, &t, "delete")) {
        found = eat(&lx, &t, "from") && take_qualified(&lx, &t, schema, ssz, table, tsz);
    } else if (eat(&lx, &t, "select")) {
        /* <vt>.version_num (or <schema>.<vt>.version_num) FROM [schema.]<vt> */
        int names = 0;
        while ((t.type == T_WORD || t.type == T_QIDENT) && names < 3) {
            names++;
            next(&lx, &t);
            if (!is_punct(&t, '.'))
                break;
            next(&lx, &t);
        }
        found = names >= 2 && eat(&lx, &t, "from") &&
                take_qualified(&lx, &t, schema, ssz, table, tsz);
    }
    if (!found)
        return false;
    /* the whole text, in Alembic's exact shape, on that table */
    sqlclass_classify(sql, schema, table, out);
    return out->kind == SQL_VT_CREATE || out->kind == SQL_VT_READ || out->kind == SQL_VT_INSERT ||
           out->kind == SQL_VT_UPDATE || out->kind == SQL_VT_DELETE;
}

/* --- verbs ------------------------------------------------------------------- */

static bool word_in(const struct token *t, const char *const *list)
{
    for (; *list; list++)
        if (is_word(t, *list))
            return true;
    return false;
}

/* Objects whose CREATE / ALTER / DROP tag is "<VERB> <OBJECT>". */
static const char *const ddl_objects[] = {"table",  "index",     "sequence", "type",
                                          "view",   "schema",    "extension", "function",
                                          "procedure", "trigger", "domain",   NULL};

static void upper_tag(char *tag, size_t tagsz, const char *verb, const char *object)
{
    size_t o = 0;
    for (const char *p = verb; *p && o + 1 < tagsz; p++)
        tag[o++] = (char)toupper((unsigned char)*p);
    if (object && o + 1 < tagsz)
        tag[o++] = ' ';
    for (const char *p = object; p && *p && o + 1 < tagsz; p++)
        tag[o++] = (char)toupper((unsigned char)*p);
    tag[o] = '\0';
}

/* CREATE ... at the token after CREATE: the object word, or NULL when the
 * tag is not certain. */
static const char *create_object(struct lexer *lx, struct token *t)
{
    if (eat(lx, t, "or") && !eat(lx, t, "replace"))
        return NULL;
    (void)(eat(lx, t, "unique") || eat(lx, t, "constraint") || eat(lx, t, "trusted"));
    (void)(eat(lx, t, "global") || eat(lx, t, "local"));
    (void)(eat(lx, t, "temp") || eat(lx, t, "temporary") || eat(lx, t, "unlogged"));
    if (!word_in(t, ddl_objects))
        return NULL;
    const char *obj = ddl_objects[0];
    for (const char *const *o = ddl_objects; *o; o++)
        if (is_word(t, *o))
            obj = *o;
    next(lx, t);
    if (is_word(t, "concurrently"))
        return NULL;
    if (strcmp(obj, "table") == 0) {
        /* CREATE TABLE ... AS query gives "SELECT n": look for AS at the
         * top level, after the name and an optional column list */
        int depth = 0;
        for (; t->type != T_END && !is_punct(t, ';'); next(lx, t)) {
            if (is_punct(t, '('))
                depth++;
            else if (is_punct(t, ')'))
                depth--;
            else if (depth == 0 && (is_word(t, "as") || is_word(t, "execute")))
                return NULL;
        }
    }
    return obj;
}

/* INSERT at the token after INSERT: the number of rows a plain VALUES
 * list (or DEFAULT VALUES) inserts, when that is the whole text; else 0. */
static long insert_rows(struct lexer *lx, struct token *t)
{
    if (!eat(lx, t, "into") || (t->type != T_WORD && t->type != T_QIDENT))
        return 0;
    next(lx, t);
    if (eat_punct(lx, t, '.')) {
        if (t->type != T_WORD && t->type != T_QIDENT)
            return 0;
        next(lx, t);
    }
    if (is_word(t, "as")) /* an alias */
        return 0;
    if (is_punct(t, '(')) { /* the column list */
        while (t->type != T_END && !is_punct(t, ')'))
            next(lx, t);
        next(lx, t);
    }
    if (eat(lx, t, "default"))
        return eat(lx, t, "values") && at_end(lx, t) ? 1 : 0;
    if (!eat(lx, t, "values"))
        return 0;
    long rows = 0;
    int depth = 0;
    for (; t->type != T_END && !is_punct(t, ';'); next(lx, t)) {
        if (is_punct(t, '(')) {
            if (depth++ == 0)
                rows++;
        } else if (is_punct(t, ')')) {
            depth--;
        } else if (depth == 0 && !is_punct(t, ',')) {
            return 0; /* ON CONFLICT, RETURNING, or anything unexpected */
        }
    }
    return depth == 0 && at_end(lx, t) ? rows : 0;
}

enum sql_verb sqlclass_verb(const char *sql, char *tag, size_t tagsz)
{
    static const char *const alter_drop[] = {"alter", "drop", NULL};
    if (tagsz)
        tag[0] = '\0';
    if (!sql || !tagsz)
        return VERB_OTHER;
    struct lexer lx;
    bool truncated;
    lexer_init(&lx, sql, &truncated);
    if (truncated)
        return VERB_OTHER;
    struct token t;
    next(&lx, &t);
    enum sql_verb v = VERB_OTHER;
    char w[16] = "";
    const char *obj = NULL;
    if (t.type == T_WORD && strlen(t.text) < sizeof w)
        strcpy(w, t.text);
    if (eat(&lx, &t, "create")) {
        if ((obj = create_object(&lx, &t)))
            v = VERB_DDL;
    } else if (word_in(&t, alter_drop)) {
        next(&lx, &t);
        if (word_in(&t, ddl_objects)) {
            for (const char *const *o = ddl_objects; *o; o++)
                if (is_word(&t, *o))
                    obj = *o;
            next(&lx, &t);
            v = is_word(&t, "concurrently") ? VERB_OTHER : VERB_DDL;
        }
    } else if (eat(&lx, &t, "comment")) {
        v = is_word(&t, "on") ? VERB_DDL : VERB_OTHER;
    } else if (eat(&lx, &t, "grant") || eat(&lx, &t, "revoke")) {
        v = VERB_DDL;
    } else if (eat(&lx, &t, "commit") || eat(&lx, &t, "end")) {
        (void)(eat(&lx, &t, "work") || eat(&lx, &t, "transaction"));
        v = at_end(&lx, &t) ? VERB_COMMIT : VERB_TXN_OTHER;
        strcpy(w, "commit");
    } else if (eat(&lx, &t, "rollback") || eat(&lx, &t, "abort")) {
        (void)(eat(&lx, &t, "work") || eat(&lx, &t, "transaction"));
        strcpy(w, "rollback");
        if (eat(&lx, &t, "to")) {
            (void)eat(&lx, &t, "savepoint");
            v = VERB_ROLLBACK_TO;
        } else {
            v = at_end(&lx, &t) ? VERB_ROLLBACK : VERB_TXN_OTHER;
        }
    } else if (eat(&lx, &t, "insert")) {
        long rows = insert_rows(&lx, &t);
        if (rows > 0) {
            v = VERB_INSERT;
            snprintf(tag, tagsz, "INSERT 0 %ld", rows);
            return v;
        }
    } else if (eat(&lx, &t, "prepare")) {
        v = is_word(&t, "transaction") ? VERB_TXN_OTHER : VERB_OTHER;
    } else if (eat(&lx, &t, "savepoint")) {
        v = VERB_SAVEPOINT;
    } else if (eat(&lx, &t, "release")) {
        v = VERB_RELEASE;
    }
    if (v == VERB_OTHER)
        return VERB_OTHER;
    /* exactly one statement */
    skip_statement(&lx, &t);
    if (!at_end(&lx, &t))
        return VERB_OTHER;
    if (v != VERB_TXN_OTHER)
        upper_tag(tag, tagsz, w, v == VERB_DDL && obj ? obj : NULL);
    return v;
}

bool sqlclass_inert(const char *sql, bool *local)
{
    struct lexer lx;
    struct token t;
    *local = false;
    if (!lex_whole(sql, &lx, &t))
        return false;
    if (is_word(&t, "show")) /* SHOW <setting>: the probe's own rule */
        return sqlclass_probe(sql);
    if (eat(&lx, &t, "set")) { /* SET LOCAL name {TO | =} value[, ...] */
        if (!eat(&lx, &t, "local") || t.type != T_WORD || t.too_long)
            return false;
        next(&lx, &t);
        if (eat_punct(&lx, &t, '.')) { /* a custom setting: ext.name */
            if (t.type != T_WORD || t.too_long)
                return false;
            next(&lx, &t);
        }
        if (!eat(&lx, &t, "to") && !eat_punct(&lx, &t, '='))
            return false;
        bool any = false;
        for (; t.type != T_END && !is_punct(&t, ';'); next(&lx, &t), any = true)
            if (t.type != T_WORD && t.type != T_QIDENT && t.type != T_STRING &&
                !(t.type == T_PUNCT && strchr("0123456789.,-", t.text[0])))
                return false;
        *local = any && at_end(&lx, &t);
        return *local;
    }
    if (!eat(&lx, &t, "select"))
        return false;
    for (; t.type != T_END && !is_punct(&t, ';'); next(&lx, &t))
        if (is_word(&t, "from") || (!probe_token(&t) && !is_word(&t, "pg_sleep")))
            return false; /* no table, not even a catalog: the peer's, not the app's view */
    return at_end(&lx, &t);
}

bool sqlclass_deallocate(const char *sql)
{
    struct lexer lx;
    struct token t;
    if (!lex_whole(sql, &lx, &t) || !eat(&lx, &t, "deallocate"))
        return false;
    /* DEALLOCATE PREPARE x, or a statement named "prepare" */
    if (is_word(&t, "prepare")) {
        struct lexer l = lx;
        struct token u = t;
        next(&l, &u);
        if (u.type == T_WORD || u.type == T_QIDENT) {
            lx = l;
            t = u;
        }
    }
    if (t.type != T_WORD && t.type != T_QIDENT)
        return false;
    next(&lx, &t);
    return at_end(&lx, &t);
}

/* Case-insensitive search for `needle` (lower case) in the first
 * SQLCLASS_SCAN_MAX bytes of `s`. */
static const char *find_ci(const char *s, const char *needle)
{
    size_t n = strlen(needle), len = strnlen(s, SQLCLASS_SCAN_MAX);
    for (size_t i = 0; i + n <= len; i++)
        if (strncasecmp(s + i, needle, n) == 0)
            return s + i;
    return NULL;
}

bool sqlclass_has_table_schema(const char *sql, char *schema, size_t ssz)
{
    if (ssz)
        schema[0] = '\0';
    if (!sql || ssz == 0)
        return false;
    for (const char *p = find_ci(sql, "nspname"); p; p = find_ci(p + 7, "nspname")) {
        const char *q = p + 7;
        while (*q == ' ' || *q == '\t' || *q == '\n' || *q == '\r')
            q++;
        if (*q != '=')
            continue; /* != 'pg_catalog' (SQLAlchemy 2's visible-table form), <> */
        q++;
        while (*q == ' ' || *q == '\t' || *q == '\n' || *q == '\r')
            q++;
        if (*q != '\'')
            continue; /* a bind parameter: no literal to read */
        size_t o = 0;
        for (q++; *q; q++) {
            if (*q == '\'') {
                if (q[1] != '\'')
                    break;
                q++;
            }
            if (*q == '\\')
                return false; /* an E'' escape: not a shape SQLAlchemy sends */
            if (o + 1 >= ssz)
                return false;
            schema[o++] = *q;
        }
        if (*q != '\'')
            return false;
        schema[o] = '\0';
        return true;
    }
    return find_ci(sql, "pg_table_is_visible") != NULL;
}
