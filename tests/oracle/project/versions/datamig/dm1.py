"""datamig: a ledger."""
import sqlalchemy as sa
from alembic import op

import oracle_hooks as hooks

revision = 'dm1'
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    hooks.point("dm1:start")
    op.execute("CREATE TABLE ledger (name text, delta int)")
    hooks.point("dm1:end")


def downgrade():
    raise NotImplementedError
