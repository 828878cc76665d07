"""A manager's "checked" mark on a row of Referrals to check (clinic/services/referral_checks.py)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from clinic.extensions import db
from clinic.models._time import utcnow


class CheckMark(db.Model):
    """A manager looked at a flag (a rule and its subject) and found nothing wrong, having seen the evidence up to
    ``evidence_id``: the flag stays quiet until newer evidence appears.

    One row per flag: marking it again (after newer evidence) moves the row on; the audit log keeps every mark.
    ``subject`` spells the flag's subject in one column ("r12": referrer 12, "s3": staff 3, "r12-s3": both, for
    one desk, one referrer) so that one plain unique constraint holds for every rule (two NULLs never clash);
    ``referrer_id`` and ``staff_id`` say the same as foreign keys, for erasure and for names.
    ``evidence_id``: the newest referral the flag was built from, or for wrong codes the newest refused attempt
    (an audit event); ids only grow, so a larger one is evidence the manager has not seen.
    """

    __tablename__ = "check_marks"
    __table_args__ = (
        UniqueConstraint("rule", "subject", name="uq_check_marks_rule_subject"),
        CheckConstraint("rule IN ('burst', 'never_came', 'one_desk', 'look_alike', 'wrong_codes')",
                        name="rule_known"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    rule: Mapped[str] = mapped_column(String(16))
    subject: Mapped[str] = mapped_column(String(40))
    referrer_id: Mapped[int | None] = mapped_column(ForeignKey("patients.id"), index=True)
    staff_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id"))
    evidence_id: Mapped[int]
    evidence_at: Mapped[datetime]
    checked_at: Mapped[datetime] = mapped_column(default=utcnow)
    checked_by_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id"))
    note: Mapped[str | None] = mapped_column(String(200))
