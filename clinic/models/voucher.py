from __future__ import annotations

from datetime import datetime
from enum import Enum

from sqlalchemy import CheckConstraint, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from clinic.extensions import db
from clinic.models._time import utcnow


class VoucherStatus(str, Enum):
    ACTIVE = "active"
    SPENT = "spent"
    VOID = "void"
    EXPIRED = "expired"  # never stored: an active voucher past its expiry reads as expired


class VoucherState:
    """What a voucher's status means at a moment; shared by the model and its read-only copies (models/rows.py)."""

    def status_at(self, now: datetime) -> VoucherStatus:
        if self.status == VoucherStatus.ACTIVE.value and self.expires_at <= now:
            return VoucherStatus.EXPIRED
        return VoucherStatus(self.status)


class Voucher(VoucherState, db.Model):
    """A bearer reward with its own code: money off, or a named service."""

    __tablename__ = "vouchers"
    __table_args__ = (
        CheckConstraint("amount >= 0", name="amount_not_negative"),
        CheckConstraint("status IN ('active', 'spent', 'void')", name="status_known"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(12), unique=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    referral_id: Mapped[int | None] = mapped_column(ForeignKey("referrals.id"), index=True)
    beneficiary: Mapped[str] = mapped_column(String(16))  # referrer | friend
    kind: Mapped[str] = mapped_column(String(16))
    amount: Mapped[int] = mapped_column(default=0)  # minor units, money vouchers only
    label: Mapped[str] = mapped_column(String(80), default="")
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(16), default=VoucherStatus.ACTIVE.value)
    issued_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    spent_at: Mapped[datetime | None]
    spent_by_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id"))
    spent_branch_id: Mapped[int | None] = mapped_column(ForeignKey("branches.id"))
    voided_at: Mapped[datetime | None]
    voided_by_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id"))
    void_reason: Mapped[str | None] = mapped_column(String(200))

    patient = relationship("Patient")
    referral = relationship("Referral", back_populates="vouchers")


class VoucherReminder(db.Model):
    """That the holder of a voucher was reminded it is about to expire: one row per voucher, so once only.

    Its own table rather than a column of ``vouchers``: a reminder changes nothing about the voucher's value, and
    the primary key lets two reminder runs at the same moment decide by INSERT … ON CONFLICT DO NOTHING.
    """

    __tablename__ = "voucher_reminders"

    voucher_id: Mapped[int] = mapped_column(ForeignKey("vouchers.id"), primary_key=True)
    queued_at: Mapped[datetime] = mapped_column(default=utcnow)
