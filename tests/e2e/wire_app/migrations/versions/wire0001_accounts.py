"""accounts, with the enum type plan_tier (and the migration_runs audit table)

Revision ID: wire0001
Revises:
Create Date: 2026-12-07 20:00:00

Racing creators of the type plan_tier (or of alembic_version's row type)
fail on pg_type_typname_nsp_index.
"""
import os

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = "wire0001"
down_revision = None
branch_labels = None
depends_on = None


def record(rev):
    # one row per run of this revision, no unique key: "ran once" is a count
    op.execute(f"INSERT INTO migration_runs (revision, pid) VALUES ('{rev}', {os.getpid()})")


def upgrade() -> None:
    op.create_table(
        "migration_runs",
        sa.Column("revision", sa.Text(), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), server_default=sa.text("clock_timestamp()")),
    )
    op.create_table(
        "accounts",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(80), nullable=False),
        sa.Column("tier", postgresql.ENUM("free", "pro", "team", name="plan_tier"),
                  nullable=False),
    )
    record(revision)


def downgrade() -> None:
    op.drop_table("accounts")
    op.execute("DROP TYPE plan_tier")
    op.drop_table("migration_runs")
