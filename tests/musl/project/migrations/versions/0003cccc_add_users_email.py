"""add users.email

Revision ID: 0003cccc
Revises: 0002bbbb
"""
# The DDL is tests/musl/client.c's (it runs under musl, without Python).

revision = '0003cccc'
down_revision = '0002bbbb'
branch_labels = None
depends_on = None


def upgrade():
    pass


def downgrade():
    pass
