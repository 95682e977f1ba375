"""copy: COPY ... FROM STDIN into a new table."""
import sqlalchemy as sa
from alembic import op

import oracle_hooks as hooks

revision = 'cp1'
down_revision = 'cp0'
branch_labels = None
depends_on = None


def upgrade():
    hooks.point("cp1:start")
    op.execute("CREATE TABLE cities (name text, pop int)")
    hooks.copy_in("COPY cities (name, pop) FROM STDIN", "Oslo\t700000\nBergen\t285000\n")
    op.execute("INSERT INTO regions VALUES ('west')")
    hooks.point("cp1:end")


def downgrade():
    raise NotImplementedError
