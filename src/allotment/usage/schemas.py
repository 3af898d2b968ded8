from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, Field


class EventError(BaseModel):
    path: str
    message: str


class RejectedEvent(BaseModel):
    index: int = Field(description="The event's position in the batch (0 for a single event).")
    errors: list[EventError]


class UnmeteredEvent(BaseModel):
    index: int = Field(description="The event's position in the batch (0 for a single event).")
    type: str = Field(description="Its type, which no meter of the customer's policy reads.")


class ConflictingEvent(BaseModel):
    index: int = Field(description="The event's position in the batch.")
    source: str
    id: str


class IngestRead(BaseModel):
    accepted: int = Field(
        description="New events, committed before this answer (with an event broker: stored "
        "by NATS JetStream before it, and counted by the aggregators after it)."
    )
    duplicates: int = Field(
        description="Events whose (source, id) was accepted before with the same payload "
        "(type, subject, time, tenant, data), or earlier in this batch."
    )
    rejected: list[RejectedEvent] = Field(description="Invalid events, by index, with errors.")
    unmetered: list[UnmeteredEvent] = Field(
        default_factory=list,
        description="Accepted events (counted in `accepted`, stored) that no meter of the "
        "customer's policy reads: they count towards no usage.",
    )
    conflicts: list[ConflictingEvent] = Field(
        default_factory=list,
        description="Events whose (source, id) was accepted before, or earlier in the batch, "
        "with another payload: refused, the first copy stands. Neither accepted nor "
        "duplicates. A single event that conflicts answers 409 instead.",
    )


class UsageBucket(BaseModel):
    start: datetime
    value: Decimal
    events: int


class UsageRead(BaseModel):
    customer: str
    meter: str
    aggregation: Literal["count", "sum", "max", "unique_count", "average"]
    percentile: Decimal | None = Field(
        default=None,
        description="A percentile meter: each bucket and the total are this nearest-rank "
        "percentile of their hourly values (docs/usage.md, Levels).",
    )
    tenant: str | None
    granularity: Literal["hour", "day", "month"]
    from_: datetime = Field(alias="from", serialization_alias="from")
    to: datetime
    total: Decimal
    buckets: list[UsageBucket]

    model_config = {"populate_by_name": True}
