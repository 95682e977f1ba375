"""seed the plans (data), and take a while (WIRE_MIGRATION_SLEEP, default 2 s)

Revision ID: wire0003
Revises: wire0002
Create Date: 2026-12-07 20:00:02

The rows have no unique key: a second run of this revision would leave
each plan twice.  The sleep makes the leader's migration last long enough
for the waiters to really wait (the event-loop stall measurement).
"""
import os

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = "wire0003"
down_revision = "wire0002"
branch_labels = None
depends_on = None

PLANS = [("Free", "free"), ("Pro", "pro"), ("Team", "team")]


def upgrade() -> None:
    plans = sa.table("plans", sa.column("name", sa.String),
                     sa.column("tier", postgresql.ENUM(name="plan_tier", create_type=False)))
    op.bulk_insert(plans, [{"name": n, "tier": t} for n, t in PLANS])
    op.execute("SELECT pg_sleep(%s)" % float(os.environ.get("WIRE_MIGRATION_SLEEP", "2")))
    op.execute(f"INSERT INTO migration_runs (revision, pid) VALUES ('{revision}', {os.getpid()})")


def downgrade() -> None:
    op.execute("DELETE FROM plans")
