"""A friend who left their name and phone on the invite page for the desk to call back (clinic/services/leads.py)."""

from __future__ import annotations

from datetime import datetime
from enum import Enum

from sqlalchemy import CheckConstraint, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from clinic.extensions import db
from clinic.models._time import utcnow


class LeadStatus(str, Enum):
    NEW = "new"
    CONTACTED = "contacted"
    BOOKED = "booked"
    NOT_INTERESTED = "not_interested"
    CONVERTED = "converted"  # set only by a redemption that registered the friend (services/redemption.py)


class FriendLead(db.Model):
    """A call-back request: who asked (a name to address them by, a phone), through whose personal code, and how
    far the desk got. Nothing else the friend says is kept: no message, no reason for the visit (no diagnosis)."""

    __tablename__ = "friend_leads"
    __table_args__ = (
        # The same phone through the same code is one lead: asking again renews it (services/leads.py).
        UniqueConstraint("referrer_id", "phone", name="uq_friend_leads_referrer_phone"),
        CheckConstraint("status IN ('new', 'contacted', 'booked', 'not_interested', 'converted')",
                        name="status_known"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    referrer_id: Mapped[int] = mapped_column(ForeignKey("patients.id"))
    name: Mapped[str] = mapped_column(String(60))
    phone: Mapped[str] = mapped_column(String(20))  # as normalize_phone writes it, like Patient.phone
    # When the friend last asked (and ticked the consent): pruning counts 90 days from here.
    consent_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    status: Mapped[str] = mapped_column(String(16), default=LeadStatus.NEW.value, index=True)
    status_changed_at: Mapped[datetime | None]
    status_changed_by_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id"))
    note: Mapped[str | None] = mapped_column(String(200))
    converted_referral_id: Mapped[int | None] = mapped_column(ForeignKey("referrals.id"))

    referrer = relationship("Patient")
    status_changed_by = relationship("Staff")
