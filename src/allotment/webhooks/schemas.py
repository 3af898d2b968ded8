"""Request and response bodies of the webhook endpoints API (docs/webhooks.md)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool

EVENT_TYPES_DOC = (
    "Event types this endpoint receives (names from the event catalog); null or omitted: "
    "every type. `webhook.test` is always sent by POST …/test, whatever the filter."
)


class WebhookEndpointCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=1, max_length=2048, description="An http(s) URL.")
    description: str | None = Field(default=None, max_length=500)
    event_types: list[str] | None = Field(default=None, description=EVENT_TYPES_DOC)
    enabled: StrictBool = Field(default=True, description="true or false (JSON booleans only).")


class WebhookEndpointUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(default=None, min_length=1, max_length=2048)
    description: str | None = Field(default=None, max_length=500)
    event_types: list[str] | None = Field(default=None, description=EVENT_TYPES_DOC)
    enabled: StrictBool | None = Field(
        default=None,
        description="false pauses deliveries (they wait); true resumes them and clears "
        "`disabled_reason` (set when the endpoint answered 410 Gone).",
    )


class WebhookEndpointRead(BaseModel):
    id: str = Field(description="`we_{ulid}`")
    url: str
    description: str | None
    event_types: list[str] | None
    enabled: bool
    disabled_reason: str | None
    previous_secret_expires_at: datetime | None = Field(
        description="Until then deliveries are signed with the previous secret as well as "
        "the current one; null when there is none, or its overlap has passed."
    )
    slowed_until: datetime | None
    created_at: datetime
    updated_at: datetime


class WebhookEndpointCreated(WebhookEndpointRead):
    secret: str = Field(description="whsec_…: shown once, here.")


class WebhookSecretRotated(BaseModel):
    id: str
    secret: str = Field(description="The new whsec_… secret: shown once, here.")
    previous_secret_expires_at: datetime | None = Field(
        description="Until then the old secret signs too (ALLOTMENT_WEBHOOKS_ROTATION_OVERLAP_S)."
    )


class WebhookTestSent(BaseModel):
    message_id: str = Field(description="`msg_{ulid}`: the webhook-id header it is sent with.")
    delivery_id: str


class WebhookAttemptRead(BaseModel):
    attempted_at: datetime = Field(description="When the attempt started.")
    outcome: Literal["in_flight", "delivered", "failed", "interrupted"] = Field(
        description="`in_flight` while it is being sent; `delivered` (a 2xx), `failed` (any "
        "other answer, or none: see `error`), or `interrupted`: the worker sending it stopped "
        "before recording an answer (the receiver may have had it), and another worker took "
        "the delivery over."
    )
    status: int | None = Field(description="The HTTP status answered; null when none was.")
    duration_ms: int | None = Field(
        description="How long the exchange took; null while in flight and when interrupted."
    )
    error: str | None


class WebhookDeliveryRead(BaseModel):
    id: str
    endpoint_id: str
    message_id: str = Field(description="The webhook-id header, the same on every attempt.")
    event_type: str
    customer: str | None
    state: Literal["pending", "delivered", "failed"]
    attempts: int
    next_attempt_at: datetime | None = Field(description="When pending: when it is due.")
    delivered_at: datetime | None
    last_status: int | None
    last_error: str | None
    created_at: datetime
    attempt_log: list[WebhookAttemptRead] = Field(description="Every attempt, oldest first.")
