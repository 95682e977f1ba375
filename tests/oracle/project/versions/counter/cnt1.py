"""counter: a non-idempotent UPDATE in the first revision."""
import sqlalchemy as sa
from alembic import op

import oracle_hooks as hooks

revision = 'cnt1'
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    hooks.point("cnt1:start")
    op.execute("UPDATE counters SET n = n + 1 WHERE name = 'boots'")
    op.execute("CREATE TABLE c_log (msg text)")
    op.execute("INSERT INTO c_log VALUES ('migrated')")
    hooks.point("cnt1:end")


def downgrade():
    raise NotImplementedError
