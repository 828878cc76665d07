from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey
from sqlalchemy.orm import Mapped, mapped_column

from clinic.extensions import db
from clinic.models._time import utcnow


class VisitFeedback(db.Model):
    """A patient's answer to "How likely are you to recommend us to a friend?" (0-10), from their progress page.

    A score and a date only, never free text: a comment box invites diagnoses and treatments, which the portal
    must not hold (DESIGN.md). ``branch_id`` is the patient's branch when they answered, kept on the row so that
    the dashboard's NPS stays right once an erasure takes ``patient_id`` away (clinic/services/erasure.py).
    """

    __tablename__ = "visit_feedback"
    __table_args__ = (CheckConstraint("score >= 0 AND score <= 10", name="score_0_to_10"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[int | None] = mapped_column(ForeignKey("patients.id"), index=True)
    branch_id: Mapped[int | None] = mapped_column(ForeignKey("branches.id"))
    score: Mapped[int]
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    # A detractor asked for the manager's call; the manager records the call on the "Patients to call" page.
    callback_requested_at: Mapped[datetime | None]
    followed_up_at: Mapped[datetime | None]
    followed_up_by_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id"))
