"""validate: the flag is retired."""
import sqlalchemy as sa
from alembic import op

import oracle_hooks as hooks

revision = 'val3'
down_revision = 'val2'
branch_labels = None
depends_on = None


def upgrade():
    hooks.point("val3:start")
    op.execute("DELETE FROM flags WHERE name = 'beta'")
    hooks.point("val3:end")


def downgrade():
    raise NotImplementedError
