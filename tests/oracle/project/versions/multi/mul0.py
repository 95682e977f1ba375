"""multi: a base revision."""
import sqlalchemy as sa
from alembic import op

import oracle_hooks as hooks

revision = 'mul0'
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    hooks.point("mul0:start")
    op.execute("CREATE TABLE m0 (x int)")
    hooks.point("mul0:end")


def downgrade():
    raise NotImplementedError
