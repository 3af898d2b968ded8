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


class InvoiceRead(BaseModel):
    contract: str
    customer: str
    period: str
    currency: str
    lines: list[LineRead]
    subtotal: Decimal
    policy_versions: list[int]
    to_date: bool = Field(description="The current month, counted up to computed_at.")
    computed_at: datetime


class InvoiceSummary(BaseModel):
    contract: str
    customer: str
    currency: str
    subtotal: Decimal


class InvoiceList(BaseModel):
    period: str
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
