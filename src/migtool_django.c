/*
 * migtool_django — Django behind include/migtool.h.
 *
 * The target is every node of the app's migration graph (django.h); the
 * state read is "which nodes are not recorded in django_migrations" (an
 * expression django_read_expr builds, the tool's state_expr, which the
 * gate and the command pass to versions.h's reads), so the
 * target is reached when none is missing.  Nothing is "ahead": a newer
 * deploy's extra records are not a node this process lacks.  The lead ends
 * when the process goes idle or exits (MIGTOOL_END_IDLE: post_migrate
 * follows the last record).  Django's statements are not learned from and
 * the race guard stays out.
 */
#include <stdio.h>
#include <stdlib.h>

#include "django.h"
#include "lock.h"
#include "log.h"
#include "migtool.h"

static struct django_target dj;
static char *read_expr; /* malloc'ed; lives as long as the process */

static void load(const struct config *cfg)
{
    django_load(cfg, &dj);
    if (dj.known && (read_expr = django_read_expr(&dj)) != NULL) {
        log_debug("tool: Django; target: %zu migrations (%s)", dj.n, dj.path);
    }
}

static bool known(void) { return read_expr != NULL; }

static const char *state_expr(void) { return read_expr; }

static const char *where(void) { return known() ? dj.path : ""; }

static const char *table(const struct config *cfg)
{
    (void)cfg;
    return "django_migrations";
}

static int64_t key(const struct config *cfg, const char *db)
{
    return lock_key_for_table(cfg, db, "", "django_migrations");
}

/* `v`: the nodes not recorded (at most 8, truncated beyond). */
static enum migtool_cmp compare(const struct versions *v)
{
    return known() && v->present && v->n == 0 && !v->truncated ? MIGTOOL_AT_TARGET
                                                               : MIGTOOL_BEHIND;
}

static void describe(const struct versions *v, char *buf, size_t sz)
{
    if (!known()) {
        snprintf(buf, sz, "(Django target unknown)");
    } else if (!v->present) {
        snprintf(buf, sz, "no django_migrations table");
    } else if (v->n == 0) {
        snprintf(buf, sz, "all %zu migrations recorded", dj.n);
    } else {
        size_t o = (size_t)snprintf(buf, sz, "not recorded: ");
        for (size_t i = 0; i < v->n && i < 8 && o < sz; i++)
            o += (size_t)snprintf(buf + o, sz - o, "%s%s", i ? ", " : "", v->v[i]);
        if (v->truncated && o < sz)
            snprintf(buf + o, sz - o, ", ...");
    }
}

static void describe_target(char *buf, size_t sz)
{
    snprintf(buf, sz, "all %zu Django migrations recorded", dj.n);
}

static void print_target(FILE *out)
{
    if (known())
        fprintf(out, "target:          %zu Django migrations  (from %s)\n", dj.n, dj.path);
    else
        fprintf(out, "target:          unknown\n");
}

static void print_state(FILE *out, const struct config *cfg, const struct versions *v)
{
    (void)cfg;
    fprintf(out, "django_migrations: ");
    if (!v->present) {
        fprintf(out, "absent");
    } else if (v->n == 0) {
        fprintf(out, "all %zu recorded", dj.n);
    } else {
        fprintf(out, "not recorded: ");
        for (size_t i = 0; i < v->n; i++)
            fprintf(out, "%s%s", i ? ", " : "", v->v[i]);
        fprintf(out, "%s", v->truncated ? ", ..." : "");
    }
    fprintf(out, "\n");
}

/* Django's writes are not told apart: its lead ends when the process goes
 * idle (MIGTOOL_END_IDLE), whatever it wrote. */
static bool writes(const struct config *cfg, const char *sql)
{
    (void)cfg;
    (void)sql;
    return false;
}

static bool guards(void) { return false; }

const struct migtool migtool_django = {
    .name = "django",
    .run_label = "Django ",
    .lead_end = MIGTOOL_END_IDLE,
    .unknown_leads_to_exit = true,
    .relock_after_lapse = true,
    .state_needs_target = true,
    .load = load,
    .known = known,
    .state_expr = state_expr,
    .where = where,
    .table = table,
    .key = key,
    .compare = compare,
    .describe = describe,
    .describe_target = describe_target,
    .print_target = print_target,
    .print_state = print_state,
    .writes = writes,
    .vt_statement = NULL,
    .decision_point = NULL,
    .guards = guards,
};
