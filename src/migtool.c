/*
 * migtool — which migration tool this process runs (include/migtool.h).
 */
#include "migtool.h"

#include "django.h"

const struct migtool *migtool_pick(const struct config *cfg, bool manage_py)
{
    return django_tool(cfg, manage_py) ? &migtool_django : &migtool_alembic;
}

const char *migtool_state_expr(const struct migtool *t)
{
    return t->state_expr ? t->state_expr() : NULL;
}

struct wait_policy migtool_wait_policy(const struct migtool *t, const struct config *cfg)
{
    return (struct wait_policy){
        .wait_timeout = cfg->wait_timeout,
        .fail_on_timeout = cfg->on_timeout == ON_TIMEOUT_FAIL,
        .leader_grace = cfg->leader_grace,
        .lead_settle = cfg->lead_settle,
        .lead_failures = cfg->lead_failures,
        .report_every = MIGTOOL_REPORT_EVERY,
        .lock_outlives_target = t->lead_end == MIGTOOL_END_IDLE,
        .reads_published_table = false,
        .counts_failed_runs = t->lead_end == MIGTOOL_END_RUN,
        .lapse_takes_lock_later = t->relock_after_lapse,
        .unknown_target_leads_to_exit = t->unknown_leads_to_exit,
        .may_learn_table = false,
        .lead_label = t->run_label,
    };
}
