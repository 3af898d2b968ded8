from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from allotment.policy.money import Money


class CreditGrantCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount: Money = Field(
        description="Above zero and at most 10^12, a quoted decimal with at most the "
        "minor-unit places of the currency the customer is billed in (USD 2, JPY 0)."
    )
    kind: Literal["purchased", "granted"] = Field(
        default="purchased", description="purchased: a top-up; granted: free credits."
    )
    granted_at: AwareDatetime | None = Field(
        default=None, description="When it becomes spendable. Default: now."
    )
    expires_at: AwareDatetime | None = Field(
        default=None, description="After granted_at; omitted: valid until used."
    )
    reason: str | None = Field(default=None, min_length=1, max_length=500)


class CreditGrantRead(BaseModel):
    id: str = Field(description="`cr_{ulid}`; a plan's monthly grant is `plan:{YYYY-MM}`.")
    customer: str
    kind: Literal["purchased", "granted", "plan"]
    amount: Decimal
    currency: str
    granted_at: datetime
    expires_at: datetime | None
    reason: str | None
    actor: str | None
    created_at: datetime | None


class GrantState(CreditGrantRead):
    drawn: Decimal = Field(description="Paid out by the ledger's instant.")
    remaining: Decimal = Field(description="Unused and valid at the ledger's instant.")
    expired: Decimal = Field(description="Unused when it expired.")


class DrawRead(BaseModel):
    grant: str
    charge: str = Field(description="`{contract}:{YYYY-MM}`: that month's applicable lines.")
    amount: Decimal


class ChargeRead(BaseModel):
    charge: str
    contract: str
    period: str
    at: datetime = Field(description="When it is drawn: the month's last instant, or as_of.")
    amount: Decimal
    lines: list[str]
    uncovered: Decimal = Field(description="What no grant paid: it is billed.")


class WalletRead(BaseModel):
    customer: str
    currency: str
    as_of: datetime
    balance: Decimal = Field(description="Every grant's remaining at as_of.")
    enforce: bool = Field(description="The plan denies metered features once it is empty.")
    grants: list[GrantState]
    charges: list[ChargeRead]
    draws: list[DrawRead]
