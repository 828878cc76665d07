"""Staff accounts made and reset by a manager on the staff page: a temporary password to change at the first login.

A clinic's manager adds a receptionist, or resets a forgotten password, without a shell: the portal gives a
temporary password, shown once, which only lets its holder choose their own (the flag below) before anything else.

Revision ID: 4f0a9c2e7b13
Revises: 293c221489ae
Create Date: 2026-11-28 00:00:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '4f0a9c2e7b13'
down_revision = '293c221489ae'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('staff', schema=None) as batch_op:
        batch_op.add_column(sa.Column('password_change_required', sa.Boolean(), nullable=False,
                                      server_default=sa.false()))
        batch_op.add_column(sa.Column('password_changed_at', sa.DateTime(), nullable=True))


def downgrade():
    with op.batch_alter_table('staff', schema=None) as batch_op:
        batch_op.drop_column('password_changed_at')
        batch_op.drop_column('password_change_required')
