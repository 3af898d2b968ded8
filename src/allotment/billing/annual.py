"""Annual terms, pure: a year's fee charged once per contract year, and a meter whose
included units and tiers count over the contract year, previewed month by month
(docs/billing.md, "Annual terms"). Contract years come from contracts/years.py.

    annual_dues(revisions, starts_at=, ends_at=, until=)   → Dues: when each plan's and each
                                                             add-on's annual fee falls due
    annual_fee(code, label, price, dues, start, end, starts_at)  → [Draft]  one per due instant
                                                             in [start, end): the year's price
    annual_meter(name, price, measure, start, end, starts_at, minor_digits, places) → [Draft]
                                                             one per contract year the group
                                                             touches: the year's charge to the
                                                             group's end less the year's
                                                             charge before the group

An annual fee is due at the first instant of each contract year at which a paid (non-trial)
revision on the plan (listing the add-on) is in force: the year's start, or the amendment
or conversion that brings the plan or add-on in during the year. It is charged in full
(no proration, no credit when the plan or add-on leaves during the year).

An annual meter's line for [a, b) in contract year Y: with P the meter's use over
[Y.start, a) and W over [a, b), amount = round(f(P + W)) − round(f(P)), f being the meter's
price (graduated tiers or packages, `included` free). The rounded cumulative amounts
telescope: the months of a contract year add up, to the minor unit, to the year priced at
once, round(f(year's total)).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from fractions import Fraction
from functools import partial
from typing import TYPE_CHECKING, Any

from allotment.billing.drafts import Draft
from allotment.billing.levels import json_units
from allotment.billing.measure import QUANTITY_PLACES, ZERO, decimal, money, text
from allotment.billing.tiers import meter_priced
from allotment.contracts.years import contract_year, pieces
from allotment.kit.clock import isoformat
from allotment.policy.catalog import Addon, MeterPrice
from allotment.policy.money import RATE_MAX_PLACES, format_amount

if TYPE_CHECKING:
    from allotment.billing.priced import PricingInput, Segment

UNPAID_KINDS = frozenset({"trial"})

Measure = Callable[[datetime, datetime], Fraction]  # the meter's exact use over [a, b)


@dataclass(frozen=True)
class Dues:
    """When annual fees fall due, by plan and by add-on name."""

    plans: Mapping[str, tuple[datetime, ...]] = field(default_factory=dict)
    addons: Mapping[str, tuple[datetime, ...]] = field(default_factory=dict)


def annual_dues(
    revisions: Sequence[tuple[datetime, str, str, Sequence[str]]],
    *,
    starts_at: datetime,
    ends_at: datetime | None,
    until: datetime,
) -> Dues:
    """`revisions`: (effective_at, plan, kind, add-ons) in effective order, each in force from
    its effective_at to the next one's (the first also before it), clipped to the term
    [starts_at, ends_at); due instants are found up to `until` (exclusive)."""
    spans: list[tuple[datetime, datetime, str, tuple[str, ...]]] = []
    for index, (effective_at, plan, kind, listed) in enumerate(revisions):
        lower = starts_at if index == 0 else max(effective_at, starts_at)
        upper = revisions[index + 1][0] if index + 1 < len(revisions) else until
        upper = min(upper, until, ends_at or until)
        if upper > lower and kind not in UNPAID_KINDS:
            spans.append((lower, upper, plan, tuple(listed)))
    plans: dict[str, list[datetime]] = {}
    addons: dict[str, list[datetime]] = {}
    for lower, upper, plan, names in spans:
        for year, a, _ in pieces(starts_at, lower, upper):
            for found, key in ((plans, plan), *((addons, name) for name in names)):
                instants = found.setdefault(key, [])
                if not any(year.start <= t < year.end for t in instants):
                    instants.append(a)
    return Dues(
        plans={k: tuple(sorted(v)) for k, v in plans.items()},
        addons={k: tuple(sorted(v)) for k, v in addons.items()},
    )


def annual_fee(
    code: str,
    label: str,
    price: Decimal,
    dues: Sequence[datetime],
    *,
    start: datetime,
    end: datetime,
    starts_at: datetime,
    source: Mapping[str, Any] | None = None,
    quantity: Fraction = Fraction(1),
    unit: str = "year",
    places: int = QUANTITY_PLACES,
) -> list[Draft]:
    """The year's `price` × `quantity`, once for each due instant in [start, end)."""
    drafts = []
    for due in dues:
        if not start <= due < end:
            continue
        year = contract_year(starts_at, due)
        drafts.append(
            Draft(
                code=code,
                description=f"{label}, annual fee for contract year {year.number} "
                f"({isoformat(year.start)} to {isoformat(year.end)})",
                quantity=quantity,
                unit=unit,
                unit_price=price,
                amount=Fraction(price) * quantity,
                places=places,
                source={
                    **(source or {}),
                    "interval": "year",
                    "contract_year": year.number,
                    "year_start": isoformat(year.start),
                    "year_end": isoformat(year.end),
                    "due": isoformat(due),
                },
            )
        )
    return drafts


def annual_meter(
    name: str,
    price: MeterPrice,
    measure: Measure,
    *,
    start: datetime,
    end: datetime,
    starts_at: datetime,
    minor_digits: int,
    places: int,
) -> list[Draft]:
    """One line per contract year that [start, end) touches: what its use there adds to the
    year's charge (see the module docstring)."""
    drafts = []
    for year, a, b in pieces(starts_at, start, end):
        before = max(ZERO, measure(year.start, a)) if a > year.start else ZERO
        within = measure(a, b)
        prior = meter_priced(before, price, places=places)
        after = meter_priced(max(ZERO, before + within), price, places=places)
        amount = Fraction(money(after.amount, minor_digits) - money(prior.amount, minor_digits))
        quantity = after.quantity - prior.quantity
        if price.package is not None or quantity == 0:
            unit_price = after.unit_price
        else:
            unit_price = decimal(amount / quantity, RATE_MAX_PLACES)
        unit = name if price.package is None else f"package of {price.package.size} {name}"
        drafts.append(
            Draft(
                code=f"meter:{name}",
                description=f"{name}: {text(within, places)} used, "
                f"{text(before + within, places)} in contract year {year.number} so far, "
                f"{format_amount(Decimal(price.included))} included a year",
                quantity=quantity,
                unit=unit,
                unit_price=unit_price,
                amount=amount,
                places=places,
                source={
                    "meter": name,
                    "period": "year",
                    "contract_year": year.number,
                    "year_start": isoformat(year.start),
                    "year_end": isoformat(year.end),
                    "used": text(within, places),
                    "year_before": text(before, places),
                    "year_to_date": text(before + within, places),
                    "included": json_units(price.included),
                    "charged_before": format_amount(money(prior.amount, minor_digits)),
                    "charged_to_date": format_amount(money(after.amount, minor_digits)),
                    **after.source,
                },
            )
        )
    return drafts


@dataclass(frozen=True)
class AnnualDrafts:
    base: list[Draft]
    meters: list[Draft]
    addons: list[Draft]


def group_drafts(
    data: PricingInput, segments: Sequence[Segment], start: datetime, end: datetime
) -> AnnualDrafts:
    """A group's annual lines: the plan's annual fee, its yearly meters, its annual add-ons.
    A fee due from `start` to the group's fee end (the month's end for the current month,
    as for monthly fees) is charged; use is counted over [start, end)."""
    terms, last = segments[0], segments[-1]
    starts_at = last.contract_start
    if starts_at is None:
        return AnnualDrafts([], [], [])
    fee_end = max(min(last.fee_end or end, data.period_end), end)
    plan, dues = terms.plan, last.dues
    price = plan.price
    base = (
        annual_fee(
            "base",
            f"{plan.name}: base fee",
            price.base,
            dues.plans.get(plan.name, ()),
            start=start,
            end=fee_end,
            starts_at=starts_at,
        )
        if price.interval == "year"
        else []
    )
    yearly = []
    for name in sorted(price.meters):
        meter_price = price.meters[name]
        if meter_price.period == "year":
            yearly.extend(
                annual_meter(
                    name,
                    meter_price,
                    partial(_measure, data, name),
                    start=start,
                    end=end,
                    starts_at=starts_at,
                    minor_digits=data.minor_digits,
                    places=QUANTITY_PLACES,
                )
            )
    fees = []
    bought = {"seats": terms.contracted_seats, "instances": terms.contracted_instances}
    for addon, quantity in _yearly_addons(terms):
        if addon.pricing is not None:  # a yearly percentage
            fees.extend(
                _yearly_percent(addon, terms, bought, dues, start, fee_end, starts_at, data)
            )
            continue
        units = quantity * (bought.get(addon.per) or 0) if addon.per else 1
        noun = f" × {units} {addon.per}" if addon.per else ""
        fees.extend(
            annual_fee(
                f"addon:{addon.name}",
                f"add-on {addon.name}" + (f" × {quantity}" if quantity != 1 else "") + noun,
                addon.price * (1 if addon.per else quantity),
                dues.addons.get(addon.name, ()),
                start=start,
                end=fee_end,
                starts_at=starts_at,
                quantity=Fraction(units),
                unit=f"{addon.per[:-1]}-year" if addon.per else "year",
                source={
                    "addon": addon.name,
                    "quantity": quantity,
                    **({"per": addon.per} if addon.per else {}),
                },
            )
        )
    return AnnualDrafts(base, yearly, fees)


def _yearly_addons(segment: Segment) -> list[tuple[Addon, int]]:
    """The segment's yearly add-ons by name, each with the quantity bought."""
    quantities = dict(segment.addon_quantities)  # bought more than once (docs/contracts.md)
    return [
        (addon, quantities.get(addon.name, 1))
        for addon in sorted(segment.addons, key=lambda a: a.name)
        if addon.interval == "year"
    ]


def yearly_base(segment: Segment, codes: Sequence[str]) -> dict[str, Fraction]:
    """What each named yearly or one-time line charges in full when it falls due, on the
    segment's terms: `one_time:<fee>` the plan's fee (× the quantity it is per), `addon:<a>`
    a bought yearly add-on's fee (× its quantity, × the quantity it is per). A code the
    segment has no such line for is left out."""
    price = segment.plan.price
    bought = {"seats": segment.contracted_seats, "instances": segment.contracted_instances}
    found: dict[str, Fraction] = {}
    yearly = {addon.name: (addon, q) for addon, q in _yearly_addons(segment)}
    for code in codes:
        kind, _, name = code.partition(":")
        if kind == "one_time" and name in price.one_time:
            per = price.one_time_per.get(name)
            units = 1 if per is None else bought.get(per) or 0
            found[code] = Fraction(price.one_time[name]) * units
        elif kind == "addon" and name in yearly and yearly[name][0].pricing is None:
            addon, quantity = yearly[name]
            units = quantity * (bought.get(addon.per) or 0) if addon.per else quantity
            found[code] = Fraction(addon.price) * units
    return found


def _yearly_percent(
    addon: Addon,
    terms: Segment,
    bought: Mapping[str, int | None],
    dues: Dues,
    start: datetime,
    end: datetime,
    starts_at: datetime,
    data: PricingInput,
) -> list[Draft]:
    """A yearly percentage: due as a yearly fee is, of the full price of the named lines."""
    pricing = addon.pricing
    assert pricing is not None and pricing.kind == "percent"
    named = yearly_base(terms, pricing.of)
    base = sum(named.values(), ZERO)
    rate = Fraction(pricing.unit) / 100
    return [
        dataclasses.replace(draft, unit_price=decimal(rate, RATE_MAX_PLACES), amount=base * rate)
        for draft in annual_fee(
            f"addon:{addon.name}",
            f"add-on {addon.name}, {format_amount(pricing.unit)}% a year of "
            + (", ".join(named) or "no line"),
            Decimal(0),
            dues.addons.get(addon.name, ()),
            start=start,
            end=end,
            starts_at=starts_at,
            quantity=base,
            unit=data.currency,
            places=data.minor_digits,
            source={
                "addon": addon.name,
                "quantity": 1,
                "percent": format_amount(pricing.unit),
                "of": list(pricing.of),
                "lines": list(named),
                "base": {
                    code: format_amount(money(amount, data.minor_digits))
                    for code, amount in named.items()
                },
            },
        )
    ]


def _measure(data: PricingInput, name: str, start: datetime, end: datetime) -> Fraction:
    measured = data.meters(start, end, name)
    return Fraction(measured.quantity) if measured.exact is None else measured.exact
