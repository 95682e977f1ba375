"""plans, and the enum type account_status on accounts

Revision ID: wire0002
Revises: wire0001
Create Date: 2026-12-07 20:00:01
"""
import os

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = "wire0002"
down_revision = "wire0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    status = postgresql.ENUM("active", "closed", name="account_status")
    status.create(op.get_bind())
    op.add_column("accounts", sa.Column("status", status, nullable=False,
                                        server_default="active"))
    op.create_table(
        "plans",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(40), nullable=False),   # no unique key: duplicates show
        sa.Column("tier", postgresql.ENUM(name="plan_tier", create_type=False),
                  nullable=False),
    )
    op.execute(f"INSERT INTO migration_runs (revision, pid) VALUES ('{revision}', {os.getpid()})")


def downgrade() -> None:
    op.drop_table("plans")
    op.drop_column("accounts", "status")
    op.execute("DROP TYPE account_status")
