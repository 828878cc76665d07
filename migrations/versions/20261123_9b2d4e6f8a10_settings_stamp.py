"""The settings stamp: a one-row table whose number triggers draw anew on any change to clinics, campaigns or tiers.

Lets each process keep one read-only copy of the settings and check it with one primary-key read
(clinic/services/settings_snapshot.py). The SQL is a frozen copy of clinic/models/settings_stamp.py as it
was when this migration was written: a released migration never changes, so it must not import the model.

Revision ID: 9b2d4e6f8a10
Revises: f3a4b5c6d7e8
Create Date: 2026-11-23 14:30:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '9b2d4e6f8a10'
down_revision = 'f3a4b5c6d7e8'
branch_labels = None
depends_on = None

TABLES = ("clinics", "campaigns", "tiers")
NEW_STAMP = {"sqlite": "random()", "postgresql": "floor(random() * 9e18)::bigint"}


def _upgrade_sql(dialect):
    new = NEW_STAMP[dialect]
    statements = [f"INSERT INTO settings_stamp (id, stamp) VALUES (1, {new})"]
    if dialect == "sqlite":
        statements += [f"""CREATE TRIGGER {table}_{operation.lower()}_new_settings_stamp AFTER {operation} ON {table}
BEGIN UPDATE settings_stamp SET stamp = {new} WHERE id = 1; END"""
                       for table in TABLES for operation in ("INSERT", "UPDATE", "DELETE")]
    else:
        statements.append(f"""CREATE OR REPLACE FUNCTION new_settings_stamp() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE settings_stamp SET stamp = {new} WHERE id = 1;
    RETURN NULL;
END
$$""")
        statements += [f"""CREATE TRIGGER {table}_new_settings_stamp
AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {table} FOR EACH STATEMENT EXECUTE FUNCTION new_settings_stamp()"""
                       for table in TABLES]
    return statements


def _downgrade_sql(dialect):
    if dialect == "sqlite":
        return [f"DROP TRIGGER IF EXISTS {table}_{operation.lower()}_new_settings_stamp"
                for table in TABLES for operation in ("INSERT", "UPDATE", "DELETE")]
    return [f"DROP TRIGGER IF EXISTS {table}_new_settings_stamp ON {table}" for table in TABLES] + [
        "DROP FUNCTION IF EXISTS new_settings_stamp()"]


def upgrade():
    op.create_table('settings_stamp',
                    sa.Column('id', sa.Integer(), nullable=False),
                    sa.Column('stamp', sa.BigInteger(), nullable=False),
                    sa.PrimaryKeyConstraint('id', name=op.f('pk_settings_stamp')))
    for statement in _upgrade_sql(op.get_context().dialect.name):
        op.execute(statement)


def downgrade():
    for statement in _downgrade_sql(op.get_context().dialect.name):
        op.execute(statement)
    op.drop_table('settings_stamp')
