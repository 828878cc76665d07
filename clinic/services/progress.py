"""What a patient sees on their private progress page."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from clinic.extensions import db
from clinic.models import Patient, Referral, Voucher, VoucherStatus
from clinic.models._time import utcnow
from clinic.services.clinic_settings import friend_reward, get_clinic, referrer_reward
from clinic.services.rewards import campaign_in_force
from clinic.services.patients import patient_by_progress_token


@dataclass
class ProgressPage:
    patient: Patient
    referrals: list[Referral]
    vouchers: list[Voucher]
    active_vouchers: list[Voucher]
    offer_for_friends: str | None
    reward_per_friend: str | None

    @property
    def friends_count(self) -> int:
        return len(self.referrals)


def progress_page(token: str) -> ProgressPage | None:
    """The page for a progress token, or None for an unknown or rotated token (same 404)."""
    patient = patient_by_progress_token(token)
    if patient is None:
        return None
    now = utcnow()
    referrals = list(db.session.scalars(
        select(Referral).where(Referral.referrer_id == patient.id)
        .options(selectinload(Referral.friend)).order_by(Referral.id.desc())))
    vouchers = list(db.session.scalars(
        select(Voucher).where(Voucher.patient_id == patient.id).order_by(Voucher.id.desc())))
    campaign = campaign_in_force(for_cards=False, now=now)
    currency = get_clinic().currency
    running = campaign is not None
    return ProgressPage(
        patient=patient,
        referrals=referrals,
        vouchers=vouchers,
        active_vouchers=[v for v in vouchers if v.status_at(now) is VoucherStatus.ACTIVE],
        offer_for_friends=friend_reward(campaign).describe(currency) if running else None,
        reward_per_friend=referrer_reward(campaign).describe(currency) if running else None,
    )
