/*
 * sqlclass: the bounded statement classifier — quoting, schema
 * qualification, comments, case, multi-statement strings, huge statements.
 */
#include <criterion/criterion.h>
#include <stdio.h>
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
    /* exactly what Alembic 1.8 + SQLAlchemy 1.4 send (../shared/alembic-statements.md) */
    struct sqlclass c = cls("\nCREATE TABLE alembic_version (\n\tversion_num VARCHAR(32) NOT NULL, "
                            "\n\tCONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)\n)\n\n");
    cr_assert_eq(c.kind, SQL_VT_CREATE);
    c = cls("INSERT INTO alembic_version (version_num) VALUES ('0001aaaa') RETURNING "
            "alembic_version.version_num");
    cr_assert_eq(c.kind, SQL_VT_INSERT);
    cr_assert(c.returning);
    cr_assert_str_eq(c.value.text, "0001aaaa");
    c = cls("INSERT INTO alembic_version (version_num) VALUES ('0001aaaa')");
    cr_assert_eq(c.kind, SQL_VT_INSERT);
    cr_assert_not(c.returning);
    c = cls("UPDATE alembic_version SET version_num='0002bbbb' WHERE "
            "alembic_version.version_num = '0001aaaa'");
    cr_assert_eq(c.kind, SQL_VT_UPDATE);
    cr_assert_str_eq(c.value.text, "0002bbbb");
    cr_assert_str_eq(c.from.text, "0001aaaa");
    c = cls("DELETE FROM alembic_version WHERE alembic_version.version_num = '0003cccc'");
    cr_assert_eq(c.kind, SQL_VT_DELETE);
    cr_assert_str_eq(c.from.text, "0003cccc");
    c = cls("SELECT alembic_version.version_num \nFROM alembic_version");
    cr_assert_eq(c.kind, SQL_VT_READ);
    c = cls("select relname from pg_class c join pg_namespace n on n.oid=c.relnamespace where "
            "pg_catalog.pg_table_is_visible(c.oid) and relname='alembic_version'");
    cr_assert_eq(c.kind, SQL_VT_EXISTS); /* SQLAlchemy 1.4's has_table */
    cr_assert_eq(c.nstatements, 1);
    cr_assert_eq(cls("select relname from pg_class where relname='alembic_versions'").kind,
                 SQL_OTHER);
    cr_assert_eq(cls("select 'alembic_version' from pg_namespace").kind, SQL_OTHER);
    cr_assert_eq(cls("select relname from pg_class where relname='alembic_version'; select 1")
                     .kind, SQL_OTHER);
}

Test(classify, parameters_and_casts)
{
    /* server-side binding (psycopg 3, SQLAlchemy 2): $n, sometimes cast */
    struct sqlclass c = cls("INSERT INTO alembic_version (version_num) VALUES ($1::VARCHAR) "
                            "RETURNING alembic_version.version_num");
    cr_assert_eq(c.kind, SQL_VT_INSERT);
    cr_assert_eq(c.value.param, 1);
    cr_assert_str_eq(c.value.text, "");
    c = cls("UPDATE alembic_version SET version_num=$1 WHERE alembic_version.version_num = $2");
    cr_assert_eq(c.kind, SQL_VT_UPDATE);
    cr_assert_eq(c.value.param, 1);
    cr_assert_eq(c.from.param, 2);
    cr_assert_eq(cls("INSERT INTO alembic_version (version_num) VALUES ($1::integer)").kind,
                 SQL_OTHER);
}

/* Anything that is not exactly Alembic's statement is not classified: the
 * guard then never answers it. */
Test(classify, only_alembic_shapes)
{
    cr_assert_eq(cls("insert into alembic_version values ('x')").kind, SQL_OTHER);
    cr_assert_eq(cls("insert into alembic_version (version_num) select 'x'").kind, SQL_OTHER);
    cr_assert_eq(cls("insert into alembic_version (version_num) values ('a'), ('b')").kind,
                 SQL_OTHER);
    cr_assert_eq(cls("insert into alembic_version (version_num) values ('a') returning *").kind,
                 SQL_OTHER);
    cr_assert_eq(cls("update alembic_version set version_num = 'b'").kind, SQL_OTHER);
    cr_assert_eq(cls("update alembic_version set version_num='b' where version_num='a' or true")
                     .kind, SQL_OTHER);
    cr_assert_eq(cls("delete from alembic_version").kind, SQL_OTHER);
    cr_assert_eq(cls("select version_num from alembic_version").kind, SQL_OTHER);
    cr_assert_eq(cls("select alembic_version.version_num from alembic_version for update").kind,
                 SQL_OTHER);
    cr_assert_eq(cls("create table alembic_version (v text)").kind, SQL_OTHER);
    cr_assert_eq(cls("create table if not exists alembic_version (version_num text)").kind,
                 SQL_OTHER);
}

Test(classify, quoting_case_and_schema)
{
    const char *ins = " (version_num) values ('x')";
    char buf[256];
#define INS(t) (snprintf(buf, sizeof buf, "insert into %s%s", t, ins), buf)
    cr_assert_eq(cls(INS("\"alembic_version\"")).kind, SQL_VT_INSERT);
    cr_assert_eq(cls(INS("ALEMBIC_VERSION")).kind, SQL_VT_INSERT);
    /* a quoted name is exact: "ALEMBIC_VERSION" is another table */
    cr_assert_eq(cls(INS("\"ALEMBIC_VERSION\"")).kind, SQL_OTHER);
    cr_assert_eq(cls(INS("public.alembic_version")).kind, SQL_VT_INSERT);
    cr_assert_eq(cls(INS("\"public\" . \"alembic_version\"")).kind, SQL_VT_INSERT);
    /* configured schema: another schema's table is not it */
    cr_assert_eq(cls_schema(INS("other.alembic_version"), "app", "alembic_version").kind,
                 SQL_OTHER);
    cr_assert_eq(cls_schema(INS("app.alembic_version"), "app", "alembic_version").kind,
                 SQL_VT_INSERT);
    cr_assert_eq(cls_schema("SELECT app.alembic_version.version_num FROM app.alembic_version",
                            "app", "alembic_version").kind,
                 SQL_VT_READ);
    cr_assert_eq(cls_schema("SELECT other.alembic_version.version_num FROM app.alembic_version",
                            "app", "alembic_version").kind,
                 SQL_OTHER);
    /* a mixed-case configured name must be quoted to match */
    cr_assert_eq(cls_schema(INS("\"MyVersions\""), "", "MyVersions").kind, SQL_VT_INSERT);
    cr_assert_eq(cls_schema(INS("MyVersions"), "", "MyVersions").kind, SQL_OTHER);
    /* a hostile configured name: quotes and a semicolon */
    cr_assert_eq(cls_schema(INS("\"we\"\"ird;schema\".\"v\"\"t\""), "we\"ird;schema", "v\"t").kind,
                 SQL_VT_INSERT);
#undef INS
}

Test(classify, other_tables_are_untouched)
{
    cr_assert_eq(cls("insert into alembic_versions (version_num) values ('x')").kind, SQL_OTHER);
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
    cr_assert_eq(cls("/* c */ insert /* c */ into -- c\n alembic_version (version_num) "
                     "values ('v')").kind, SQL_VT_INSERT);
    cr_assert_eq(cls("select 'x; insert into alembic_version values (1)'").kind, SQL_OTHER);
    cr_assert_eq(cls("select $q$; insert into alembic_version values (1)$q$").kind, SQL_OTHER);
    cr_assert_eq(cls("select E'it\\'s; insert into alembic_version values (1)'").kind, SQL_OTHER);
    struct sqlclass c = cls("INSERT INTO alembic_version (version_num) VALUES ('it''s');");
    cr_assert_eq(c.kind, SQL_VT_INSERT);
    cr_assert_str_eq(c.value.text, "it's");
}

/* A multi-statement string is never one of Alembic's statements. */
Test(classify, multi_statement_strings)
{
    struct sqlclass c = cls("BEGIN; SELECT 1; INSERT INTO alembic_version (version_num) VALUES "
                            "('a'); COMMIT");
    cr_assert_eq(c.kind, SQL_OTHER);
    cr_assert_eq(c.nstatements, 4);
    c = cls("update alembic_version set version_num='b' where alembic_version.version_num='a';;; "
            "delete from alembic_version;");
    cr_assert_eq(c.kind, SQL_OTHER);
    cr_assert_eq(c.nstatements, 2);
    c = cls("update alembic_version set version_num='b' where alembic_version.version_num='a';;");
    cr_assert_eq(c.kind, SQL_VT_UPDATE);
    cr_assert_eq(c.nstatements, 1);
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
    /* a version-table statement with a huge tail: not one statement we can see whole */
    memcpy(big, "INSERT INTO alembic_version (version_num) VALUES ('a', '", 56);
    c = cls(big);
    cr_assert_eq(c.kind, SQL_OTHER);
    free(big);
}

static enum sql_verb verb(const char *sql, char *tag)
{
    return sqlclass_verb(sql, tag, 64);
}

#define VERB_IS(sql, v, t)                                                                   \
    do {                                                                                     \
        char tag_[64];                                                                       \
        cr_assert_eq(verb(sql, tag_), v, "%s", sql);                                         \
        cr_assert_str_eq(tag_, t, "%s", sql);                                                \
    } while (0)

/* The tags are PostgreSQL 15's own (CreateCommandTag). */
Test(verb, ddl_tags)
{
    VERB_IS("CREATE TABLE users (id serial PRIMARY KEY)", VERB_DDL, "CREATE TABLE");
    VERB_IS("create unlogged table if not exists t (a int)", VERB_DDL, "CREATE TABLE");
    VERB_IS("create temp table t (a int) on commit drop", VERB_DDL, "CREATE TABLE");
    VERB_IS("CREATE UNIQUE INDEX ix ON t (a)", VERB_DDL, "CREATE INDEX");
    VERB_IS("CREATE TYPE mood AS ENUM ('a', 'b')", VERB_DDL, "CREATE TYPE");
    VERB_IS("create or replace view v as select 1", VERB_DDL, "CREATE VIEW");
    VERB_IS("create or replace function f() returns int as $$ select 1; $$ language sql",
            VERB_DDL, "CREATE FUNCTION");
    VERB_IS("create constraint trigger tr after insert on t for each row execute function f()",
            VERB_DDL, "CREATE TRIGGER");
    VERB_IS("CREATE SEQUENCE s", VERB_DDL, "CREATE SEQUENCE");
    VERB_IS("CREATE SCHEMA app", VERB_DDL, "CREATE SCHEMA");
    VERB_IS("create extension if not exists pgcrypto", VERB_DDL, "CREATE EXTENSION");
    VERB_IS("ALTER TABLE users ADD COLUMN email VARCHAR(100)", VERB_DDL, "ALTER TABLE");
    VERB_IS("ALTER TYPE mood ADD VALUE 'c'", VERB_DDL, "ALTER TYPE");
    VERB_IS("DROP TABLE IF EXISTS t CASCADE", VERB_DDL, "DROP TABLE");
    VERB_IS("DROP INDEX ix", VERB_DDL, "DROP INDEX");
    VERB_IS("COMMENT ON TABLE t IS 'x'", VERB_DDL, "COMMENT");
    VERB_IS("GRANT SELECT ON t TO public", VERB_DDL, "GRANT");
    VERB_IS("/* c */ -- c\n create table t (a int);", VERB_DDL, "CREATE TABLE");
}

/* Where the tag is not fixed (it carries a row count), or the statement
 * would behave differently in a transaction block: not DDL. */
Test(verb, uncertain_tags_are_other)
{
    VERB_IS("CREATE TABLE t AS SELECT 1", VERB_OTHER, "");
    VERB_IS("CREATE TABLE t (a, b) AS VALUES (1, 2)", VERB_OTHER, "");
    VERB_IS("CREATE TABLE t AS EXECUTE p", VERB_OTHER, "");
    VERB_IS("CREATE MATERIALIZED VIEW m AS SELECT 1", VERB_OTHER, "");
    VERB_IS("CREATE INDEX CONCURRENTLY ix ON t (a)", VERB_OTHER, "");
    VERB_IS("DROP INDEX CONCURRENTLY ix", VERB_OTHER, "");
    VERB_IS("CREATE TABLE a (x int); CREATE TABLE b (x int)", VERB_OTHER, "");
    VERB_IS("SELECT 1", VERB_OTHER, "");
    VERB_IS("WITH x AS (INSERT INTO t VALUES (1) RETURNING 1) SELECT * FROM x", VERB_OTHER, "");
    VERB_IS("COPY t FROM STDIN", VERB_OTHER, "");
    VERB_IS("-- CREATE TABLE t (a int)\nSELECT 1", VERB_OTHER, "");
    VERB_IS("", VERB_OTHER, "");
}

Test(verb, plain_inserts)
{
    VERB_IS("INSERT INTO t VALUES (1)", VERB_INSERT, "INSERT 0 1");
    VERB_IS("INSERT INTO migration_runs (revision, pid) VALUES ('0001aaaa', pg_backend_pid())",
            VERB_INSERT, "INSERT 0 1");
    VERB_IS("insert into s.t (a, b) values ($1, (select 1)), ('x', f(1, 2)), (default, 3);",
            VERB_INSERT, "INSERT 0 3");
    VERB_IS("INSERT INTO t DEFAULT VALUES", VERB_INSERT, "INSERT 0 1");
    VERB_IS("INSERT INTO t VALUES ('a;b')", VERB_INSERT, "INSERT 0 1");
    VERB_IS("INSERT INTO t SELECT * FROM u", VERB_OTHER, "");
    VERB_IS("INSERT INTO t VALUES (1) ON CONFLICT DO NOTHING", VERB_OTHER, "");
    VERB_IS("INSERT INTO t VALUES (1) RETURNING id", VERB_OTHER, "");
    VERB_IS("INSERT INTO t AS x VALUES (1)", VERB_OTHER, "");
    VERB_IS("INSERT INTO t VALUES (1); INSERT INTO t VALUES (2)", VERB_OTHER, "");
    VERB_IS("INSERT INTO t DEFAULT VALUES RETURNING id", VERB_OTHER, "");
    VERB_IS("INSERT INTO t VALUES (1", VERB_OTHER, "");
}

Test(verb, transaction_control)
{
    VERB_IS("COMMIT", VERB_COMMIT, "COMMIT");
    VERB_IS("end transaction;", VERB_COMMIT, "COMMIT");
    VERB_IS("ROLLBACK", VERB_ROLLBACK, "ROLLBACK");
    VERB_IS("abort work", VERB_ROLLBACK, "ROLLBACK");
    VERB_IS("SAVEPOINT sa_savepoint_1", VERB_SAVEPOINT, "SAVEPOINT");
    VERB_IS("SAVEPOINT \"_pg3_1\"", VERB_SAVEPOINT, "SAVEPOINT");
    VERB_IS("RELEASE SAVEPOINT sa_savepoint_1", VERB_RELEASE, "RELEASE");
    VERB_IS("release x", VERB_RELEASE, "RELEASE");
    VERB_IS("ROLLBACK TO SAVEPOINT sa_savepoint_1", VERB_ROLLBACK_TO, "ROLLBACK");
    VERB_IS("rollback transaction to x", VERB_ROLLBACK_TO, "ROLLBACK");
    VERB_IS("COMMIT AND CHAIN", VERB_TXN_OTHER, "");
    VERB_IS("ROLLBACK AND CHAIN", VERB_TXN_OTHER, "");
    VERB_IS("COMMIT PREPARED 'x'", VERB_TXN_OTHER, "");
    VERB_IS("PREPARE TRANSACTION 'x'", VERB_TXN_OTHER, "");
    VERB_IS("PREPARE p AS SELECT 1", VERB_OTHER, "");
    VERB_IS("INSERT INTO t VALUES (1); COMMIT", VERB_OTHER, "");
    VERB_IS("COMMIT; BEGIN", VERB_OTHER, "");
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
    cr_assert_str_eq(sqlclass_kind_name(SQL_VT_CREATE), "CREATE TABLE");
    cr_assert_str_eq(sqlclass_kind_name(SQL_VT_READ), "SELECT");
    cr_assert_str_eq(sqlclass_kind_name(SQL_OTHER), "other");
}

static bool inert(const char *sql)
{
    bool local = true;
    bool r = sqlclass_inert(sql, &local);
    cr_assert(!local || r, "local set for a statement that is not inert: %s", sql);
    return r;
}

static bool inert_local(const char *sql)
{
    bool local = false;
    return sqlclass_inert(sql, &local) && local;
}

Test(inert, reads_that_touch_no_table_and_leave_no_session_state)
{
    cr_assert(inert("SELECT pg_sleep(0.2)"));
    cr_assert(inert("select current_schema()"));
    cr_assert(inert("SELECT 1"));
    cr_assert(inert("SELECT version()"));
    cr_assert(inert("SHOW transaction isolation level"));
    cr_assert(inert("SHOW search_path;"));
    cr_assert(inert_local("SET LOCAL lock_timeout = '1s';"));
    cr_assert(inert_local("set local statement_timeout to 5000"));
    cr_assert(inert_local("SET LOCAL search_path TO tenant_1, public"));
    cr_assert(inert_local("SET LOCAL myext.flag = on"));
    cr_assert_not(inert_local("SELECT pg_sleep(0.2)"));
    /* session state the stand-in's ROLLBACK would undo, a clean COMMIT keep */
    cr_assert_not(inert("SET lock_timeout = '1s'"));
    cr_assert_not(inert("SET search_path TO tenant_1"));
    cr_assert_not(inert("SET SESSION statement_timeout = 0"));
    cr_assert_not(inert("RESET search_path"));
    cr_assert_not(inert("SELECT set_config('search_path', 't1', false)"));
    cr_assert_not(inert("SELECT set_tenant()"));             /* a function of the app's */
    cr_assert_not(inert("SET LOCAL lock_timeout"));
    cr_assert_not(inert("SET LOCAL TRANSACTION READ WRITE"));
    cr_assert_not(inert("SET LOCAL a = 1; SET b = 2"));
    cr_assert_not(inert("select 'from' as x"));               /* a word not on the list */
    cr_assert_not(inert("SELECT count(*) FROM users"));
    cr_assert_not(inert("SELECT relname FROM pg_class"));    /* not even a catalog */
    cr_assert_not(inert("SELECT 1 INTO t"));
    cr_assert_not(inert("SELECT (SELECT max(id) FROM users)"));
    cr_assert_not(inert("SELECT 1; DELETE FROM users"));
    cr_assert_not(inert("INSERT INTO t VALUES (1)"));
    cr_assert_not(inert("WITH x AS (SELECT 1) SELECT * FROM x"));
    cr_assert_not(inert("SELECT nextval('s')"));
    cr_assert_not(inert(NULL));
}

/* The length shortcut of the wrappers' text-only hook (target unknown). */
Test(mentions, length_first)
{
    struct sqlclass_name nm;
    sqlclass_name_init(&nm, "alembic_version");
    cr_assert(sqlclass_too_short(strlen("SELECT 1"), &nm));
    cr_assert(sqlclass_too_short(14, &nm));
    cr_assert_not(sqlclass_too_short(15, &nm));
    cr_assert(sqlclass_mentions_name_len("alembic_version", 15, &nm));
    cr_assert_not(sqlclass_mentions_name_len("alembic_versio", 14, &nm));
    sqlclass_name_init(&nm, "a\"b");          /* a quoted name: never "too short" */
    cr_assert_not(sqlclass_too_short(0, &nm));
    cr_assert(sqlclass_mentions_name_len("x", 1, &nm));
}

/* Which table an Alembic version-table statement names (issue 12: a
 * leader learns the table its migration really uses). */
#define VT_IS(sql, want_schema, want_table, want_kind)                                        \
    do {                                                                                      \
        char s_[128] = "?", t_[128] = "?";                                                    \
        struct sqlclass c_;                                                                   \
        cr_assert(sqlclass_vt_statement(sql, s_, sizeof s_, t_, sizeof t_, &c_), "%s", sql);  \
        cr_assert_str_eq(s_, want_schema, "%s", sql);                                         \
        cr_assert_str_eq(t_, want_table, "%s", sql);                                          \
        cr_assert_eq(c_.kind, want_kind, "%s: kind %d", sql, c_.kind);                        \
    } while (0)
#define VT_NOT(sql)                                                                           \
    do {                                                                                      \
        char s_[128], t_[128];                                                                \
        struct sqlclass c_;                                                                   \
        cr_assert_not(sqlclass_vt_statement(sql, s_, sizeof s_, t_, sizeof t_, &c_), "%s", sql); \
    } while (0)

Test(vt_statement, alembic_shapes_on_any_table)
{
    VT_IS("CREATE TABLE my_version (\n    version_num VARCHAR(32) NOT NULL,\n"
          "    CONSTRAINT my_version_pkc PRIMARY KEY (version_num)\n)",
          "", "my_version", SQL_VT_CREATE);
    VT_IS("CREATE TABLE ops.app_versions (version_num VARCHAR(32) NOT NULL, "
          "CONSTRAINT app_versions_pkc PRIMARY KEY (version_num))",
          "ops", "app_versions", SQL_VT_CREATE);
    VT_IS("INSERT INTO my_version (version_num) VALUES ('0001aaaa') RETURNING my_version.version_num",
          "", "my_version", SQL_VT_INSERT);
    VT_IS("INSERT INTO ops.alembic_version (version_num) VALUES ($1)", "ops", "alembic_version",
          SQL_VT_INSERT);
    VT_IS("UPDATE ops.v SET version_num='0002bbbb' WHERE v.version_num = '0001aaaa'", "ops", "v",
          SQL_VT_UPDATE);
    VT_IS("UPDATE \"Ops\".\"My Version\" SET version_num=$1 WHERE \"My Version\".version_num = $2",
          "Ops", "My Version", SQL_VT_UPDATE);
    VT_IS("SELECT my_version.version_num \nFROM my_version", "", "my_version", SQL_VT_READ);
    VT_IS("SELECT ops.my_version.version_num FROM ops.my_version", "ops", "my_version",
          SQL_VT_READ);
    VT_IS("DELETE FROM My_Version WHERE my_version.version_num = '0001aaaa'", "", "my_version",
          SQL_VT_DELETE);
}

Test(vt_statement, anything_else_is_not_learned)
{
    VT_NOT("CREATE TABLE users (id serial, version_num text)");      /* not its first column */
    VT_NOT("CREATE TABLE v (version_num VARCHAR(32)); DROP TABLE x"); /* two statements */
    VT_NOT("INSERT INTO v (version_num, x) VALUES ('a', 1)");
    VT_NOT("INSERT INTO v (version_num) SELECT version_num FROM w");
    VT_NOT("UPDATE v SET version_num = version_num || 'x'");
    VT_NOT("SELECT version_num FROM v");                               /* not Alembic's */
    VT_NOT("SELECT v.version_num FROM w");                             /* another table */
    VT_NOT("SELECT v.version_num FROM v WHERE true");
    VT_NOT("select relname from pg_class where relname='version_num'"); /* has_table */
    VT_NOT("-- version_num\nSELECT 1");
    VT_NOT("");
    VT_NOT((const char *)NULL);
}

/* Which schema SQLAlchemy's has_table asks about (per-schema version
 * tables, gate_schema.c): psycopg2 inlines the literals. */
Test(has_table_schema, sqlalchemy_shapes)
{
    char s[64];
    /* 1.4, no schema: the search_path's */
    cr_assert(sqlclass_has_table_schema(
        "select relname from pg_class c join pg_namespace n on n.oid=c.relnamespace where "
        "pg_catalog.pg_table_is_visible(c.oid) and relname='alembic_version'", s, sizeof s));
    cr_assert_str_eq(s, "");
    /* 1.4 with a schema */
    cr_assert(sqlclass_has_table_schema(
        "select relname from pg_class c join pg_namespace n on n.oid=c.relnamespace where "
        "n.nspname='tenant_b' and relname='alembic_version'", s, sizeof s));
    cr_assert_str_eq(s, "tenant_b");
    /* 2.0: "!=" is the visible-table form's exclusion, not the schema */
    cr_assert(sqlclass_has_table_schema(
        "SELECT pg_catalog.pg_class.relname FROM pg_catalog.pg_class JOIN pg_catalog.pg_namespace "
        "ON pg_catalog.pg_namespace.oid = pg_catalog.pg_class.relnamespace WHERE "
        "pg_catalog.pg_class.relname = 'alembic_version' AND "
        "pg_catalog.pg_table_is_visible(pg_catalog.pg_class.oid) AND "
        "pg_catalog.pg_namespace.nspname != 'pg_catalog'", s, sizeof s));
    cr_assert_str_eq(s, "");
    cr_assert(sqlclass_has_table_schema(
        "SELECT pg_catalog.pg_class.relname FROM pg_catalog.pg_class JOIN pg_catalog.pg_namespace "
        "ON pg_catalog.pg_namespace.oid = pg_catalog.pg_class.relnamespace WHERE "
        "pg_catalog.pg_class.relname = 'alembic_version' AND "
        "pg_catalog.pg_namespace.nspname = 'We''ird'", s, sizeof s));
    cr_assert_str_eq(s, "We'ird");
}

Test(has_table_schema, nothing_to_read)
{
    char s[8];
    cr_assert_not(sqlclass_has_table_schema("select 1 from pg_class where relname = 'x'", s,
                                            sizeof s));
    cr_assert_not(sqlclass_has_table_schema("select 1 where n.nspname = $1", s, sizeof s));
    cr_assert_not(sqlclass_has_table_schema("select 1 where nspname = 'much_too_long'", s,
                                            sizeof s));
    cr_assert_not(sqlclass_has_table_schema("select 1 where nspname = 'open", s, sizeof s));
    cr_assert_not(sqlclass_has_table_schema(NULL, s, sizeof s));
}

/* SQLAlchemy 2.x's has_table, as it reaches the server through psycopg2
 * (literals) and psycopg 3 (parameters) (../shared/todays-releases.md). */
#define HAS_TABLE_20(NAME, KINDS, NSP)                                                           \
    "SELECT pg_catalog.pg_class.relname \nFROM pg_catalog.pg_class JOIN pg_catalog.pg_namespace " \
    "ON pg_catalog.pg_namespace.oid = pg_catalog.pg_class.relnamespace \nWHERE "                 \
    "pg_catalog.pg_class.relname = " NAME " AND pg_catalog.pg_class.relkind = ANY (ARRAY[" KINDS \
    "]) AND pg_catalog.pg_table_is_visible(pg_catalog.pg_class.oid) AND "                        \
    "pg_catalog.pg_namespace.nspname != " NSP

Test(classify, has_table_20_literal_and_parameter)
{
    struct sqlclass c = cls(HAS_TABLE_20("'alembic_version'::VARCHAR",
                                         "'r'::VARCHAR, 'p'::VARCHAR, 'f'::VARCHAR, 'v'::VARCHAR, "
                                         "'m'::VARCHAR",
                                         "'pg_catalog'::VARCHAR"));
    cr_assert_eq(c.kind, SQL_VT_EXISTS);
    cr_assert_eq(c.value.param, 0);
    c = cls(HAS_TABLE_20("$1::VARCHAR", "$2::VARCHAR, $3::VARCHAR, $4::VARCHAR, $5::VARCHAR, "
                                        "$6::VARCHAR",
                         "$7::VARCHAR"));
    cr_assert_eq(c.kind, SQL_VT_EXISTS); /* the caller checks $1's value */
    cr_assert_eq(c.value.param, 1);
    /* a word outside the probe's vocabulary: not has_table, whatever it names */
    cr_assert_eq(cls("select relname from pg_class where relname='alembic_version' and "
                     "record_boot(1) is not null").kind,
                 SQL_OTHER);
    cr_assert_eq(cls("select relname into x from pg_class where relname='alembic_version'").kind,
                 SQL_OTHER);
}

Test(probe, sqlalchemy_and_driver_probes_are_probes)
{
    static const char *const yes[] = {
        "select pg_catalog.version()",
        "select current_schema()",
        "show transaction isolation level",
        "show standard_conforming_strings",
        "SHOW default_transaction_read_only",
        "SELECT CAST('test plain returns' AS VARCHAR(60)) AS anon_1",
        "SELECT CAST('test unicode returns' AS VARCHAR(60)) AS anon_1",
        "SELECT 1",
        "select relname from pg_class c join pg_namespace n on n.oid=c.relnamespace where "
        "pg_catalog.pg_table_is_visible(c.oid) and relname='alembic_version'",
        "select relname from pg_class c join pg_namespace n on n.oid=c.relnamespace where "
        "n.nspname='ops' and relname='alembic_version'",
        HAS_TABLE_20("$1::VARCHAR", "$2::VARCHAR, $3::VARCHAR", "$4::VARCHAR"),
        HAS_TABLE_20("'users'::VARCHAR", "'r'::VARCHAR", "'pg_catalog'::VARCHAR"),
        "SELECT t.oid, typarray\nFROM pg_type t JOIN pg_namespace ns\n    ON typnamespace = ns.oid\n"
        "WHERE typname = 'hstore';\n",
        "SELECT\n    typname AS name, oid, typarray AS array_oid,\n    oid::regtype::text AS regtype, "
        "typdelim AS delimiter\nFROM pg_type t\nWHERE t.oid = to_regtype($1)\nORDER BY t.oid\n",
        "SAVEPOINT \"_pg3_1\"",
        "RELEASE \"_pg3_12\"",
        "RELEASE SAVEPOINT \"_pg3_2\"",
    };
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++)
        cr_expect(sqlclass_probe(yes[i]), "%s", yes[i]);
}

Test(probe, the_apps_own_work_is_not)
{
    /* the class: state a rollback destroys, SELECT that writes among it */
    static const char *const no[] = {
        "SELECT record_boot(42)",
        "select record_boot($1)",
        "SELECT pg_advisory_xact_lock(1)",
        "SELECT pg_advisory_lock(1)",
        "SELECT set_config('search_path', 'x', false)",
        "SELECT nextval('s')",
        "SELECT pg_notify('c', 'x')",
        "SELECT lo_create(0)",
        "SELECT * FROM users FOR UPDATE",
        "SELECT 1 INTO t",
        "SELECT relname FROM pg_class FOR UPDATE",
        "WITH x AS (INSERT INTO t VALUES (1) RETURNING 1) SELECT 1",
        "SET search_path TO tenant_a",
        "SET LOCAL statement_timeout = 0",
        "NOTIFY boot",
        "LISTEN boot",
        "CREATE TEMP TABLE t (a int)",
        "PREPARE p AS SELECT 1",
        "DECLARE c CURSOR FOR SELECT 1",
        "SAVEPOINT sp1",
        "SAVEPOINT \"_pg3_\"",
        "SELECT 1; SELECT record_boot(1)",
        "select \"version\"()",
        "SELECT public.version()",
        "",
        NULL,
    };
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++)
        cr_expect_not(sqlclass_probe(no[i]), "%s", no[i] ? no[i] : "(null)");
}

Test(probe, bare_begin_only)
{
    cr_assert(sqlclass_begin("BEGIN"));
    cr_assert(sqlclass_begin("begin transaction isolation level repeatable read, read only"));
    cr_assert(sqlclass_begin("START TRANSACTION READ WRITE;"));
    cr_assert(sqlclass_begin("BEGIN WORK NOT DEFERRABLE"));
    cr_assert_not(sqlclass_begin("BEGIN; SELECT record_boot(1)"));
    cr_assert_not(sqlclass_begin("BEGIN; INSERT INTO t VALUES (1)"));
    cr_assert_not(sqlclass_begin("SELECT 1"));
    cr_assert_not(sqlclass_begin(NULL));
}

/* psycopg 3's DEALLOCATE, run for real in a stand-in (src/guard.c): one
 * DEALLOCATE statement, nothing else in the text. */
Test(deallocate, exactly_one_deallocate)
{
    cr_assert(sqlclass_deallocate("DEALLOCATE ALL"));          /* psycopg 3.3, libpq < 17 */
    cr_assert(sqlclass_deallocate("DEALLOCATE _pg3_12"));      /* its cache rotating */
    cr_assert(sqlclass_deallocate("deallocate prepare all;"));
    cr_assert(sqlclass_deallocate("DEALLOCATE PREPARE \"My stmt\""));
    cr_assert(sqlclass_deallocate("DEALLOCATE prepare"));      /* a statement named prepare */
    cr_assert(sqlclass_deallocate("/* c */ DEALLOCATE ALL ;;"));
    cr_assert_not(sqlclass_deallocate("DEALLOCATE ALL; DELETE FROM users"));
    cr_assert_not(sqlclass_deallocate("DEALLOCATE ALL; COMMIT"));
    cr_assert_not(sqlclass_deallocate("DEALLOCATE"));
    cr_assert_not(sqlclass_deallocate("DEALLOCATE 'x'"));
    cr_assert_not(sqlclass_deallocate("DEALLOCATE a b"));
    cr_assert_not(sqlclass_deallocate("DISCARD ALL"));
    cr_assert_not(sqlclass_deallocate("PREPARE p AS SELECT 1"));
    cr_assert_not(sqlclass_deallocate(NULL));
}
