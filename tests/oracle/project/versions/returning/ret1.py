"""returning: INSERT ... RETURNING, and a write that uses the returned id."""
import sqlalchemy as sa
from alembic import op

import oracle_hooks as hooks

revision = 'ret1'
down_revision = 'ret0'
branch_labels = None
depends_on = None


def upgrade():
    hooks.point("ret1:start")
    bind = op.get_bind()
    item = bind.execute(sa.text("INSERT INTO items (name) VALUES (:n) RETURNING id"),
                        {"n": "widget"}).scalar()
    bind.execute(sa.text("INSERT INTO item_notes SELECT name, :note FROM items WHERE id = :id"),
                 {"id": item, "note": "created"})
    hooks.point("ret1:end")


def downgrade():
    raise NotImplementedError
