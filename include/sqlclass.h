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

#include "compiler.h"

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

/* The same with the name prepared once (its length and memchr anchor):
 * what the wrappers ask of every statement while the target is unknown. */
struct sqlclass_name {
    const char *name;
    size_t n;        /* strlen(name)                                        */
    size_t off;      /* the first byte that is not a letter, or n if none   */
    bool quoted;     /* the name holds a '"': every statement over-matches  */
    size_t shortest; /* a text shorter than this cannot name it (0: quoted) */
};
void sqlclass_name_init(struct sqlclass_name *nm, const char *name);
bool sqlclass_mentions_name(const char *sql, const struct sqlclass_name *nm);

/* The same, `len` being strnlen(sql, SQLCLASS_SCAN_MAX).  A text shorter
 * than the name (BEGIN, COMMIT, SELECT 1) cannot name it: the caller that
 * has the length decides those without a call. */
bool sqlclass_mentions_name_len(const char *sql, size_t len, const struct sqlclass_name *nm);
static inline bool sqlclass_too_short(size_t len, const struct sqlclass_name *nm)
{
    return len < nm->shortest;
}

/* A statement of Alembic's own on the version table <vt>, in exactly the
 * shape Alembic sends it (../shared/alembic-statements.md); anything else
 * that names the table is SQL_OTHER. */
enum sql_kind {
    SQL_OTHER = 0,
    SQL_VT_CREATE,     /* CREATE TABLE <vt> (version_num ...                          */
    SQL_VT_READ,       /* SELECT <vt>.version_num FROM <vt>                           */
    SQL_VT_EXISTS,     /* SELECT ... pg_class ... '<vt>' ...: SQLAlchemy's has_table,
                          a probe (sqlclass_probe) of pg_class naming the table as a
                          literal, or comparing relname to a parameter $n (then
                          value.param is n: the caller checks its value)          */
    SQL_VT_INSERT,     /* INSERT INTO <vt> (version_num) VALUES (v)
                          [RETURNING <vt>.version_num]                                 */
    SQL_VT_UPDATE,     /* UPDATE <vt> SET version_num=v WHERE <vt>.version_num = from  */
    SQL_VT_DELETE,     /* DELETE FROM <vt> WHERE <vt>.version_num = from              */
};

/* A value in a version-table statement: a string literal, or a
 * parameter $n (then `text` is empty and the caller looks it up). */
struct sqlval {
    char text[64];
    int param;
};

struct sqlclass {
    enum sql_kind kind;     /* only for a text that is exactly one statement */
    bool returning;         /* SQL_VT_INSERT ... RETURNING                   */
    struct sqlval value;    /* INSERT / UPDATE: the version written          */
    struct sqlval from;     /* UPDATE / DELETE: the version matched          */
    size_t nstatements;     /* statements seen (within the scanned prefix)   */
    bool truncated;         /* the text is longer than SQLCLASS_SCAN_MAX     */
};

/*
 * Classify `sql` against the version table `table` in `schema` (NULL or ""
 * for "whatever the search_path finds").  Identifiers follow PostgreSQL:
 * unquoted ones fold to lower case, quoted ones ("" escapes) are exact;
 * comments (-- and nested block comments), string literals (including
 * E'' and dollar quoting) and multi-statement strings are understood.  A
 * qualified name matches when its table part matches and, if `schema` is
 * set, its schema part (when present) matches too.  A kind is given only
 * when the whole text is that one statement, in Alembic's shape.
 *
 *   sqlclass_classify("INSERT INTO alembic_version (version_num) VALUES ('a1')",
 *                     "", "alembic_version", &c)  -> c.kind == SQL_VT_INSERT, c.value "a1"
 */
void sqlclass_classify(const char *sql, const char *schema, const char *table,
                       struct sqlclass *out);

/*
 * Which version table does `sql` write or read, if it is exactly one of
 * Alembic's version-table statements (CREATE TABLE, SELECT
 * <vt>.version_num FROM, INSERT, UPDATE, DELETE; not SQLAlchemy's
 * has_table) on any table?  True with its schema ("" when unqualified) and
 * table in PostgreSQL's reading (unquoted names folded to lower case) and
 * the classification in `out`; false for anything else.
 *
 *   sqlclass_vt_statement("INSERT INTO ops.my_version (version_num) VALUES ('a1')",
 *                         s, sizeof s, t, sizeof t, &c) -> true, s "ops", t "my_version"
 */
bool sqlclass_vt_statement(const char *sql, char *schema, size_t ssz, char *table, size_t tsz,
                           struct sqlclass *out) MUSTCHECK;

/*
 * For SQLAlchemy's has_table query (SQL_VT_EXISTS), which schema it asks
 * about, as psycopg2 sends it (literals inlined): true with `schema` the
 * literal of its `nspname = '...'` test (SQLAlchemy 1.4 and 2 with a
 * schema), or "" when it asks pg_table_is_visible() instead (no schema:
 * the search_path's).  False when neither shows (a bind parameter, an
 * escape it would not send, a literal longer than ssz - 1).
 *
 *   sqlclass_has_table_schema("... where n.nspname='t1' and relname='alembic_version'",
 *                             s, sizeof s) -> true, s "t1"
 */
bool sqlclass_has_table_schema(const char *sql, char *schema, size_t ssz) MUSTCHECK;

/*
 * True when `sql` is exactly one read-only probe of the kind SQLAlchemy
 * (1.4, 2.x) and its drivers send around a migration: the dialect's
 * initialisation (select pg_catalog.version(), select current_schema(),
 * SELECT CAST('test plain returns' AS VARCHAR(60)) AS anon_1, SHOW ...),
 * has_table on pg_class (literal or parameter), psycopg2's hstore and
 * psycopg 3's TypeInfo lookups with psycopg 3's own SAVEPOINT/RELEASE
 * "_pg3_<n>" around them, a pool's "SELECT 1".  An allowlist of words
 * (src/sqlclass.c, probe_words): any function, table or clause outside it
 * -- "SELECT record_boot(1)", SELECT ... INTO, FOR UPDATE -- is not a probe.
 * A probe leaves nothing behind that a rollback could lose.
 *
 *   sqlclass_probe("select current_schema()")  -> true
 *   sqlclass_probe("SELECT record_boot(42)")    -> false
 */
bool sqlclass_probe(const char *sql);

/*
 * True when `sql` is exactly one BEGIN [WORK|TRANSACTION] or START
 * TRANSACTION, with transaction modes only: it opens a transaction and
 * does nothing in it.
 */
bool sqlclass_begin(const char *sql);

/* "CREATE TABLE", "SELECT", "INSERT", "UPDATE", "DELETE" or "other". */
const char *sqlclass_kind_name(enum sql_kind kind);

/* What a text that is exactly one statement does to the transaction, and
 * the command tag PostgreSQL gives it when it succeeds. */
enum sql_verb {
    VERB_OTHER = 0,    /* anything else, or more than one statement         */
    VERB_DDL,          /* CREATE/ALTER/DROP of a plain schema object, COMMENT,
                          GRANT, REVOKE: a fixed tag, no rows ("CREATE INDEX") */
    VERB_COMMIT,       /* COMMIT / END [WORK|TRANSACTION]                      */
    VERB_ROLLBACK,     /* ROLLBACK / ABORT [WORK|TRANSACTION]                  */
    VERB_SAVEPOINT,    /* SAVEPOINT x                                          */
    VERB_RELEASE,      /* RELEASE [SAVEPOINT] x                                */
    VERB_ROLLBACK_TO,  /* ROLLBACK [WORK|TRANSACTION] TO [SAVEPOINT] x         */
    VERB_TXN_OTHER,    /* COMMIT/ROLLBACK AND CHAIN, PREPARE TRANSACTION, ...   */
    VERB_INSERT,       /* INSERT INTO t [(cols)] VALUES (..)[, (..)] or DEFAULT
                          VALUES, with no ON CONFLICT and no RETURNING: its
                          tag "INSERT 0 <rows>" is certain (bar a trigger that
                          skips rows)                                          */
};

/*
 * The verb of `sql` and its success tag in `tag` (TAG_MAX bytes is
 * plenty; "" for VERB_OTHER).  DDL is recognised only where the tag is
 * certain: CREATE TABLE ... AS, CREATE MATERIALIZED VIEW, CONCURRENTLY and
 * AND CHAIN are VERB_OTHER.  Nothing past SQLCLASS_SCAN_MAX is guessed:
 * a longer text is VERB_OTHER.
 *
 *   sqlclass_verb("create unique index ix on t (a)", tag, 64) -> VERB_DDL, "CREATE INDEX"
 */
enum sql_verb sqlclass_verb(const char *sql, char *tag, size_t tagsz);

/*
 * True when `sql` is exactly one statement the guard may run for real in
 * its read-only stand-in transaction: one whose answer does not depend on
 * what the rolled-back transaction wrote, and which leaves no session state
 * that the stand-in's final ROLLBACK would undo where the app's own COMMIT
 * would have kept it.  An allowlist:
 *   - SHOW <setting>;
 *   - a SELECT made only of the probe words (sqlclass_probe) and pg_sleep:
 *     "SELECT pg_sleep(0.2)", "select current_schema()" -- no function of
 *     the app's (it could call set_config), no set_config, no FROM;
 *   - SET LOCAL <name> {TO | =} <value>: its effect ends with the
 *     transaction either way; `*local` is then set, because a SET LOCAL
 *     after a SAVEPOINT the stand-in answered without running would
 *     survive the answered ROLLBACK TO that would have undone it.
 * A session SET or RESET, or SELECT set_config(..., false), is not inert:
 * the stand-in's ROLLBACK would undo it while the app believes it
 * committed (a search_path the app's later statements resolve by).
 * `*local` is false unless the statement is such a SET LOCAL.
 */
bool sqlclass_inert(const char *sql, bool *local);

/*
 * True when `sql` is exactly one DEALLOCATE [PREPARE] {ALL | name}: what
 * psycopg 3 sends to drop its prepared statements (DEALLOCATE ALL after a
 * result tagged DROP, ALTER, ROLLBACK or DISCARD; DEALLOCATE _pg3_<n> when
 * its cache rotates, with a libpq older than 17).  It changes session
 * state only: no table, no row, and it is not transactional (a ROLLBACK
 * does not bring a statement back), so it does the same whether it runs in
 * the app's transaction or in a stand-in for it.
 *
 *   sqlclass_deallocate("DEALLOCATE ALL")                 -> true
 *   sqlclass_deallocate("DEALLOCATE ALL; DELETE FROM t")  -> false
 */
bool sqlclass_deallocate(const char *sql);

#endif
