"""branch: the trunk."""
import sqlalchemy as sa
from alembic import op

import oracle_hooks as hooks

revision = 'br0'
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    hooks.point("br0:start")
    op.execute("CREATE TABLE trunk (x int)")
    hooks.point("br0:end")


def downgrade():
    raise NotImplementedError
