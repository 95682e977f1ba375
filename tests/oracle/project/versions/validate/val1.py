"""validate: a flag table, seeded."""
import sqlalchemy as sa
from alembic import op

import oracle_hooks as hooks

revision = 'val1'
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    hooks.point("val1:start")
    op.execute("CREATE TABLE flags (name text PRIMARY KEY)")
    op.execute("INSERT INTO flags VALUES ('beta')")
    hooks.point("val1:end")


def downgrade():
    raise NotImplementedError
