"""Webhook tables (docs/webhooks.md).

webhook_endpoints   id we_<ulid>, url, event_types (NULL: every subscribable type),
                    enabled (a 410 answer turns it off, with `disabled_reason`), the
                    signing secret sealed with AES-256-GCM (the endpoint id as associated
                    data), the previous secret while a rotation overlaps, `slowed_until`
                    (a 429/502/504 answer holds its deliveries back until then)
webhook_messages    id msg_<ulid> (the `webhook-id` header, the same on every retry),
                    event type, customer key, the body exactly as sent and signed
webhook_deliveries  id whd_<ulid>: one message to one endpoint; state pending →
                    delivered | failed (gave up) | disabled (endpoint turned off);
                    `next_attempt_at` when it is due, `lease_until`/`lease_owner` while
                    a worker sends it
webhook_attempts    one row per try, written when it starts (`in_flight`) and closed with
                    its outcome: `delivered`, `failed`, or `interrupted` (the worker died
                    before recording an answer); when, how long, the status or the error
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, mapped_column

from allotment.db import Base

TZ = DateTime(timezone=True)
DELIVERY_STATES = ("pending", "delivered", "failed")
ATTEMPT_OUTCOMES = ("in_flight", "delivered", "failed", "interrupted")


class WebhookEndpoint(Base):
    __tablename__ = "webhook_endpoints"

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    url: Mapped[str] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    event_types: Mapped[list[str] | None] = mapped_column(ARRAY(Text), nullable=True)
    enabled: Mapped[bool] = mapped_column(Boolean)
    disabled_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    secret_sealed: Mapped[bytes] = mapped_column(LargeBinary)
    previous_secret_sealed: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    previous_secret_until: Mapped[datetime | None] = mapped_column(TZ, nullable=True)
    slowed_until: Mapped[datetime | None] = mapped_column(TZ, nullable=True)
    created_at: Mapped[datetime] = mapped_column(TZ)
    updated_at: Mapped[datetime] = mapped_column(TZ)


class WebhookMessage(Base):
    __tablename__ = "webhook_messages"
    __table_args__ = (Index("ix_webhook_messages_created_at", "created_at"),)

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    event_type: Mapped[str] = mapped_column(Text)
    customer_key: Mapped[str | None] = mapped_column(Text, nullable=True)
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(TZ)


class WebhookDelivery(Base):
    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        CheckConstraint("state IN ('pending', 'delivered', 'failed')", name="state"),
        Index(
            "ix_webhook_deliveries_due",
            "next_attempt_at",
            postgresql_where=text("state = 'pending'"),
        ),
        Index("ix_webhook_deliveries_endpoint_id_created_at", "endpoint_id", "created_at"),
        Index("ix_webhook_deliveries_message_id", "message_id"),
    )

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    message_id: Mapped[str] = mapped_column(
        Text, ForeignKey("webhook_messages.id", ondelete="CASCADE")
    )
    endpoint_id: Mapped[str] = mapped_column(
        Text, ForeignKey("webhook_endpoints.id", ondelete="CASCADE")
    )
    state: Mapped[str] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    next_attempt_at: Mapped[datetime] = mapped_column(TZ)
    lease_until: Mapped[datetime | None] = mapped_column(TZ, nullable=True)
    lease_owner: Mapped[str | None] = mapped_column(Text, nullable=True)
    last_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    delivered_at: Mapped[datetime | None] = mapped_column(TZ, nullable=True)
    retried_at: Mapped[datetime | None] = mapped_column(TZ, nullable=True)
    created_at: Mapped[datetime] = mapped_column(TZ)


class WebhookAttempt(Base):
    __tablename__ = "webhook_attempts"
    __table_args__ = (
        CheckConstraint(
            "outcome IN ('in_flight', 'delivered', 'failed', 'interrupted')", name="outcome"
        ),
        Index("ix_webhook_attempts_delivery_id_id", "delivery_id", "id"),
        Index(
            "ix_webhook_attempts_in_flight",
            "delivery_id",
            postgresql_where=text("outcome = 'in_flight'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    delivery_id: Mapped[str] = mapped_column(
        Text, ForeignKey("webhook_deliveries.id", ondelete="CASCADE")
    )
    attempted_at: Mapped[datetime] = mapped_column(TZ)
    outcome: Mapped[str] = mapped_column(Text)
    duration_ms: Mapped[int | None] = mapped_column(Integer, nullable=True)
    status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
