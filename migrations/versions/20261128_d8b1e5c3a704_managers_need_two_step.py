"""A clinic setting: managers must use two-step login (off until a manager who uses it turns it on).

Plain ADD/DROP COLUMN, not a batch: on SQLite a batch copies the table, and the copy would lose the clinics
table's settings-stamp triggers (migration 9b2d4e6f8a10).

Revision ID: d8b1e5c3a704
Revises: c2f4a7e91b35
Create Date: 2026-11-28 00:00:01.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'd8b1e5c3a704'
down_revision = 'c2f4a7e91b35'
branch_labels = None
depends_on = None


def upgrade():
    op.add_column('clinics', sa.Column('managers_need_two_step', sa.Boolean(), server_default=sa.false(),
                                       nullable=False))


def downgrade():
    op.drop_column('clinics', 'managers_need_two_step')
