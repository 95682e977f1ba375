"""returning: the tables."""
import sqlalchemy as sa
from alembic import op

import oracle_hooks as hooks

revision = 'ret0'
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    hooks.point("ret0:start")
    op.execute("CREATE TABLE items (id serial PRIMARY KEY, name text UNIQUE)")
    op.execute("CREATE TABLE item_notes (item_name text, note text)")
    hooks.point("ret0:end")


def downgrade():
    raise NotImplementedError
