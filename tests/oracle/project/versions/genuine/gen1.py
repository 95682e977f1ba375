"""genuine: a table."""
import sqlalchemy as sa
from alembic import op

import oracle_hooks as hooks

revision = 'gen1'
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    hooks.point("gen1:start")
    op.execute("CREATE TABLE badges (id int PRIMARY KEY)")
    hooks.point("gen1:end")


def downgrade():
    raise NotImplementedError
