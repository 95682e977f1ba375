"""datamig: reads every balance, then writes values computed from the read
(no DDL: a race shows as the version UPDATE matching 0 rows)."""
import sqlalchemy as sa
from alembic import op

import oracle_hooks as hooks

revision = 'dm2'
down_revision = 'dm1'
branch_labels = None
depends_on = None


def upgrade():
    hooks.point("dm2:start")
    bind = op.get_bind()
    rows = bind.execute(sa.text("SELECT name, balance FROM accounts ORDER BY name")).fetchall()
    for name, balance in rows:
        bind.execute(sa.text("UPDATE accounts SET balance = :b WHERE name = :n"),
                     {"b": balance * 2, "n": name})
        bind.execute(sa.text("INSERT INTO ledger VALUES (:n, :d)"), {"n": name, "d": balance})
    hooks.point("dm2:end")


def downgrade():
    raise NotImplementedError
