"""create users and migration_runs

Revision ID: 0001aaaa
Revises: None
"""
# The DDL is tests/musl/client.c's (it runs under musl, without Python).

revision = '0001aaaa'
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    pass


def downgrade():
    pass
