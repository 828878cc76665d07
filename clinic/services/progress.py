"""What a patient sees on their private progress page."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from flask_babel import pgettext
from sqlalchemy import bindparam, select
from sqlalchemy.orm import selectinload

from clinic.extensions import db
from clinic.i18n import current_language
from clinic.models import Patient, Referral, ReferralStatus, Reward, RewardStatus, Stage, Voucher, VoucherStatus
from clinic.models._time import utcnow
from clinic.services.clinic_settings import RewardTerms, friend_reward, get_clinic, referrer_reward
from clinic.services.privacy import mask_name
from clinic.services.rewards import campaign_in_force
from clinic.services.patients import patient_by_progress_token
from clinic.services.tiers import TierStatus, tier_status


def reward_state(reward: Reward) -> str:
    """How the referrer's reward for one friend stands, in the patient's words and language.

    ``issued``, ``pending at visit``, ``pending at payment``, ``awaiting approval``, ``not given`` or ``cancelled``.
    """
    if reward.status == RewardStatus.PENDING.value and reward.stage == Stage.VISIT.value:
        return pgettext("reward", "pending at visit")
    if reward.status == RewardStatus.PENDING.value and reward.stage == Stage.PAYMENT.value:
        return pgettext("reward", "pending at payment")
    states = {
        RewardStatus.ISSUED.value: pgettext("reward", "issued"),
        RewardStatus.PENDING.value: pgettext("reward", "pending"),
        RewardStatus.REVIEW.value: pgettext("reward", "awaiting approval"),
        RewardStatus.REJECTED.value: pgettext("reward", "not given"),
        RewardStatus.CANCELLED.value: pgettext("reward", "cancelled"),
    }
    return states.get(reward.status, reward.status)


@dataclass(frozen=True)
class EarnedReward:
    what: str  # "¥200.00 off", "1 bed-day waived"
    state: str


@dataclass(frozen=True)
class FriendProgress:
    """One referred friend as the referrer sees them: a masked name, the milestones, what it earned."""

    name: str
    registered_at: datetime
    visited: bool
    paid: bool
    reversed: bool
    rewards: list[EarnedReward]


def friend_progress(referral: Referral) -> FriendProgress:
    return FriendProgress(
        name=mask_name(referral.friend.public_name),
        registered_at=referral.created_at,
        visited=referral.visited_at is not None or referral.paid_at is not None,
        paid=referral.paid_at is not None,
        reversed=referral.status == ReferralStatus.REVERSED.value,
        rewards=[EarnedReward(RewardTerms(r.kind, r.amount, r.label).describe(r.currency, current_language()),
                              reward_state(r))
                 for r in referral.rewards if r.beneficiary == "referrer"],
    )


@dataclass
class ProgressPage:
    patient: Patient
    referrals: list[Referral]
    vouchers: list[Voucher]
    active_vouchers: list[Voucher]
    offer_for_friends: str | None
    reward_per_friend: str | None
    tier: TierStatus
    friends: list[FriendProgress]

    @property
    def friends_count(self) -> int:
        return len(self.referrals)

    @property
    def funnel(self) -> dict[str, int]:
        """Friends registered, visited and paid (reversed referrals left out)."""
        counted = [friend for friend in self.friends if not friend.reversed]
        return {"registered": len(counted), "visited": sum(f.visited for f in counted),
                "paid": sum(f.paid for f in counted)}


# Built once: building a statement costs SQLAlchemy nearly as much as running it, on a page
# patients open often.
_REFERRALS_OF = (select(Referral).where(Referral.referrer_id == bindparam("patient_id"))
                 .options(selectinload(Referral.friend), selectinload(Referral.rewards)).order_by(Referral.id.desc()))
_VOUCHERS_OF = select(Voucher).where(Voucher.patient_id == bindparam("patient_id")).order_by(Voucher.id.desc())


def progress_page(token: str) -> ProgressPage | None:
    """The page for a progress token, or None for an unknown or rotated token (same 404)."""
    patient = patient_by_progress_token(token)
    if patient is None:
        return None
    now = utcnow()
    referrals = list(db.session.scalars(_REFERRALS_OF, {"patient_id": patient.id}))
    vouchers = list(db.session.scalars(_VOUCHERS_OF, {"patient_id": patient.id}))
    campaign = campaign_in_force(for_cards=False, now=now)
    currency, language = get_clinic().currency, current_language()
    running = campaign is not None
    return ProgressPage(
        patient=patient,
        referrals=referrals,
        vouchers=vouchers,
        active_vouchers=[v for v in vouchers if v.status_at(now) is VoucherStatus.ACTIVE],
        offer_for_friends=friend_reward(campaign).describe_with_stage(currency, language) if running else None,
        reward_per_friend=referrer_reward(campaign).describe_with_stage(currency, language) if running else None,
        tier=tier_status(patient.id, now, referrals),
        friends=[friend_progress(referral) for referral in referrals],
    )
