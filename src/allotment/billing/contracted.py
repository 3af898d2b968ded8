"""Lines on bought quantities, pure: seats and instance licences billed on what the contract
bought (`basis: contracted`), use above it as an overage line, and the per-instance licence
fee on live instances (docs/billing.md, "Bought quantities"). No I/O, no clock reads;
billing/pricing.py calls these for each group and turns each `Charge` into a line.

    code                        quantity                         unit_price        amount
    seats            contracted quantities.seats             seat.unit         qty × price × fee fr.
    seats_overage    max(0, measured − contracted)           overage_unit      qty × price × fee fr.
    instance_licences    contracted quantities.instances     licence.unit      qty × price × fee fr.
                     (or the measured live instances, basis peak | average | end)
    instance_licences_overage  max(0, measured − contracted) overage_unit      qty × price × fee fr.

"measured" is the peak, the time-weighted average or the end-of-group count of what was held
(member seats, sessions of floating seats, or live instances, each instance one licence
whatever its kind weight), by the price's `overage` key (default peak). A bought quantity is
a licensed quantity: prorated to the fee end like `base`, never by the share of the month
elapsed. A contract with no quantity under a contracted price (a later policy made the price
contracted; creating or amending such a contract is refused) bills 0 bought, so all its use
is overage, and the line's source says `contracted: null`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from fractions import Fraction
from typing import Any, TypedDict

from allotment.billing.measure import ZERO, days, steps, text, weighted
from allotment.policy.catalog import LicencePrice, SeatPrice, UsageBasis


class Charge(TypedDict):
    """The arguments of one line (billing/pricing.py `_Pricer._line`)."""

    code: str
    description: str
    quantity: Fraction
    unit: str
    unit_price: Decimal
    amount: Fraction
    source: dict[str, Any]


@dataclass(frozen=True)
class Window:
    """A group's time as the pricer counts it: its length (for averages) and its fee share."""

    start: datetime
    end: datetime
    seconds: Fraction
    fee_fraction: Fraction
    fee_days: Fraction


@dataclass(frozen=True)
class _Held:
    """An instance counted as one licence, whatever its kind weight."""

    start: datetime
    end: datetime | None
    weight: int = 1


def measured(pieces: Sequence[tuple[int, int]], basis: UsageBasis, length: Fraction) -> Fraction:
    """The peak, the time-weighted average, or the last count of consecutive (µs, held)
    pieces spanning `length` seconds."""
    if basis == "peak":
        return Fraction(max(held for _, held in pieces))
    if basis == "end":
        return Fraction(pieces[-1][1])
    return weighted(pieces) / length


def seat_charges(
    window: Window,
    price: SeatPrice,
    *,
    contracted: int | None,
    pieces: Sequence[tuple[int, int]],
    intervals: int,
    model: str | None,
) -> list[Charge]:
    """The `seats` line on the contracted seats and the `seats_overage` line above them."""
    # A seat price without a unit prices a measured count otherwise; validation refuses it
    # under basis contracted (policy/licensing.py), so 0 here is never a silent discount.
    unit = price.unit if price.unit is not None else Decimal(0)
    return _bought(
        window,
        code="seats",
        unit="seat",
        noun="seats",
        unit_price=unit,
        overage=price.overage,
        overage_unit=price.overage_unit,
        contracted=contracted,
        pieces=pieces,
        source={"model": model, "intervals": intervals},
    )


def licence_charges(
    window: Window,
    price: LicencePrice,
    *,
    contracted: int | None,
    instances: Sequence[Any],
) -> list[Charge]:
    """The `instance_licences` line (and, on a contracted basis, its overage line)."""
    pieces, count = steps((_Held(i.start, i.end) for i in instances), window.start, window.end)
    if price.basis == "contracted":
        return _bought(
            window,
            code="instance_licences",
            unit="instance licence",
            noun="instance licences",
            unit_price=price.unit,
            overage=price.overage,
            overage_unit=price.overage_unit,
            contracted=contracted,
            pieces=pieces,
            source={"intervals": count},
        )
    held = measured(pieces, price.basis, window.seconds)
    return [
        Charge(
            code="instance_licences",
            description=f"instance licences ({price.basis} {text(held)} live), "
            f"for {days(window.fee_days)} days",
            quantity=held,
            unit="instance licence",
            unit_price=price.unit,
            amount=held * Fraction(price.unit) * window.fee_fraction,
            source={
                "basis": price.basis,
                "held": text(held),
                "intervals": count,
                **_fee(window),
            },
        )
    ]


def _bought(
    window: Window,
    *,
    code: str,
    unit: str,
    noun: str,
    unit_price: Decimal,
    overage: UsageBasis,
    overage_unit: Decimal | None,
    contracted: int | None,
    pieces: Sequence[tuple[int, int]],
    source: dict[str, Any],
) -> list[Charge]:
    bought = Fraction(contracted or 0)
    held = measured(pieces, overage, window.seconds)
    over = max(ZERO, held - bought)
    over_price = overage_unit if overage_unit is not None else unit_price
    return [
        Charge(
            code=code,
            description=f"{noun}: {contracted or 0} contracted, for {days(window.fee_days)} days",
            quantity=bought,
            unit=unit,
            unit_price=unit_price,
            amount=bought * Fraction(unit_price) * window.fee_fraction,
            source={"basis": "contracted", "contracted": contracted, **source, **_fee(window)},
        ),
        Charge(
            code=f"{code}_overage",
            description=f"{noun} over the {contracted or 0} contracted ({overage} "
            f"{text(held)}), for {days(window.fee_days)} days",
            quantity=over,
            unit=unit,
            unit_price=over_price,
            amount=over * Fraction(over_price) * window.fee_fraction,
            source={
                "basis": overage,
                "held": text(held),
                "contracted": contracted,
                **source,
                **_fee(window),
            },
        ),
    ]


def _fee(window: Window) -> dict[str, str]:
    return {"fraction": text(window.fee_fraction), "active_days": text(window.fee_days)}
