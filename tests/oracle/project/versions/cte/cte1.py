"""cte: moves the inbox into the archive with a writing CTE."""
import sqlalchemy as sa
from alembic import op

import oracle_hooks as hooks

revision = 'cte1'
down_revision = 'cte0'
branch_labels = None
depends_on = None


def upgrade():
    hooks.point("cte1:start")
    op.execute("WITH moved AS (DELETE FROM inbox RETURNING msg) "
               "INSERT INTO archive SELECT msg FROM moved")
    op.execute("CREATE TABLE archive_done (at_rev text)")
    hooks.point("cte1:end")


def downgrade():
    raise NotImplementedError
