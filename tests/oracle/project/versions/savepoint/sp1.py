"""savepoint: nested savepoints -- released, rolled back, and one whose
INSERT fails and is caught (insert-if-absent)."""
import sqlalchemy as sa
from alembic import op

import oracle_hooks as hooks

revision = 'sp1'
down_revision = 'sp0'
branch_labels = None
depends_on = None


def upgrade():
    hooks.point("sp1:start")
    from sqlalchemy.exc import IntegrityError
    bind = op.get_bind()
    op.execute("CREATE TABLE kv (k text PRIMARY KEY, v text)")
    ins = sa.text("INSERT INTO kv (k, v) VALUES (:k, :v)")
    with bind.begin_nested():
        bind.execute(ins, {"k": "a", "v": "1"})
        with bind.begin_nested():
            bind.execute(ins, {"k": "b", "v": "2"})
        inner = bind.begin_nested()
        bind.execute(ins, {"k": "c", "v": "3"})
        inner.rollback()
    try:
        with bind.begin_nested():
            bind.execute(ins, {"k": "a", "v": "again"})
    except IntegrityError:
        pass
    op.execute("INSERT INTO sp_base VALUES (1)")
    hooks.point("sp1:end")


def downgrade():
    raise NotImplementedError
