"""What receivers are told when something happens: the payload of each webhook event.

Each function is called by the service that made the change, inside its transaction, so the event
commits (or rolls back) with it. Payloads carry ids, the clinic's own record numbers, voucher codes,
amounts in minor units with their currency and UTC timestamps (ISO 8601, ``Z``) — never a diagnosis
or treatment, and never a name or phone number: those go only into ``notification.requested``, for a
patient who agreed to be told (see :mod:`clinic.services.notifications`).
"""

from __future__ import annotations

from datetime import datetime

from clinic.extensions import db
from clinic.models import Patient, Referral, Tier, Voucher
from clinic.services import notifications, webhooks
from clinic.services.clinic_settings import current_clinic, last_day_before


def timestamp(value: datetime | None) -> str | None:
    """Naive UTC as ISO 8601 with a ``Z``."""
    return None if value is None else value.isoformat(timespec="seconds") + "Z"


def patient_ref(patient: Patient) -> dict:
    return {"id": patient.id, "external_id": patient.external_id}


def referral_redeemed(referral: Referral) -> None:
    webhooks.emit("referral.redeemed", {
        "referral_id": referral.id,
        "redeemed_at": timestamp(referral.created_at),
        "via": "card" if referral.card_id else "personal_code",
        "card_serial": referral.card.serial if referral.card_id else None,
        "campaign_id": referral.campaign_id,
        "branch_id": referral.branch_id,
        "referrer": patient_ref(referral.referrer),
        "friend": patient_ref(referral.friend),
    })


def _voucher(voucher: Voucher, patient: Patient) -> dict:
    return {
        "voucher_id": voucher.id,
        "code": voucher.code,
        "patient": patient_ref(patient),
        "referral_id": voucher.referral_id,
        "beneficiary": voucher.beneficiary,
        "kind": voucher.kind,
        "amount": voucher.amount,
        "currency": voucher.currency,
        "label": voucher.label,
        "issued_at": timestamp(voucher.issued_at),
        "valid_until": last_day_before(voucher.expires_at).isoformat(),
        "expires_at": timestamp(voucher.expires_at),
    }


def voucher_issued(voucher: Voucher, patient: Patient) -> None:
    """A voucher for ``patient``: the event, and "you earned a reward" if they agreed to messages."""
    webhooks.emit("voucher.issued", _voucher(voucher, patient))
    notifications.reward_earned(voucher, patient)


def voucher_spent(voucher: Voucher) -> None:
    webhooks.emit("voucher.spent", {**_voucher(voucher, voucher.patient), "spent_at": timestamp(voucher.spent_at),
                                    "branch_id": voucher.spent_branch_id})


def milestone_reached(referral: Referral, milestone: str) -> None:
    """``visited`` or ``paid``; a first visit also tells the referrer (with consent) that their friend came."""
    paid = milestone == "paid"
    webhooks.emit("referral.milestone", {
        "referral_id": referral.id,
        "milestone": milestone,
        "at": timestamp(referral.paid_at if paid else referral.visited_at),
        "referrer": patient_ref(referral.referrer),
        "friend": patient_ref(referral.friend),
        "paid_amount": referral.paid_amount if paid else None,  # minor units, when the desk gave it
        "currency": current_clinic().currency if paid and referral.paid_amount is not None else None,
    })
    if not paid:
        notifications.friend_visited(referral)


def tier_reached(patient_id: int, tier: Tier, referral: Referral | None, at: datetime) -> None:
    patient = db.session.get(Patient, patient_id)
    webhooks.emit("tier.reached", {
        "patient": patient_ref(patient),
        "tier": {"id": tier.id, "name": tier.name, "min_paid_referrals": tier.min_paid_referrals,
                 "window_months": tier.window_months},
        "referral_id": referral.id if referral else None,
        "reached_at": timestamp(at),
    })
    notifications.tier_reached(patient, tier)
