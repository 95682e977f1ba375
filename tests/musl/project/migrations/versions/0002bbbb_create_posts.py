"""create posts

Revision ID: 0002bbbb
Revises: 0001aaaa
"""
# The DDL is tests/musl/client.c's (it runs under musl, without Python).

revision = '0002bbbb'
down_revision = '0001aaaa'
branch_labels = None
depends_on = None


def upgrade():
    pass


def downgrade():
    pass
