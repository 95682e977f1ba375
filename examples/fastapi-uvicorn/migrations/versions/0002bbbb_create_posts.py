"""create posts

Revision ID: 0002bbbb
Revises: 0001aaaa
Create Date: 2024-01-01 00:00:02

"""
import os

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0002bbbb'
down_revision = '0001aaaa'
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
    op.create_table(
        "posts",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("users.id"),
                  nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("posts")
    op.execute(sa.text("DELETE FROM migration_runs WHERE revision = :rev")
               .bindparams(rev=revision))
