"""Tiered quantities, pure and exact: a count priced in graduated or volume tiers, with an
optional flat fee per tier, or per started package, for the meter and seat lines
(docs/billing.md, "Tier modes").

    meter_priced(total, price)          a meter line's amount: tiers or package
    seat_priced(basis, price)           a seats line's, before proration: unit or tiers
    graduated(total, included, tiers)   each tier prices the units that fall in it
    volume(total, included, tiers)      every billable unit at the tier the total reaches
    packages(total, included, package)  ceil(billable / size) × price
    → Tiered                            quantity, exact amount, unit_price, source

A tier's `up_to` is a total count over the period, not a count above `included`: tier i
holds the units (previous up_to, up_to], the first tier from 0 and the last one unbounded
whatever its up_to says; the first `included` units are free. A tier is *reached* when at
least one billable unit falls in it (graduated), or when it holds the total (volume, with
at least one billable unit); its flat fee is charged once, then.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from typing import Any

from allotment.billing.measure import QUANTITY_PLACES, ZERO, decimal, text
from allotment.policy.catalog import MeterPrice, Package, SeatPrice, Tier
from allotment.policy.money import RATE_MAX_PLACES, format_amount


@dataclass(frozen=True)
class Tiered:
    mode: str  # graduated | volume | package | unit (seats priced by `seat.unit`)
    quantity: Fraction  # billable units (total − included, ≥ 0); packages for a package
    amount: Fraction  # exact, before the line's one rounding
    unit_price: Decimal
    source: dict[str, Any] = field(default_factory=dict)  # mode, tiers or package: JSON types


def meter_priced(
    total: Fraction, price: MeterPrice, *, places: int, shared: Fraction = ZERO
) -> Tiered:
    """A meter's total as its price says: by package when it has one, else in tiers.
    `shared`: units a shared allowance covered, free on top of `included`."""
    included = Fraction(price.included) + shared
    if price.package is not None:
        return packages(total, included, price.package)
    return _in_tiers(total, included, price.tiers, price.mode, places)


def seat_priced(basis: Fraction, price: SeatPrice) -> Tiered:
    """Seats above `included`, by unit or in tiers; not yet prorated by the fee fraction."""
    included = Fraction(price.included)
    if price.unit is None:
        return _in_tiers(basis, included, price.tiers, price.mode, QUANTITY_PLACES)
    quantity = max(ZERO, basis - included)
    return Tiered("unit", quantity, quantity * Fraction(price.unit), price.unit)


def _in_tiers(
    total: Fraction, included: Fraction, tiers: Sequence[Tier], mode: str, places: int
) -> Tiered:
    if mode == "volume":
        return volume(total, included, tiers, places=places)
    return graduated(total, included, tiers, places=places)


def graduated(
    total: Fraction, included: Fraction, tiers: Sequence[Tier], *, places: int = QUANTITY_PLACES
) -> Tiered:
    split = _split(total, included, tiers)
    charged = [units > 0 for _, units in split]
    return _result("graduated", total, included, split, charged, places)


def volume(
    total: Fraction, included: Fraction, tiers: Sequence[Tier], *, places: int = QUANTITY_PLACES
) -> Tiered:
    billable = max(ZERO, total - included)
    reached = reached_tier(total, tiers) if billable > 0 else None
    split = [(tier, billable if index == reached else ZERO) for index, tier in enumerate(tiers)]
    charged = [index == reached for index in range(len(tiers))]
    return _result("volume", total, included, split, charged, places, reached=reached)


def packages(total: Fraction, included: Fraction, package: Package) -> Tiered:
    billable = max(ZERO, total - included)
    count = math.ceil(billable / package.size)
    return Tiered(
        mode="package",
        quantity=Fraction(count),
        amount=count * Fraction(package.price),
        unit_price=package.price,
        source={
            "mode": "package",
            "package": {
                "size": package.size,
                "price": format_amount(package.price),
                "units": text(billable),
                "packages": count,
            },
        },
    )


def reached_tier(total: Fraction, tiers: Sequence[Tier]) -> int:
    """The index of the tier that holds the `total`-th unit: the first whose up_to is at or
    above it, else the last."""
    for index, tier in enumerate(tiers[:-1]):
        if tier.up_to is not None and total <= tier.up_to:
            return index
    return len(tiers) - 1


def _split(
    total: Fraction, included: Fraction, tiers: Sequence[Tier]
) -> list[tuple[Tier, Fraction]]:
    """Each tier with the billable units that fall in it."""
    lower = included
    out: list[tuple[Tier, Fraction]] = []
    last = len(tiers) - 1
    for index, tier in enumerate(tiers):
        upper = total if tier.up_to is None or index == last else min(total, Fraction(tier.up_to))
        out.append((tier, max(ZERO, upper - lower)))
        if tier.up_to is not None:
            lower = max(lower, Fraction(tier.up_to))
    return out


def _result(
    mode: str,
    total: Fraction,
    included: Fraction,
    split: list[tuple[Tier, Fraction]],
    charged: list[bool],
    places: int,
    **extra: Any,
) -> Tiered:
    quantity = max(ZERO, total - included)
    flats = [
        Fraction(tier.flat) if reached and tier.flat is not None else ZERO
        for (tier, _), reached in zip(split, charged, strict=True)
    ]
    amount = sum((units * Fraction(tier.unit) for tier, units in split), ZERO) + sum(flats, ZERO)
    used = [tier for tier, units in split if units > 0]
    # The documented unit_price rule (docs/billing.md): one tier's unit when it alone priced
    # every billable unit and no flat fee was added; else the exact average; with nothing
    # billable, the unit the next unit would pay.
    if len(used) == 1 and not any(flats):
        unit_price = used[0].unit
    elif used:
        unit_price = decimal(amount / quantity, RATE_MAX_PLACES)
    else:
        unit_price = _next_tier(included, [tier for tier, _ in split]).unit
    rows: list[dict[str, Any]] = []
    for (tier, units), reached in zip(split, charged, strict=True):
        row: dict[str, Any] = {
            "up_to": tier.up_to,
            "unit": format_amount(tier.unit),
            "quantity": text(units, places),
        }
        if tier.flat is not None:
            row["flat"] = format_amount(tier.flat)
            row["flat_charged"] = reached
        rows.append(row)
    return Tiered(
        mode=mode,
        quantity=quantity,
        amount=amount,
        unit_price=unit_price,
        source={"mode": mode, "tiers": rows, **extra},
    )


def _next_tier(included: Fraction, tiers: Sequence[Tier]) -> Tier:
    """The tier the first billable unit (just above `included`) falls in."""
    for tier in tiers[:-1]:
        if tier.up_to is not None and tier.up_to > included:
            return tier
    return tiers[-1] if tiers else Tier(up_to=None, unit=Decimal(0))
