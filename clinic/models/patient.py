from __future__ import annotations

from datetime import datetime

from flask_babel import gettext
from sqlalchemy import ForeignKey, String, false
from sqlalchemy.orm import Mapped, mapped_column, relationship

from clinic.extensions import db
from clinic.models._time import utcnow

NOTIFICATION_CHANNELS = ("none", "sms", "wechat")
NOTIFICATION_LANGUAGES = ("zh_CN", "en")


class PatientNames:
    """How a patient is named; shared by the model and its read-only copies (models/rows.py)."""

    @property
    def staff_name(self) -> str:
        """The full name, for staff; an erased patient has none and is called so (clinic/services/erasure.py)."""
        return self.full_name or gettext("Erased patient")

    @property
    def public_name(self) -> str:
        """The name the patient agreed to show; falls back to the full name for staff views."""
        return self.display_name or self.staff_name

    @property
    def name_for_friends(self) -> str | None:
        """The display name, only if the patient agreed to it: on their posters and on the invite page their QR opens.

        One rule for both, so that the page a poster leads to never names someone the poster did not.
        """
        name = (self.display_name or "").strip() if self.name_on_posters else ""
        return name or None


class Patient(PatientNames, db.Model):
    """A person known to the clinic. No diagnosis, department or treatment, ever."""

    __tablename__ = "patients"

    id: Mapped[int] = mapped_column(primary_key=True)
    display_name: Mapped[str] = mapped_column(String(60), default="")
    full_name: Mapped[str] = mapped_column(String(120))
    # Digits only (a leading + kept); unique so that two desks cannot register one person twice.
    phone: Mapped[str | None] = mapped_column(String(20), unique=True)
    external_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    personal_code: Mapped[str] = mapped_column(String(8), unique=True)
    # sha256 of the progress token: the token itself is shown once and never stored.
    progress_token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    progress_link_issued_at: Mapped[datetime] = mapped_column(default=utcnow)
    # The patient agreed to have their display name printed on posters and shown to friends.
    name_on_posters: Mapped[bool] = mapped_column(default=False, server_default=false())
    # The patient agreed to appear (masked) on the public leaderboard.
    leaderboard_opt_in: Mapped[bool] = mapped_column(default=False, server_default=false())
    # Messages ("you earned a reward") go out only with consent, by the channel the patient chose.
    preferred_channel: Mapped[str] = mapped_column(String(8), default="none", server_default="none")
    preferred_language: Mapped[str] = mapped_column(String(8), default="zh_CN", server_default="zh_CN")
    notification_consent: Mapped[bool] = mapped_column(default=False, server_default=false())
    notification_consent_at: Mapped[datetime | None]  # when the consent in force was given
    # When the clinic last sent them their code by message (clinic/services/invitation_messages.py); the clinic's
    # act, not the patient's: not activity for the retention rule.
    last_invited_at: Mapped[datetime | None]
    branch_id: Mapped[int | None] = mapped_column(ForeignKey("branches.id"))  # where they were enrolled
    referred_by_id: Mapped[int | None] = mapped_column(ForeignKey("patients.id"), index=True)
    enrolled_at: Mapped[datetime] = mapped_column(default=utcnow)
    enrolled_by_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id"))
    # Set when the patient's personal data was erased (clinic/services/erasure.py): the row stays for the ledger.
    erased_at: Mapped[datetime | None]
    erased_by_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id"))

    referred_by: Mapped[Patient | None] = relationship(remote_side=[id])
    erased_by = relationship("Staff", foreign_keys=[erased_by_id])
