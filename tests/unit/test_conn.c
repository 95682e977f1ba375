/*
 * conn.h's notes of prepared texts: trusted only while they cannot be
 * stale (the window of full hooks they were made in, and no SQL text since
 * that may create or drop prepared statements).  A stale note would let
 * the guard classify -- and answer for -- another statement than the one
 * that ran.  (The PGconn pointers are never dereferenced: made-up ones.)
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "conn.h"
#include "shim.h"

#define PG(n) ((const PGconn *)(uintptr_t)(0x1000 * (n)))

static const char *VT_INSERT = "INSERT INTO alembic_version (version_num) VALUES ('0001aaaa')";

/* The note of `name` on `pg` is `want` (NULL: none). */
static void expect(const PGconn *pg, const char *name, const char *want)
{
    char *got = conn_prepared_sql(pg, name);
    if (want)
        cr_expect(got && strcmp(got, want) == 0, "%s: %s, want %s", name, got ? got : "NULL", want);
    else
        cr_expect(got == NULL, "%s: %s, want none", name, got);
    free(got);
}

Test(conn, a_note_lives_until_a_text_names_prepared_statements)
{
    conn_note_prepared(PG(1), "s1", VT_INSERT);
    conn_note_prepared(PG(2), "s1", "SELECT 2");
    expect(PG(1), "s1", VT_INSERT);
    conn_note_text(PG(1), "SELECT 1");
    conn_note_text(PG(1), "UPDATE users SET name = 'x'");
    expect(PG(1), "s1", VT_INSERT);
    conn_note_text(PG(1), "DeAllocate s1");
    expect(PG(1), "s1", NULL);
    expect(PG(2), "s1", "SELECT 2"); /* another connection's notes stay */
    conn_forget(PG(1));
    conn_forget(PG(2));
}

Test(conn, every_word_that_makes_or_drops_one_forgets_anywhere_in_the_text)
{
    static const char *texts[] = {
        "PREPARE s1 AS INSERT INTO users VALUES (1)",
        "deallocate all",
        "DEALLOCATE PREPARE s1",
        "discard ALL",
        "SELECT 1; /* then */ prepare s1 AS SELECT 2",
    };
    for (size_t i = 0; i < sizeof texts / sizeof *texts; i++) {
        conn_note_prepared(PG(3), "s1", VT_INSERT);
        conn_note_text(PG(3), texts[i]);
        expect(PG(3), "s1", NULL);
    }
    /* far past what the classifier reads (SQLCLASS_SCAN_MAX): the whole text */
    size_t n = 200000;
    char *big = malloc(n + 64);
    cr_assert(big);
    memset(big, ' ', n);
    strcpy(big + n, "; DEALLOCATE s1");
    conn_note_prepared(PG(3), "s1", VT_INSERT);
    conn_note_text(PG(3), big);
    expect(PG(3), "s1", NULL);
    free(big);
    conn_forget(PG(3));
}

Test(conn, a_note_from_an_earlier_window_of_full_hooks_is_stale)
{
    cr_assert_eq(shim_hooks & SHIM_HOOKS_ALL, 0);
    shim_hooks_add(1); /* a window opens */
    conn_note_prepared(PG(4), "s1", VT_INSERT);
    shim_hooks_add(1); /* a second reason in the same window */
    expect(PG(4), "s1", VT_INSERT);
    shim_hooks_add(-1);
    expect(PG(4), "s1", VT_INSERT);
    shim_hooks_add(-1); /* closed: the app's calls go unseen now */
    shim_hooks_sql_add(1); /* (texts only: still unseen for prepared statements) */
    shim_hooks_sql_add(-1);
    shim_hooks_add(1); /* the next window */
    expect(PG(4), "s1", NULL);
    conn_note_prepared(PG(4), "s1", "SELECT 4"); /* noted again in this one */
    expect(PG(4), "s1", "SELECT 4");
    shim_hooks_add(-1);
    conn_forget(PG(4));
}
