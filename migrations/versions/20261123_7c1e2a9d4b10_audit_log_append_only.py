"""The audit log is append-only: triggers refuse UPDATE and DELETE on audit_events (and TRUNCATE on PostgreSQL).

The SQL is a frozen copy of ``APPEND_ONLY_SQL`` in clinic/models/audit.py as it was when this migration was
written; the model module holds the live definition that ``db.create_all()`` installs. A released migration
never changes, so it must not import the model's text.

Revision ID: 7c1e2a9d4b10
Revises: 005b014faeab
Create Date: 2026-11-23 03:30:00.000000

"""
from alembic import op


# revision identifiers, used by Alembic.
revision = '7c1e2a9d4b10'
down_revision = '005b014faeab'
branch_labels = None
depends_on = None

UPGRADE = {
    "sqlite": [
        """CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END""",
        """CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END""",
    ],
    "postgresql": [
        """CREATE OR REPLACE FUNCTION audit_events_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit log is append-only';
END
$$""",
        """CREATE TRIGGER audit_events_no_update_or_delete BEFORE UPDATE OR DELETE ON audit_events
FOR EACH ROW EXECUTE FUNCTION audit_events_refuse_change()""",
        """CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
FOR EACH STATEMENT EXECUTE FUNCTION audit_events_refuse_change()""",
    ],
}

DOWNGRADE = {
    "sqlite": [
        "DROP TRIGGER IF EXISTS audit_events_no_delete",
        "DROP TRIGGER IF EXISTS audit_events_no_update",
    ],
    "postgresql": [
        "DROP TRIGGER IF EXISTS audit_events_no_truncate ON audit_events",
        "DROP TRIGGER IF EXISTS audit_events_no_update_or_delete ON audit_events",
        "DROP FUNCTION IF EXISTS audit_events_refuse_change()",
    ],
}


def _run(statements_by_dialect):
    for statement in statements_by_dialect[op.get_context().dialect.name]:
        op.execute(statement)


def upgrade():
    _run(UPGRADE)


def downgrade():
    _run(DOWNGRADE)
