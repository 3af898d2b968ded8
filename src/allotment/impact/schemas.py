"""The dry-run's answer, as the OpenAPI document shows it (impact/service.py builds it)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class LimitChangeRead(BaseModel):
    path: str = Field(description="`seats.limit`, `instances.limit`, `meters.{meter}.limit`, …")
    old: int | str | None
    new: int | str | None


class CustomerImpactRead(BaseModel):
    customer: str
    contract: str
    contract_revision: int
    plan: str
    features_gained: list[str]
    features_lost: list[str]
    limits_changed: list[LimitChangeRead]
    plan_missing: bool = Field(description="The contract's plan is not in the proposed version.")
    prices_changed: bool = Field(
        default=False, description="The plan's or an add-on's prices differ."
    )
    estimated_invoice_change: str | None = Field(
        default=None,
        description="This month's invoice preview to date with the proposed version active "
        "from now minus the preview as it stands (the month's earlier versions kept). A plan "
        "missing from the proposed version is not priced after the move.",
    )


class DryRunSummary(BaseModel):
    customers_evaluated: int = Field(description="Contracts in force following the active one.")
    customers_affected: int
    customers_pinned: int
    contracts_orphaned: int = Field(
        description="Live contracts the version would orphan (publish refuses it unforced)."
    )


class OrphanProblemRead(BaseModel):
    path: str = Field(description="What the contract would lose: plan, addons[0], seats.limit…")
    message: str


class OrphanRead(BaseModel):
    contract: str
    customer: str
    problems: list[OrphanProblemRead]


class DryRunRead(BaseModel):
    version: int
    active_version: int
    computed_at: str
    summary: DryRunSummary
    customers: list[CustomerImpactRead] = Field(description="Only customers with a change.")
    pinned: list[str] = Field(description="Customers on a pinned version: not evaluated.")
    orphaned: list[OrphanRead] = Field(
        description="Live unpinned contracts (in force or scheduled) the version would orphan, "
        "and why; the same list a publish is refused with (409)."
    )
    next_cursor: str | None
