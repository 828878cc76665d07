from __future__ import annotations

from datetime import datetime
from enum import Enum

from sqlalchemy import CheckConstraint, ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from clinic.extensions import db
from clinic.models._time import utcnow


class BatchStatus(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class CardStatus(str, Enum):
    PRINTED = "printed"  # on paper, worthless until given to a patient
    ACTIVATED = "activated"  # handed to a patient at discharge: its code is their single-use referral code
    REDEEMED = "redeemed"
    VOID = "void"


# A card neither redeemed nor void: it can still be given out and redeemed, so the offer printed on it is still
# owed, and it can still be voided.
UNREDEEMED_CARD_STATUSES = (CardStatus.PRINTED.value, CardStatus.ACTIVATED.value)


class CardBatch(db.Model):
    """A print run of scratch cards. Its cards exist only once the whole run has succeeded."""

    __tablename__ = "card_batches"
    __table_args__ = (CheckConstraint("size >= 1 AND size <= 10000", name="size_in_range"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    size: Mapped[int]
    design: Mapped[str] = mapped_column(String(16), default="classic")
    bleed: Mapped[bool] = mapped_column(default=False)
    personal: Mapped[bool] = mapped_column(default=False)  # a single card printed for one patient
    campaign_id: Mapped[int | None] = mapped_column(ForeignKey("campaigns.id"))
    status: Mapped[str] = mapped_column(String(16), default=BatchStatus.QUEUED.value, index=True)
    progress: Mapped[int] = mapped_column(default=0)  # cards rendered so far
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(default=0)
    heartbeat_at: Mapped[datetime | None]
    pdf_filename: Mapped[str | None] = mapped_column(String(80))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id"))
    finished_at: Mapped[datetime | None]
    voided_at: Mapped[datetime | None]
    void_reason: Mapped[str | None] = mapped_column(String(200))

    campaign = relationship("Campaign")
    created_by = relationship("Staff")

    @property
    def label(self) -> str:
        return f"B{self.id:03d}"


class Card(db.Model):
    """A scratch card: a visible serial and a hidden single-use code under the scratch-off area."""

    __tablename__ = "cards"
    __table_args__ = (
        CheckConstraint("status IN ('printed', 'activated', 'redeemed', 'void')", name="status_known"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("card_batches.id"), index=True)
    serial: Mapped[str] = mapped_column(String(16), unique=True)
    code: Mapped[str] = mapped_column(String(12), unique=True)
    status: Mapped[str] = mapped_column(String(16), default=CardStatus.PRINTED.value)
    patient_id: Mapped[int | None] = mapped_column(ForeignKey("patients.id"), index=True)
    activated_at: Mapped[datetime | None]
    activated_by_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id"))
    redeemed_at: Mapped[datetime | None]
    voided_at: Mapped[datetime | None]
    voided_by_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id"))
    void_reason: Mapped[str | None] = mapped_column(String(200))

    batch = relationship("CardBatch")
    patient = relationship("Patient")


class IssuedCode(db.Model):
    """Every bearer code ever issued, card or voucher: the primary key keeps them unique across both."""

    __tablename__ = "issued_codes"

    code: Mapped[str] = mapped_column(String(12), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # card | voucher
