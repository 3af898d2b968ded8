"""Add-on lines, pure: one `addon:<name>` line per add-on a group's revision bought, priced as
its policy says (docs/billing.md, "addon:<name>"), and the included units add-ons give the
plan's meter lines. Called by `billing/pricing.py` for each group; no I/O, no clock.

    pricing          quantity                      unit         unit_price   amount
    price (a fee)    fee fraction × q              month        price        qty × price
    per_seat         seats (basis) × q             seat         unit         qty × unit × fee fr.
    per_instance     instances (basis) × q         instance     unit         qty × unit × fee fr.
    per_unit         total − included (≥ 0)        <meter>      unit         qty × unit
    percent          Σ the named lines' amounts    <currency>   percent/100  qty × unit_price

q is the quantity the contract bought (1 unless it says more); per_unit and percent add-ons
are bought once (contracts/addons.py refuses more). Seats and instances are counted like the
plan's seats line: peak, time-weighted average or end, over the group, prorated to the fee
end; instances are counted, not weighted by kind. A percentage is of the group's rounded
lines whose codes it names, so it follows them exactly; it comes after every other add-on.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from fractions import Fraction
from typing import TYPE_CHECKING, Any, Protocol

from allotment.billing.levels import json_units, level_terms
from allotment.billing.measure import (
    QUANTITY_PLACES,
    ZERO,
    days,
    decimal,
    hourly_percentile,
    steps,
    text,
    weighted,
)
from allotment.contracts.addons import total
from allotment.policy.catalog import Addon, AddonBasis, MeterPrice, Plan, Raises
from allotment.policy.money import RATE_MAX_PLACES, format_amount

if TYPE_CHECKING:
    from allotment.billing.priced import Interval, Line, PricingInput, Segment


class GroupPricer(Protocol):
    """What `pricing._Pricer` shows of one group to the add-on lines."""

    data: PricingInput
    terms: Segment
    plan: Plan
    span: tuple[datetime, datetime]  # the group's [start, end)
    seconds: Fraction
    fee_fraction: Fraction
    fee_days: Fraction

    def line(
        self,
        code: str,
        description: str,
        *,
        quantity: Fraction,
        unit: str,
        unit_price: Decimal,
        amount: Fraction,
        source: dict[str, Any],
        places: int = QUANTITY_PLACES,
    ) -> Line | None: ...


def bought(segment: Segment) -> list[tuple[Addon, int]]:
    """The segment's add-ons by name, each with the quantity bought."""
    quantities = dict(segment.addon_quantities)
    return [
        (addon, quantities.get(addon.name, 1))
        for addon in sorted(segment.addons, key=lambda a: a.name)
    ]


def raises(segment: Segment) -> Raises:
    return total(bought(segment))


def with_included(meter_price: MeterPrice, raised: Raises) -> MeterPrice:
    """The plan's price of a meter with the included units the add-ons give on top."""
    extra = raised.included.get(meter_price.meter, 0)
    if not extra:
        return meter_price
    return dataclasses.replace(meter_price, included=meter_price.included + extra)


def lines(pricer: GroupPricer, priced: Sequence[Line]) -> list[Line | None]:
    """The group's add-on lines; `priced` holds the group's lines before them (percentages
    are taken of those and of the other add-ons)."""
    pairs = bought(pricer.terms)
    raised = total(pairs)
    out: list[Line | None] = []
    for addon, quantity in pairs:
        kind = addon.pricing.kind if addon.pricing is not None else "fee"
        if kind == "fee":
            out.append(_fee(pricer, addon, quantity))
        elif kind in ("seat", "instance"):
            out.append(_counted(pricer, addon, quantity))
        elif kind == "unit":
            out.append(_unit(pricer, addon, raised))
    before = [*priced, *(line for line in out if line is not None)]
    out.extend(
        _percent(pricer, addon, before)
        for addon, _ in pairs
        if addon.pricing is not None
        and addon.pricing.kind == "percent"
        and addon.interval == "month"  # a yearly percentage: billing/annual.py
    )
    return out


def note_included(meter_lines: Sequence[Line | None], raised: Raises) -> None:
    """Name in each meter line's source the included units the add-ons gave it."""
    for line in meter_lines:
        if line is not None and line.code.startswith("meter:"):
            extra = raised.included.get(line.code.removeprefix("meter:"), 0)
            if extra:
                line.source["included_by_addons"] = json_units(extra)


def _times(addon: Addon, quantity: int) -> str:
    return addon.name if quantity == 1 else f"{addon.name} × {quantity}"


def _fee(pricer: GroupPricer, addon: Addon, quantity: int) -> Line | None:
    if addon.interval == "year":
        return None  # a year's fee: billing/annual.py
    return pricer.line(
        f"addon:{addon.name}",
        f"add-on {_times(addon, quantity)}, {days(pricer.fee_days)} of "
        f"{days(pricer.fee_days / pricer.fee_fraction)} days",
        quantity=pricer.fee_fraction * quantity,
        unit="month",
        unit_price=addon.price,
        amount=Fraction(addon.price) * quantity * pricer.fee_fraction,
        source={
            "addon": addon.name,
            "quantity": quantity,
            "active_days": text(pricer.fee_days),
        },
    )


def _counted(pricer: GroupPricer, addon: Addon, quantity: int) -> Line | None:
    """Per seat or per instance held, on a basis, prorated to the fee end as seats are."""
    pricing = addon.pricing
    assert pricing is not None
    if pricing.kind == "seat":
        noun = "seat"
        intervals: Sequence[Interval] = pricer.data.seats
        seat_price = pricer.plan.price.seat
        basis: AddonBasis = pricing.basis or (seat_price.basis if seat_price else "peak")
        bought = pricer.terms.contracted_seats
    else:
        noun = "instance"
        intervals = [dataclasses.replace(i, weight=1) for i in pricer.data.instances]
        basis = pricing.basis or "peak"
        bought = pricer.terms.contracted_instances
    pieces, count = steps(intervals, *pricer.span)
    peak = Fraction(max(h for _, h in pieces))
    if basis == "peak":
        held = peak
    elif basis == "end":
        held = Fraction(pieces[-1][1])
    elif basis == "average":
        held = weighted(pieces) / pricer.seconds
    elif basis in ("p95", "p99"):
        held = Fraction(hourly_percentile(intervals, *pricer.span, int(basis[1:])))
    else:  # contracted: what was bought, or the peak held above it (bought + overage)
        held = max(Fraction(bought or 0), peak)
    billed = held * quantity
    return pricer.line(
        f"addon:{addon.name}",
        f"add-on {_times(addon, quantity)}, per {noun} ({basis} {text(held)}), "
        f"for {days(pricer.fee_days)} days",
        quantity=billed,
        unit=noun,
        unit_price=pricing.unit,
        amount=billed * Fraction(pricing.unit) * pricer.fee_fraction,
        source={
            "addon": addon.name,
            "quantity": quantity,
            "per": noun,
            "basis": basis,
            "held": text(held),
            "intervals": count,
            "fraction": text(pricer.fee_fraction),
            "active_days": text(pricer.fee_days),
        },
    )


def _unit(pricer: GroupPricer, addon: Addon, raised: Raises) -> Line | None:
    pricing = addon.pricing
    assert pricing is not None and pricing.meter is not None
    measured = pricer.data.meters(*pricer.span, pricing.meter)
    exact = Fraction(measured.quantity) if measured.exact is None else measured.exact
    used = max(ZERO, exact)
    included = raised.included.get(pricing.meter, 0)
    quantity = max(ZERO, used - Fraction(included))
    # A level (an average, a percentile) is priced per month, as the plan's meter lines are.
    level = level_terms(measured.level, pricer.fee_fraction, pricer.fee_days)
    return pricer.line(
        f"addon:{addon.name}",
        f"add-on {addon.name}: {pricing.meter} {text(used)} used, {included} included"
        + level.description,
        quantity=quantity,
        unit=pricing.meter,
        unit_price=pricing.unit,
        amount=quantity * Fraction(pricing.unit) * level.fraction,
        source={
            "addon": addon.name,
            "quantity": 1,
            "meter": pricing.meter,
            "events": measured.events,
            "total": text(used),
            "included": json_units(included),
            **level.source,
        },
    )


def _percent(pricer: GroupPricer, addon: Addon, before: Sequence[Line]) -> Line | None:
    pricing = addon.pricing
    assert pricing is not None
    named = [line for line in before if line.code in pricing.of]
    base = sum((Fraction(line.amount) for line in named), ZERO)
    rate = Fraction(pricing.unit) / 100
    return pricer.line(
        f"addon:{addon.name}",
        f"add-on {addon.name}, {format_amount(pricing.unit)}% of "
        + (", ".join(line.code for line in named) or "no line"),
        quantity=base,
        unit=pricer.data.currency,
        unit_price=decimal(rate, RATE_MAX_PLACES),
        amount=base * rate,
        places=pricer.data.minor_digits,
        source={
            "addon": addon.name,
            "quantity": 1,
            "percent": format_amount(pricing.unit),
            "of": list(pricing.of),
            "lines": [line.code for line in named],
        },
    )
