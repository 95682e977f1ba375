"""savepoint: a base revision."""
import sqlalchemy as sa
from alembic import op

import oracle_hooks as hooks

revision = 'sp0'
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    hooks.point("sp0:start")
    op.execute("CREATE TABLE sp_base (x int)")
    hooks.point("sp0:end")


def downgrade():
    raise NotImplementedError
