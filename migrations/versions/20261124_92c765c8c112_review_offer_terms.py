"""An existing patient's review request records the offer the desk made: its campaign, both sides' reward terms
(kind, amount, label, stage, as a reward records them), the currency and the vouchers' validity.

Approval then pays exactly that, whatever became of the campaign meanwhile. Requests sent before this migration
keep these columns NULL: what the desk showed then is recorded nowhere, so nothing is back-filled, and such a
request is still priced by the campaign in force when it is approved (clinic/services/milestones.py, review_offer).

Revision ID: 92c765c8c112
Revises: 7e2a4c6b9d13
Create Date: 2026-11-24 04:20:06.238882

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '92c765c8c112'
down_revision = '7e2a4c6b9d13'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('review_requests', schema=None) as batch_op:
        batch_op.add_column(sa.Column('campaign_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('referrer_reward_kind', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('referrer_reward_amount', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('referrer_reward_label', sa.String(length=80), nullable=True))
        batch_op.add_column(sa.Column('referrer_reward_stage', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('friend_reward_kind', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('friend_reward_amount', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('friend_reward_label', sa.String(length=80), nullable=True))
        batch_op.add_column(sa.Column('friend_reward_stage', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('currency', sa.String(length=3), nullable=True))
        batch_op.add_column(sa.Column('voucher_valid_days', sa.Integer(), nullable=True))
        batch_op.create_foreign_key(batch_op.f('fk_review_requests_campaign_id_campaigns'), 'campaigns',
                                    ['campaign_id'], ['id'])
        batch_op.create_check_constraint(batch_op.f('ck_review_requests_referrer_amount_not_negative'),
                                         'referrer_reward_amount >= 0')
        batch_op.create_check_constraint(batch_op.f('ck_review_requests_friend_amount_not_negative'),
                                         'friend_reward_amount >= 0')


def downgrade():
    with op.batch_alter_table('review_requests', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('ck_review_requests_friend_amount_not_negative'), type_='check')
        batch_op.drop_constraint(batch_op.f('ck_review_requests_referrer_amount_not_negative'), type_='check')
        batch_op.drop_constraint(batch_op.f('fk_review_requests_campaign_id_campaigns'), type_='foreignkey')
        batch_op.drop_column('voucher_valid_days')
        batch_op.drop_column('currency')
        batch_op.drop_column('friend_reward_stage')
        batch_op.drop_column('friend_reward_label')
        batch_op.drop_column('friend_reward_amount')
        batch_op.drop_column('friend_reward_kind')
        batch_op.drop_column('referrer_reward_stage')
        batch_op.drop_column('referrer_reward_label')
        batch_op.drop_column('referrer_reward_amount')
        batch_op.drop_column('referrer_reward_kind')
        batch_op.drop_column('campaign_id')
