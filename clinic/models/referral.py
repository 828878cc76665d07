from __future__ import annotations

from datetime import datetime
from enum import Enum

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from clinic.extensions import db
from clinic.models._time import utcnow


class ReferralStatus(str, Enum):
    ACTIVE = "active"
    REVERSED = "reversed"  # cancelled or refunded: unspent vouchers from it are void


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
    status: Mapped[str] = mapped_column(String(16), default=ReferralStatus.ACTIVE.value)
    # The month (YYYY-MM, the clinic's) whose quota place for friends this referral took, when its campaign had one.
    quota_month: Mapped[str | None] = mapped_column(String(7))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    staff_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id"))
    branch_id: Mapped[int | None] = mapped_column(ForeignKey("branches.id"), index=True)
    visited_at: Mapped[datetime | None]
    visited_by_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id"))
    paid_at: Mapped[datetime | None]
    paid_by_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id"))
    paid_amount: Mapped[int | None]  # minor units, when the desk gave it
    reversed_at: Mapped[datetime | None]
    reversed_by_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id"))
    reversal_reason: Mapped[str | None] = mapped_column(String(200))

    referrer = relationship("Patient", foreign_keys=[referrer_id])
    friend = relationship("Patient", foreign_keys=[friend_id])
    campaign = relationship("Campaign")
    card = relationship("Card")
    vouchers = relationship("Voucher", back_populates="referral", order_by="Voucher.id")
    rewards = relationship("Reward", back_populates="referral", order_by="Reward.id")
