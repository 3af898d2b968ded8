"""What the pricing core takes and gives (billing/pricing.py prices it; docs/billing.md).

PricingInput   the month, its revision segments, the seats, instances and meter totals
Priced         the lines, the subtotal and the policy versions priced
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from fractions import Fraction
from typing import Any

from allotment.billing.annual import Dues
from allotment.policy.catalog import Addon, Plan

# -- inputs and outputs ----------------------------------------------------------------------


@dataclass(frozen=True)
class Segment:
    """One contract revision's share of the period: [start, end), already clipped to the
    period, to the contract's term and (for the current month) to `now`."""

    start: datetime
    end: datetime
    revision: int
    policy_version: int
    plan: Plan  # from the catalog of policy_version (prices inside)
    addons: tuple[Addon, ...]  # the revision's add-ons that exist in that catalog
    kind: str  # standard | trial | educational | pilot
    discount_percent: Decimal | None
    seat_limit: int | None  # the seat limit in force (for burst seat-days); None: no seat pool
    seat_model: str | None  # "named" | "concurrent" | None
    # Period fees (base, add-ons) run to here instead of `end`: for the current month, the
    # segment ends now (usage, seats, instances to date) but its fees are the month's
    # (docs/billing.md). None: `end`.
    fee_end: datetime | None = None
    # When the plan's one-time fees fall due for this contract (commitments.plan_starts);
    # charged by the group this instant falls in. None: not due (a trial, or unknown).
    plan_started: datetime | None = None
    # Bought quantities (a `contracted` price basis: billing/contracted.py); None: none bought.
    contracted_seats: int | None = None
    contracted_instances: int | None = None
    # Annual terms (billing/annual.py): where contract years count from, and when annual
    # fees fall due. None: no annual line.
    contract_start: datetime | None = None
    contract_end: datetime | None = None  # the term's end (ends_at); a yearly minimum's last due
    dues: Dues = dataclasses.field(default_factory=Dues)
    addon_quantities: tuple[tuple[str, int], ...] = ()  # (name, quantity) of those bought > 1
    discount_reason: str | None = None  # a standard contract's negotiated discount


@dataclass(frozen=True)
class Interval:
    """A seat (members only; guests are never billed), a session (concurrent plans) or an
    instance lease, as stored: [start, end); end None = still open (for a lease: its
    expiry is given in `end` by the caller already, so None means open-ended seat)."""

    start: datetime
    end: datetime | None
    weight: int = 1  # instances: the kind weight; seats/sessions: 1
    kind: str | None = None  # instances: the kind (for the line's source)


@dataclass(frozen=True)
class MeterTotal:
    meter: str
    quantity: Decimal  # the meter's total over the segment group
    events: int  # events counted
    exact: Fraction | None = None  # an average's exact value (`quantity` is it rounded)
    level: bool = False  # an average or percentile: priced per month, prorated like a fee


@dataclass(frozen=True)
class PricingInput:
    period_start: datetime  # first instant of the calendar month (UTC)
    period_end: datetime  # first instant of the next month
    currency: str
    minor_digits: int
    segments: tuple[Segment, ...]  # ordered, non-overlapping
    seats: tuple[Interval, ...]  # member seats (named model) or sessions (concurrent model)
    instances: tuple[Interval, ...]
    meters: Callable[[datetime, datetime, str], MeterTotal]  # total of meter over [start, end)
    # A yearly minimum (billing/commitments.py): what each contract year the period touches
    # committed in the months before the period, by contract year number.
    committed_before: Mapping[int, Decimal] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True)
class Line:
    code: str  # base seats burst instances meter:<name> addon:<name> credit:trial discount:<kind>
    description: str
    quantity: Decimal
    unit: str  # "month", "seat", "seat-day", "weighted instance-hour", a meter's name, the currency
    unit_price: Decimal
    amount: Decimal  # rounded half-even to the minor unit
    source: dict[str, Any]  # JSON types only: revisions, policy_versions, and what was counted


@dataclass(frozen=True)
class Priced:
    lines: tuple[Line, ...]
    subtotal: Decimal  # sum of the rounded lines
    policy_versions: tuple[int, ...]
    # Under a yearly minimum: the lines each contract year committed in this period, by
    # contract year number (the next months' `committed_before`).
    committed: Mapping[int, Decimal] = dataclasses.field(default_factory=dict)
