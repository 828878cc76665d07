"""The retention rule: erase patients' personal data after N months without activity (NULL: off, as before).

A plain ADD/DROP COLUMN, not a batch rebuild: rebuilding ``clinics`` on SQLite would drop its settings-stamp
triggers with the old table.

Revision ID: 4d7b1e2a9c35
Revises: d8b1e5c3a704
Create Date: 2026-11-28 00:00:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '4d7b1e2a9c35'
down_revision = 'd8b1e5c3a704'
branch_labels = None
depends_on = None


def upgrade():
    op.add_column('clinics', sa.Column('retention_months', sa.Integer(), nullable=True))


def downgrade():
    op.drop_column('clinics', 'retention_months')
