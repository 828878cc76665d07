from __future__ import annotations

from datetime import date

from sqlalchemy import CheckConstraint, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from clinic.extensions import db


class InviteOpen(db.Model):
    """How many times a referrer's invite page was opened on one clinic day, through their code or their card.

    A count, never a visitor: no address, no browser, no time of day (the reader is nobody the clinic knows). The
    top of the referral funnel, which the desk cannot see: how many friends a poster or a card reached before any of
    them came in. ``via`` is ``personal`` (the patient's own code, on posters and shared links) or ``card`` (a scratch
    card activated for them). Written in batches by each web process (clinic/services/invite_opens.py), so the
    newest few seconds may not be in yet.
    """

    __tablename__ = "invite_opens"
    __table_args__ = (UniqueConstraint("day", "patient_id", "via"),
                      CheckConstraint("via IN ('personal', 'card')", name="via_known"),
                      CheckConstraint("opens > 0", name="opens_positive"))

    id: Mapped[int] = mapped_column(primary_key=True)
    day: Mapped[date] = mapped_column(index=True)  # the clinic's local day
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    via: Mapped[str] = mapped_column(String(8))
    opens: Mapped[int]
