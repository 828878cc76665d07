"""Visit feedback: the patient's 0-10 answer to "would you recommend us?", on their progress page.

One row per answer: the score (0-10, checked by the database), when, the patient and their branch, and for a
detractor who asked to be called, when they asked and when and by whom the call was made. An erasure keeps the
score, date and branch with no patient (the clinic's NPS history stays right).

Revision ID: 6a2f9d4c1e58
Revises: 2ed24a0502df
Create Date: 2026-11-30 00:00:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '6a2f9d4c1e58'
down_revision = "2ed24a0502df"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'visit_feedback',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('patient_id', sa.Integer(), nullable=True),
        sa.Column('branch_id', sa.Integer(), nullable=True),
        sa.Column('score', sa.Integer(), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('callback_requested_at', sa.DateTime(), nullable=True),
        sa.Column('followed_up_at', sa.DateTime(), nullable=True),
        sa.Column('followed_up_by_id', sa.Integer(), nullable=True),
        sa.CheckConstraint('score >= 0 AND score <= 10', name=op.f('ck_visit_feedback_score_0_to_10')),
        sa.ForeignKeyConstraint(['patient_id'], ['patients.id'], name=op.f('fk_visit_feedback_patient_id_patients')),
        sa.ForeignKeyConstraint(['branch_id'], ['branches.id'], name=op.f('fk_visit_feedback_branch_id_branches')),
        sa.ForeignKeyConstraint(['followed_up_by_id'], ['staff.id'],
                                name=op.f('fk_visit_feedback_followed_up_by_id_staff')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_visit_feedback')),
    )
    op.create_index(op.f('ix_visit_feedback_patient_id'), 'visit_feedback', ['patient_id'], unique=False)
    op.create_index(op.f('ix_visit_feedback_created_at'), 'visit_feedback', ['created_at'], unique=False)


def downgrade():
    op.drop_index(op.f('ix_visit_feedback_created_at'), table_name='visit_feedback')
    op.drop_index(op.f('ix_visit_feedback_patient_id'), table_name='visit_feedback')
    op.drop_table('visit_feedback')
