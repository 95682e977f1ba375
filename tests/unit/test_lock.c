/*
 * The pure parts of the lock protocol and of the statements it sends:
 * the lock's key (the same in every process, and in every version of the
 * shim, of a fleet that may run two versions side by side during a
 * rollout) and the quoting of names and text (pgsql.h).
 */
#include <criterion/criterion.h>
#include <string.h>

#include "config.h"
#include "lock.h"
#include "pgsql.h"

static struct config defaults(void)
{
    struct config cfg;
    config_defaults(&cfg);
    return cfg;
}

Test(lock, key_is_pinned)
{
    /* FNV-1a of "migshim", the database, the schema, the table, each
     * followed by 0xff: these values must never change (a fleet during a
     * rollout runs two versions of the shim on one lock) */
    struct config cfg = defaults();
    cr_assert_eq(lock_key_for(&cfg, "app"), -450695870186320346LL);
    cr_assert_eq(lock_key_for(&cfg, NULL), 2484473102135707441LL);
    cr_assert_eq(lock_key_for(&cfg, ""), 2484473102135707441LL);
    cr_assert_eq(lock_key_for_table(&cfg, "app", "", "django_migrations"), 2161658485088748105LL);
    cr_assert_eq(lock_key_for_table(&cfg, "app", "ops", "my_version"), 5000153464647190235LL);
    snprintf(cfg.version_table_schema, sizeof cfg.version_table_schema, "ops");
    snprintf(cfg.version_table, sizeof cfg.version_table, "my_version");
    cr_assert_eq(lock_key_for(&cfg, "app"), 5000153464647190235LL);
}

Test(lock, key_parts_are_separated)
{
    struct config cfg = defaults();
    cr_assert_neq(lock_key_for_table(&cfg, "ab", "", "c"), lock_key_for_table(&cfg, "a", "", "bc"));
    cr_assert_neq(lock_key_for_table(&cfg, "a", "b", "c"), lock_key_for_table(&cfg, "a", "", "bc"));
}

Test(lock, configured_key_wins)
{
    struct config cfg = defaults();
    cfg.lock_key_set = true;
    cfg.lock_key = -42;
    cr_assert_eq(lock_key_for(&cfg, "app"), -42);
    cr_assert_eq(lock_key_for_table(&cfg, "app", "", "django_migrations"), -42);
}

Test(pgsql, quote_ident)
{
    char out[64];
    pgsql_quote_ident("alembic_version", out, sizeof out);
    cr_assert_str_eq(out, "\"alembic_version\"");
    pgsql_quote_ident("My \"T\"", out, sizeof out);
    cr_assert_str_eq(out, "\"My \"\"T\"\"\"");
    pgsql_quote_ident("", out, sizeof out);
    cr_assert_str_eq(out, "\"\"");
    pgsql_quote_ident("abcdef", out, 6); /* cut short, still quoted */
    cr_assert_str_eq(out, "\"ab\"");
    pgsql_quote_ident("x", out, 2);
    cr_assert_str_eq(out, "");
}

Test(pgsql, quote_literal)
{
    char out[64];
    pgsql_quote_literal("it's", out, sizeof out);
    cr_assert_str_eq(out, "E'it''s'");
    pgsql_quote_literal("a\\b", out, sizeof out);
    cr_assert_str_eq(out, "E'a\\\\b'");
    pgsql_quote_literal("", out, sizeof out);
    cr_assert_str_eq(out, "E''");
    pgsql_quote_literal("abcdef", out, 7); /* cut short, still closed */
    cr_assert_str_eq(out, "E'ab'");
    pgsql_quote_literal("x", out, 3);
    cr_assert_str_eq(out, "");
}
