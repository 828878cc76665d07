from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from clinic.extensions import db
from clinic.models._time import utcnow


class FormSubmission(db.Model):
    """One row per money-moving form submitted, keyed by the form's idempotency key.

    Written in the same transaction as the effect, so a double-click or a resubmitted form
    finds the first submission's result instead of doing the work again.
    """

    __tablename__ = "form_submissions"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    action: Mapped[str] = mapped_column(String(32))
    fingerprint: Mapped[str] = mapped_column(String(64))
    result_id: Mapped[int | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
