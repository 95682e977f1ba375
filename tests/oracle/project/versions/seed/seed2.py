"""seed: a column and an index (DDL only: a stand-in can answer all of it)."""
import sqlalchemy as sa
from alembic import op

import oracle_hooks as hooks

revision = 'seed2'
down_revision = 'seed1'
branch_labels = None
depends_on = None


def upgrade():
    hooks.point("seed2:start")
    op.execute("ALTER TABLE users ADD COLUMN email text")
    op.execute("CREATE INDEX users_email ON users (email)")
    hooks.point("seed2:end")


def downgrade():
    raise NotImplementedError
