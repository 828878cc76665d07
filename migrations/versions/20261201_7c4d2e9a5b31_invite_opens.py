"""Invite page opens: per clinic day, per referrer and per way in (their code or their card), a count.

The top of the referral funnel: how many times the friends' page behind a patient's posters, shared links and cards
was opened. No visitor is recorded, only the number.

Revision ID: 7c4d2e9a5b31
Revises: 6a2f9d4c1e58
Create Date: 2026-12-01 00:00:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '7c4d2e9a5b31'
down_revision = '6a2f9d4c1e58'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'invite_opens',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('day', sa.Date(), nullable=False),
        sa.Column('patient_id', sa.Integer(), nullable=False),
        sa.Column('via', sa.String(length=8), nullable=False),
        sa.Column('opens', sa.Integer(), nullable=False),
        sa.CheckConstraint("via IN ('personal', 'card')", name=op.f('ck_invite_opens_via_known')),
        sa.CheckConstraint('opens > 0', name=op.f('ck_invite_opens_opens_positive')),
        sa.ForeignKeyConstraint(['patient_id'], ['patients.id'], name=op.f('fk_invite_opens_patient_id_patients')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_invite_opens')),
        sa.UniqueConstraint('day', 'patient_id', 'via', name=op.f('uq_invite_opens_day')),
    )
    op.create_index(op.f('ix_invite_opens_day'), 'invite_opens', ['day'], unique=False)
    op.create_index(op.f('ix_invite_opens_patient_id'), 'invite_opens', ['patient_id'], unique=False)


def downgrade():
    op.drop_index(op.f('ix_invite_opens_patient_id'), table_name='invite_opens')
    op.drop_index(op.f('ix_invite_opens_day'), table_name='invite_opens')
    op.drop_table('invite_opens')
