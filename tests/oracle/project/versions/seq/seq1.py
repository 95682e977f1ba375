"""seq: nextval and setval of an existing sequence (not transactional), a new
sequence, SELECT ... INTO."""
import sqlalchemy as sa
from alembic import op

import oracle_hooks as hooks

revision = 'seq1'
down_revision = 'seq0'
branch_labels = None
depends_on = None


def upgrade():
    hooks.point("seq1:start")
    bind = op.get_bind()
    op.execute("INSERT INTO orders (name) VALUES ('first')")
    n = bind.execute(sa.text("SELECT nextval('orders_id_seq')")).scalar()
    assert n > 0
    op.execute("SELECT setval('orders_id_seq', 1000)")
    op.execute("CREATE SEQUENCE invoice_no START 500")
    op.execute("CREATE TABLE invoices (no bigint PRIMARY KEY, what text)")
    op.execute("INSERT INTO invoices VALUES (nextval('invoice_no'), 'first')")
    op.execute("SELECT name INTO TABLE orders_copy FROM orders")
    hooks.point("seq1:end")


def downgrade():
    raise NotImplementedError
