"""The audit log, append-only in the database itself.

Triggers refuse every UPDATE and DELETE on ``audit_events`` (and TRUNCATE on PostgreSQL), so a
bug, a hand-typed SQL statement or a compromised view cannot rewrite history; only INSERT works.
``APPEND_ONLY_SQL`` below is the live definition: ``db.create_all()`` installs it through the
``after_create`` listeners at the end of this module (the tests build their schema that way).
The migration that added the triggers (``7c1e2a9d4b10``) carries its own frozen copy of the same
SQL, because a released migration must not change when this module does. Changing the triggers
therefore means a new migration *and* an edit here.

On SQLite, a migration that rebuilds ``audit_events`` in batch mode (copy, drop, rename) drops the
triggers with the old table: such a migration must create them again.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from clinic.extensions import db
from clinic.models._ddl import attach_ddl
from clinic.models._time import utcnow

APPEND_ONLY_MESSAGE = "audit log is append-only"

APPEND_ONLY_SQL = {
    "sqlite": [
        f"""CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY_MESSAGE}'); END""",
        f"""CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY_MESSAGE}'); END""",
    ],
    "postgresql": [
        f"""CREATE OR REPLACE FUNCTION audit_events_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '{APPEND_ONLY_MESSAGE}';
END
$$""",
        """CREATE TRIGGER audit_events_no_update_or_delete BEFORE UPDATE OR DELETE ON audit_events
FOR EACH ROW EXECUTE FUNCTION audit_events_refuse_change()""",
        """CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
FOR EACH STATEMENT EXECUTE FUNCTION audit_events_refuse_change()""",
    ],
}
# Dropping the table drops its triggers; the PostgreSQL function outlives it unless dropped too.
AFTER_DROP_SQL = {"postgresql": ["DROP FUNCTION IF EXISTS audit_events_refuse_change()"]}


class AuditEvent(db.Model):
    """Record of who did what, when and from where. Rows are only ever inserted (see the module docstring)."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    action: Mapped[str] = mapped_column(String(40), index=True)
    outcome: Mapped[str] = mapped_column(String(16), default="ok")  # ok | refused
    reason: Mapped[str | None] = mapped_column(String(40))
    staff_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id"), index=True)
    branch_id: Mapped[int | None] = mapped_column(ForeignKey("branches.id"), index=True)
    patient_id: Mapped[int | None] = mapped_column(ForeignKey("patients.id"), index=True)
    voucher_id: Mapped[int | None] = mapped_column(ForeignKey("vouchers.id"))
    referral_id: Mapped[int | None] = mapped_column(ForeignKey("referrals.id"))
    details: Mapped[dict] = mapped_column(JSON, default=dict)
    ip: Mapped[str | None] = mapped_column(String(45))

    staff = relationship("Staff")
    patient = relationship("Patient")


attach_ddl(AuditEvent.__table__, "after_create", APPEND_ONLY_SQL)
attach_ddl(AuditEvent.__table__, "after_drop", AFTER_DROP_SQL)
