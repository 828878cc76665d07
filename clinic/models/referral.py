from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from clinic.extensions import db
from clinic.models._time import utcnow


class Referral(db.Model):
    """The link referrer -> friend, created by a redemption."""

    __tablename__ = "referrals"

    id: Mapped[int] = mapped_column(primary_key=True)
    referrer_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    # A friend is referred once: the database refuses a second referral for the same person.
    friend_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), unique=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"))
    code_used: Mapped[str] = mapped_column(String(12))
    # Set when the friend came with a scratch card rather than the referrer's personal code.
    card_id: Mapped[int | None] = mapped_column(ForeignKey("cards.id"), unique=True)
    status: Mapped[str] = mapped_column(String(16), default="active")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    staff_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id"))

    referrer = relationship("Patient", foreign_keys=[referrer_id])
    friend = relationship("Patient", foreign_keys=[friend_id])
    campaign = relationship("Campaign")
    card = relationship("Card")
    vouchers = relationship("Voucher", back_populates="referral", order_by="Voucher.id")
