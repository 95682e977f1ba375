"""branch: head a."""
import sqlalchemy as sa
from alembic import op

import oracle_hooks as hooks

revision = 'bra'
down_revision = 'br0'
branch_labels = None
depends_on = None


def upgrade():
    hooks.point("bra:start")
    op.execute("CREATE TABLE left_t (x int)")
    op.execute("INSERT INTO trunk VALUES (1)")
    hooks.point("bra:end")


def downgrade():
    raise NotImplementedError
