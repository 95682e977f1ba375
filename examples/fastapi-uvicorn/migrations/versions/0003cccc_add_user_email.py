"""add users.email

Revision ID: 0003cccc
Revises: 0002bbbb
Create Date: 2024-01-01 00:00:03

"""
import os

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0003cccc'
down_revision = '0002bbbb'
branch_labels = None
depends_on = None

SLEEP = float(os.environ.get("MIGRATION_SLEEP", "0.2"))


def record_run() -> None:
    op.execute(
        sa.text("INSERT INTO migration_runs (revision, pid) VALUES (:rev, :pid)")
        .bindparams(rev=revision, pid=os.getpid()))
    op.execute(sa.text("SELECT pg_sleep(:s)").bindparams(s=SLEEP))


def upgrade() -> None:
    record_run()
    op.add_column("users", sa.Column("email", sa.String(100)))


def downgrade() -> None:
    op.drop_column("users", "email")
    op.execute(sa.text("DELETE FROM migration_runs WHERE revision = :rev")
               .bindparams(rev=revision))
