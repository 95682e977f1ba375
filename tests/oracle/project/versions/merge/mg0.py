"""merge: the trunk."""
import sqlalchemy as sa
from alembic import op

import oracle_hooks as hooks

revision = 'mg0'
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    hooks.point("mg0:start")
    op.execute("CREATE TABLE mtrunk (x int)")
    hooks.point("mg0:end")


def downgrade():
    raise NotImplementedError
