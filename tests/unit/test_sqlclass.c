/*
 * sqlclass: the bounded statement classifier — quoting, schema
 * qualification, comments, case, multi-statement strings, huge statements.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "sqlclass.h"

static struct sqlclass cls(const char *sql)
{
    struct sqlclass c;
    sqlclass_classify(sql, "", "alembic_version", &c);
    return c;
}

static struct sqlclass cls_schema(const char *sql, const char *schema, const char *table)
{
    struct sqlclass c;
    sqlclass_classify(sql, schema, table, &c);
    return c;
}

Test(classify, alembic_statements)
{
    struct sqlclass c = cls("\nCREATE TABLE alembic_version (\n\tversion_num VARCHAR(32) NOT NULL, "
                            "\n\tCONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)\n)\n\n");
    cr_assert_eq(c.kind, SQL_CREATE_TABLE);
    c = cls("INSERT INTO alembic_version (version_num) VALUES ('0001aaaa') RETURNING "
            "alembic_version.version_num");
    cr_assert_eq(c.kind, SQL_INSERT);
    cr_assert_str_eq(c.value, "0001aaaa");
    c = cls("UPDATE alembic_version SET version_num='0002bbbb' WHERE "
            "alembic_version.version_num = '0001aaaa'");
    cr_assert_eq(c.kind, SQL_UPDATE);
    c = cls("DELETE FROM alembic_version WHERE alembic_version.version_num = '0003cccc'");
    cr_assert_eq(c.kind, SQL_DELETE);
    c = cls("select relname from pg_class c join pg_namespace n on n.oid=c.relnamespace where "
            "pg_catalog.pg_table_is_visible(c.oid) and relname='alembic_version'");
    cr_assert_eq(c.kind, SQL_OTHER);
    cr_assert_eq(c.nstatements, 1);
}

Test(classify, quoting_case_and_schema)
{
    cr_assert_eq(cls("insert into \"alembic_version\" values ('x')").kind, SQL_INSERT);
    cr_assert_eq(cls("InSeRt InTo ALEMBIC_VERSION values ('x')").kind, SQL_INSERT);
    /* a quoted name is exact: "ALEMBIC_VERSION" is another table */
    cr_assert_eq(cls("insert into \"ALEMBIC_VERSION\" values ('x')").kind, SQL_OTHER);
    cr_assert_eq(cls("insert into public.alembic_version values ('x')").kind, SQL_INSERT);
    cr_assert_eq(cls("insert into \"public\" . \"alembic_version\" values ('x')").kind, SQL_INSERT);
    cr_assert_eq(cls("update only alembic_version set version_num = 'b'").kind, SQL_UPDATE);
    cr_assert_eq(cls("delete from only alembic_version").kind, SQL_DELETE);
    cr_assert_eq(cls("create unlogged table if not exists alembic_version (v text)").kind,
                 SQL_CREATE_TABLE);
    cr_assert_eq(cls("create temp table alembic_version (v text)").kind, SQL_CREATE_TABLE);
    /* configured schema: another schema's table is not it */
    cr_assert_eq(cls_schema("insert into other.alembic_version values ('x')", "app",
                            "alembic_version").kind, SQL_OTHER);
    cr_assert_eq(cls_schema("insert into app.alembic_version values ('x')", "app",
                            "alembic_version").kind, SQL_INSERT);
    /* a mixed-case configured name must be quoted to match */
    cr_assert_eq(cls_schema("insert into \"MyVersions\" values ('x')", "", "MyVersions").kind,
                 SQL_INSERT);
    cr_assert_eq(cls_schema("insert into MyVersions values ('x')", "", "MyVersions").kind,
                 SQL_OTHER);
    /* a hostile configured name: quotes and a semicolon */
    cr_assert_eq(cls_schema("insert into \"we\"\"ird;schema\".\"v\"\"t\" values ('x')",
                            "we\"ird;schema", "v\"t").kind, SQL_INSERT);
}

Test(classify, other_tables_are_untouched)
{
    cr_assert_eq(cls("insert into alembic_versions values ('x')").kind, SQL_OTHER);
    cr_assert_eq(cls("insert into users (name) values ('alembic_version')").kind, SQL_OTHER);
    cr_assert_eq(cls("create table users (id int)").kind, SQL_OTHER);
    cr_assert_eq(cls("update users set x = 1 from alembic_version").kind, SQL_OTHER);
    cr_assert_eq(cls("create index alembic_version_idx on t (x)").kind, SQL_OTHER);
    cr_assert_eq(cls("").kind, SQL_OTHER);
    cr_assert_eq(cls("").nstatements, 0);
}

Test(classify, comments_and_literals_hide_nothing_and_fake_nothing)
{
    cr_assert_eq(cls("-- insert into alembic_version\nselect 1").kind, SQL_OTHER);
    cr_assert_eq(cls("/* outer /* nested */ still comment insert into alembic_version */ select 1")
                     .kind, SQL_OTHER);
    cr_assert_eq(cls("/* c */ insert /* c */ into -- c\n alembic_version values ('v')").kind,
                 SQL_INSERT);
    cr_assert_eq(cls("select 'x; insert into alembic_version values (1)'").kind, SQL_OTHER);
    cr_assert_eq(cls("select $q$; insert into alembic_version values (1)$q$").kind, SQL_OTHER);
    cr_assert_eq(cls("select E'it\\'s; insert into alembic_version values (1)'").kind, SQL_OTHER);
    cr_assert_eq(cls("select \"a;b\"; update alembic_version set version_num='z'").kind,
                 SQL_UPDATE);
}

Test(classify, multi_statement_strings)
{
    struct sqlclass c = cls("BEGIN; SELECT 1; INSERT INTO alembic_version VALUES ('it''s'); COMMIT");
    cr_assert_eq(c.kind, SQL_INSERT);
    cr_assert_eq(c.nstatements, 4);
    cr_assert_str_eq(c.value, "it's");
    c = cls("update alembic_version set version_num='b';;; delete from alembic_version;");
    cr_assert_eq(c.kind, SQL_UPDATE); /* the first writing statement */
    cr_assert_eq(c.nstatements, 2);
}

Test(classify, huge_statements_are_bounded)
{
    size_t n = 10 * 1024 * 1024;
    char *big = malloc(n + 128);
    cr_assert(big);
    strcpy(big, "INSERT INTO blobs VALUES ('");
    memset(big + strlen(big), 'x', n);
    strcpy(big + 27 + n, "'); INSERT INTO alembic_version VALUES ('a')");
    struct sqlclass c = cls(big);
    cr_assert(c.truncated);
    cr_assert_eq(c.kind, SQL_OTHER); /* beyond the scanned prefix */
    cr_assert_not(sqlclass_mentions(big, "alembic_version"));
    /* a version-table statement with a huge tail is still recognised */
    memcpy(big, "INSERT INTO alembic_version VALUES ('a', '", 42);
    c = cls(big);
    cr_assert_eq(c.kind, SQL_INSERT);
    cr_assert_str_eq(c.value, "a");
    free(big);
}

Test(mentions, whole_words_only)
{
    cr_assert(sqlclass_mentions("select * from Alembic_Version", "alembic_version"));
    cr_assert(sqlclass_mentions("relname='alembic_version'", "alembic_version"));
    cr_assert(sqlclass_mentions("x.\"alembic_version\"", "alembic_version"));
    cr_assert_not(sqlclass_mentions("select * from alembic_versions", "alembic_version"));
    cr_assert_not(sqlclass_mentions("select * from my_alembic_version", "alembic_version"));
    cr_assert_not(sqlclass_mentions(NULL, "alembic_version"));
    cr_assert_not(sqlclass_mentions("x", ""));
}

/* The memchr anchor (the name's first non-letter) at every position, and
 * names with no such byte (the case-folding scan). */
Test(mentions, anchors)
{
    cr_assert(sqlclass_mentions("alembic_version", "alembic_version")); /* at offset 0 */
    cr_assert(sqlclass_mentions("_v", "_v"));                          /* anchor is byte 0 */
    cr_assert(sqlclass_mentions("x _ _V", "_v"));
    cr_assert_not(sqlclass_mentions("x__v", "_v"));
    cr_assert(sqlclass_mentions("insert into Versions2 ", "versions2"));
    cr_assert_not(sqlclass_mentions("insert into versions22", "versions2"));
    cr_assert(sqlclass_mentions("UPDATE VERSIONS SET", "versions")); /* all letters */
    cr_assert_not(sqlclass_mentions("UPDATE VERSIONSX SET", "versions"));
    cr_assert_not(sqlclass_mentions("a_b a_ _b", "a_b_"));
    cr_assert(sqlclass_mentions("a_b a_b_", "a_b_"));
    /* a '"' in the name is doubled in SQL: always a (safe) over-match */
    cr_assert(sqlclass_mentions("select 1", "we\"ird"));
}

Test(mentions, prefix_boundary)
{
    size_t n = SQLCLASS_SCAN_MAX;
    char *big = malloc(n + 64);
    cr_assert(big);
    memset(big, ' ', n + 63);
    big[n + 63] = 0;
    /* starts inside the scanned prefix, ends past it: still a mention */
    memcpy(big + n - 10, "alembic_version", 15);
    cr_assert(sqlclass_mentions(big, "alembic_version"));
    /* its anchor beyond the prefix: not looked at */
    memset(big + n - 10, ' ', 15);
    memcpy(big + n - 3, "alembic_version", 15);
    cr_assert_not(sqlclass_mentions(big, "alembic_version"));
    free(big);
}

Test(names, kind_names)
{
    cr_assert_str_eq(sqlclass_kind_name(SQL_CREATE_TABLE), "CREATE TABLE");
    cr_assert_str_eq(sqlclass_kind_name(SQL_OTHER), "other");
}
