"""Forgetting old webhook deliveries, so the outbox does not grow for ever (`flask prune-webhooks`).

Only finished deliveries go (delivered, failed after every retry, or cancelled); a pending one keeps its event,
however old. An event goes once it is past the cut-off and no delivery refers to it any more. The
audit log keeps its own record of what happened to vouchers: deliveries are only the transport.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, exists, select

from clinic.extensions import db
from clinic.models import DeliveryStatus, OutboxEvent, WebhookDelivery
from clinic.models._time import utcnow
from clinic.services import audit
from clinic.services.transaction import Actor, atomic

FINISHED = (DeliveryStatus.DELIVERED.value, DeliveryStatus.FAILED.value, DeliveryStatus.CANCELLED.value)


@dataclass(frozen=True)
class PruneReport:
    deliveries: int
    events: int


def prune_webhook_history(older_than: timedelta, actor: Actor) -> PruneReport:
    """Delete finished deliveries and then unreferenced events created before ``now - older_than``."""
    if older_than < timedelta(days=1):
        raise ValueError("keep at least one day of webhook history")
    cutoff = utcnow() - older_than
    with atomic():
        deliveries = db.session.execute(
            delete(WebhookDelivery).where(WebhookDelivery.status.in_(FINISHED), WebhookDelivery.created_at < cutoff)
            .execution_options(synchronize_session=False)).rowcount
        referenced = exists(select(WebhookDelivery.id).where(WebhookDelivery.event_id == OutboxEvent.id))
        events = db.session.execute(
            delete(OutboxEvent).where(OutboxEvent.created_at < cutoff, ~referenced)
            .execution_options(synchronize_session=False)).rowcount
        if deliveries or events:
            audit.record("webhooks.pruned", actor, deliveries=deliveries, events=events,
                         older_than_days=older_than.days)
    return PruneReport(deliveries=deliveries, events=events)
