"""Check marks: a manager marks a row of Referrals to check as checked, until newer evidence appears.

One row per flag (rule + subject), with who marked it, when, an optional short note, and the newest referral (or
refused attempt) seen then. An erasure blanks the note of a mark on the erased referrer.

Revision ID: 8c4f2a6d1b93
Revises: 7c4d2e9a5b31
Create Date: 2026-12-01 00:00:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '8c4f2a6d1b93'
down_revision = '7c4d2e9a5b31'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'check_marks',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('rule', sa.String(length=16), nullable=False),
        sa.Column('subject', sa.String(length=40), nullable=False),
        sa.Column('referrer_id', sa.Integer(), nullable=True),
        sa.Column('staff_id', sa.Integer(), nullable=True),
        sa.Column('evidence_id', sa.Integer(), nullable=False),
        sa.Column('evidence_at', sa.DateTime(), nullable=False),
        sa.Column('checked_at', sa.DateTime(), nullable=False),
        sa.Column('checked_by_id', sa.Integer(), nullable=True),
        sa.Column('note', sa.String(length=200), nullable=True),
        sa.CheckConstraint("rule IN ('burst', 'never_came', 'one_desk', 'look_alike', 'wrong_codes')",
                           name=op.f('ck_check_marks_rule_known')),
        sa.ForeignKeyConstraint(['referrer_id'], ['patients.id'], name=op.f('fk_check_marks_referrer_id_patients')),
        sa.ForeignKeyConstraint(['staff_id'], ['staff.id'], name=op.f('fk_check_marks_staff_id_staff')),
        sa.ForeignKeyConstraint(['checked_by_id'], ['staff.id'], name=op.f('fk_check_marks_checked_by_id_staff')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_check_marks')),
        sa.UniqueConstraint('rule', 'subject', name='uq_check_marks_rule_subject'),
    )
    op.create_index(op.f('ix_check_marks_referrer_id'), 'check_marks', ['referrer_id'], unique=False)


def downgrade():
    op.drop_index(op.f('ix_check_marks_referrer_id'), table_name='check_marks')
    op.drop_table('check_marks')
