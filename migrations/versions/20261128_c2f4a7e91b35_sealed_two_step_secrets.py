"""Two-step login secrets are stored sealed with the app's key: the columns widen to hold the ciphertext.

A clear base32 secret is 32 characters; sealed (``f1:`` + a Fernet token, clinic/services/two_step_secrets.py)
it is about 145. Rows keep what they hold: a migration runs without the app's key, so clear secrets are sealed
at their owner's next login or by ``flask --app wsgi seal-two-step-secrets``.

The downgrade narrows the columns back, and refuses while any secret is sealed: the code before this revision
would take the sealed text for a secret and fail every such login. Reset those accounts' two-step login first.

Revision ID: c2f4a7e91b35
Revises: 4f0a9c2e7b13
Create Date: 2026-11-28 00:00:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'c2f4a7e91b35'
down_revision = '4f0a9c2e7b13'
branch_labels = None
depends_on = None

COLUMNS = ('totp_secret', 'totp_pending_secret')


def upgrade():
    with op.batch_alter_table('staff', schema=None) as batch_op:
        for column in COLUMNS:
            batch_op.alter_column(column, existing_type=sa.String(length=64), type_=sa.String(length=255),
                                  existing_nullable=True)


def downgrade():
    sealed = op.get_bind().execute(sa.text(
        "SELECT count(*) FROM staff WHERE totp_secret LIKE 'f1:%' OR totp_pending_secret LIKE 'f1:%'")).scalar()
    if sealed:
        raise RuntimeError(f"{sealed} staff account(s) have a sealed two-step login secret, which the code before "
                           "this revision cannot read: reset their two-step login (reset-two-step EMAIL) first.")
    with op.batch_alter_table('staff', schema=None) as batch_op:
        for column in COLUMNS:
            batch_op.alter_column(column, existing_type=sa.String(length=255), type_=sa.String(length=64),
                                  existing_nullable=True)
