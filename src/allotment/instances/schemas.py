from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from allotment.customers.schemas import check_attributes
from allotment.kit.identifiers import CatalogName as Name
from allotment.kit.identifiers import Environment, Fingerprint, Subject, TenantKey


class InstanceRegister(BaseModel):
    model_config = ConfigDict(extra="forbid")

    fingerprint: Fingerprint = Field(
        description="Stable id of the running copy; unique per customer."
    )
    kind: Name = Field(description="One of the plan's instance kinds (vm, container, cluster…).")
    environment: Environment = "production"
    tenant: TenantKey | None = None
    subject: Subject | None = Field(
        default=None,
        description="A device: the seat holder it belongs to, who must hold a seat; the "
        "plan's seats.devices_per_seat caps each holder's live devices (docs/seats.md).",
    )
    metadata: dict[str, Any] = Field(default_factory=dict, max_length=64)

    # Free-form JSON kept in jsonb and written back in every read: the rules of attributes.
    _metadata = field_validator("metadata")(check_attributes)


class InstanceRead(BaseModel):
    id: str
    customer: str
    fingerprint: str
    kind: str
    weight: int
    environment: str
    tenant: str | None
    subject: str | None = None
    metadata: dict[str, Any]
    registered_at: datetime
    lease_expires_at: datetime
    ended_at: datetime | None = None
    end_reason: Literal["deregistered", "expired", "seat_released"] | None = None
