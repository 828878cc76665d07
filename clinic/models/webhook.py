"""Webhooks: the endpoints a manager registers, the outbox of events, and one delivery per endpoint and event.

An :class:`OutboxEvent` is written in the same transaction as the business change it reports (a
redemption, a voucher issued or spent, a milestone, a tier), together with a pending
:class:`WebhookDelivery` for every enabled endpoint subscribed to its type. If that transaction
rolls back, neither exists; once it commits, the delivery waits in the database until a sender
(``flask deliver-webhooks`` or the job kicked after the commit) has it accepted, however many
restarts come in between. A notification for a patient's phone is one more event type.
"""

from __future__ import annotations

from datetime import datetime
from enum import Enum

from sqlalchemy import JSON, CheckConstraint, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from clinic.extensions import db
from clinic.models._time import utcnow


class DeliveryStatus(str, Enum):
    PENDING = "pending"      # waiting for its next attempt (the first, or a retry after a failure)
    DELIVERED = "delivered"  # the receiver answered 2xx
    FAILED = "failed"        # every attempt failed; a manager may resend it
    CANCELLED = "cancelled"  # not sent, and not to be: ``cancel_reason`` says why (a patient withdrew consent)


class WebhookEndpoint(db.Model):
    """A receiver's URL and the event types it wants; the secret signs every delivery to it."""

    __tablename__ = "webhook_endpoints"

    id: Mapped[int] = mapped_column(primary_key=True)
    url: Mapped[str] = mapped_column(String(500))
    description: Mapped[str] = mapped_column(String(200), default="")
    events: Mapped[list] = mapped_column(JSON, default=list)
    # Shown to the manager so that the receiver can check signatures; needed in clear to sign.
    secret: Mapped[str] = mapped_column(String(64))
    enabled: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id"))

    created_by = relationship("Staff")


class OutboxEvent(db.Model):
    """Something that happened, as the receivers get it: a type and a JSON payload."""

    __tablename__ = "outbox_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    event_type: Mapped[str] = mapped_column(String(40), index=True)
    payload: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class WebhookDelivery(db.Model):
    """One event for one endpoint: its attempts so far and what the receiver last answered.

    ``next_attempt_at`` is also the claim: a sender moves it forward by a lease before it sends,
    with a conditional UPDATE, so that no two senders post the same delivery at once.
    """

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("event_id", "endpoint_id", name="uq_webhook_deliveries_event_id_endpoint_id"),
        CheckConstraint("status IN ('pending', 'delivered', 'failed', 'cancelled')", name="status_known"),
        Index("ix_webhook_deliveries_status_next_attempt_at", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("outbox_events.id"))
    endpoint_id: Mapped[int] = mapped_column(ForeignKey("webhook_endpoints.id"), index=True)
    status: Mapped[str] = mapped_column(String(16), default=DeliveryStatus.PENDING.value)
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_attempt_at: Mapped[datetime | None]
    last_status_code: Mapped[int | None]
    last_error: Mapped[str | None] = mapped_column(String(200))
    delivered_at: Mapped[datetime | None]
    # A key of clinic.services.notifications.CANCEL_REASONS, kept apart from last_error (the receiver's answer)
    # so that the manager reads it in their own language.
    cancel_reason: Mapped[str | None] = mapped_column(String(32))
    cancelled_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    event = relationship("OutboxEvent")
    endpoint = relationship("WebhookEndpoint")


class NotificationTemplate(db.Model):
    """A manager's own wording of one notification in one language (the built-in text otherwise)."""

    __tablename__ = "notification_templates"
    __table_args__ = (UniqueConstraint("kind", "language", name="uq_notification_templates_kind_language"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    language: Mapped[str] = mapped_column(String(8))
    text: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    updated_by_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id"))
