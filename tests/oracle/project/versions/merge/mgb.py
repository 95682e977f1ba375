"""merge: branch b."""
import sqlalchemy as sa
from alembic import op

import oracle_hooks as hooks

revision = 'mgb'
down_revision = 'mg0'
branch_labels = None
depends_on = None


def upgrade():
    hooks.point("mgb:start")
    op.execute("CREATE TABLE mb (x int)")
    op.execute("INSERT INTO mtrunk VALUES (2)")
    hooks.point("mgb:end")


def downgrade():
    raise NotImplementedError
