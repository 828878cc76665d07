"""The audit log is append-only in the database itself: no UPDATE, no DELETE, on either backend."""

import pytest
from flask_migrate import downgrade, upgrade
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from clinic.extensions import db
from clinic.models import AuditEvent
from clinic.services import audit
from clinic.services.transaction import Actor, atomic

REFUSED = "audit log is append-only"
INSERT = ("INSERT INTO audit_events (at, action, outcome, reason, details) "
          "VALUES ('2026-11-01 09:00:00', 'test.event', 'ok', 'original', '{}')")


def audit_rows() -> list:
    with db.engine.connect() as connection:
        return list(connection.execute(text("SELECT * FROM audit_events ORDER BY id")))


def run(statement: str, **parameters) -> None:
    with db.engine.begin() as connection:
        connection.execute(text(statement), parameters)


@pytest.fixture
def event_id(app) -> int:
    with atomic():
        event = audit.record("test.event", Actor(), reason="original", note="keep me")
        db.session.flush()
        return event.id


@pytest.mark.parametrize("statement", [
    "UPDATE audit_events SET reason = 'rewritten' WHERE id = :id",
    "UPDATE audit_events SET at = '2020-01-01 00:00:00'",
    "DELETE FROM audit_events WHERE id = :id",
    "DELETE FROM audit_events",
])
def test_raw_sql_cannot_change_or_delete_an_event(event_id, statement):
    before = audit_rows()
    assert event_id in [row.id for row in before]

    with pytest.raises(DBAPIError, match=REFUSED):
        run(statement, id=event_id)

    assert audit_rows() == before


def test_the_orm_cannot_change_or_delete_an_event(event_id):
    before = audit_rows()
    with pytest.raises(DBAPIError, match=REFUSED):
        with atomic():
            db.session.get(AuditEvent, event_id).reason = "rewritten"
    with pytest.raises(DBAPIError, match=REFUSED):
        with atomic():
            db.session.delete(db.session.get(AuditEvent, event_id))
    assert audit_rows() == before


def test_truncate_is_refused_on_postgresql(event_id, backend):
    if backend != "postgresql":
        pytest.skip("SQLite has no TRUNCATE")
    before = audit_rows()
    with pytest.raises(DBAPIError, match=REFUSED):
        run("TRUNCATE audit_events")
    assert audit_rows() == before


def test_events_are_still_added(event_id):
    before = len(audit_rows())
    run(INSERT)
    with atomic():
        audit.record("test.event", Actor(), reason="second")
    assert len(audit_rows()) == before + 2


def test_the_migration_adds_the_triggers_and_its_downgrade_removes_them(app):
    db.drop_all()
    upgrade(revision="7c1e2a9d4b10")
    run(INSERT)
    with pytest.raises(DBAPIError, match=REFUSED):
        run("UPDATE audit_events SET reason = 'rewritten'")
    with pytest.raises(DBAPIError, match=REFUSED):
        run("DELETE FROM audit_events")

    downgrade(revision="005b014faeab")
    run("UPDATE audit_events SET reason = 'rewritten'")
    assert [row.reason for row in audit_rows()] == ["rewritten"]
    run("DELETE FROM audit_events")
    assert audit_rows() == []

    downgrade(revision="base")
    run("DROP TABLE alembic_version")
