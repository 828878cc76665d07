"""Call-back requests: a friend leaves a name and phone on the invite page, and the desk calls them back.

A new table, nothing else changes. A lead names its referrer (the personal code's holder) and, once a redemption
registered the friend, the referral; the same phone through the same code is one lead (a unique pair).

Revision ID: 2ed24a0502df
Revises: 5e3c8a1f7b20
Create Date: 2026-11-24 21:33:43.030471 (named 20261129 to sort after the newest migration)

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '2ed24a0502df'
down_revision = "5e3c8a1f7b20"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('friend_leads',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('referrer_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=60), nullable=False),
    sa.Column('phone', sa.String(length=20), nullable=False),
    sa.Column('consent_at', sa.DateTime(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('status_changed_at', sa.DateTime(), nullable=True),
    sa.Column('status_changed_by_id', sa.Integer(), nullable=True),
    sa.Column('note', sa.String(length=200), nullable=True),
    sa.Column('converted_referral_id', sa.Integer(), nullable=True),
    sa.CheckConstraint("status IN ('new', 'contacted', 'booked', 'not_interested', 'converted')", name=op.f('ck_friend_leads_status_known')),
    sa.ForeignKeyConstraint(['converted_referral_id'], ['referrals.id'], name=op.f('fk_friend_leads_converted_referral_id_referrals')),
    sa.ForeignKeyConstraint(['referrer_id'], ['patients.id'], name=op.f('fk_friend_leads_referrer_id_patients')),
    sa.ForeignKeyConstraint(['status_changed_by_id'], ['staff.id'], name=op.f('fk_friend_leads_status_changed_by_id_staff')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_friend_leads')),
    sa.UniqueConstraint('referrer_id', 'phone', name='uq_friend_leads_referrer_phone')
    )
    with op.batch_alter_table('friend_leads', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_friend_leads_consent_at'), ['consent_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_friend_leads_status'), ['status'], unique=False)



def downgrade():
    with op.batch_alter_table('friend_leads', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_friend_leads_status'))
        batch_op.drop_index(batch_op.f('ix_friend_leads_consent_at'))

    op.drop_table('friend_leads')
