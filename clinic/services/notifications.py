"""Messages for patients ("you earned a reward", "your friend visited", "you reached VIP"), sent by webhook.

The portal sends no SMS itself: it emits a ``notification.requested`` event carrying the channel,
the language, the phone number and the finished text, and the clinic's SMS or WeChat gateway
(subscribed as a webhook endpoint) sends it. No message without consent: a patient who has not
agreed, has no channel or no phone gets no event at all; and since a message may wait (a gateway that
is down), consent is checked again when it is sent — one the patient no longer agrees to is cancelled,
not sent (:func:`withheld_because`). Withdrawing consent cancels the patient's waiting messages at once.

The wording lives here as built-in texts per language; a manager may replace any of them on the
Notifications page (a row in ``notification_templates``; emptying the field restores the built-in
text). Placeholders are ``{name}``-style words, filled by plain substitution — never ``str.format``,
whose ``{name.attribute}`` lookups would let a template reach into Python objects.
"""

from __future__ import annotations

import re

from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError

from clinic.extensions import db
from clinic.i18n import format_day
from clinic.models import (DeliveryStatus, NotificationTemplate, OutboxEvent, Patient, Referral, Tier, Voucher,
                           WebhookDelivery)
from clinic.models._time import utcnow
from clinic.models.patient import NOTIFICATION_LANGUAGES
from clinic.services import audit, webhook_sender, webhooks
from clinic.services.clinic_settings import current_clinic, last_day_before
from clinic.services.errors import Refused
from clinic.services.money import format_money
from clinic.services.patients import (FieldErrors, check_channel, check_fields, check_language, consent_problem,
                                      normalize_phone, patient_to_change)
from clinic.services.privacy import mask_name
from clinic.services.text import clean_text
from clinic.services.transaction import Actor, atomic

EVENT = "notification.requested"
MESSAGE_CHANNELS = ("sms", "wechat")
TEMPLATE_MAX = 500
LANGUAGE_NAMES = {"zh_CN": "简体中文", "en": "English"}

# kind -> (what it is for, the placeholders it may use)
KINDS = {
    "reward_earned": (_l("A voucher was issued to the patient"), ("name", "clinic", "reward", "expires")),
    "friend_visited": (_l("A friend the patient referred came for their first visit"), ("name", "clinic", "friend")),
    "tier_reached": (_l("The patient reached a tier (VIP)"), ("name", "clinic", "tier")),
    "voucher_expiring": (_l("The patient's unspent vouchers are about to expire"),
                         ("name", "clinic", "reward", "expires")),
    "invitation": (_l("The patient's own referral code and invite link, to share (sent by staff or a manager, and "
                      "on enrolment)"), ("name", "clinic", "code", "link", "friend_reward", "reward")),
}
DEFAULT_TEXTS = {
    ("reward_earned", "zh_CN"): "{name}，您在{clinic}获得一份奖励：{reward}，有效期至{expires}。到院时请在前台出示。",
    ("reward_earned", "en"): "{name}, you have a new reward from {clinic}: {reward}, valid until {expires}. "
                             "Show it at the front desk.",
    ("friend_visited", "zh_CN"): "{name}，您推荐的朋友{friend}已到{clinic}就诊，感谢您的推荐！",
    ("friend_visited", "en"): "{name}, your friend {friend} has visited {clinic}. Thank you for recommending us!",
    ("tier_reached", "zh_CN"): "{name}，恭喜您成为{clinic}的{tier}会员，感谢您一直以来的推荐！",
    ("tier_reached", "en"): "{name}, congratulations: you are now a {tier} member of {clinic}. "
                            "Thank you for recommending us!",
    ("voucher_expiring", "zh_CN"): "{name}，您在{clinic}的奖励{reward}将于{expires}到期，请在到期前到院使用。",
    ("voucher_expiring", "en"): "{name}, your reward from {clinic}, {reward}, can be used until {expires}. "
                                "Show it at the front desk before then.",
    ("invitation", "zh_CN"): "{name}，您在{clinic}的专属推荐码是{code}。推荐朋友来院，朋友可得{friend_reward}，"
                             "您可得{reward}。分享链接：{link}",
    ("invitation", "en"): "{name}, your referral code at {clinic} is {code}. A friend you recommend gets "
                          "{friend_reward}, and you get {reward}. Share this link: {link}",
}
PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
# Why a waiting message was cancelled (WebhookDelivery.cancel_reason), for the manager's list of deliveries.
CANCEL_REASONS = {
    "no_consent": _l("Not sent: the patient no longer agrees to messages by this channel."),
    "phone_changed": _l("Not sent: the patient's phone number changed after the message was written."),
    "patient_erased": _l("Not sent: the patient's personal data was erased."),
}
# The same reasons, when a manager asks to send such a message again.
RESEND_REFUSALS = {
    "no_consent": _l("This message cannot be sent again: the patient no longer agrees to messages by this "
                     "channel."),
    "phone_changed": _l("This message cannot be sent again: it was written for a phone number the patient no "
                        "longer has."),
    "patient_erased": _l("This message cannot be sent again: the patient's personal data was erased."),
}


def field_name(kind: str, language: str) -> str:
    """The form field of one template on the Notifications page."""
    return f"{kind}-{language}"


def render(text: str, values: dict[str, str]) -> str:
    return PLACEHOLDER.sub(lambda match: values.get(match.group(1), match.group(0)), text)


def template_text(kind: str, language: str) -> str:
    """The manager's wording if there is one, else the built-in text."""
    override = db.session.scalar(select(NotificationTemplate.text).where(NotificationTemplate.kind == kind,
                                                                         NotificationTemplate.language == language))
    return override or DEFAULT_TEXTS[kind, language]


def templates() -> list[dict]:
    """Every template for the Notifications page: its field, current text, built-in text and placeholders."""
    overrides = {(row.kind, row.language): row.text for row in db.session.scalars(select(NotificationTemplate))}
    return [{"kind": kind, "language": language, "field": field_name(kind, language), "purpose": purpose,
             "placeholders": placeholders, "default": DEFAULT_TEXTS[kind, language],
             "text": overrides.get((kind, language), DEFAULT_TEXTS[kind, language]),
             "overridden": (kind, language) in overrides}
            for kind, (purpose, placeholders) in KINDS.items() for language in NOTIFICATION_LANGUAGES]


def _checked_template(kind: str, raw: str) -> str:
    text = clean_text(raw, max_length=TEMPLATE_MAX, label=_("The message"), required=False)
    allowed = KINDS[kind][1]
    unknown = [name for name in PLACEHOLDER.findall(text) if name not in allowed]
    if unknown:
        raise ValueError(_("Unknown placeholder %(placeholder)s: use %(allowed)s.", placeholder=f"{{{unknown[0]}}}",
                           allowed=", ".join(f"{{{n}}}" for n in allowed)))
    return text


def save_templates(submitted: dict[str, str], actor: Actor) -> list[str]:
    """Save the manager's wording; an empty field (or the built-in text) restores the built-in text.

    ``submitted`` maps field names to text; fields not submitted stay as they are. Every field is
    checked first, so a refusal (:class:`FieldErrors`) changes nothing. Returns the fields changed.
    """
    wanted = {(kind, language): submitted[field_name(kind, language)]
              for kind in KINDS for language in NOTIFICATION_LANGUAGES if field_name(kind, language) in submitted}
    clean = check_fields({field_name(kind, language): (lambda k=kind, raw=raw: _checked_template(k, raw))
                          for (kind, language), raw in wanted.items()})
    changed = []
    try:
        with atomic():
            rows = {(row.kind, row.language): row for row in db.session.scalars(select(NotificationTemplate))}
            for (kind, language) in wanted:
                text = clean[field_name(kind, language)]
                row = rows.get((kind, language))
                if not text or text == DEFAULT_TEXTS[kind, language]:
                    if row is not None:
                        db.session.execute(delete(NotificationTemplate).where(NotificationTemplate.id == row.id))
                        changed.append(field_name(kind, language))
                elif row is None:
                    db.session.add(NotificationTemplate(kind=kind, language=language, text=text,
                                                        updated_by_id=actor.staff_id))
                    changed.append(field_name(kind, language))
                elif row.text != text:
                    row.text, row.updated_by_id = text, actor.staff_id
                    changed.append(field_name(kind, language))
            if changed:
                audit.record("notifications.templates_changed", actor, templates=changed)
    except IntegrityError:  # another manager added the same message a moment ago
        raise Refused("conflict", _("Another manager saved these messages at the same moment: check them and "
                                     "save again."), status=409) from None
    return changed


def set_preferences(patient_id: int, channel: str | None, language: str | None, consent: bool,
                    actor: Actor) -> Patient:
    """Record how the patient wants to be told and whether they agreed; the consent's moment is kept."""
    values = check_fields({"preferred_channel": lambda: check_channel(channel),
                           "preferred_language": lambda: check_language(language)})
    with atomic():
        patient = patient_to_change(patient_id)
        record_preferences(patient, values["preferred_channel"], values["preferred_language"], consent, actor)
    return patient


def record_preferences(patient: Patient, channel: str, language: str, consent: bool, actor: Actor) -> None:
    """Checked channel and language and the consent, in the current transaction; audited only when they change.

    Apart from :func:`set_preferences` so that the patient's own choices (clinic/services/consents.py) save
    it in one transaction with their other consents.
    """
    problem = consent_problem(consent, channel, patient.phone)
    if problem:
        raise FieldErrors({"notification_consent": problem})
    before = (patient.preferred_channel, patient.preferred_language, patient.notification_consent)
    patient.preferred_channel = channel
    patient.preferred_language = language
    if consent and not patient.notification_consent:
        patient.notification_consent_at = utcnow()
    elif not consent:
        patient.notification_consent_at = None
    patient.notification_consent = consent
    cancelled = cancel_withheld_messages(patient)
    if before != (patient.preferred_channel, patient.preferred_language, consent) or cancelled:
        audit.record("patient.notification_consent", actor, patient_id=patient.id, consent=consent,
                     channel=patient.preferred_channel, language=patient.preferred_language,
                     cancelled_messages=cancelled or None)


def withheld_because(payload: dict, patient: Patient | None = None) -> str | None:
    """Why a waiting message may not go out now (a key of :data:`CANCEL_REASONS`), or None while it may.

    A message waits when the gateway is down, and a manager may resend an old one: what the patient
    agreed to *when it is sent* decides, not what they had agreed to when it was written. So it goes
    only while the patient still consents, by the same channel, and still has the phone it is
    addressed to. A changed number cancels the message rather than redirecting it: the old number may
    belong to someone else by now, and the event is the signed record of what was asked, the same
    bytes on every attempt — the patient's next message goes to the new number with their consent then.

    ``patient`` is the patient as the current transaction changed them; without it, their row is read
    FOR SHARE (on PostgreSQL), so that a withdrawal being saved at this moment is waited for, not missed.
    """
    to = payload.get("to") or {}
    if patient is None:
        patient = db.session.scalar(select(Patient).where(Patient.id == to.get("patient_id"))
                                    .with_for_update(read=True).execution_options(populate_existing=True))
    if patient is not None and patient.erased_at is not None:
        return "patient_erased"
    if patient is None or not may_message(patient) or patient.preferred_channel != payload.get("channel"):
        return "no_consent"
    if not _same_number(to.get("phone"), patient.phone):
        return "phone_changed"
    return None


def _same_number(in_message: str | None, now: str | None) -> bool:
    """Also a message written before migration 7e2a4c6b9d13 stored the patient's phone in one spelling (+86…)."""
    if in_message == now:
        return True
    try:
        return normalize_phone(in_message) == now
    except ValueError:
        return False


def cancel_withheld_messages(patient: Patient) -> list[int]:
    """Cancel the patient's waiting messages that may no longer go out, in the current transaction.

    Returns the deliveries cancelled. One a sender holds at this moment (PostgreSQL) is skipped, not
    waited for — the sender waits for this patient's row before it checks, and the two waiting for each
    other would deadlock: the sender's check, after this commits, sees the withdrawal and cancels it.
    A message already being posted cannot be called back: if the gateway accepts it, the sender
    records it as delivered, which it then was.
    """
    waiting = db.session.execute(
        select(WebhookDelivery.id, OutboxEvent.payload).join(OutboxEvent, WebhookDelivery.event_id == OutboxEvent.id)
        .where(WebhookDelivery.status == DeliveryStatus.PENDING.value, OutboxEvent.event_type == EVENT,
               OutboxEvent.payload[("to", "patient_id")].as_integer() == patient.id)
        .order_by(WebhookDelivery.id).with_for_update(skip_locked=True, of=WebhookDelivery)).all()
    cancelled = []
    for delivery_id, payload in waiting:
        reason = withheld_because(payload, patient)
        if reason and webhook_sender.cancel(delivery_id, reason, utcnow()):
            cancelled.append(delivery_id)
    return cancelled


def may_message(patient: Patient) -> bool:
    """Consent given, a channel chosen and a phone to send to: the only case a message is emitted."""
    return bool(patient.notification_consent and patient.preferred_channel in MESSAGE_CHANNELS and patient.phone)


def may_message_conditions() -> tuple:
    """:func:`may_message` as SQL conditions on ``Patient`` (and not erased), for the runs that pick whom to tell
    (voucher reminders, invitations): change the two together."""
    return (Patient.erased_at.is_(None), Patient.notification_consent.is_(True),
            Patient.preferred_channel.in_(MESSAGE_CHANNELS), func.coalesce(Patient.phone, "") != "")


def _request(patient: Patient, kind: str, values: dict[str, str], about: dict):
    """Emit ``notification.requested`` for a patient who agreed, in the current transaction; else nothing."""
    if not may_message(patient) or not webhooks.subscribed(EVENT):
        return None
    language = patient.preferred_language if patient.preferred_language in NOTIFICATION_LANGUAGES \
        else NOTIFICATION_LANGUAGES[0]
    localised = {key: value(language) if callable(value) else value for key, value in values.items()}
    text = render(template_text(kind, language),
                  {"name": patient.public_name, "clinic": current_clinic().name, **localised})
    return webhooks.emit(EVENT, {
        "template": kind,
        "channel": patient.preferred_channel,
        "language": language,
        "to": {"patient_id": patient.id, "external_id": patient.external_id, "phone": patient.phone,
               "name": patient.public_name},
        "text": text,
        "about": about,
    })


def describe_reward(voucher: Voucher, language: str) -> str:
    if voucher.kind != "money":
        return voucher.label
    amount = format_money(voucher.amount, voucher.currency, language)
    return f"{amount}代金券" if language == "zh_CN" else f"{amount} off"


def reward_earned(voucher: Voucher, patient: Patient):
    return _request(patient, "reward_earned",
                    {"reward": lambda language: describe_reward(voucher, language),
                     "expires": lambda language: format_day(last_day_before(voucher.expires_at), language)},
                    {"event": "voucher.issued", "voucher_id": voucher.id})


def vouchers_expiring(vouchers: list[Voucher], patient: Patient):
    """One message for the patient's vouchers about to expire: each reward named, and the first last day."""
    separator = {"zh_CN": "、"}
    return _request(patient, "voucher_expiring",
                    {"reward": lambda language: separator.get(language, ", ").join(
                        describe_reward(voucher, language) for voucher in vouchers),
                     "expires": lambda language: format_day(
                         last_day_before(min(voucher.expires_at for voucher in vouchers)), language)},
                    {"event": "voucher.expiring", "voucher_ids": [voucher.id for voucher in vouchers]})


def friend_visited(referral: Referral):
    return _request(referral.referrer, "friend_visited", {"friend": mask_name(referral.friend.public_name)},
                    {"event": "referral.milestone", "referral_id": referral.id, "milestone": "visited"})


def invitation(patient: Patient, values: dict, about: dict):
    """The patient's code and invite link (clinic/services/invitation_messages.py decides who and when)."""
    return _request(patient, "invitation", values, about)


def tier_reached(patient: Patient, tier: Tier):
    return _request(patient, "tier_reached", {"tier": tier.name},
                    {"event": "tier.reached", "tier_id": tier.id})
