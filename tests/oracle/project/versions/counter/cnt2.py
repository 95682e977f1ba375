"""counter: again, and an index."""
import sqlalchemy as sa
from alembic import op

import oracle_hooks as hooks

revision = 'cnt2'
down_revision = 'cnt1'
branch_labels = None
depends_on = None


def upgrade():
    hooks.point("cnt2:start")
    op.execute("UPDATE counters SET n = n + 10 WHERE name = 'boots'")
    op.execute("CREATE INDEX c_log_msg ON c_log (msg)")
    hooks.point("cnt2:end")


def downgrade():
    raise NotImplementedError
