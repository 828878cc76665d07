"""Erasing a patient's personal data: at their request (PIPL art. 47, GDPR art. 17) or a record made by mistake.

The patient's row is anonymised in place, not deleted: referrals, rewards, vouchers and the append-only audit log
refer to it, and the money the clinic paid must stay accounted for. What identifies the person goes — the name,
display name, phone, record number, consents, the private progress link — and so do the copies of them kept
elsewhere: queued messages (their address and text), the record number in webhook events, the hash of the
redemption form that registered them, and the PDF of a card printed with their name. The audit log never held
them (it records ids), so it keeps its rows and gains one, ``patient.erased``, with no personal data in it either.

What erasing leaves, on purpose: their "How was your visit?" answers keep their score, date and branch with no
patient (and no wish to be called), so the clinic's NPS history stays right and nothing in them names anyone
(clinic/services/feedback.py); a manager's "checked" marks on them as a referrer keep their rule, evidence, who
and when, without the note (clinic/services/referral_checks.py); the patient's active vouchers stay valid (bearer value the patient may still
hold: taking it away for exercising a right would be wrong, and their codes carry no personal data); referrals stay
linked (the other side's rewards depend on them); free-text reasons that staff typed (a reversal, a void) are kept
as written. The personal code and the cards given to the patient stop working, since a friend redeeming them would
pay someone the clinic can no longer name.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from flask import current_app
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from sqlalchemy import delete, or_, select, update

from clinic.extensions import db
from clinic.models import (Card, CardBatch, CardStatus, DeliveryStatus, FormSubmission, FriendLead, OutboxEvent,
                           Patient, Referral, ReviewRequest, Reward, RewardStatus, Voucher, VoucherStatus,
                           WebhookDelivery)
from clinic.models._time import utcnow
from clinic.services import audit, feedback, importer, notifications, referral_checks
from clinic.services.cards import VOIDABLE, batch_folder
from clinic.services.errors import Refused
from clinic.services.transaction import Actor, atomic

# Why a manager erases; a fixed list, since the audit log is append-only and a typed reason could name the patient.
ERASURE_REASONS = {
    "patient_request": _l("The patient asked for their data to be erased"),
    "entered_by_mistake": _l("The record was entered by mistake"),
    "duplicate": _l("The record duplicates another one"),
}
# The reason the retention rule gives (clinic/services/retention.py): not offered to a manager erasing one patient.
RETENTION_REASON = "retention_period"
ERASURE_REASON_LABELS = {**ERASURE_REASONS, RETENTION_REASON: _l(
    "No activity for longer than the clinic keeps personal data (its retention rule)")}
# Written where a reason is recorded on a row the erasure changes (a card's void, a cancelled reward): words for
# staff reading that row later; the language of the rows' other reasons, which staff type.
ROW_REASON = "Patient data erased"
# The fingerprint a redemption form's key keeps once the friend it registered is erased: matches no form, so a
# replay of that form is refused as a reused key instead of registering the person again.
ERASED_FINGERPRINT = hashlib.sha256(b"erased").hexdigest()
# Where a webhook or message payload names a patient (clinic/services/events.py, notifications.py).
_PATIENT_REFERENCES = (("patient",), ("referrer",), ("friend",))


@dataclass
class ErasurePlan:
    """What erasing a patient would change, for the manager to read before confirming."""

    patient: Patient
    active_vouchers: list[Voucher]
    cards_to_void: list[Card]
    rewards_to_cancel: list[Reward]
    reviews_to_reject: int
    messages_to_cancel: int


@dataclass
class ErasureReport:
    patient: Patient
    cards_voided: int
    rewards_cancelled: int
    reviews_rejected: int
    messages_cancelled: int
    events_redacted: int
    vouchers_kept: int


def erasure_plan(patient_id: int) -> ErasurePlan | None:
    """None for an unknown patient; an erased one has a plan with nothing left to do."""
    patient = db.session.get(Patient, patient_id)
    if patient is None:
        return None
    return ErasurePlan(
        patient=patient,
        active_vouchers=list(db.session.scalars(_active_vouchers(patient_id).order_by(Voucher.id))),
        cards_to_void=list(db.session.scalars(_cards_to_void(patient_id).order_by(Card.id))),
        rewards_to_cancel=list(db.session.scalars(_rewards_to_cancel(patient_id).order_by(Reward.id))),
        reviews_to_reject=len(db.session.scalars(_reviews_to_reject(patient_id)).all()),
        messages_to_cancel=len(db.session.scalars(_waiting_messages(patient_id)).all()),
    )


def _active_vouchers(patient_id: int):
    return select(Voucher).where(Voucher.patient_id == patient_id, Voucher.status == VoucherStatus.ACTIVE.value)


def _cards_to_void(patient_id: int):
    return select(Card).where(Card.patient_id == patient_id, Card.status.in_(VOIDABLE))


def _rewards_to_cancel(patient_id: int):
    """Rewards still owed to the patient: a voucher issued later would go to someone the clinic cannot name."""
    return select(Reward).where(Reward.patient_id == patient_id,
                                Reward.status.in_((RewardStatus.PENDING.value, RewardStatus.REVIEW.value)))


def _reviews_to_reject(patient_id: int):
    return select(ReviewRequest.id).where(
        ReviewRequest.status == "pending",
        or_(ReviewRequest.patient_id == patient_id, ReviewRequest.referrer_id == patient_id,
            ReviewRequest.reward_id.in_(select(Reward.id).where(Reward.patient_id == patient_id))))


def _waiting_messages(patient_id: int):
    return (select(WebhookDelivery.id).join(OutboxEvent, WebhookDelivery.event_id == OutboxEvent.id)
            .where(WebhookDelivery.status == DeliveryStatus.PENDING.value,
                   OutboxEvent.event_type == notifications.EVENT,
                   OutboxEvent.payload[("to", "patient_id")].as_integer() == patient_id))


def check_reason(reason: str | None) -> str:
    """One of ERASURE_REASON_LABELS; the forms and the command offer people only ERASURE_REASONS."""
    if reason not in ERASURE_REASON_LABELS:
        raise Refused("validation_error", _("Choose why the data is erased."), field="reason")
    return reason


def erase_patient(patient_id: int, reason: str | None, actor: Actor, *,
                  only_if: Callable[[], bool] | None = None) -> ErasureReport:
    """Erase the patient's personal data everywhere the portal keeps it, in one transaction (see the module).

    Refused with 404 for an unknown patient and 409 for one already erased; the claim is a conditional UPDATE,
    so two managers erasing at once erase once. ``only_if``: a condition asked with the patient's row locked,
    just before the claim (the retention rule's "still inactive"); refused with 409 ``no_longer_due`` when false.
    """
    reason = check_reason(reason)
    now = utcnow()
    with atomic():
        # Waiting reviews first, the patient's row after: a manager approving one of them holds the review's row and
        # then needs the patient's (a referral names them), so the other order deadlocks (PostgreSQL); this one waits
        # for the approval and then cleans what it paid.
        reviews = _reject_reviews(patient_id, now, actor)
        if only_if is not None:
            # Locked first (PostgreSQL; SQLite's write lock already orders it): a redemption paying this patient
            # either committed before the condition is read, or waits and then finds them erased.
            db.session.execute(select(Patient.id).where(Patient.id == patient_id).with_for_update())
            if not only_if():
                raise Refused("no_longer_due", _("This patient was active again since the list was made: not "
                                                 "erased."), status=409)
        leads = _delete_call_back_requests(patient_id)  # before the claim: it reads the phone the claim blanks
        claimed = db.session.execute(
            update(Patient).where(Patient.id == patient_id, Patient.erased_at.is_(None))
            .values(erased_at=now, erased_by_id=actor.staff_id, full_name="", display_name="", phone=None,
                    external_id=None, name_on_posters=False, leaderboard_opt_in=False, notification_consent=False,
                    notification_consent_at=None, preferred_channel="none", last_invited_at=None,
                    # A hash of a token nobody was given: the old link stops working and no new one exists.
                    progress_token_hash=hashlib.sha256(secrets.token_bytes(32)).hexdigest(),
                    progress_link_issued_at=now)
            .execution_options(synchronize_session=False)).rowcount
        patient = db.session.get(Patient, patient_id, populate_existing=True)
        if patient is None:
            raise Refused("not_found", _("No such patient."), status=404)
        if claimed != 1:
            raise Refused("already_erased", _("This patient's data was already erased."), status=409)
        cards = _void_cards(patient_id, now, actor)
        card_files = _forget_personal_card_files(patient_id)
        rewards = _cancel_rewards(patient_id, now, actor)
        reviews += _reject_reviews(patient_id, now, actor)  # one sent while the first ones were rejected
        messages = notifications.cancel_withheld_messages(patient)
        events = _redact_events(patient_id)
        feedback.forget_patient(patient_id)
        referral_checks.forget_patient(patient_id)
        db.session.execute(
            update(FormSubmission).where(FormSubmission.action == "redeem", FormSubmission.result_id.in_(
                select(Referral.id).where(Referral.friend_id == patient_id)))
            .values(fingerprint=ERASED_FINGERPRINT).execution_options(synchronize_session=False))
        vouchers_kept = len(db.session.scalars(_active_vouchers(patient_id)).all())
        audit.record("patient.erased", actor, patient_id=patient_id, erasure_reason=reason, cards_voided=len(cards),
                     rewards_cancelled=rewards, reviews_rejected=reviews, messages_cancelled=len(messages),
                     events_redacted=events, vouchers_kept=vouchers_kept, call_back_requests_deleted=leads or None)
    for path in card_files:  # after the commit: a rolled-back erasure must leave the card sheet it would remove
        path.unlink(missing_ok=True)
    # An import made in the last 15 minutes keeps its patients' names and progress links for the manager to download.
    importer.forget_patient(current_app.config["IMPORT_FOLDER"], patient_id)
    return ErasureReport(patient=patient, cards_voided=len(cards), rewards_cancelled=rewards, reviews_rejected=reviews,
                         messages_cancelled=len(messages), events_redacted=events, vouchers_kept=vouchers_kept)


def _delete_call_back_requests(patient_id: int) -> int:
    """Call-back requests (clinic/services/leads.py) that name the patient: through their code (friends' names and
    phones, kept for this referrer), and their own, by their phone or converted into the referral that registered
    them. Deleted, not blanked: a request is nothing but a name and a phone."""
    phone = select(Patient.phone).where(Patient.id == patient_id).scalar_subquery()
    their_referral = select(Referral.id).where(Referral.friend_id == patient_id)
    return db.session.execute(
        delete(FriendLead).where(or_(FriendLead.referrer_id == patient_id, FriendLead.phone == phone,
                                     FriendLead.converted_referral_id.in_(their_referral)))
        .execution_options(synchronize_session=False)).rowcount


def _void_cards(patient_id: int, now, actor: Actor) -> list[Card]:
    """The patient's cards that could still be redeemed (or printed for them and not yet handed over) become void."""
    cards = list(db.session.scalars(_cards_to_void(patient_id).order_by(Card.id).with_for_update()))
    if cards:
        db.session.execute(
            update(Card).where(Card.id.in_([card.id for card in cards]), Card.status.in_(VOIDABLE))
            .values(status=CardStatus.VOID.value, voided_at=now, voided_by_id=actor.staff_id, void_reason=ROW_REASON)
            .execution_options(synchronize_session=False))
        audit.record_all(actor, [("card.voided", {"patient_id": patient_id, "serial": card.serial,
                                                  "reason_text": ROW_REASON}) for card in cards])
    return cards


def _forget_personal_card_files(patient_id: int) -> list[Path]:
    """A card printed for one patient carries their name on its sheet: the batch keeps its record, not the PDF.

    Returns the files to remove once the transaction has committed.
    """
    batches = list(db.session.scalars(select(CardBatch).where(
        CardBatch.personal.is_(True), CardBatch.pdf_filename.is_not(None),
        CardBatch.id.in_(select(Card.batch_id).where(Card.patient_id == patient_id)))))
    files = [batch_folder() / batch.pdf_filename for batch in batches]
    for batch in batches:
        batch.pdf_filename = None
    return files


def _cancel_rewards(patient_id: int, now, actor: Actor) -> int:
    return db.session.execute(
        update(Reward).where(Reward.patient_id == patient_id,
                             Reward.status.in_((RewardStatus.PENDING.value, RewardStatus.REVIEW.value)))
        .values(status=RewardStatus.CANCELLED.value, decided_at=now, decided_by_id=actor.staff_id,
                decision_reason=ROW_REASON)
        .execution_options(synchronize_session=False)).rowcount


def _reject_reviews(patient_id: int, now, actor: Actor) -> int:
    return db.session.execute(
        update(ReviewRequest).where(ReviewRequest.id.in_(_reviews_to_reject(patient_id)))
        .values(status="rejected", decided_at=now, decided_by_id=actor.staff_id, decision_reason=ROW_REASON)
        .execution_options(synchronize_session=False)).rowcount


def _redact_events(patient_id: int) -> int:
    """Blank the patient's record number in webhook events, and the address and text of messages to them.

    Events keep their ids and amounts: they are the record of what the clinic's systems were told.
    """
    message_to_them = OutboxEvent.payload[("to", "patient_id")].as_integer() == patient_id
    naming_them = [OutboxEvent.payload[path + ("id",)].as_integer() == patient_id for path in _PATIENT_REFERENCES]
    redacted = 0
    for event in db.session.scalars(select(OutboxEvent).where(or_(message_to_them, *naming_them))):
        payload = _redacted(event.payload, patient_id)
        if payload != event.payload:
            event.payload = payload
            redacted += 1
    return redacted


def _redacted(payload: dict, patient_id: int) -> dict:
    payload = {key: (dict(value) if isinstance(value, dict) else value) for key, value in payload.items()}
    for (key,) in _PATIENT_REFERENCES:
        if isinstance(payload.get(key), dict) and payload[key].get("id") == patient_id:
            payload[key]["external_id"] = None
    to = payload.get("to")
    if isinstance(to, dict) and to.get("patient_id") == patient_id:
        to.update(external_id=None, phone=None, name=None)
        payload["text"] = None
    return payload
