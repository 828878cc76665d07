"""Webhooks: the endpoints a manager registers, and the outbox every business event is written to.

:func:`emit` adds an event and one pending delivery per subscribed, enabled endpoint to the
*current* transaction: they commit with the redemption, spend or milestone they report, or vanish
with it when it rolls back. Nobody subscribed, nothing is written. After the commit a background
job is kicked to send them (see :mod:`clinic.services.webhook_sender`); whatever it does not
manage waits in the database for the next kick or for ``flask deliver-webhooks``.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from sqlalchemy import delete, event, func, insert, select, update
from sqlalchemy.orm import Session, joinedload

from clinic.extensions import db
from clinic.models import DeliveryStatus, OutboxEvent, WebhookDelivery, WebhookEndpoint
from clinic.models._time import utcnow
from clinic.services import audit, webhook_sender
from clinic.services.errors import Refused
from clinic.services.patients import check_fields
from clinic.services.settings_snapshot import current_settings
from clinic.services.text import clean_text
from clinic.services.transaction import Actor, atomic, insert_row

# The events a receiver can subscribe to, with what each means for the manager choosing them.
EVENT_TYPES = {
    "referral.redeemed": _l("A friend's referral code was redeemed (a new referral)"),
    "voucher.issued": _l("A voucher was issued to a patient"),
    "voucher.spent": _l("A voucher was spent at checkout"),
    "referral.milestone": _l("A referred friend's first visit or first payment was recorded"),
    "tier.reached": _l("A patient reached a tier (for example VIP)"),
    "notification.requested": _l("A message for a patient who agreed to be told (SMS / WeChat gateway)"),
}
DESCRIPTION_MAX = 200
RECENT_DELIVERIES = 50
RESENDABLE = (DeliveryStatus.DELIVERED.value, DeliveryStatus.FAILED.value, DeliveryStatus.CANCELLED.value)

_SEND_AFTER_COMMIT = "webhooks.send_after_commit"  # session.info: this transaction queued deliveries
_INSERT_DELIVERIES = insert(WebhookDelivery.__table__)


def _subscriptions() -> tuple[tuple[int, frozenset[str]], ...]:
    """(endpoint id, event types) of every enabled endpoint, as committed.

    From the settings snapshot, which triggers on ``webhook_endpoints`` keep exact: the action has
    usually read the settings stamp already (a redemption with its referrer), so this costs no statement.
    """
    return current_settings().webhook_subscriptions


def subscribed(event_type: str) -> bool:
    """Whether any enabled endpoint wants this event (so that nobody renders what nobody reads)."""
    return any(event_type in events for _id, events in _subscriptions())


def emit(event_type: str, payload: dict) -> OutboxEvent | None:
    """Add the event and a pending delivery per subscribed endpoint to the current transaction.

    Returns the event, or None when no enabled endpoint subscribes to ``event_type``.
    """
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown webhook event type {event_type!r}")
    endpoint_ids = [endpoint_id for endpoint_id, events in _subscriptions() if event_type in events]
    if not endpoint_ids:
        return None
    now = utcnow()
    outbox_event = insert_row(OutboxEvent(event_type=event_type, payload=payload, created_at=now))
    db.session.execute(_INSERT_DELIVERIES, [{"event_id": outbox_event.id, "endpoint_id": endpoint_id,
                                             "next_attempt_at": now, "created_at": now}
                                            for endpoint_id in endpoint_ids])
    db.session.info[_SEND_AFTER_COMMIT] = True
    return outbox_event


@event.listens_for(Session, "after_commit")
def _send_after_commit(session: Session) -> None:
    if session.info.pop(_SEND_AFTER_COMMIT, False):
        webhook_sender.kick()


@event.listens_for(Session, "after_transaction_end")
def _forget_transaction_state(session: Session, transaction) -> None:
    """Committed, rolled back or closed: the next transaction kicks nothing unless it queues deliveries too."""
    if transaction.parent is None:
        session.info.pop(_SEND_AFTER_COMMIT, None)


@dataclass(frozen=True)
class EndpointRules:
    """A new endpoint as the manager typed it, checked: a safe URL, known events, a short description."""

    url: str
    events: tuple[str, ...]
    description: str = ""

    @classmethod
    def from_form(cls, *, url, events, description="") -> "EndpointRules":
        def checked_url() -> str:
            try:
                webhook_sender.check_url(url, allow_private=webhook_sender.allow_private_networks())
            except Refused as refusal:
                raise ValueError(refusal.message) from None
            return url.strip()

        def checked_events() -> tuple[str, ...]:
            chosen = tuple(name for name in EVENT_TYPES if name in set(events or ()))
            if not chosen:
                raise ValueError(_("Pick at least one event to send."))
            return chosen

        checks = {
            "url": checked_url,
            "events": checked_events,
            "description": lambda: clean_text(description, max_length=DESCRIPTION_MAX, label=_("Description"),
                                               required=False),
        }
        return cls(**check_fields(checks))


def register_endpoint(rules: EndpointRules, actor: Actor) -> WebhookEndpoint:
    """Add an endpoint with a new random secret (shown to the manager once, who gives it to the receiver)."""
    with atomic():
        endpoint = WebhookEndpoint(url=rules.url, events=list(rules.events), description=rules.description,
                                   secret=secrets.token_hex(32), enabled=True, created_by_id=actor.staff_id,
                                   created_at=utcnow())
        db.session.add(endpoint)
        db.session.flush()
        audit.record("webhook.created", actor, endpoint_id=endpoint.id, url=webhook_sender.redacted_url(endpoint.url),
                     events=list(rules.events))
    return endpoint


def rotate_secret(endpoint_id: int, actor: Actor) -> WebhookEndpoint:
    """Give the endpoint a new random secret, shown to the manager once; the old one signs nothing more.

    The secret is shown only when it is made, so this is the way out when the receiver lost it or it
    may have leaked. A delivery being posted at this moment still carries the old signature; every
    later attempt, retries included, carries the new one.
    """
    with atomic():
        endpoint = get_endpoint(endpoint_id)
        endpoint.secret = secrets.token_hex(32)
        audit.record("webhook.secret_rotated", actor, endpoint_id=endpoint.id,
                     url=webhook_sender.redacted_url(endpoint.url))
    return endpoint


def get_endpoint(endpoint_id: int) -> WebhookEndpoint:
    endpoint = db.session.get(WebhookEndpoint, endpoint_id)
    if endpoint is None:
        raise Refused("not_found", _("No such webhook endpoint."), status=404)
    return endpoint


def set_enabled(endpoint_id: int, enabled: bool, actor: Actor) -> WebhookEndpoint:
    """Pause or resume an endpoint: while disabled it gets no new events and its pending deliveries wait."""
    with atomic():
        endpoint = get_endpoint(endpoint_id)
        if endpoint.enabled != enabled:
            endpoint.enabled = enabled
            audit.record("webhook.enabled" if enabled else "webhook.disabled", actor, endpoint_id=endpoint.id,
                         url=webhook_sender.redacted_url(endpoint.url))
            if enabled:
                db.session.info[_SEND_AFTER_COMMIT] = True  # what waited may go now
    return endpoint


def delete_endpoint(endpoint_id: int, actor: Actor) -> None:
    """Remove an endpoint with its deliveries (sent or not); the events stay for other endpoints."""
    with atomic():
        endpoint = get_endpoint(endpoint_id)
        db.session.execute(delete(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint.id))
        audit.record("webhook.deleted", actor, endpoint_id=endpoint.id, url=webhook_sender.redacted_url(endpoint.url))
        db.session.delete(endpoint)


def list_endpoints() -> list[tuple[WebhookEndpoint, dict[str, int]]]:
    """Every endpoint with its deliveries counted by status."""
    counts: dict[int, dict[str, int]] = {}
    for endpoint_id, status, number in db.session.execute(
            select(WebhookDelivery.endpoint_id, WebhookDelivery.status, func.count())
            .group_by(WebhookDelivery.endpoint_id, WebhookDelivery.status)):
        counts.setdefault(endpoint_id, {})[status] = number
    endpoints = db.session.scalars(select(WebhookEndpoint).order_by(WebhookEndpoint.id))
    return [(endpoint, counts.get(endpoint.id, {})) for endpoint in endpoints]


def recent_deliveries(endpoint_id: int | None = None, status: str | None = None,
                      limit: int = RECENT_DELIVERIES) -> list[WebhookDelivery]:
    """Newest first, with their event and endpoint."""
    query = (select(WebhookDelivery).options(joinedload(WebhookDelivery.event), joinedload(WebhookDelivery.endpoint))
             .order_by(WebhookDelivery.id.desc()).limit(limit))
    if endpoint_id is not None:
        query = query.where(WebhookDelivery.endpoint_id == endpoint_id)
    if status in {s.value for s in DeliveryStatus}:
        query = query.where(WebhookDelivery.status == status)
    return list(db.session.scalars(query))


def get_delivery(delivery_id: int) -> WebhookDelivery:
    delivery = db.session.get(WebhookDelivery, delivery_id)
    if delivery is None:
        raise Refused("not_found", _("No such delivery."), status=404)
    return delivery


def resend(delivery_id: int, actor: Actor) -> WebhookDelivery:
    """Send a finished delivery once more, now (same delivery id: receivers may drop it as a repeat).

    A pending delivery is already on its way, so it is refused rather than sent twice at once. A
    patient's message is refused unless the patient agrees to it today (the sender checks again when
    it sends); a cancelled one may go once they agree again, by the same channel at the same number.
    """
    # notifications imports this module.
    from clinic.services import notifications

    with atomic():
        delivery = get_delivery(delivery_id)
        if delivery.event.event_type == notifications.EVENT:
            withheld = notifications.withheld_because(delivery.event.payload)
            if withheld:
                raise Refused(withheld, str(notifications.RESEND_REFUSALS[withheld]), status=409)
        changed = db.session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == delivery_id, WebhookDelivery.status.in_(RESENDABLE))
            .values(status=DeliveryStatus.PENDING.value, next_attempt_at=utcnow(), cancel_reason=None,
                    cancelled_at=None)
            .execution_options(synchronize_session=False)).rowcount
        db.session.refresh(delivery)
        if changed != 1:
            raise Refused("already_pending", _("This delivery is already waiting to be sent."), status=409)
        audit.record("webhook.resent", actor, endpoint_id=delivery.endpoint_id, delivery_id=delivery.id,
                     event=delivery.event.event_type)
        db.session.info[_SEND_AFTER_COMMIT] = True
    return delivery
