"""When a patient was last sent their invitation message (their code and link); NULL: never.

The bulk send and the patient page's button claim a patient by a conditional UPDATE on this column, so two
presses at the same moment invite nobody twice. A plain ADD/DROP COLUMN, not a batch rebuild (as 4d7b1e2a9c35).

Revision ID: 5e3c8a1f7b20
Revises: 4d7b1e2a9c35
Create Date: 2026-11-29 00:00:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '5e3c8a1f7b20'
down_revision = '4d7b1e2a9c35'
branch_labels = None
depends_on = None


def upgrade():
    op.add_column('patients', sa.Column('last_invited_at', sa.DateTime(), nullable=True))


def downgrade():
    op.drop_column('patients', 'last_invited_at')
