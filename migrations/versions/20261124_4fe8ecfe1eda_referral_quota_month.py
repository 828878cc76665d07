"""A referral remembers the monthly quota place it took: which month's, if any.

A reversed referral gives its place back (clinic/services/rewards.py, return_quota_place), and only the referral
knows whether it took one and from which month's counter: the campaign's quota may have been set or changed since,
and the month is the clinic's, whose time zone a manager may change. NULL: no place taken, or a referral made before
this column (its place is not given back, as before).

Revision ID: 4fe8ecfe1eda
Revises: f3b9c2d41e07
Create Date: 2026-11-24 09:00:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '4fe8ecfe1eda'
down_revision = 'f3b9c2d41e07'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('referrals', schema=None) as batch_op:
        batch_op.add_column(sa.Column('quota_month', sa.String(length=7), nullable=True))


def downgrade():
    with op.batch_alter_table('referrals', schema=None) as batch_op:
        batch_op.drop_column('quota_month')
