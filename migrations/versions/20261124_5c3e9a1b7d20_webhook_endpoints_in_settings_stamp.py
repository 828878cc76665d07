"""The settings stamp also follows the webhook endpoints: triggers on webhook_endpoints draw it anew.

Every redemption, spend and milestone asks which enabled endpoints want its events; with these triggers the
answer lives in the settings snapshot (clinic/services/settings_snapshot.py), checked by the stamp the action
reads anyway, instead of one more SELECT in each money transaction. The SQL is a frozen copy of
clinic/models/settings_stamp.py as it was when this migration was written (the function new_settings_stamp()
comes from 9b2d4e6f8a10). The stamp is drawn anew once, so that no process keeps a copy taken before.

Revision ID: 5c3e9a1b7d20
Revises: 9b2d4e6f8a10
Create Date: 2026-11-24 00:00:00.000000

"""
from alembic import op


# revision identifiers, used by Alembic.
revision = '5c3e9a1b7d20'
down_revision = '9b2d4e6f8a10'
branch_labels = None
depends_on = None

TABLE = "webhook_endpoints"
NEW_STAMP = {"sqlite": "random()", "postgresql": "floor(random() * 9e18)::bigint"}
SQLITE_OPERATIONS = ("INSERT", "UPDATE", "DELETE")


def upgrade():
    dialect = op.get_context().dialect.name
    new = NEW_STAMP[dialect]
    if dialect == "sqlite":
        for operation in SQLITE_OPERATIONS:
            op.execute(f"""CREATE TRIGGER {TABLE}_{operation.lower()}_new_settings_stamp AFTER {operation} ON {TABLE}
BEGIN UPDATE settings_stamp SET stamp = {new} WHERE id = 1; END""")
    else:
        op.execute(f"""CREATE TRIGGER {TABLE}_new_settings_stamp
AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {TABLE} FOR EACH STATEMENT EXECUTE FUNCTION new_settings_stamp()""")
    op.execute(f"UPDATE settings_stamp SET stamp = {new} WHERE id = 1")


def downgrade():
    if op.get_context().dialect.name == "sqlite":
        for operation in SQLITE_OPERATIONS:
            op.execute(f"DROP TRIGGER IF EXISTS {TABLE}_{operation.lower()}_new_settings_stamp")
    else:
        op.execute(f"DROP TRIGGER IF EXISTS {TABLE}_new_settings_stamp ON {TABLE}")
