"""copy: a base revision."""
import sqlalchemy as sa
from alembic import op

import oracle_hooks as hooks

revision = 'cp0'
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    hooks.point("cp0:start")
    op.execute("CREATE TABLE regions (name text)")
    hooks.point("cp0:end")


def downgrade():
    raise NotImplementedError
