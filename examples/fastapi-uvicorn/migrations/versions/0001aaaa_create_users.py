"""create users (and the migration_runs audit table)

Revision ID: 0001aaaa
Revises:
Create Date: 2024-01-01 00:00:01

"""
import os

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0001aaaa'
down_revision = None
branch_labels = None
depends_on = None

# Every revision sleeps this long inside the migration transaction, so that
# processes racing on an unguarded `upgrade head` reliably overlap.
SLEEP = float(os.environ.get("MIGRATION_SLEEP", "0.2"))


def record_run() -> None:
    """One row per execution of this revision's upgrade().  The table has no
    unique key on purpose: a revision applied twice shows up as two rows."""
    op.execute(
        sa.text("INSERT INTO migration_runs (revision, pid) VALUES (:rev, :pid)")
        .bindparams(rev=revision, pid=os.getpid()))
    op.execute(sa.text("SELECT pg_sleep(:s)").bindparams(s=SLEEP))


def upgrade() -> None:
    op.create_table(
        "migration_runs",
        sa.Column("revision", sa.Text(), nullable=False),
        sa.Column("pid", sa.Integer()),
        sa.Column("at", sa.DateTime(timezone=True),
                  server_default=sa.text("now()")),
    )
    record_run()
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(50), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("users")
    op.drop_table("migration_runs")
