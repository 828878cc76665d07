"""Everything the portal holds about one patient, as one JSON file: a patient's right of access (PIPL art. 45,
GDPR art. 15), the companion of correcting their details and erasing them (clinic/services/erasure.py).

The file is for the patient: their own data in full (name, phone, record number, consents, codes, vouchers, the
messages the clinic asked to send them), and only what they may see of other people — a friend they referred or
the patient who referred them appears as the invite page would show them (masked), staff not at all. Times are
UTC (ISO 8601, ``Z``), amounts in minor units with their currency, as in the API. Handing it out is audited.
"""

from __future__ import annotations

import json

from sqlalchemy import or_, select

from clinic.extensions import db
from clinic.models import (AuditEvent, Branch, Card, InviteOpen, OutboxEvent, Patient, Referral, Reward, VisitFeedback,
                           Voucher, WebhookDelivery)
from clinic.services import audit, notifications
from clinic.services.codes import format_code
from clinic.services.errors import Refused
from clinic.services.events import timestamp
from clinic.services.privacy import mask_name
from clinic.services.transaction import Actor, atomic

FORMAT_VERSION = 1


def patient_data(patient_id: int, actor: Actor) -> tuple[Patient, str]:
    """The patient and their data as JSON text; the export is audited (what was handed out, not its content)."""
    patient = db.session.get(Patient, patient_id)
    if patient is None:
        raise Refused("not_found", "No such patient.", status=404)
    document = {
        "format_version": FORMAT_VERSION,
        "patient": _patient(patient),
        "referred_by": _referred_by(patient),
        "friends_referred": [_friend(referral) for referral in db.session.scalars(
            select(Referral).where(Referral.referrer_id == patient_id).order_by(Referral.id))],
        "rewards": [_reward(reward) for reward in db.session.scalars(
            select(Reward).where(Reward.patient_id == patient_id).order_by(Reward.id))],
        "vouchers": [_voucher(voucher) for voucher in db.session.scalars(
            select(Voucher).where(Voucher.patient_id == patient_id).order_by(Voucher.id))],
        "cards": [_card(card) for card in db.session.scalars(
            select(Card).where(Card.patient_id == patient_id).order_by(Card.id))],
        "messages": _messages(patient_id),
        "visit_feedback": [_feedback(answer) for answer in db.session.scalars(
            select(VisitFeedback).where(VisitFeedback.patient_id == patient_id).order_by(VisitFeedback.id))],
        # How often their invite page was opened, by clinic day and way in: about their sharing, nobody else's.
        "invite_page_opens": [{"day": row.day.isoformat(), "via": row.via, "opens": row.opens}
                              for row in db.session.scalars(select(InviteOpen).where(
                                  InviteOpen.patient_id == patient_id).order_by(InviteOpen.day, InviteOpen.via))],
        "history": [{"at": timestamp(event.at), "action": event.action, "outcome": event.outcome}
                    for event in db.session.scalars(select(AuditEvent).where(or_(
                        AuditEvent.patient_id == patient_id, AuditEvent.referral_id.in_(select(Referral.id).where(
                            Referral.friend_id == patient_id)))).order_by(AuditEvent.id))],
    }
    text = json.dumps(document, ensure_ascii=False, indent=2)
    with atomic():
        audit.record("export.patient_data", actor, patient_id=patient_id, bytes=len(text.encode()))
    return patient, text


def _patient(patient: Patient) -> dict:
    branch = db.session.get(Branch, patient.branch_id) if patient.branch_id else None
    return {
        "id": patient.id,
        "full_name": patient.full_name,
        "display_name": patient.display_name,
        "phone": patient.phone,
        "record_number": patient.external_id,
        "personal_code": format_code(patient.personal_code),
        "enrolled_at": timestamp(patient.enrolled_at),
        "enrolled_at_branch": branch.name if branch else None,
        "progress_link_issued_at": timestamp(patient.progress_link_issued_at),
        "consents": {
            "name_on_posters": patient.name_on_posters,
            "public_leaderboard": patient.leaderboard_opt_in,
            "messages": patient.notification_consent,
            "messages_agreed_at": timestamp(patient.notification_consent_at),
            "message_channel": patient.preferred_channel,
            "message_language": patient.preferred_language,
        },
        "last_sent_their_code_at": timestamp(patient.last_invited_at),
        "erased_at": timestamp(patient.erased_at),
    }


def _referred_by(patient: Patient) -> dict | None:
    referral = db.session.scalar(select(Referral).where(Referral.friend_id == patient.id))
    if referral is None:
        return None
    return {"referrer": mask_name(referral.referrer.public_name) if referral.referrer.full_name else None,
            **_milestones(referral)}


def _friend(referral: Referral) -> dict:
    friend = referral.friend
    return {"friend": mask_name(friend.public_name) if friend.full_name else None, **_milestones(referral)}


def _milestones(referral: Referral) -> dict:
    return {"referral_id": referral.id, "registered_at": timestamp(referral.created_at),
            "via": "card" if referral.card_id else "personal_code", "status": referral.status,
            "visited_at": timestamp(referral.visited_at), "paid_at": timestamp(referral.paid_at)}


def _reward(reward: Reward) -> dict:
    return {"referral_id": reward.referral_id, "as": reward.beneficiary, "kind": reward.kind,
            "amount": reward.amount, "currency": reward.currency, "label": reward.label, "paid": reward.stage,
            "status": reward.status}


def _voucher(voucher: Voucher) -> dict:
    return {"code": format_code(voucher.code), "kind": voucher.kind, "amount": voucher.amount,
            "currency": voucher.currency, "label": voucher.label, "status": voucher.status,
            "issued_at": timestamp(voucher.issued_at), "expires_at": timestamp(voucher.expires_at),
            "spent_at": timestamp(voucher.spent_at), "voided_at": timestamp(voucher.voided_at)}


def _feedback(answer: VisitFeedback) -> dict:
    """Their "How was your visit?" answer (0-10), whether they asked to be called, and when the clinic called."""
    return {"score": answer.score, "answered_at": timestamp(answer.created_at),
            "asked_to_be_called_at": timestamp(answer.callback_requested_at),
            "called_back_at": timestamp(answer.followed_up_at)}


def _card(card: Card) -> dict:
    return {"serial": card.serial, "status": card.status, "activated_at": timestamp(card.activated_at),
            "redeemed_at": timestamp(card.redeemed_at), "voided_at": timestamp(card.voided_at)}


def _messages(patient_id: int) -> list[dict]:
    """The messages the clinic asked its SMS/WeChat gateway to send them, with what became of each."""
    rows = db.session.execute(
        select(OutboxEvent, WebhookDelivery.status).outerjoin(WebhookDelivery, WebhookDelivery.event_id == OutboxEvent.id)
        .where(OutboxEvent.event_type == notifications.EVENT,
               OutboxEvent.payload[("to", "patient_id")].as_integer() == patient_id)
        .order_by(OutboxEvent.id)).all()
    messages: dict[int, dict] = {}
    for event, status in rows:
        message = messages.setdefault(event.id, {
            "at": timestamp(event.created_at), "channel": event.payload.get("channel"),
            "to": (event.payload.get("to") or {}).get("phone"), "text": event.payload.get("text"), "status": []})
        if status:
            message["status"].append(status)
    return list(messages.values())
