"""Reward rules: campaigns with windows, stages, caps and quotas; rewards owed per referral; milestones,
reversals, the review queue, tiers, branches and staff attribution.

Revision ID: 005b014faeab
Revises: 643560960bb2
Create Date: 2026-11-23 01:18:07.472464

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '005b014faeab'
down_revision = '643560960bb2'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('branches',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=80), nullable=False),
    sa.Column('address', sa.String(length=300), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_branches')),
    sa.UniqueConstraint('name', name=op.f('uq_branches_name'))
    )
    op.create_table('tiers',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=40), nullable=False),
    sa.Column('min_paid_referrals', sa.Integer(), nullable=False),
    sa.Column('window_months', sa.Integer(), nullable=False),
    sa.Column('privileges', sa.Text(), nullable=False),
    sa.CheckConstraint('min_paid_referrals > 0', name=op.f('ck_tiers_threshold_positive')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_tiers')),
    sa.UniqueConstraint('name', name=op.f('uq_tiers_name'))
    )
    op.create_table('campaign_month_counts',
    sa.Column('campaign_id', sa.Integer(), nullable=False),
    sa.Column('month', sa.String(length=7), nullable=False),
    sa.Column('used', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['campaign_id'], ['campaigns.id'], name=op.f('fk_campaign_month_counts_campaign_id_campaigns')),
    sa.PrimaryKeyConstraint('campaign_id', 'month', name=op.f('pk_campaign_month_counts'))
    )
    op.create_table('referrer_year_totals',
    sa.Column('referrer_id', sa.Integer(), nullable=False),
    sa.Column('year', sa.Integer(), nullable=False),
    sa.Column('rewarded_count', sa.Integer(), nullable=False),
    sa.Column('rewarded_value', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['referrer_id'], ['patients.id'], name=op.f('fk_referrer_year_totals_referrer_id_patients')),
    sa.PrimaryKeyConstraint('referrer_id', 'year', name=op.f('pk_referrer_year_totals'))
    )
    op.create_table('rewards',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('referral_id', sa.Integer(), nullable=False),
    sa.Column('patient_id', sa.Integer(), nullable=False),
    sa.Column('beneficiary', sa.String(length=16), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('amount', sa.Integer(), nullable=False),
    sa.Column('label', sa.String(length=80), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('stage', sa.String(length=16), nullable=False),
    sa.Column('valid_days', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('voucher_id', sa.Integer(), nullable=True),
    sa.Column('overridden', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('decided_at', sa.DateTime(), nullable=True),
    sa.Column('decided_by_id', sa.Integer(), nullable=True),
    sa.Column('decision_reason', sa.String(length=200), nullable=True),
    sa.CheckConstraint('amount >= 0', name=op.f('ck_rewards_amount_not_negative')),
    sa.ForeignKeyConstraint(['decided_by_id'], ['staff.id'], name=op.f('fk_rewards_decided_by_id_staff')),
    sa.ForeignKeyConstraint(['patient_id'], ['patients.id'], name=op.f('fk_rewards_patient_id_patients')),
    sa.ForeignKeyConstraint(['referral_id'], ['referrals.id'], name=op.f('fk_rewards_referral_id_referrals')),
    sa.ForeignKeyConstraint(['voucher_id'], ['vouchers.id'], name=op.f('fk_rewards_voucher_id_vouchers')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_rewards')),
    sa.UniqueConstraint('voucher_id', name=op.f('uq_rewards_voucher_id'))
    )
    with op.batch_alter_table('rewards', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_rewards_patient_id'), ['patient_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_rewards_referral_id'), ['referral_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_rewards_status'), ['status'], unique=False)

    op.create_table('review_requests',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=24), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('reward_id', sa.Integer(), nullable=True),
    sa.Column('code', sa.String(length=12), nullable=True),
    sa.Column('patient_id', sa.Integer(), nullable=True),
    sa.Column('referrer_id', sa.Integer(), nullable=True),
    sa.Column('details', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('created_by_id', sa.Integer(), nullable=True),
    sa.Column('branch_id', sa.Integer(), nullable=True),
    sa.Column('decided_at', sa.DateTime(), nullable=True),
    sa.Column('decided_by_id', sa.Integer(), nullable=True),
    sa.Column('decision_reason', sa.String(length=200), nullable=True),
    sa.ForeignKeyConstraint(['branch_id'], ['branches.id'], name=op.f('fk_review_requests_branch_id_branches')),
    sa.ForeignKeyConstraint(['created_by_id'], ['staff.id'], name=op.f('fk_review_requests_created_by_id_staff')),
    sa.ForeignKeyConstraint(['decided_by_id'], ['staff.id'], name=op.f('fk_review_requests_decided_by_id_staff')),
    sa.ForeignKeyConstraint(['patient_id'], ['patients.id'], name=op.f('fk_review_requests_patient_id_patients')),
    sa.ForeignKeyConstraint(['referrer_id'], ['patients.id'], name=op.f('fk_review_requests_referrer_id_patients')),
    sa.ForeignKeyConstraint(['reward_id'], ['rewards.id'], name=op.f('fk_review_requests_reward_id_rewards')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_review_requests')),
    sa.UniqueConstraint('reward_id', name=op.f('uq_review_requests_reward_id'))
    )
    with op.batch_alter_table('review_requests', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_review_requests_status'), ['status'], unique=False)

    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('branch_id', sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f('ix_audit_events_branch_id'), ['branch_id'], unique=False)
        batch_op.create_foreign_key(batch_op.f('fk_audit_events_branch_id_branches'), 'branches', ['branch_id'], ['id'])

    with op.batch_alter_table('campaigns', schema=None) as batch_op:
        batch_op.add_column(sa.Column('starts_at', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('covers', sa.String(length=16), server_default='both', nullable=False))
        batch_op.add_column(sa.Column('referrer_reward_stage', sa.String(length=16), server_default='redemption', nullable=False))
        batch_op.add_column(sa.Column('friend_reward_stage', sa.String(length=16), server_default='redemption', nullable=False))
        batch_op.add_column(sa.Column('cap_referrals_per_year', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('cap_value_per_year', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('friend_monthly_quota', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('quota_label', sa.String(length=80), server_default='', nullable=False))

    with op.batch_alter_table('patients', schema=None) as batch_op:
        batch_op.add_column(sa.Column('leaderboard_opt_in', sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.add_column(sa.Column('branch_id', sa.Integer(), nullable=True))
        batch_op.create_foreign_key(batch_op.f('fk_patients_branch_id_branches'), 'branches', ['branch_id'], ['id'])

    with op.batch_alter_table('referrals', schema=None) as batch_op:
        batch_op.add_column(sa.Column('branch_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('visited_at', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('visited_by_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('paid_at', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('paid_by_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('paid_amount', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('reversed_at', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('reversed_by_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('reversal_reason', sa.String(length=200), nullable=True))
        batch_op.create_index(batch_op.f('ix_referrals_branch_id'), ['branch_id'], unique=False)
        batch_op.create_foreign_key(batch_op.f('fk_referrals_reversed_by_id_staff'), 'staff', ['reversed_by_id'], ['id'])
        batch_op.create_foreign_key(batch_op.f('fk_referrals_branch_id_branches'), 'branches', ['branch_id'], ['id'])
        batch_op.create_foreign_key(batch_op.f('fk_referrals_paid_by_id_staff'), 'staff', ['paid_by_id'], ['id'])
        batch_op.create_foreign_key(batch_op.f('fk_referrals_visited_by_id_staff'), 'staff', ['visited_by_id'], ['id'])

    with op.batch_alter_table('staff', schema=None) as batch_op:
        batch_op.add_column(sa.Column('branch_id', sa.Integer(), nullable=True))
        batch_op.create_foreign_key(batch_op.f('fk_staff_branch_id_branches'), 'branches', ['branch_id'], ['id'])

    with op.batch_alter_table('vouchers', schema=None) as batch_op:
        batch_op.add_column(sa.Column('spent_branch_id', sa.Integer(), nullable=True))
        batch_op.create_foreign_key(batch_op.f('fk_vouchers_spent_branch_id_branches'), 'branches', ['spent_branch_id'], ['id'])

    # Referrals redeemed before this migration paid both sides at redemption: record those rewards as issued,
    # and count the referrers' rewards towards this year's caps.
    op.execute(
        "INSERT INTO rewards (referral_id, patient_id, beneficiary, kind, amount, label, currency, stage, valid_days, "
        "status, voucher_id, overridden, created_at) "
        "SELECT referral_id, patient_id, beneficiary, kind, amount, label, currency, 'redemption', 90, 'issued', id, "
        "false, issued_at FROM vouchers WHERE referral_id IS NOT NULL")
    year = ("CAST(strftime('%Y', issued_at) AS INTEGER)" if op.get_bind().dialect.name == "sqlite"
            else "CAST(EXTRACT(YEAR FROM issued_at) AS INTEGER)")
    op.execute(
        "INSERT INTO referrer_year_totals (referrer_id, year, rewarded_count, rewarded_value) "
        f"SELECT patient_id, {year}, COUNT(*), SUM(CASE WHEN kind = 'money' THEN amount ELSE 0 END) "
        f"FROM vouchers WHERE beneficiary = 'referrer' AND referral_id IS NOT NULL GROUP BY patient_id, {year}")


def downgrade():
    with op.batch_alter_table('vouchers', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_vouchers_spent_branch_id_branches'), type_='foreignkey')
        batch_op.drop_column('spent_branch_id')

    with op.batch_alter_table('staff', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_staff_branch_id_branches'), type_='foreignkey')
        batch_op.drop_column('branch_id')

    with op.batch_alter_table('referrals', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_referrals_visited_by_id_staff'), type_='foreignkey')
        batch_op.drop_constraint(batch_op.f('fk_referrals_paid_by_id_staff'), type_='foreignkey')
        batch_op.drop_constraint(batch_op.f('fk_referrals_branch_id_branches'), type_='foreignkey')
        batch_op.drop_constraint(batch_op.f('fk_referrals_reversed_by_id_staff'), type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_referrals_branch_id'))
        batch_op.drop_column('reversal_reason')
        batch_op.drop_column('reversed_by_id')
        batch_op.drop_column('reversed_at')
        batch_op.drop_column('paid_amount')
        batch_op.drop_column('paid_by_id')
        batch_op.drop_column('paid_at')
        batch_op.drop_column('visited_by_id')
        batch_op.drop_column('visited_at')
        batch_op.drop_column('branch_id')

    with op.batch_alter_table('patients', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_patients_branch_id_branches'), type_='foreignkey')
        batch_op.drop_column('branch_id')
        batch_op.drop_column('leaderboard_opt_in')

    with op.batch_alter_table('campaigns', schema=None) as batch_op:
        batch_op.drop_column('quota_label')
        batch_op.drop_column('friend_monthly_quota')
        batch_op.drop_column('cap_value_per_year')
        batch_op.drop_column('cap_referrals_per_year')
        batch_op.drop_column('friend_reward_stage')
        batch_op.drop_column('referrer_reward_stage')
        batch_op.drop_column('covers')
        batch_op.drop_column('starts_at')

    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_audit_events_branch_id_branches'), type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_audit_events_branch_id'))
        batch_op.drop_column('branch_id')

    with op.batch_alter_table('review_requests', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_review_requests_status'))

    op.drop_table('review_requests')
    with op.batch_alter_table('rewards', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_rewards_status'))
        batch_op.drop_index(batch_op.f('ix_rewards_referral_id'))
        batch_op.drop_index(batch_op.f('ix_rewards_patient_id'))

    op.drop_table('rewards')
    op.drop_table('referrer_year_totals')
    op.drop_table('campaign_month_counts')
    op.drop_table('tiers')
    op.drop_table('branches')
