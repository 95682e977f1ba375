"""deferred: a base revision."""
import sqlalchemy as sa
from alembic import op

import oracle_hooks as hooks

revision = 'def0'
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    hooks.point("def0:start")
    op.execute("CREATE TABLE extras (x int)")
    hooks.point("def0:end")


def downgrade():
    raise NotImplementedError
