"""The contract API's response bodies: a contract, its terms and its revisions, as read
(docs/contracts.md). The request bodies are in contracts/schemas.py."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from allotment.contracts.terms import Kind, Status


class BurstRead(BaseModel):
    extra: int
    window: str | None


class SeatsRead(BaseModel):
    limit: int
    burst: BurstRead | None


class InstancesRead(BaseModel):
    limit: int


class QuantitiesRead(BaseModel):
    seats: int | None
    instances: int | None


class FeatureOverrideRead(BaseModel):
    model_config = ConfigDict(extra="forbid")

    feature: str
    action: Literal["grant", "revoke"]
    expires_at: datetime | None
    reason: str


class LimitOverrideRead(BaseModel):
    model_config = ConfigDict(extra="forbid")

    meter: str
    limit: int
    expires_at: datetime | None
    reason: str


class TermsRead(BaseModel):
    plan: str
    kind: Kind
    starts_at: datetime
    ends_at: datetime | None
    terminated_at: datetime | None
    attributes: dict[str, Any]
    seats: SeatsRead | None = Field(description="null: the plan's seat pool.")
    instances: InstancesRead | None = Field(description="null: the plan's instance pool.")
    quantities: QuantitiesRead | None = Field(
        default=None, description="Bought seats / instance licences; null: none."
    )
    addons: list[str]
    addon_quantities: dict[str, int] = Field(
        default_factory=dict, description="Each add-on's quantity (1 unless bought more)."
    )
    overrides: list[FeatureOverrideRead | LimitOverrideRead]
    discount_percent: Decimal | None
    discount_reason: str | None = None
    policy_version: int | None = Field(
        description="The pinned version; null follows the active one."
    )
    currency: str | None = Field(
        default=None, description="The currency it is billed in; null: the policy's."
    )

    @model_validator(mode="before")
    @classmethod
    def _every_quantity(cls, value: Any) -> Any:
        # Stored terms keep only the quantities above 1 (docs/contracts.md); shown, every one.
        if isinstance(value, dict) and isinstance(value.get("addons"), list):
            stored = value.get("addon_quantities") or {}
            quantities = {name: stored.get(name, 1) for name in value["addons"]}
            value = {**value, "addon_quantities": quantities}
        return value


class ContractRead(TermsRead):
    id: str
    customer: str
    status: Status
    revision: int
    effective_at: datetime = Field(description="When the latest revision takes effect.")
    created_at: datetime
    updated_at: datetime


class RevisionRead(BaseModel):
    revision: int
    effective_at: datetime
    terms: TermsRead
    actor: str
    request_id: str | None
    created_at: datetime
