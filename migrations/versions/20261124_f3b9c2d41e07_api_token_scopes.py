"""API tokens hold scopes: what each may do, chosen when it is made. Existing tokens get every scope.

Before this, any token could do everything the API offers. A token made from now on holds only the scopes a
manager ticked (clinic/services/api_tokens.py). The tokens that exist already get all of them, so that no
clinic's integration breaks on upgrade; a manager who wants less makes a new token and revokes the old one.
The list is frozen here, as the scopes were at this revision: a scope added later is not given to old tokens.

Revision ID: f3b9c2d41e07
Revises: c4e1d8a0b7f2
Create Date: 2026-11-24 12:00:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'f3b9c2d41e07'
down_revision = 'c4e1d8a0b7f2'
branch_labels = None
depends_on = None

EVERY_SCOPE = ["patients:read", "patients:write", "milestones:write", "redemptions:write", "vouchers:read",
               "vouchers:write", "cards:write"]
API_TOKENS = sa.table("api_tokens", sa.column("scopes", sa.JSON))


def upgrade():
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.add_column(sa.Column('scopes', sa.JSON(), nullable=True))
    op.get_bind().execute(API_TOKENS.update().values(scopes=EVERY_SCOPE))
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.alter_column('scopes', existing_type=sa.JSON(), nullable=False)


def downgrade():
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.drop_column('scopes')
