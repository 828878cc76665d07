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


class Campaign(db.Model):
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
    ends_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    def has_ended(self, now: datetime) -> bool:
        return self.ends_at is not None and self.ends_at <= now
