"""multi: several statements in one string."""
import sqlalchemy as sa
from alembic import op

import oracle_hooks as hooks

revision = 'mul1'
down_revision = 'mul0'
branch_labels = None
depends_on = None


def upgrade():
    hooks.point("mul1:start")
    op.execute("CREATE TABLE m1 (x int); INSERT INTO m1 VALUES (1); INSERT INTO m1 VALUES (2)")
    op.execute("UPDATE m1 SET x = x * 10; INSERT INTO m0 VALUES (7)")
    hooks.point("mul1:end")


def downgrade():
    raise NotImplementedError
