"""A patient's personal data can be erased: when, and by whom.

Erasing blanks the name, display name, phone and record number in place (and the other tables' copies of them,
clinic/services/erasure.py) and keeps the row, since referrals, rewards, vouchers and the audit log refer to it:
money paid stays accounted for. These two columns say that it happened; a NULL ``erased_at`` is a patient as before.

Revision ID: c4e1d8a0b7f2
Revises: a55d61fa7e8d
Create Date: 2026-11-24 08:00:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'c4e1d8a0b7f2'
down_revision = 'a55d61fa7e8d'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('patients', schema=None) as batch_op:
        batch_op.add_column(sa.Column('erased_at', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('erased_by_id', sa.Integer(), nullable=True))
        batch_op.create_foreign_key(batch_op.f('fk_patients_erased_by_id_staff'), 'staff', ['erased_by_id'], ['id'])


def downgrade():
    with op.batch_alter_table('patients', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_patients_erased_by_id_staff'), type_='foreignkey')
        batch_op.drop_column('erased_by_id')
        batch_op.drop_column('erased_at')
