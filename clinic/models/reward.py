from __future__ import annotations

from datetime import datetime
from enum import Enum

from sqlalchemy import JSON, BigInteger, CheckConstraint, ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from clinic.extensions import db
from clinic.models._time import utcnow


class Stage(str, Enum):
    """When a reward is paid: when the friend's code is redeemed, at their first visit, or first payment."""

    REDEMPTION = "redemption"
    VISIT = "visit"
    PAYMENT = "payment"


class RewardStatus(str, Enum):
    PENDING = "pending"  # waiting for its stage
    ISSUED = "issued"  # a voucher exists
    REVIEW = "review"  # the rules would block it (over a cap): a manager decides
    REJECTED = "rejected"
    CANCELLED = "cancelled"  # the referral was reversed before the stage


class Reward(db.Model):
    """What one side of a referral is owed, fixed at redemption so later campaign edits change nothing."""

    __tablename__ = "rewards"
    __table_args__ = (CheckConstraint("amount >= 0", name="amount_not_negative"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    referral_id: Mapped[int] = mapped_column(ForeignKey("referrals.id"), index=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    beneficiary: Mapped[str] = mapped_column(String(16))  # referrer | friend
    kind: Mapped[str] = mapped_column(String(16))
    amount: Mapped[int] = mapped_column(default=0)
    label: Mapped[str] = mapped_column(String(80), default="")
    currency: Mapped[str] = mapped_column(String(3))
    stage: Mapped[str] = mapped_column(String(16), default=Stage.REDEMPTION.value)
    valid_days: Mapped[int] = mapped_column(default=90)
    status: Mapped[str] = mapped_column(String(16), default=RewardStatus.PENDING.value, index=True)
    voucher_id: Mapped[int | None] = mapped_column(ForeignKey("vouchers.id"), unique=True)
    overridden: Mapped[bool] = mapped_column(default=False)  # issued by a manager despite a cap
    # The year whose ReferrerYearTotal counted this reward (a referrer's, once paid): a reversal takes it out of that one.
    counted_year: Mapped[int | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    decided_at: Mapped[datetime | None]
    decided_by_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id"))
    decision_reason: Mapped[str | None] = mapped_column(String(200))

    referral = relationship("Referral", back_populates="rewards")
    patient = relationship("Patient")
    voucher = relationship("Voucher")


class ReferrerYearTotal(db.Model):
    """Rewards issued to a referrer in a calendar year: the row a cap check locks and updates."""

    __tablename__ = "referrer_year_totals"

    referrer_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), primary_key=True)
    year: Mapped[int] = mapped_column(primary_key=True)
    rewarded_count: Mapped[int] = mapped_column(default=0)
    # A sum of amounts that each fill a 32-bit column (money.MAX_AMOUNT_MINOR): 64 bits, so no year's total overflows.
    rewarded_value: Mapped[int] = mapped_column(BigInteger, default=0)


class CampaignMonthCount(db.Model):
    """Friends welcomed under a campaign in a month: the row a monthly quota check locks."""

    __tablename__ = "campaign_month_counts"

    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"), primary_key=True)
    month: Mapped[str] = mapped_column(String(7), primary_key=True)  # YYYY-MM in the clinic's time zone
    used: Mapped[int] = mapped_column(default=0)


class Tier(db.Model):
    """A loyalty tier: enough paid referrals in a rolling window earn it and its privileges."""

    __tablename__ = "tiers"
    __table_args__ = (CheckConstraint("min_paid_referrals > 0", name="threshold_positive"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(40), unique=True)
    min_paid_referrals: Mapped[int]
    window_months: Mapped[int] = mapped_column(default=12)
    privileges: Mapped[str] = mapped_column(Text, default="")


class ReviewRequest(db.Model):
    """Something the rules blocked that a manager may allow: a reward over a cap, or a possible existing patient."""

    __tablename__ = "review_requests"
    __table_args__ = (
        CheckConstraint("referrer_reward_amount >= 0", name="referrer_amount_not_negative"),
        CheckConstraint("friend_reward_amount >= 0", name="friend_amount_not_negative"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(24))  # over_cap | existing_patient
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)  # pending | approved | rejected
    reward_id: Mapped[int | None] = mapped_column(ForeignKey("rewards.id"), unique=True)
    code: Mapped[str | None] = mapped_column(String(12))
    patient_id: Mapped[int | None] = mapped_column(ForeignKey("patients.id"))  # the existing patient
    referrer_id: Mapped[int | None] = mapped_column(ForeignKey("patients.id"))
    details: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id"))
    branch_id: Mapped[int | None] = mapped_column(ForeignKey("branches.id"))
    decided_at: Mapped[datetime | None]
    decided_by_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id"))
    decision_reason: Mapped[str | None] = mapped_column(String(200))
    # An existing patient's request: what the desk offered, as a Reward would record it, so that approving pays
    # exactly that whatever became of the campaign meanwhile. NULL on requests sent before these columns existed.
    campaign_id: Mapped[int | None] = mapped_column(ForeignKey("campaigns.id"))
    referrer_reward_kind: Mapped[str | None] = mapped_column(String(16))
    referrer_reward_amount: Mapped[int | None]
    referrer_reward_label: Mapped[str | None] = mapped_column(String(80))
    referrer_reward_stage: Mapped[str | None] = mapped_column(String(16))
    friend_reward_kind: Mapped[str | None] = mapped_column(String(16))
    friend_reward_amount: Mapped[int | None]
    friend_reward_label: Mapped[str | None] = mapped_column(String(80))
    friend_reward_stage: Mapped[str | None] = mapped_column(String(16))
    currency: Mapped[str | None] = mapped_column(String(3))
    voucher_valid_days: Mapped[int | None]

    reward = relationship("Reward")
    patient = relationship("Patient", foreign_keys=[patient_id])
    referrer = relationship("Patient", foreign_keys=[referrer_id])
