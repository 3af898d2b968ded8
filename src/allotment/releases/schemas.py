"""Release notes and the changelog, as the OpenAPI document shows them (service.py builds
them; docs/release-notes.md explains each field)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from allotment.impact.schemas import CustomerImpactRead, DryRunSummary, OrphanRead


class ChangeRead(BaseModel):
    kind: Literal["added", "removed", "changed"]
    path: str = Field(description="The path in the document, as GET …/diff names it.")
    text: str = Field(description='In words: "sso added to team".')


class FeatureImpactRead(BaseModel):
    feature: str
    gained_by: list[str] = Field(description="Customers who gain it.")
    lost_by: list[str] = Field(description="Customers who lose it.")


class LimitImpactRead(BaseModel):
    customer: str
    contract: str
    path: str
    old: int | str | None
    new: int | str | None


class InvoiceImpactRead(BaseModel):
    customer: str
    contract: str
    estimated_invoice_change: str = Field(
        description="This month's preview to date, new version minus old, in the contract's "
        "currency."
    )


class ImpactRead(BaseModel):
    summary: DryRunSummary
    complete: bool = Field(description="False when more customers were affected than listed.")
    features: list[FeatureImpactRead]
    limits: list[LimitImpactRead]
    invoices: list[InvoiceImpactRead] = Field(description="Only non-zero changes.")
    pinned: list[str] = Field(description="Customers pinned to a version: untouched.")
    customers: list[CustomerImpactRead] = Field(description="The dry-run's entries, as is.")


class ReleaseNotesRead(BaseModel):
    id: int
    version: int
    action: Literal["publish", "rollback"]
    previous_version: int | None = Field(description="The version active before; null at first.")
    at: str
    actor: str
    approved_by: str | None = Field(description="The key whose approval the publish used.")
    summary: str | None
    changes: list[ChangeRead]
    impact: ImpactRead
    orphaned: list[OrphanRead] = Field(
        description="Contracts left on a missing plan or add-on, over a lowered limit or with "
        "tenant quotas above it (a forced move)."
    )


class ChangelogEntryRead(BaseModel):
    id: int
    version: int
    action: Literal["publish", "rollback"]
    previous_version: int | None
    at: str
    actor: str
    approved_by: str | None
    summary: str | None
    changes: list[str] = Field(description="The changes in words.")
    impact: DryRunSummary
