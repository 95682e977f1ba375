"""deferred: seeds `settings`, whose UNIQUE is DEFERRABLE INITIALLY DEFERRED."""
import sqlalchemy as sa
from alembic import op

import oracle_hooks as hooks

revision = 'def1'
down_revision = 'def0'
branch_labels = None
depends_on = None


def upgrade():
    hooks.point("def1:start")
    op.execute("INSERT INTO settings (k, v) VALUES ('theme', 'dark')")
    op.execute("INSERT INTO extras VALUES (1)")
    hooks.point("def1:end")


def downgrade():
    raise NotImplementedError
