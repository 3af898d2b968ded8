from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from allotment.auth.principal import CUSTOMER_KEY_PATTERN
from allotment.check.reasons import Reason

CustomerKey = Annotated[str, StringConstraints(pattern=CUSTOMER_KEY_PATTERN)]
# No NUL: no feature, seat, instance or tenant can hold one, and a decision record holding
# one could not be stored (it would cost the whole batch of the decision log).
Name = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[^\x00]+$")]


class CheckBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    customer: CustomerKey
    feature: Name
    subject: Name | None = None
    instance: Name | None = Field(default=None, description="The instance's fingerprint")
    tenant: Name | None = None
    consume: int | None = Field(default=None, ge=1, le=1_000_000_000)
    context: dict[str, Any] | None = None


class BatchBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    customer: CustomerKey
    features: list[Name] = Field(min_length=1, max_length=100)
    subject: Name | None = None
    instance: Name | None = None
    tenant: Name | None = None
    context: dict[str, Any] | None = None


class DecisionRead(BaseModel):
    allowed: bool
    reason: Reason = Field(description='Why: one of a closed set (docs/check.md, "Reason codes").')
    feature: str
    customer: str
    detail: str | None = None
    missing: list[str] | None = None
    rule_reason: str | None = None
    limit: dict[str, Any] | None = None
    warnings: list[str]
    policy_version: int | None
    contract_revision: int | None
    decision_id: str
    stale: bool
    cache_ttl_s: int


class BatchRead(BaseModel):
    decisions: list[DecisionRead]
