from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt

from allotment.check.reasons import Reason

# The same identifiers the allocation routes accept (kit/identifiers.py): a subject that can
# hold a seat, or a fingerprint that can register, can always be checked. None holds a NUL,
# which a decision record could not store (it would cost the whole decision-log batch).
from allotment.kit.identifiers import CatalogName, CustomerKey, Fingerprint, Subject, TenantKey


class CheckBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    customer: CustomerKey
    feature: CatalogName
    subject: Subject | None = None
    instance: Fingerprint | None = Field(default=None, description="The instance's fingerprint")
    tenant: TenantKey | None = None
    consume: StrictInt | None = Field(default=None, ge=1, le=1_000_000_000)  # not "5"
    context: dict[str, Any] | None = None


class BatchBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    customer: CustomerKey
    features: list[CatalogName] = Field(min_length=1, max_length=100)
    subject: Subject | None = None
    instance: Fingerprint | None = None
    tenant: TenantKey | None = None
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
