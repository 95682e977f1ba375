"""cte: the archive."""
import sqlalchemy as sa
from alembic import op

import oracle_hooks as hooks

revision = 'cte0'
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    hooks.point("cte0:start")
    op.execute("CREATE TABLE archive (msg text)")
    hooks.point("cte0:end")


def downgrade():
    raise NotImplementedError
