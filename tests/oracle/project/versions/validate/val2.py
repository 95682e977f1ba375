"""validate: checks what the previous revision left before building on it
(a data migration's sanity check), then archives it."""
import sqlalchemy as sa
from alembic import op

import oracle_hooks as hooks

revision = 'val2'
down_revision = 'val1'
branch_labels = None
depends_on = None


def upgrade():
    hooks.point("val2:start")
    n = op.get_bind().execute(sa.text("SELECT count(*) FROM flags WHERE name = 'beta'")).scalar()
    if n != 1:
        raise RuntimeError("val2: expected the beta flag, found %d" % n)
    op.execute("CREATE TABLE flag_archive (name text)")
    op.execute("INSERT INTO flag_archive VALUES ('beta')")
    hooks.point("val2:end")


def downgrade():
    raise NotImplementedError
