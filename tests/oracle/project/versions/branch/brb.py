"""branch: head b."""
import sqlalchemy as sa
from alembic import op

import oracle_hooks as hooks

revision = 'brb'
down_revision = 'br0'
branch_labels = None
depends_on = None


def upgrade():
    hooks.point("brb:start")
    op.execute("CREATE TABLE right_t (x int)")
    op.execute("INSERT INTO trunk VALUES (2)")
    hooks.point("brb:end")


def downgrade():
    raise NotImplementedError
