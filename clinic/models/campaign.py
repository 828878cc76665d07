from __future__ import annotations

from datetime import datetime
from enum import Enum

from sqlalchemy import CheckConstraint, String
from sqlalchemy.orm import Mapped, mapped_column

from clinic.extensions import db
from clinic.models._time import utcnow


class RewardKind(str, Enum):
    MONEY = "money"  # an amount off, in the clinic currency's minor units
    SERVICE = "service"  # a named service, e.g. "1 bed-day waived"


class CampaignRules:
    """What a campaign's dates and coverage mean; shared by the model and its read-only copies (models/rows.py)."""

    def has_ended(self, now: datetime) -> bool:
        return self.ends_at is not None and self.ends_at <= now

    def is_running(self, now: datetime) -> bool:
        return (self.starts_at is None or self.starts_at <= now) and not self.has_ended(now)

    def covers_cards(self) -> bool:
        return self.covers in ("cards", "both")

    def covers_personal_codes(self) -> bool:
        return self.covers in ("personal", "both")


class Campaign(CampaignRules, db.Model):
    """The reward rules in force: what the referrer and the friend each get."""

    __tablename__ = "campaigns"
    __table_args__ = (
        CheckConstraint("referrer_reward_amount >= 0", name="referrer_amount_not_negative"),
        CheckConstraint("friend_reward_amount >= 0", name="friend_amount_not_negative"),
        CheckConstraint("voucher_valid_days > 0", name="validity_positive"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(120))
    is_default: Mapped[bool] = mapped_column(default=False)
    referrer_reward_kind: Mapped[str] = mapped_column(String(16), default=RewardKind.MONEY.value)
    referrer_reward_amount: Mapped[int] = mapped_column(default=0)
    referrer_reward_label: Mapped[str] = mapped_column(String(80), default="")
    friend_reward_kind: Mapped[str] = mapped_column(String(16), default=RewardKind.MONEY.value)
    friend_reward_amount: Mapped[int] = mapped_column(default=0)
    friend_reward_label: Mapped[str] = mapped_column(String(80), default="")
    # Rewards for a friend who brings a scratch card (the gift-pack offer); None: as for personal codes.
    card_referrer_reward_kind: Mapped[str | None] = mapped_column(String(16))
    card_referrer_reward_amount: Mapped[int | None]
    card_referrer_reward_label: Mapped[str | None] = mapped_column(String(80))
    card_friend_reward_kind: Mapped[str | None] = mapped_column(String(16))
    card_friend_reward_amount: Mapped[int | None]
    card_friend_reward_label: Mapped[str | None] = mapped_column(String(80))
    voucher_valid_days: Mapped[int] = mapped_column(default=90)
    starts_at: Mapped[datetime | None]
    ends_at: Mapped[datetime | None]
    covers: Mapped[str] = mapped_column(String(16), default="both", server_default="both")  # personal | cards | both
    referrer_reward_stage: Mapped[str] = mapped_column(String(16), default="redemption", server_default="redemption")
    friend_reward_stage: Mapped[str] = mapped_column(String(16), default="redemption", server_default="redemption")
    # Caps per referrer and calendar year: rewarded referrals, and total value of money rewards.
    cap_referrals_per_year: Mapped[int | None]
    cap_value_per_year: Mapped[int | None]
    # An optional monthly quota of friends ("3 expert appointments a month for referred friends").
    friend_monthly_quota: Mapped[int | None]
    quota_label: Mapped[str] = mapped_column(String(80), default="", server_default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

