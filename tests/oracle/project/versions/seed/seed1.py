"""seed: the first revision seeds `settings` (older than Alembic), then more work;
op.bulk_insert is an executemany (psycopg 3 replay: pipeline mode)."""
import sqlalchemy as sa
from alembic import op

import oracle_hooks as hooks

revision = 'seed1'
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    hooks.point("seed1:start")
    op.execute("INSERT INTO settings (k, v) VALUES ('theme', 'dark')")
    op.execute("CREATE TABLE users (id serial PRIMARY KEY, name text NOT NULL)")
    users = sa.table("users", sa.column("name", sa.Text))
    op.bulk_insert(users, [{"name": "ann"}, {"name": "bob"}, {"name": "cyd"}])
    hooks.point("seed1:end")


def downgrade():
    raise NotImplementedError
