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


class IngestRead(BaseModel):
    accepted: int = Field(description="New events, committed before this answer.")
    duplicates: int = Field(description="Events whose (source, id) was accepted before.")
    rejected: list[RejectedEvent]


class UsageBucket(BaseModel):
    start: datetime
    value: Decimal
    events: int


class UsageRead(BaseModel):
    customer: str
    meter: str
    aggregation: Literal["count", "sum", "max", "unique_count"]
    tenant: str | None
    granularity: Literal["hour", "day", "month"]
    from_: datetime = Field(alias="from", serialization_alias="from")
    to: datetime
    total: Decimal
    buckets: list[UsageBucket]

    model_config = {"populate_by_name": True}
