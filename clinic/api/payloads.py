"""What the API answers: plain JSON objects built from the models (schemas in clinic/api/spec.py).

Money is an integer in minor units with its currency; times are ISO 8601 in UTC with a ``Z``.
No diagnosis, department or treatment exists to be sent.
"""

from __future__ import annotations

from datetime import datetime

from flask import url_for

from clinic.models import Card, CardBatch, Patient, Referral, Reward, Voucher
from clinic.models._time import utcnow
from clinic.services.cards import batch_pdf_path, effective_status
from clinic.services.clinic_settings import RewardTerms, last_day_before
from clinic.services.codes import format_code
from clinic.services.redemption import ReferralOffer
from clinic.services.urls import invite_url, progress_url, voucher_url

FRIEND = "friend"  # a voucher's or reward's beneficiary: the referred friend (else "referrer")


def timestamp(value: datetime | None) -> str | None:
    """Naive UTC from the database as ``2026-11-23T09:30:00Z``."""
    return None if value is None else value.strftime("%Y-%m-%dT%H:%M:%SZ")


def value_of(kind: str, amount: int, label: str, currency: str) -> dict:
    """A reward's value: money off in minor units, or a named service (amount 0)."""
    return {"kind": kind, "amount": amount, "currency": currency, "label": label or ""}


def patient(p: Patient, token: str | None = None) -> dict:
    """A patient; the progress URL only when the raw token is at hand (creation or rotation).

    An erased patient's personal code is withdrawn (it answers ``code_withdrawn``): no code and no invite URL, so an
    HIS does not print or send a link that refers nobody.
    """
    code = p.personal_code if p.erased_at is None else None
    body = {
        "id": p.id,
        "name": p.full_name,
        "display_name": p.display_name,
        "phone": p.phone,
        "external_id": p.external_id,
        "personal_code": code,
        "personal_code_display": code and format_code(code),
        "invite_url": code and invite_url(code),
        "name_on_posters": p.name_on_posters,
        "referred_by_id": p.referred_by_id,
        "enrolled_at": timestamp(p.enrolled_at),
        "progress_link_issued_at": timestamp(p.progress_link_issued_at),
        "erased_at": timestamp(p.erased_at),
    }
    if token is not None:
        body["progress_url"] = progress_url(token)
    return body


def voucher(v: Voucher) -> dict:
    """A voucher in full, its bearer code included: for whoever may spend it (the code was sent, or it is the friend's
    at their own redemption)."""
    return {
        **voucher_without_code(v),
        "code": v.code,
        "code_display": format_code(v.code),
        "url": voucher_url(v.code),
        "spent_at": timestamp(v.spent_at),
        "voided_at": timestamp(v.voided_at),
        "void_reason": v.void_reason,
    }


def voucher_without_code(v: Voucher) -> dict:
    """Someone else's voucher: what it is worth and its state, never its code, which is money (whoever holds it can
    spend it) and reaches its owner through their progress page and messages, not through an integration."""
    return {
        "id": v.id,
        "value": value_of(v.kind, v.amount, v.label, v.currency),
        "status": v.status_at(utcnow()).value,
        "beneficiary": v.beneficiary,
        "patient_id": v.patient_id,
        "referral_id": v.referral_id,
        "issued_at": timestamp(v.issued_at),
        "valid_until": last_day_before(v.expires_at).isoformat(),
        "expires_at": timestamp(v.expires_at),
    }


def issued_vouchers(issued: list[Voucher]) -> dict:
    """The vouchers a redemption or a milestone issued, least privilege: the friend's in full (the integration acts
    for the friend in front of it and hands them over), the referrer's without their codes (``referrer_vouchers``).
    """
    return {"vouchers": [voucher(v) for v in issued if v.beneficiary == FRIEND],
            "referrer_vouchers": [voucher_without_code(v) for v in issued if v.beneficiary != FRIEND]}


def referral(r: Referral) -> dict:
    return {
        "id": r.id,
        "referrer_id": r.referrer_id,
        "friend_id": r.friend_id,
        "campaign_id": r.campaign_id,
        "code_used": r.code_used,
        "card_serial": r.card.serial if r.card_id else None,
        "status": r.status,
        "created_at": timestamp(r.created_at),
        "visited_at": timestamp(r.visited_at),
        "paid_at": timestamp(r.paid_at),
        "paid_amount": r.paid_amount,
        "reversed_at": timestamp(r.reversed_at),
    }


def reward(r: Reward) -> dict:
    """One side's reward: ``issued`` (with its voucher, whose code only for the friend), ``pending`` its stage, or
    ``review`` over a cap."""
    return {
        "id": r.id,
        "beneficiary": r.beneficiary,
        "patient_id": r.patient_id,
        "stage": r.stage,
        "status": r.status,
        "value": value_of(r.kind, r.amount, r.label, r.currency),
        "voucher_id": r.voucher_id,
        # The code only of the friend's voucher, as in issued_vouchers: the referrer's is the referrer's money.
        "voucher_code": r.voucher.code if r.voucher_id and r.beneficiary == FRIEND else None,
    }


def terms(t: RewardTerms, currency: str) -> dict:
    return {**value_of(t.kind, t.amount, t.label, currency), "stage": t.stage}


def offer(o: ReferralOffer, currency: str) -> dict:
    return {
        "code": o.code.code,
        "code_display": o.code.display,
        "kind": "card" if o.card else "personal",
        "referrer": {"id": o.referrer.id, "name": o.referrer.full_name},
        "card_serial": o.card.serial if o.card else None,
        "campaign_id": o.campaign.id,
        "referrer_gets": terms(o.referrer_reward, currency),
        "friend_gets": terms(o.friend_reward, currency),
    }


def card(c: Card) -> dict:
    """A scratch card by its serial; never its code (the code is the value)."""
    return {
        "serial": c.serial,
        "status": c.status,
        "batch_id": c.batch_id,
        "patient_id": c.patient_id,
        "activated_at": timestamp(c.activated_at),
        "redeemed_at": timestamp(c.redeemed_at),
    }


def batch(b: CardBatch) -> dict:
    status = effective_status(b)
    ready = status == "done" and batch_pdf_path(b) is not None
    return {
        "id": b.id,
        "label": b.label,
        "size": b.size,
        "design": b.design,
        "bleed": b.bleed,
        "status": status,
        "progress": b.progress,
        "created_at": timestamp(b.created_at),
        "finished_at": timestamp(b.finished_at),
        "pdf_url": url_for("api.batch_pdf", batch_id=b.id, _external=False) if ready else None,
    }
