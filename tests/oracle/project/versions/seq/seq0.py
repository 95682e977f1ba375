"""seq: a table with a serial."""
import sqlalchemy as sa
from alembic import op

import oracle_hooks as hooks

revision = 'seq0'
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    hooks.point("seq0:start")
    op.execute("CREATE TABLE orders (id serial PRIMARY KEY, name text)")
    hooks.point("seq0:end")


def downgrade():
    raise NotImplementedError
