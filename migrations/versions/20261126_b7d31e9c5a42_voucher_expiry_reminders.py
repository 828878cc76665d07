"""Voucher holders are reminded once before a voucher expires: one row per voucher reminded.

`flask --app wsgi remind-expiring-vouchers` (run daily from cron) queues a message for each patient who agreed to
messages and holds an active voucher about to expire; the primary key keeps it to one reminder per voucher, even
when two runs overlap.

Revision ID: b7d31e9c5a42
Revises: 15227a8e8946
Create Date: 2026-11-26 00:00:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'b7d31e9c5a42'
down_revision = '15227a8e8946'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'voucher_reminders',
        sa.Column('voucher_id', sa.Integer(), nullable=False),
        sa.Column('queued_at', sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(['voucher_id'], ['vouchers.id'], name=op.f('fk_voucher_reminders_voucher_id_vouchers')),
        sa.PrimaryKeyConstraint('voucher_id', name=op.f('pk_voucher_reminders')),
    )


def downgrade():
    op.drop_table('voucher_reminders')
