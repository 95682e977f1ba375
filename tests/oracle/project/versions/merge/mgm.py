"""merge: the merge of a and b."""
import sqlalchemy as sa
from alembic import op

import oracle_hooks as hooks

revision = 'mgm'
down_revision = ('mga', 'mgb')
branch_labels = None
depends_on = None


def upgrade():
    hooks.point("mgm:start")
    op.execute("INSERT INTO mtrunk VALUES (3)")
    hooks.point("mgm:end")


def downgrade():
    raise NotImplementedError
