"""Commercial terms of a plan's price, pure: the monthly minimum's true-up and one-time fees
(docs/billing.md, "minimum" and "one_time:<name>").

    commitment_lines(price, fraction, lines, ...)    → [Draft]  both below, for one group
    minimum_line(minimum, fraction, committed, ...)  → Draft    max(0, minimum × fraction − Σ)
    one_time_lines(price, due, start, end, bought=)  → [Draft]  when `due` falls in [start, end):
                                                       each fee once, or × the quantity bought
    plan_starts(revisions, starts_at, ends_at)       → {plan: instant}  when each plan's
                                                       one-time fees fall due for a contract

A group's lines come in this order: the recurring and usage lines, `minimum`, the one-time
fees, then the trial credit or discount, which covers the true-up and the one-time fees as
it covers every positive line above it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from fractions import Fraction
from typing import Protocol

from allotment.billing.drafts import Draft
from allotment.billing.measure import ZERO, money, text
from allotment.contracts.years import ContractYear
from allotment.kit.clock import isoformat
from allotment.policy.catalog import Price
from allotment.policy.money import format_amount

UNPAID_KINDS = frozenset({"trial"})  # a trial's time never starts a plan's one-time fees
Bought = Mapping[str, int | None]  # a contract's quantities: seats, instances


class Charged(Protocol):
    """A line already priced (billing/pricing.Line)."""

    @property
    def code(self) -> str: ...
    @property
    def amount(self) -> Decimal: ...


def commitment_lines(
    price: Price,
    fraction: Fraction,
    committed: Sequence[Charged],
    *,
    due: datetime | None,
    start: datetime,
    end: datetime,
    currency: str,
    minor_digits: int,
    bought: Bought,
    year: YearToDate | None = None,
) -> list[Draft]:
    """The group's `minimum` true-up over the `committed` lines (a yearly minimum's over
    the contract year's, `year`), then its one-time fees."""
    drafts = []
    if price.minimum is not None and price.minimum_period == "year":
        if year is not None:
            drafts.append(
                yearly_minimum_line(
                    price.minimum, year, currency=currency, minor_digits=minor_digits
                )
            )
    elif price.minimum is not None:
        drafts.append(
            minimum_line(
                price.minimum,
                fraction,
                [(line.code, line.amount) for line in committed],
                currency=currency,
                minor_digits=minor_digits,
            )
        )
    drafts.extend(one_time_lines(price, due, start, end, bought=bought))
    return drafts


def minimum_line(
    minimum: Decimal,
    fraction: Fraction,
    committed: Sequence[tuple[str, Decimal]],
    *,
    currency: str,
    minor_digits: int,
) -> Draft:
    """The true-up to the group's share of `minimum`: the prorated minimum less the sum of
    the `committed` (code, rounded amount) lines, never below zero."""
    prorated = Fraction(minimum) * fraction
    spent = sum((Fraction(amount) for _, amount in committed), ZERO)
    shortfall = max(ZERO, prorated - spent)
    return Draft(
        code="minimum",
        description=f"minimum spend {format_amount(minimum)} a month: "
        f"{text(prorated, minor_digits)} for this period, "
        f"{format_amount(money(spent, minor_digits))} billed",
        quantity=shortfall,
        unit=currency,
        unit_price=Decimal(1),
        amount=shortfall,
        places=minor_digits,
        source={
            "minimum": format_amount(minimum),
            "fraction": text(fraction),
            "prorated": text(prorated),
            "committed": format_amount(money(spent, minor_digits)),
            "lines": [code for code, _ in committed],
        },
    )


@dataclass(frozen=True)
class YearToDate:
    """A yearly minimum's contract year as of one group: what the year committed up to and
    including the group (its lines before `minimum`, as rounded), and whether the year's
    true-up falls in the group (the year, or the contract, ends within it)."""

    year: ContractYear
    due: datetime  # the year's end, or the contract's when sooner
    committed: Fraction
    ends: bool


def yearly_minimum_line(
    minimum: Decimal, year: YearToDate, *, currency: str, minor_digits: int
) -> Draft:
    """The contract year's true-up, max(0, minimum − the year's committed lines), in the
    group the year ends in; in the year's other groups a 0.00 line that shows where the year
    stands (committed to date, and what is left of the minimum)."""
    left = max(ZERO, Fraction(minimum) - year.committed)
    shortfall = left if year.ends else ZERO
    return Draft(
        code="minimum",
        description=f"minimum spend {format_amount(minimum)} for contract year "
        f"{year.year.number}: {format_amount(money(year.committed, minor_digits))} billed "
        + ("in the year" if year.ends else f"so far, true-up at {isoformat(year.due)}"),
        quantity=shortfall,
        unit=currency,
        unit_price=Decimal(1),
        amount=shortfall,
        places=minor_digits,
        source={
            "minimum": format_amount(minimum),
            "period": "year",
            "contract_year": year.year.number,
            "year_start": isoformat(year.year.start),
            "year_end": isoformat(year.year.end),
            "due": isoformat(year.due),
            "committed_to_date": format_amount(money(year.committed, minor_digits)),
            "remaining": format_amount(money(left, minor_digits)),
            "trued_up": year.ends,
        },
    )


def one_time_lines(
    price: Price, due: datetime | None, start: datetime, end: datetime, *, bought: Bought
) -> list[Draft]:
    """Each one-time fee, in name order, when the plan's fees fall `due` within [start, end):
    once, or once per unit `bought` of the quantity `price.one_time_per` names."""
    if due is None or not start <= due < end:
        return []
    drafts = []
    for name in sorted(price.one_time):
        fee = price.one_time[name]
        per = price.one_time_per.get(name)
        quantity = 1 if per is None else bought.get(per) or 0
        drafts.append(
            Draft(
                code=f"one_time:{name}",
                description=f"one-time fee {name}"
                + ("" if per is None else f", per {per[:-1]} bought ({quantity})"),
                quantity=Fraction(quantity),
                unit="one-time" if per is None else per[:-1],
                unit_price=fee,
                amount=Fraction(fee) * quantity,
                source={"fee": name, "due": isoformat(due), **({"per": per} if per else {})},
            )
        )
    return drafts


def plan_starts(
    revisions: Sequence[tuple[datetime, str, str]],
    *,
    starts_at: datetime,
    ends_at: datetime | None,
) -> dict[str, datetime]:
    """For each plan, the first instant of the contract's term at which a paid (non-trial)
    revision on that plan is in force: when that plan's one-time fees fall due.

    `revisions` are (effective_at, plan, kind) in effective order; each is in force from its
    effective_at to the next one's (the first also before its own effective_at, as billing's
    segments take it), clipped to [starts_at, ends_at). A plan the contract returns to is not
    charged again; a trial that converts in place is charged at the conversion."""
    found: dict[str, datetime] = {}
    for index, (effective_at, plan, kind) in enumerate(revisions):
        lower = starts_at if index == 0 else max(effective_at, starts_at)
        upper = revisions[index + 1][0] if index + 1 < len(revisions) else ends_at
        if ends_at is not None and upper is not None:
            upper = min(upper, ends_at)
        if upper is not None and upper <= lower:
            continue
        if kind not in UNPAID_KINDS and plan not in found:
            found[plan] = lower
    return found
