from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from allotment.kit.identifiers import Subject, TenantKey


class SeatAssign(BaseModel):
    model_config = ConfigDict(extra="forbid")

    subject: Subject = Field(description="The user who takes the seat (any stable id).")
    type: Literal["member", "guest"] = "member"
    tenant: TenantKey | None = Field(
        default=None, description="The tenant whose seat quota the seat also counts against."
    )


class BurstWindowRead(BaseModel):
    ends_at: datetime = Field(description="When the burst window closes.")
    extra_left: int = Field(description="Seats still assignable over the limit in the window.")


class SeatRead(BaseModel):
    id: str
    customer: str
    subject: str
    type: Literal["member", "guest"]
    tenant: str | None
    since: datetime
    over_limit: bool = Field(description="Assigned while the pool was over its limit (burst).")
    burst: BurstWindowRead | None = Field(
        default=None, description="Set when this assignment used the burst window."
    )


class SessionOpen(BaseModel):
    model_config = ConfigDict(extra="forbid")

    subject: Subject
    tenant: TenantKey | None = None


class SessionRead(BaseModel):
    id: str
    customer: str
    subject: str
    tenant: str | None
    opened_at: datetime
    expires_at: datetime
    ended_at: datetime | None = None
    end_reason: Literal["closed", "expired"] | None = None
