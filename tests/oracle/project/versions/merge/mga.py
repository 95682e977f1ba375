"""merge: branch a."""
import sqlalchemy as sa
from alembic import op

import oracle_hooks as hooks

revision = 'mga'
down_revision = 'mg0'
branch_labels = None
depends_on = None


def upgrade():
    hooks.point("mga:start")
    op.execute("CREATE TABLE ma (x int)")
    op.execute("INSERT INTO mtrunk VALUES (1)")
    hooks.point("mga:end")


def downgrade():
    raise NotImplementedError
