"""Printed cards and posters: card batches, cards, one registry of bearer codes, card rewards, poster consent.

Revision ID: 643560960bb2
Revises: a1f5562ccb74
Create Date: 2026-11-23 00:50:53.078412

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '643560960bb2'
down_revision = 'a1f5562ccb74'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('issued_codes',
    sa.Column('code', sa.String(length=12), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.PrimaryKeyConstraint('code', name=op.f('pk_issued_codes'))
    )
    op.create_table('card_batches',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('size', sa.Integer(), nullable=False),
    sa.Column('design', sa.String(length=16), nullable=False),
    sa.Column('bleed', sa.Boolean(), nullable=False),
    sa.Column('personal', sa.Boolean(), nullable=False),
    sa.Column('campaign_id', sa.Integer(), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('progress', sa.Integer(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('heartbeat_at', sa.DateTime(), nullable=True),
    sa.Column('pdf_filename', sa.String(length=80), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('created_by_id', sa.Integer(), nullable=True),
    sa.Column('finished_at', sa.DateTime(), nullable=True),
    sa.Column('voided_at', sa.DateTime(), nullable=True),
    sa.Column('void_reason', sa.String(length=200), nullable=True),
    sa.CheckConstraint('size >= 1 AND size <= 10000', name=op.f('ck_card_batches_size_in_range')),
    sa.ForeignKeyConstraint(['campaign_id'], ['campaigns.id'], name=op.f('fk_card_batches_campaign_id_campaigns')),
    sa.ForeignKeyConstraint(['created_by_id'], ['staff.id'], name=op.f('fk_card_batches_created_by_id_staff')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_card_batches'))
    )
    with op.batch_alter_table('card_batches', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_card_batches_status'), ['status'], unique=False)

    op.create_table('cards',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('batch_id', sa.Integer(), nullable=False),
    sa.Column('serial', sa.String(length=16), nullable=False),
    sa.Column('code', sa.String(length=12), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('patient_id', sa.Integer(), nullable=True),
    sa.Column('activated_at', sa.DateTime(), nullable=True),
    sa.Column('activated_by_id', sa.Integer(), nullable=True),
    sa.Column('redeemed_at', sa.DateTime(), nullable=True),
    sa.Column('voided_at', sa.DateTime(), nullable=True),
    sa.Column('voided_by_id', sa.Integer(), nullable=True),
    sa.Column('void_reason', sa.String(length=200), nullable=True),
    sa.CheckConstraint("status IN ('printed', 'activated', 'redeemed', 'void')", name=op.f('ck_cards_status_known')),
    sa.ForeignKeyConstraint(['activated_by_id'], ['staff.id'], name=op.f('fk_cards_activated_by_id_staff')),
    sa.ForeignKeyConstraint(['batch_id'], ['card_batches.id'], name=op.f('fk_cards_batch_id_card_batches')),
    sa.ForeignKeyConstraint(['patient_id'], ['patients.id'], name=op.f('fk_cards_patient_id_patients')),
    sa.ForeignKeyConstraint(['voided_by_id'], ['staff.id'], name=op.f('fk_cards_voided_by_id_staff')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_cards')),
    sa.UniqueConstraint('code', name=op.f('uq_cards_code')),
    sa.UniqueConstraint('serial', name=op.f('uq_cards_serial'))
    )
    with op.batch_alter_table('cards', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_cards_batch_id'), ['batch_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_cards_patient_id'), ['patient_id'], unique=False)

    with op.batch_alter_table('campaigns', schema=None) as batch_op:
        batch_op.add_column(sa.Column('card_referrer_reward_kind', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('card_referrer_reward_amount', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('card_referrer_reward_label', sa.String(length=80), nullable=True))
        batch_op.add_column(sa.Column('card_friend_reward_kind', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('card_friend_reward_amount', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('card_friend_reward_label', sa.String(length=80), nullable=True))

    with op.batch_alter_table('patients', schema=None) as batch_op:
        batch_op.add_column(sa.Column('name_on_posters', sa.Boolean(), server_default=sa.false(), nullable=False))

    with op.batch_alter_table('referrals', schema=None) as batch_op:
        batch_op.add_column(sa.Column('card_id', sa.Integer(), nullable=True))
        batch_op.create_unique_constraint(batch_op.f('uq_referrals_card_id'), ['card_id'])
        batch_op.create_foreign_key(batch_op.f('fk_referrals_card_id_cards'), 'cards', ['card_id'], ['id'])

    # Voucher codes issued so far join the registry, so that no card can ever take one of them.
    op.execute("INSERT INTO issued_codes (code, kind) SELECT code, 'voucher' FROM vouchers")


def downgrade():
    with op.batch_alter_table('referrals', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_referrals_card_id_cards'), type_='foreignkey')
        batch_op.drop_constraint(batch_op.f('uq_referrals_card_id'), type_='unique')
        batch_op.drop_column('card_id')

    with op.batch_alter_table('patients', schema=None) as batch_op:
        batch_op.drop_column('name_on_posters')

    with op.batch_alter_table('campaigns', schema=None) as batch_op:
        batch_op.drop_column('card_friend_reward_label')
        batch_op.drop_column('card_friend_reward_amount')
        batch_op.drop_column('card_friend_reward_kind')
        batch_op.drop_column('card_referrer_reward_label')
        batch_op.drop_column('card_referrer_reward_amount')
        batch_op.drop_column('card_referrer_reward_kind')

    with op.batch_alter_table('cards', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_cards_patient_id'))
        batch_op.drop_index(batch_op.f('ix_cards_batch_id'))

    op.drop_table('cards')
    with op.batch_alter_table('card_batches', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_card_batches_status'))

    op.drop_table('card_batches')
    op.drop_table('issued_codes')
