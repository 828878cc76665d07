"""A referrer's yearly rewarded value is a BIGINT: the sum of many 32-bit amounts outgrows a 32-bit column.

On PostgreSQL an INTEGER total overflowed once a referrer's money rewards of the year passed 2,147,483,647 minor
units (22 rewards of CN¥1,000,000): that redemption, and every later one of the year, failed with a 500. Each amount
column stays INTEGER (amounts entered are held below its limit, clinic/services/money.py); only the sum grows.
SQLite stores 64-bit integers either way: there the table is rebuilt only for the declared type.

Going down fails on PostgreSQL if a total no longer fits an INTEGER, rather than keep a wrong total for the caps.

Revision ID: e5963ae15f73
Revises: a9ed78e61793
Create Date: 2026-11-25 00:00:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'e5963ae15f73'
down_revision = 'a9ed78e61793'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('referrer_year_totals', schema=None) as batch_op:
        batch_op.alter_column('rewarded_value', existing_type=sa.Integer(), type_=sa.BigInteger(),
                              existing_nullable=False)


def downgrade():
    with op.batch_alter_table('referrer_year_totals', schema=None) as batch_op:
        batch_op.alter_column('rewarded_value', existing_type=sa.BigInteger(), type_=sa.Integer(),
                              existing_nullable=False)
