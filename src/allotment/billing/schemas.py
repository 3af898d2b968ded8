from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, Field


class LineRead(BaseModel):
    code: str
    description: str
    quantity: Decimal
    unit: str
    unit_price: Decimal
    amount: Decimal
    source: dict[str, Any] = Field(
        description="What produced the line: revision, policy version, meter and event "
        "count, or intervals."
    )


class LateMeterRead(BaseModel):
    meter: str
    events: int
    units: Decimal = Field(description="Their sum (count, sum), or greatest value (max, average).")


class LateRead(BaseModel):
    events: int = Field(
        description="The late events some meter of the plan counted (each once, however many "
        "meters count it); an event every filter leaves out is billed nowhere and not here."
    )
    meters: list[LateMeterRead]


class UnpricedRead(BaseModel):
    start: datetime
    end: datetime
    reason: str


class InvoiceRead(BaseModel):
    contract: str
    customer: str
    period: str
    currency: str
    lines: list[LineRead]
    subtotal: Decimal
    policy_versions: list[int]
    as_of: datetime = Field(
        description="The instant the preview is taken at: only what was recorded (events "
        "received, allocations, revisions, publishes) at or before it counts. The same as_of "
        "gives the same lines and subtotal, byte for byte."
    )
    to_date: bool = Field(description="The current month, counted up to as_of.")
    late: LateRead = Field(
        description="Events received after as_of whose time is in the period: what a later "
        "preview would add. The one part of a preview that later arrivals change."
    )
    unpriced: list[UnpricedRead] = Field(
        default_factory=list,
        description="Intervals of the period the contract was in force but nothing could be "
        "priced: its plan is not in the policy version then in force (a contract backdated "
        "before the version that has its plan), or has no price list in its currency. Empty "
        "when every instant in force was priced.",
    )


class InvoiceSummary(BaseModel):
    contract: str
    customer: str
    currency: str
    subtotal: Decimal


class InvoiceList(BaseModel):
    period: str
    as_of: datetime
    items: list[InvoiceSummary]
    next_cursor: str | None


class ReconciliationRead(BaseModel):
    contract: str
    customer: str
    period: str
    seats: list[dict[str, Any]]
    instances: list[dict[str, Any]]
    meters: list[dict[str, Any]]
    overrides: list[dict[str, Any]]
    discrepancies: list[str] = Field(description="Each way enforcement and the contract differ.")
    computed_at: datetime
