/*
 * gate_learn — the version table a leader learns from its own migration's
 * statements (see include/gate_int.h; the gate's state machine is gate.c;
 * the leader's re-read of the table it follows is gate_lead.c's).
 *
 * While LEADING and before any of the tool's statements on the configured
 * table, a statement in the tool's exact shape (Alembic's) on another
 * table -- a name or schema set where migshim could not read it: computed
 * in env.py -- means the migration keeps its versions there: the leader
 * follows it (re-reads it at each commit and releases the lock when it
 * holds exactly the target), publishes it for the waiters
 * (holder_mark_migrating_vt) and warns once, naming the settings to add.
 * A learned table never counts as "ahead": only exactly the target heads
 * release the lock.
 */
#include "gate_int.h"

#include <assert.h>
#include <stdio.h>
#include <string.h>

#include "config.h"
#include "log.h"
#include "shim.h"

/* The learned table's warning, once, from the process that writes it: a
 * late process that only reads it, found at the target, says so at info
 * level (gate_after). */
static void warn_learned(struct gdb *g)
{
    const struct config *cfg = shim_config();
    g->vt.warned = true;
    char seen[2 * CONFIG_NAME_MAX + 8], conf[2 * CONFIG_NAME_MAX + 8];
    vt_text(g->vt.schema, g->vt.table, seen, sizeof seen);
    vt_text(cfg->version_table_schema, cfg->version_table, conf, sizeof conf);
    NOTE(LOG_LVL_WARN, "learned", g->name, NULL,
         "database \"%s\": the migration writes the version table %s, not %s; following it "
         "(the migration lock is released when it holds the target).  Set "
         "version_table = \"%s\" (MIGSHIM_VERSION_TABLE) and version_table_schema = "
         "\"%s\" (MIGSHIM_VERSION_TABLE_SCHEMA) so that every process knows it",
         g->name, seen, conf, g->vt.table, g->vt.schema);
}

void learn_statement(struct gdb *g, PGconn *pg, const char *schema, const char *table,
                     bool writes)
{
    const struct config *cfg = shim_config();
    assert(g->st == G_LEADING);
    if (g->vt.learned) { /* the learned table's statements end in a re-read */
        if (strcmp(schema, g->vt.schema) == 0 && strcmp(table, g->vt.table) == 0) {
            lead_activity(g, pg, writes);
            if (writes)
                tell_lead(g);
        }
    } else if (!g->vt.known) {
        g->vt.known = true;
        if (writes)
            tell_lead(g);
        if (strcmp(schema, cfg->version_table_schema) != 0 ||
            strcmp(table, cfg->version_table) != 0) {
            g->vt.learned = true;
            snprintf(g->vt.schema, sizeof g->vt.schema, "%s", schema);
            snprintf(g->vt.table, sizeof g->vt.table, "%s", table);
            g->saw_vt = true; /* no lapse: this leader migrates */
            lead_migrating(g, schema, table);
            lead_activity(g, pg, writes);
        }
    }
    if (g->vt.learned && writes && !g->vt.warned)
        warn_learned(g);
}
