"""deferred: more work."""
import sqlalchemy as sa
from alembic import op

import oracle_hooks as hooks

revision = 'def2'
down_revision = 'def1'
branch_labels = None
depends_on = None


def upgrade():
    hooks.point("def2:start")
    op.execute("CREATE TABLE prefs (k text PRIMARY KEY)")
    op.execute("INSERT INTO prefs VALUES ('a')")
    hooks.point("def2:end")


def downgrade():
    raise NotImplementedError
