"""What a patient sees on their private progress page.

Patients open it often from a chat link, so it is read as plain rows (models/rows.py) with at most four
queries — the patient (with the settings stamp, how often their invite page was opened, and whether there are friends, vouchers and a recent "How was your
visit?" answer to read), their friends with the referrer's rewards, their vouchers, their answer (services/feedback.py)
— and the clinic, campaign and tiers from the settings snapshot: no ORM entity on the way.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, func, select

from clinic.i18n import current_language, pgettext
from clinic.models import Patient, Referral, ReferralStatus, Reward, RewardStatus, Stage, Voucher, VoucherStatus
from clinic.models._time import utcnow
from clinic.models.rows import PUBLIC_PATIENT_KEYS, PublicPatientRow, VoucherRow, columns_of
from clinic.services import feedback, invite_opens
from clinic.services.clinic_settings import RewardTerms, current_clinic, friend_reward, referrer_reward
from clinic.services.patients import hash_token
from clinic.services.privacy import mask_name
from clinic.services.rewards import campaign_in_force
from clinic.services.settings_snapshot import STAMP_COLUMN, settings_read_with
from clinic.services.transaction import read_connection
from clinic.services.tiers import TierStatus, tier_status


def reward_state(status: str, stage: str, voucher_status: str | None = None) -> str:
    """How the referrer's reward for one friend stands, in the patient's words and language.

    ``issued``, ``pending at visit``, ``pending at payment``, ``awaiting approval``, ``not given`` or ``cancelled``
    (also an issued reward whose voucher was voided: by a reversed referral, or by hand).
    """
    if status == RewardStatus.ISSUED.value and voucher_status == VoucherStatus.VOID.value:
        return pgettext("reward", "cancelled")
    if status == RewardStatus.PENDING.value and stage == Stage.VISIT.value:
        return pgettext("reward", "pending at visit")
    if status == RewardStatus.PENDING.value and stage == Stage.PAYMENT.value:
        return pgettext("reward", "pending at payment")
    if status == RewardStatus.ISSUED.value:
        return pgettext("reward", "issued")
    if status == RewardStatus.PENDING.value:
        return pgettext("reward", "pending")
    if status == RewardStatus.REVIEW.value:
        return pgettext("reward", "awaiting approval")
    if status == RewardStatus.REJECTED.value:
        return pgettext("reward", "not given")
    if status == RewardStatus.CANCELLED.value:
        return pgettext("reward", "cancelled")
    return status


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


@dataclass(frozen=True)
class ReferralMilestones:
    """What counts towards tiers (tiers.paid_among reads these attributes of a referral)."""

    referrer_id: int
    status: str
    paid_at: datetime | None


@dataclass
class ProgressPage:
    patient: PublicPatientRow
    vouchers: list[VoucherRow]
    active_vouchers: list[VoucherRow]
    offer_for_friends: str | None
    reward_per_friend: str | None
    tier: TierStatus
    friends: list[FriendProgress]
    answer: feedback.GivenAnswer | None = None  # their "How was your visit?" answer of the last 90 days
    has_phone: bool = False  # the clinic could call them back (the phone itself is not on the page)
    invite_opens: int = 0  # how often their invite page was opened (clinic/services/invite_opens.py)

    @property
    def friends_count(self) -> int:
        return len(self.friends)

    @property
    def funnel(self) -> dict[str, int]:
        """Friends registered, visited and paid (reversed referrals left out)."""
        counted = [friend for friend in self.friends if not friend.reversed]
        return {"registered": len(counted), "visited": sum(f.visited for f in counted),
                "paid": sum(f.paid for f in counted)}


# Built once: building a statement costs SQLAlchemy nearly as much as running it.
# The patient; whether they have referred anyone and hold any voucher (most readers have just been given
# their link and have neither: then the page takes this one statement); and the settings stamp
# (settings_snapshot.settings_read_with).
_PATIENT_BY_TOKEN_HASH = select(
    *columns_of(Patient, PUBLIC_PATIENT_KEYS),
    select(Referral.id).where(Referral.referrer_id == Patient.id).exists().label("has_friends"),
    select(Voucher.id).where(Voucher.patient_id == Patient.id).exists().label("has_vouchers"),
    feedback.answered_recently(Patient.id).label("has_feedback"),
    (func.coalesce(Patient.phone, "") != "").label("has_phone"),
    invite_opens.total_opens_column(Patient.id).label("invite_opens"),
    STAMP_COLUMN,
).where(Patient.progress_token_hash == bindparam("token_hash"))
# Each referral with the friend's names and the referrer's rewards for it (none, one or more rows each).
_FRIENDS_OF = (select(Referral.id, Referral.status, Referral.created_at, Referral.visited_at, Referral.paid_at,
                      Patient.display_name, Patient.full_name, Reward.kind, Reward.amount, Reward.label,
                      Reward.currency, Reward.status, Reward.stage, Voucher.status)
               .join(Patient, Patient.id == Referral.friend_id)
               .outerjoin(Reward, (Reward.referral_id == Referral.id) & (Reward.beneficiary == "referrer"))
               .outerjoin(Voucher, Voucher.id == Reward.voucher_id)
               .where(Referral.referrer_id == bindparam("patient_id"))
               .order_by(Referral.id.desc(), Reward.id))
_VOUCHERS_OF = select(*columns_of(Voucher)).where(Voucher.patient_id == bindparam("patient_id")).order_by(
    Voucher.id.desc())


def _friends(connection, patient_id: int) -> tuple[list[FriendProgress], list[ReferralMilestones]]:
    """The patient's referred friends, newest first, and what of each counts towards tiers."""
    language = current_language()
    friends: list[FriendProgress] = []
    milestones: list[ReferralMilestones] = []
    last_id = None
    for (referral_id, status, created_at, visited_at, paid_at, display_name, full_name,
         kind, amount, label, currency, reward_status, stage, voucher_status) in connection.execute(_FRIENDS_OF,
                                                                                     {"patient_id": patient_id}):
        if referral_id != last_id:
            last_id = referral_id
            milestones.append(ReferralMilestones(patient_id, status, paid_at))
            friends.append(FriendProgress(
                name=mask_name(display_name or full_name), registered_at=created_at,
                visited=visited_at is not None or paid_at is not None, paid=paid_at is not None,
                reversed=status == ReferralStatus.REVERSED.value, rewards=[]))
        if kind is not None:
            friends[-1].rewards.append(EarnedReward(RewardTerms(kind, amount, label).describe(currency, language),
                                                    reward_state(reward_status, stage, voucher_status)))
    return friends, milestones


def progress_page(token: str) -> ProgressPage | None:
    """The page for a progress token, or None for an unknown or rotated token (same 404)."""
    if not token or len(token) > 128:
        return None
    with read_connection() as connection:
        now = utcnow()
        row = connection.execute(_PATIENT_BY_TOKEN_HASH, {"token_hash": hash_token(token),
                                                          "feedback_since": feedback.window_start(now)}).first()
        if row is None:
            return None
        *patient_columns, has_friends, has_vouchers, has_feedback, has_phone, opens, stamp = row
        settings_read_with(stamp, connection)  # first: the friends' rewards are worded in the clinic's language
        patient = PublicPatientRow(*patient_columns)
        friends, milestones = _friends(connection, patient.id) if has_friends else ([], [])
        vouchers = [VoucherRow(*row) for row in connection.execute(_VOUCHERS_OF, {"patient_id": patient.id})] \
            if has_vouchers else []
        answer = feedback.latest_answer(connection, patient.id, now) if has_feedback else None
    campaign = campaign_in_force(for_cards=False, now=now)
    currency, language = current_clinic().currency, current_language()
    running = campaign is not None
    return ProgressPage(
        patient=patient,
        vouchers=vouchers,
        active_vouchers=[v for v in vouchers if v.status_at(now) is VoucherStatus.ACTIVE],
        offer_for_friends=friend_reward(campaign).describe_with_stage(currency, language) if running else None,
        reward_per_friend=referrer_reward(campaign).describe_with_stage(currency, language) if running else None,
        tier=tier_status(patient.id, now, milestones),
        friends=friends,
        answer=answer,
        has_phone=bool(has_phone),
        invite_opens=int(opens),
    )
