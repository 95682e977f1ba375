/*
 * sqlclass — cheap, bounded classification of the statements an app sends.
 *
 * Only the first SQLCLASS_SCAN_MAX bytes of a statement are looked at:
 * version-table statements are short, and a 10 MB INSERT must cost no more
 * than a short one.
 */
#ifndef MIGSHIM_SQLCLASS_H
#define MIGSHIM_SQLCLASS_H

#include <stdbool.h>
#include <stddef.h>

#define SQLCLASS_SCAN_MAX 65536

/*
 * True when `sql` mentions `name` as a whole word, case-insensitively:
 * unquoted or double-quoted identifier (schema-qualified or not) or a
 * string literal ('alembic_version', as Alembic's has_table query uses).
 * Over-matching is harmless to the callers; under-matching is not.
 *
 *   sqlclass_mentions("INSERT INTO \"Alembic_Version\" ...", "alembic_version") -> true
 *   sqlclass_mentions("SELECT * FROM alembic_versions", "alembic_version")      -> false
 */
bool sqlclass_mentions(const char *sql, const char *name);

/* What a statement does to the version table. */
enum sql_kind {
    SQL_OTHER = 0,     /* does not write the version table (may still mention it) */
    SQL_CREATE_TABLE,  /* CREATE [TEMP|UNLOGGED] TABLE [IF NOT EXISTS] <vt>     */
    SQL_INSERT,        /* INSERT INTO <vt>                                       */
    SQL_UPDATE,        /* UPDATE [ONLY] <vt>                                     */
    SQL_DELETE,        /* DELETE FROM [ONLY] <vt>                                */
};

struct sqlclass {
    enum sql_kind kind;     /* the first statement writing the version table */
    size_t nstatements;     /* statements seen (within the scanned prefix)   */
    bool truncated;         /* the text is longer than SQLCLASS_SCAN_MAX     */
    char value[64];         /* SQL_INSERT: the first string literal of its
                               VALUES list ("" if none or too long)          */
};

/*
 * Classify `sql` against the version table `table` in `schema` (NULL or ""
 * for "whatever the search_path finds").  Identifiers follow PostgreSQL:
 * unquoted ones fold to lower case, quoted ones ("" escapes) are exact;
 * comments (-- and nested block comments), string literals (including
 * E'' and dollar quoting) and multi-statement strings are understood.  A
 * qualified name matches when its table part matches and, if `schema` is
 * set, its schema part (when present) matches too.
 *
 *   sqlclass_classify("/ * x * / insert into public.\"alembic_version\" values ('a1')",
 *                     "", "alembic_version", &c)  -> c.kind == SQL_INSERT, c.value "a1"
 */
void sqlclass_classify(const char *sql, const char *schema, const char *table,
                       struct sqlclass *out);

/* "CREATE TABLE", "INSERT", "UPDATE", "DELETE" or "other". */
const char *sqlclass_kind_name(enum sql_kind kind);

#endif
