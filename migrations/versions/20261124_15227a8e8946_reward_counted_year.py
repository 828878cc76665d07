"""A referrer's reward remembers which year's totals counted it under the yearly caps.

Reversing a referral takes its reward back out of those totals (clinic/services/rewards.py, release_cap_slot). The
year is the clinic's calendar year when the reward was paid; worked out again later from the voucher's issue time, it
was the wrong year for a reward paid near New Year once the manager had changed the clinic's time zone: the year that
counted it kept it (a later reward of that year went to review wrongly) and the other lost one (one reward too many).
NULL: not counted (a friend's reward, one held for review), or paid before this column (worked out as before).

Revision ID: 15227a8e8946
Revises: 4fe8ecfe1eda
Create Date: 2026-11-24 10:00:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '15227a8e8946'
down_revision = '4fe8ecfe1eda'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('rewards', schema=None) as batch_op:
        batch_op.add_column(sa.Column('counted_year', sa.Integer(), nullable=True))


def downgrade():
    with op.batch_alter_table('rewards', schema=None) as batch_op:
        batch_op.drop_column('counted_year')
