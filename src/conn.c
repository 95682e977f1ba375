/*
 * conn — see include/conn.h.  An open-addressing hash table (linear
 * probing, tombstones), doubled when half full.
 */
#include "conn.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "atfork.h"
#include "log.h"
#include "shim.h"
#include "sqlclass.h"

#define TOMBSTONE ((const PGconn *)(uintptr_t)1)

struct slot {
    const PGconn *pg;
    const struct pq_copy *copy;
};

static struct slot *slots;
static size_t cap, used; /* used counts live entries and tombstones */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

/* Take the mutex, the fork handlers registered first. */
static void lock(void)
{
    conn_fork_init();
    pthread_mutex_lock(&mu);
}

static size_t hash_ptr(const PGconn *pg)
{
    uintptr_t x = (uintptr_t)pg;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return (size_t)x;
}

/* Index of pg's slot, or of the empty slot where it would go. */
static size_t find(const struct slot *tab, size_t n, const PGconn *pg)
{
    size_t i = hash_ptr(pg) & (n - 1);
    size_t first_free = SIZE_MAX;
    for (;; i = (i + 1) & (n - 1)) {
        if (tab[i].pg == pg)
            return i;
        if (tab[i].pg == TOMBSTONE && first_free == SIZE_MAX)
            first_free = i;
        if (!tab[i].pg)
            return first_free != SIZE_MAX ? first_free : i;
    }
}

static bool grow(void)
{
    size_t ncap = cap ? cap * 2 : 64;
    struct slot *n = calloc(ncap, sizeof *n);
    if (!n)
        return false;
    size_t live = 0;
    for (size_t i = 0; i < cap; i++) {
        if (slots[i].pg && slots[i].pg != TOMBSTONE) {
            n[find(n, ncap, slots[i].pg)] = slots[i];
            live++;
        }
    }
    free(slots);
    slots = n;
    cap = ncap;
    used = live;
    return true;
}

void conn_register(const PGconn *pg, const struct pq_copy *copy)
{
    if (!pg)
        return;
    lock();
    if ((used + 1) * 2 > cap && !grow()) {
        pthread_mutex_unlock(&mu);
        return; /* out of memory: the caller falls back to its own module */
    }
    size_t i = find(slots, cap, pg);
    if (slots[i].pg != pg)
        used += slots[i].pg == NULL;
    slots[i] = (struct slot){pg, copy};
    pthread_mutex_unlock(&mu);
}

const struct pq_copy *conn_copy(const PGconn *pg)
{
    const struct pq_copy *c = NULL;
    lock();
    if (cap) {
        size_t i = find(slots, cap, pg);
        if (slots[i].pg == pg)
            c = slots[i].copy;
    }
    pthread_mutex_unlock(&mu);
    return c;
}

static void prepared_forget(const PGconn *pg);

void conn_forget(const PGconn *pg)
{
    lock();
    if (cap && pg) {
        size_t i = find(slots, cap, pg);
        if (slots[i].pg == pg)
            slots[i] = (struct slot){TOMBSTONE, NULL};
    }
    prepared_forget(pg);
    pthread_mutex_unlock(&mu);
}

/* --- prepared statements ------------------------------------------------------- */

#define MAX_PREPARED 128
#define PREPARED_NAME_MAX 64

static struct prepared {
    const PGconn *pg;
    char name[PREPARED_NAME_MAX];
    char *sql;
    unsigned epoch; /* the window of full hooks it was noted in (shim.h) */
} prepared[MAX_PREPARED];
static size_t prepared_next; /* round robin: the oldest entry makes room */

static struct prepared *prepared_find(const PGconn *pg, const char *name)
{
    for (size_t i = 0; i < MAX_PREPARED; i++)
        if (prepared[i].pg == pg && strcmp(prepared[i].name, name) == 0)
            return &prepared[i];
    return NULL;
}

void conn_note_prepared(const PGconn *pg, const char *name, const char *sql)
{
    if (!pg || !sql || strlen(name ? name : "") >= PREPARED_NAME_MAX)
        return;
    name = name ? name : "";
    char *copy = strndup(sql, SQLCLASS_SCAN_MAX); /* as much as is ever classified */
    if (!copy)
        return;
    lock();
    struct prepared *p = prepared_find(pg, name);
    if (!p) {
        p = &prepared[prepared_next];
        prepared_next = (prepared_next + 1) % MAX_PREPARED;
    }
    free(p->sql);
    p->pg = pg;
    strcpy(p->name, name);
    p->sql = copy;
    p->epoch = shim_hooks_window();
    pthread_mutex_unlock(&mu);
}

char *conn_prepared_sql(const PGconn *pg, const char *name)
{
    char *out = NULL;
    lock();
    struct prepared *p = prepared_find(pg, name ? name : "");
    if (p && p->epoch == shim_hooks_window()) /* else the app ran unseen since */
        out = strdup(p->sql);
    pthread_mutex_unlock(&mu);
    return out;
}

static void prepared_forget(const PGconn *pg)
{
    for (size_t i = 0; i < MAX_PREPARED; i++) {
        if (prepared[i].pg == pg) {
            free(prepared[i].sql);
            memset(&prepared[i], 0, sizeof prepared[i]);
        }
    }
}

/* Does `sql` (the whole text) contain one of the words that
 * create or drop prepared statements in SQL: PREPARE, DEALLOCATE, DISCARD
 * (any case, anywhere: a string literal or a longer word too -- a false
 * match only forgets more)? */
static bool names_prepared_statements(const char *sql)
{
    static const char *const words[] = {"prepare", "dealloc", "discard"};
    for (size_t i = 0; sql[i]; i++) {
        char c = sql[i] | 0x20; /* (ASCII letters: lower case) */
        if (c != 'p' && c != 'd')
            continue;
        for (size_t w = 0; w < sizeof words / sizeof *words; w++)
            if (strncasecmp(sql + i, words[w], strlen(words[w])) == 0)
                return true;
    }
    return false;
}

void conn_note_text(const PGconn *pg, const char *sql)
{
    if (!pg || !sql || !names_prepared_statements(sql))
        return;
    lock();
    prepared_forget(pg);
    pthread_mutex_unlock(&mu);
}

/* --- fork ------------------------------------------------------------------ */

static void atfork_prepare(void) { pthread_mutex_lock(&mu); }
static void atfork_parent(void) { pthread_mutex_unlock(&mu); }
static void atfork_child(void) { pthread_mutex_unlock(&mu); }

static pthread_once_t fork_once = PTHREAD_ONCE_INIT;
static void fork_register(void)
{
    atfork_register("conn", atfork_prepare, atfork_parent, atfork_child);
}

void conn_fork_init(void) { pthread_once(&fork_once, fork_register); }
