"""insert_row: a row written by one INSERT reads like a loaded object, and leaves the session with a rollback."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from clinic.extensions import db
from clinic.models import AuditEvent
from clinic.services import audit
from clinic.services.transaction import Actor, atomic


def test_a_written_row_reads_as_loaded_with_its_defaults_and_commits(app):
    with atomic():
        event = audit.record("test.event", Actor(ip="10.0.0.1"), note="kept")
        assert event in db.session and event.id is not None
        assert event.at is not None and event.outcome == "ok"  # filled by the columns' defaults
        assert not db.session.dirty and not db.session.new  # nothing left for a flush
        event_id = event.id
    db.session.expunge_all()
    stored = db.session.get(AuditEvent, event_id)
    assert (stored.action, stored.ip, stored.details) == ("test.event", "10.0.0.1", {"note": "kept"})


def test_a_rollback_takes_written_objects_out_of_the_session_so_their_ids_can_be_given_again(app):
    before = db.session.scalar(select(func.count()).select_from(AuditEvent))
    with pytest.raises(RuntimeError):
        with atomic():
            lost = audit.record("test.event", Actor())
            raise RuntimeError("fault after the write")
    assert lost not in db.session
    assert db.session.scalar(select(func.count()).select_from(AuditEvent)) == before
    with atomic():  # SQLite gives the rolled-back id again: no clash with the object left behind
        again = audit.record("test.event", Actor())
    assert again in db.session


def test_pending_objects_are_flushed_before_the_insert_that_may_refer_to_them(app):
    from clinic.models import Staff

    with atomic():
        staff = Staff(email="new-desk@example.org", role="front_desk")
        staff.set_password("long enough password")
        db.session.add(staff)
        event = audit.record("test.event", Actor(staff_id=None))
        assert staff.id is not None  # flushed first, as a query would
    assert db.session.get(AuditEvent, event.id) is not None


def test_a_read_only_page_reads_without_a_transaction_and_the_next_action_has_one(app):
    """read_connection: no BEGIN on SQLite, autocommit on PostgreSQL; returned to the pool as it was."""
    from clinic.services.transaction import read_connection

    with read_connection() as connection:
        if db.engine.dialect.name == "postgresql":
            assert connection.connection.dbapi_connection.autocommit is True
        connection.execute(select(func.count()).select_from(AuditEvent))
        if db.engine.dialect.name == "sqlite":
            assert not connection.connection.dbapi_connection.in_transaction, "no BEGIN: the read ended with its statement"
    assert not db.session().in_transaction(), "the session was not used"
    before = db.session.scalar(select(func.count()).select_from(AuditEvent))
    db.session.remove()
    with pytest.raises(RuntimeError):
        with atomic():
            audit.record("test.event", Actor())
            raise RuntimeError("fault after the write")
    assert db.session.scalar(select(func.count()).select_from(AuditEvent)) == before, "the write was rolled back"
    if db.engine.dialect.name == "postgresql":
        assert db.session.connection().connection.dbapi_connection.autocommit is False


def test_a_read_only_page_inside_an_action_reads_in_the_action_s_transaction(app):
    from clinic.services.transaction import read_connection

    with atomic():
        with read_connection() as connection:
            assert connection is db.session.connection()


def test_a_read_only_session_refuses_an_orm_write_and_atomic_afterwards_writes(app, desk_user):
    """read_only_session: its statements would commit one by one, so an ORM write there is a bug and raises; the
    session is left usable, and an action's atomic() after it writes in a real transaction."""
    from sqlalchemy import update

    from clinic.models import Staff
    from clinic.services.transaction import WriteInReadOnlySession, insert_ignoring_duplicates, read_only_session

    staff_id, email = desk_user.id, desk_user.email
    db.session.remove()
    before = db.session.scalar(select(func.count()).select_from(AuditEvent))
    db.session.remove()
    read_only_session()
    staff = db.session.get(Staff, staff_id)
    staff.email = "changed@example.org"
    with pytest.raises(WriteInReadOnlySession):
        db.session.flush()
    db.session.rollback()
    with pytest.raises(WriteInReadOnlySession):
        db.session.execute(update(Staff).where(Staff.id == staff_id).values(email="changed@example.org"))
    db.session.rollback()
    with pytest.raises(WriteInReadOnlySession):
        audit.record("test.event", Actor())  # transaction.insert_row: a Core INSERT on the session's connection
    with pytest.raises(WriteInReadOnlySession):
        insert_ignoring_duplicates(AuditEvent, {"action": "test.event", "outcome": "ok", "details": {}})
    assert db.session.scalar(select(Staff.email).where(Staff.id == staff_id)) == email
    with pytest.raises(RuntimeError):
        with atomic():
            audit.record("test.event", Actor())
            raise RuntimeError("fault after the write")
    assert db.session.scalar(select(func.count()).select_from(AuditEvent)) == before, "atomic() rolled back"
    with atomic():
        audit.record("test.event", Actor())
    db.session.remove()
    assert db.session.scalar(select(func.count()).select_from(AuditEvent)) == before + 1
