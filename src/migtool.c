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
