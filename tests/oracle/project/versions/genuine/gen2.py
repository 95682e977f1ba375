"""genuine: CREATE UNIQUE INDEX over duplicate data (fails, every time)."""
import sqlalchemy as sa
from alembic import op

import oracle_hooks as hooks

revision = 'gen2'
down_revision = 'gen1'
branch_labels = None
depends_on = None


def upgrade():
    hooks.point("gen2:start")
    op.execute("INSERT INTO badges VALUES (1)")
    op.execute("CREATE UNIQUE INDEX people_name ON people (name)")
    hooks.point("gen2:end")


def downgrade():
    raise NotImplementedError
