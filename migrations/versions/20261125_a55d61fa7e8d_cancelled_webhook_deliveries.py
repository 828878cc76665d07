"""Cancelled webhook deliveries: a message for a patient who no longer agrees is not sent, and says why.

A ``notification.requested`` delivery is checked against the patient's consent when it is sent; one that
may no longer go out becomes ``cancelled`` with the reason and the moment. On SQLite the new CHECK needs
the table copied (batch mode); webhook_deliveries has no triggers to recreate.

Downgrading deletes the cancelled deliveries instead of turning them into ``failed`` ones: the older
version would offer "Resend" on them and send the very messages the patients withdrew. The audit log keeps
the record of each cancellation.

Revision ID: a55d61fa7e8d
Revises: e5963ae15f73
Create Date: 2026-11-25 00:00:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'a55d61fa7e8d'
down_revision = 'e5963ae15f73'
branch_labels = None
depends_on = None

CHECK = 'ck_webhook_deliveries_status_known'


def upgrade():
    with op.batch_alter_table('webhook_deliveries', schema=None) as batch_op:
        batch_op.add_column(sa.Column('cancel_reason', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('cancelled_at', sa.DateTime(), nullable=True))
        batch_op.drop_constraint(batch_op.f(CHECK), type_='check')
        batch_op.create_check_constraint(batch_op.f(CHECK), "status IN ('pending', 'delivered', 'failed', 'cancelled')")


def downgrade():
    op.execute("DELETE FROM webhook_deliveries WHERE status = 'cancelled'")
    with op.batch_alter_table('webhook_deliveries', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f(CHECK), type_='check')
        batch_op.create_check_constraint(batch_op.f(CHECK), "status IN ('pending', 'delivered', 'failed')")
        batch_op.drop_column('cancelled_at')
        batch_op.drop_column('cancel_reason')
