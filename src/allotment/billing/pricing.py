"""Invoice pricing, pure: one contract's calendar month, from what its revisions sold and what
it held and used, to rounded lines (docs/billing.md). No I/O, no clock reads.

    PricingInput
     ├── period_start, period_end        the month, [start, end), UTC
     ├── segments: (Segment, ...)        revision intervals, each with its plan and prices
     ├── seats, instances: (Interval, ...)
     └── meters(start, end, name)        → MeterTotal
    price(data) → Priced                 lines, subtotal, the policy versions priced

Adjacent segments whose priced terms are equal are merged into one group first
(billing/groups.py), so an amendment that changes nothing priced changes nothing on the
invoice. Each group then gives these lines, in this order (fee fr. = the group's fraction of
the month, by seconds, to its fee end: the month's end for the current month, where use is
counted to date):

    code             quantity                   unit           unit_price      amount
    base             fee fraction               month          price.base      price × fee fr.
    seats            max(0, basis − included)   seat           seat.unit       qty × price × fee fr.
    burst            seat-days over seat_limit  seat-day       burst_seat_day  qty × price
    instances        Σ lease-hours × weight     weighted       instance_hour   qty × price
                     (kinds not priced apart)   instance-hour
    instances:<kind> Σ the kind's lease-hours   <kind> inst.-h kinds[<kind>]   qty × price
    meter:<name>     total − included (≥ 0)     <name>         see tiers.py    tiers / package
                                                                               (a level: × fee fr.)
    addon:<name>     as the add-on is priced: billing/addons.py (a fee: fee fr. × quantity)
    minimum          the shortfall              <currency>     1               see commitments
    one_time:<name>  1                          one-time       one_time[name]  price, once
    credit:trial     Σ the group's lines above  <currency>     −1              −qty
    discount:<kind>  Σ the group's lines above  <currency>     −percent / 100  qty × price
                     (kind: educational, pilot, or negotiated on a standard contract)

Meter lines count the included units the group's add-ons give on top of the plan's.

Under a yearly minimum (`price.minimum_period: year`) a segment is cut at its contract's
anniversaries (billing/groups.py), so each group lies in one contract year; `minimum` is
then that year's line (billing/commitments.py, `yearly_minimum_line`), from
`data.committed_before` and the year's groups so far, and `Priced.committed` says what this
period added to each year.

A `contracted` seat basis gives `seats` on the bought quantity and `seats_overage` in its
place; `price.instance_licence` gives `instance_licences` (and `instance_licences_overage`)
after `instances`: billing/contracted.py. An annual fee (`base`, `addon:<name>`) and a yearly
meter (`meter:<name>`) are priced by billing/annual.py, in the same places.

A line whose quantity and unit price are both zero is left out; any other line is kept, so a
price of zero shows what it did not charge for as a 0.00 line.

Arithmetic is exact: `Decimal` in and out, `fractions.Fraction` in between (a 31-day month
makes 1/31, which no Decimal holds), never a float. Each line's amount is rounded once,
half-even, to the currency's minor unit, from the exact value; the subtotal is the sum of the
rounded amounts. Quantities are shown to at most QUANTITY_PLACES decimals (billing/measure.py),
an averaged rate to RATE_MAX_PLACES. `source` holds only JSON types (Decimals as strings), so
an invoice serializes the same bytes every time. docs/billing.md works every rule by hand.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from decimal import Decimal
from fractions import Fraction
from typing import Any

from allotment.billing import addons, contracted
from allotment.billing.allowances import Drawn, draw
from allotment.billing.annual import group_drafts
from allotment.billing.commitments import YearToDate, commitment_lines
from allotment.billing.drafts import Draft
from allotment.billing.groups import Group, groups
from allotment.billing.instance_kinds import kind_lines
from allotment.billing.levels import json_units, level_terms
from allotment.billing.measure import (
    MICROSECOND,
    MICROSECONDS_PER_HOUR,
    QUANTITY_PLACES,
    SECONDS_PER_DAY,
    ZERO,
    clip,
    days,
    decimal,
    min_places,
    money,
    seconds,
    steps,
    text,
    weighted,
)
from allotment.billing.priced import (
    Line,
    MeterTotal,
    Priced,
    PricingInput,
)
from allotment.billing.tiers import meter_priced, seat_priced
from allotment.contracts.terms import DISCOUNTED_KINDS
from allotment.kit.clock import isoformat
from allotment.policy.catalog import MeterPrice
from allotment.policy.money import RATE_MAX_PLACES, format_amount

# -- pricing ---------------------------------------------------------------------------------


def price(data: PricingInput) -> Priced:
    """The month's lines for `data`, group by group in time order. Raises ValueError when the
    period is empty or the segments overlap or are out of order."""
    if data.period_end <= data.period_start:
        raise ValueError("the period must end after it starts")
    if data.minor_digits < 0:
        raise ValueError("minor_digits must not be negative")
    lines: list[Line] = []
    versions: set[int] = set()
    committed = {year: Fraction(amount) for year, amount in data.committed_before.items()}
    for group in groups(data):
        lines.extend(_Pricer(data, group, committed).lines())
        versions.update(segment.policy_version for segment in group.segments)
    subtotal = sum((Fraction(line.amount) for line in lines), ZERO)
    before = data.committed_before
    return Priced(
        lines=tuple(lines),
        subtotal=money(subtotal, data.minor_digits),
        policy_versions=tuple(sorted(versions)),
        committed={
            year: money(amount - Fraction(before.get(year, 0)), data.minor_digits)
            for year, amount in committed.items()
        },
    )


class _Pricer:
    """The lines of one group."""

    def __init__(
        self, data: PricingInput, group: Group, committed: dict[int, Fraction] | None = None
    ) -> None:
        self.data = data
        self.group = group
        self.committed = {} if committed is None else committed  # by contract year, so far
        self.terms = group.terms
        self.plan = group.terms.plan
        self.seconds = seconds(group.end - group.start)
        self.fraction = self.seconds / seconds(data.period_end - data.period_start)
        self.days = self.seconds / SECONDS_PER_DAY
        fee_end = min(group.segments[-1].fee_end or group.end, data.period_end)
        self.fee_seconds = seconds(max(fee_end, group.end) - group.start)
        self.fee_fraction = self.fee_seconds / seconds(data.period_end - data.period_start)
        self.fee_days = self.fee_seconds / SECONDS_PER_DAY
        self.revisions = tuple(dict.fromkeys(s.revision for s in group.segments))
        self.versions = tuple(sorted({s.policy_version for s in group.segments}))
        self.span = (group.start, group.end)
        self.line = self._line  # for billing/addons.py

    def lines(self) -> list[Line]:
        annual = group_drafts(self.data, self.group.segments, self.group.start, self.group.end)
        lines: list[Line | None] = [self._base(), *map(self._draft, annual.base)]
        lines.extend(self._seats())
        lines.append(self._instances())
        group, prices = self.group, self.plan.price
        kinds = kind_lines(self.data.instances, group.start, group.end, prices.instance_kinds)
        lines.extend(map(self._draft, kinds))
        if (licence := self.plan.price.instance_licence) is not None:
            lines.extend(
                self._line(**charge)
                for charge in contracted.licence_charges(
                    self._window(),
                    licence,
                    contracted=self.terms.contracted_instances,
                    instances=self.data.instances,
                )
            )
        raised = addons.raises(self.terms)  # add-ons' included units, then their lines
        meter_prices = {
            name: addons.with_included(price_, raised)
            for name, price_ in self.plan.price.meters.items()
        }
        shared = self._shared(meter_prices)
        lines.extend(
            self._meter(name, meter_prices[name], shared.get(name)) for name in sorted(meter_prices)
        )
        lines.extend(map(self._draft, annual.meters))
        addons.note_included(lines, raised)
        lines.extend(addons.lines(self, [line for line in lines if line is not None]))
        lines.extend(map(self._draft, annual.addons))
        priced = [line for line in lines if line is not None]
        due = next((s.plan_started for s in group.segments if s.plan_started), None)
        commitments = commitment_lines(
            prices,
            self.fee_fraction,
            priced,
            due=due,
            start=group.start,
            end=group.end,
            currency=self.data.currency,
            minor_digits=self.data.minor_digits,
            bought=self._bought(),
            year=self._year_to_date(priced),
        )
        priced.extend(line for line in map(self._draft, commitments) if line is not None)
        adjustment = self._adjustment(priced)
        if adjustment is not None:
            priced.append(adjustment)
        return priced

    # -- one builder per line kind

    def _base(self) -> Line | None:
        if self.plan.price.interval == "year":
            return None  # a year's fee: billing/annual.py
        unit_price = self.plan.price.base
        return self._line(
            "base",
            f"{self.plan.name}: base fee, {days(self.fee_days)} of "
            f"{days(self.fee_days / self.fee_fraction)} days",
            quantity=self.fee_fraction,
            unit="month",
            unit_price=unit_price,
            amount=Fraction(unit_price) * self.fee_fraction,
            source={"active_days": text(self.fee_days)},
        )

    def _seats(self) -> list[Line | None]:
        seat_price = self.plan.price.seat
        limit = self.terms.seat_limit
        burst = limit is not None and self.terms.seat_model == "named"
        if seat_price is None and not burst:
            return []
        pieces, count = steps(self.data.seats, self.group.start, self.group.end)
        out: list[Line | None] = []
        if seat_price is not None and seat_price.basis == "contracted":
            charges = contracted.seat_charges(
                self._window(),
                seat_price,
                contracted=self.terms.contracted_seats,
                pieces=pieces,
                intervals=count,
                model=self.terms.seat_model,
            )
            out.extend(self._line(**charge) for charge in charges)
        elif seat_price is not None:
            if seat_price.basis == "peak":
                basis = Fraction(max(held for _, held in pieces))
            elif seat_price.basis == "end":
                basis = Fraction(pieces[-1][1])
            else:
                basis = weighted(pieces) / self.seconds
            quantity = max(ZERO, basis - seat_price.included)
            tiered = seat_priced(basis, seat_price)  # by unit or in tiers (billing/tiers.py)
            # A licensed quantity, priced like a fee: prorated to the fee end (the month's,
            # for the current month), never by the share of the month elapsed.
            out.append(
                self._line(
                    "seats",
                    f"seats over {seat_price.included} included "
                    f"({seat_price.basis} {text(basis)}), for {days(self.fee_days)} days",
                    quantity=quantity,
                    unit="seat",
                    unit_price=tiered.unit_price,
                    amount=tiered.amount * self.fee_fraction,
                    source={
                        **tiered.source,
                        "model": self.terms.seat_model,
                        "basis": seat_price.basis,
                        "held": text(basis),
                        "included": seat_price.included,
                        "intervals": count,
                        "fraction": text(self.fee_fraction),
                        "active_days": text(self.fee_days),
                    },
                )
            )
        if burst and limit is not None:
            over = weighted(pieces, above=limit)
            seat_days = over / SECONDS_PER_DAY
            unit_price = self.plan.price.burst_seat_day
            out.append(
                self._line(
                    "burst",
                    f"seat-days over the limit of {limit}",
                    quantity=seat_days,
                    unit="seat-day",
                    unit_price=unit_price,
                    amount=seat_days * Fraction(unit_price),
                    source={"seat_limit": limit, "intervals": count},
                )
            )
        return out

    def _instances(self) -> Line | None:
        # (kind, weight) → [intervals, microseconds]: whole microseconds add exactly and
        # fast; each sum becomes hours (a Fraction) once.
        kinds: dict[tuple[str, int], list[int]] = {}
        for interval in self.data.instances:
            clipped = clip(interval, self.group.start, self.group.end)
            if clipped is None or interval.kind in self.plan.price.instance_kinds:
                continue  # a kind priced apart has its own line (instance_kinds.py)
            entry = kinds.setdefault((interval.kind or "", interval.weight), [0, 0])
            entry[0] += 1
            entry[1] += (clipped[1] - clipped[0]) // MICROSECOND
        hours = {key: Fraction(entry[1], MICROSECONDS_PER_HOUR) for key, entry in kinds.items()}
        total = sum((held * weight for (_, weight), held in hours.items()), ZERO)
        unit_price = self.plan.price.instance_hour
        return self._line(
            "instances",
            "instance lease-hours × kind weight",
            quantity=total,
            unit="weighted instance-hour",
            unit_price=unit_price,
            amount=total * Fraction(unit_price),
            source={
                "intervals": sum(entry[0] for entry in kinds.values()),
                "kinds": [
                    {
                        "kind": kind or None,
                        "weight": weight,
                        "intervals": entry[0],
                        "hours": text(hours[(kind, weight)]),
                    }
                    for (kind, weight), entry in sorted(kinds.items())
                ],
            },
        )

    def _used(self, name: str) -> tuple[MeterTotal, Fraction]:
        measured = self.data.meters(self.group.start, self.group.end, name)
        exact = Fraction(measured.quantity) if measured.exact is None else measured.exact
        return measured, max(ZERO, exact)

    def _shared(self, meter_prices: Mapping[str, MeterPrice]) -> dict[str, Drawn]:
        """What each meter's line draws from the plan's shared allowances (allowances.py)."""
        allowances = self.plan.price.allowances
        drawing = {meter for allowance in allowances for meter, _ in allowance.draw}
        billable = {
            name: self._used(name)[1] - Fraction(meter_prices[name].included)
            for name in sorted(drawing)
            if name in meter_prices
        }
        return draw(allowances, billable)

    def _meter(
        self, name: str, meter_price: MeterPrice, shared: Drawn | None = None
    ) -> Line | None:
        """The group's total priced as `meter_price` says (billing/tiers.py: graduated or
        volume tiers, flat fees, packages), with its unit_price rule; `shared`: what it drew
        from a shared allowance, added to its included units."""
        if meter_price.period == "year":
            return None  # counted over the contract year: billing/annual.py
        measured, total = self._used(name)
        covered = ZERO if shared is None else shared.covered
        package = meter_price.package
        tiered = meter_priced(total, meter_price, places=QUANTITY_PLACES, shared=covered)
        level = level_terms(measured.level, self.fee_fraction, self.fee_days)
        described = f"{name}: {text(total)} used, {meter_price.included} included"
        if shared is not None:
            described += f", {text(covered)} from allowance {shared.allowance}"
        return self._line(
            f"meter:{name}",
            (described if package is None else f"{described}, packages of {package.size}")
            + level.description,
            quantity=tiered.quantity,
            unit=name if package is None else f"package of {package.size} {name}",
            unit_price=tiered.unit_price,
            amount=tiered.amount * level.fraction,
            source={
                "meter": name,
                "events": measured.events,
                "total": text(total),
                "included": json_units(meter_price.included),
                **tiered.source,
                **level.source,
                **({} if shared is None else {"shared": shared.source()}),
            },
        )

    def _draft(self, draft: Draft) -> Line | None:
        return self._line(**dataclasses.asdict(draft))

    def _adjustment(self, priced: Sequence[Line]) -> Line | None:
        """A trial's credit of every line, or a discount: educational, pilot or negotiated."""
        kind = self.terms.kind
        percent = self.terms.discount_percent
        if kind == "trial":
            rate, code, description = Fraction(-1), "credit:trial", "trial credit"
        elif percent is not None:  # educational, pilot, or negotiated on a standard contract
            rate = -Fraction(percent) / 100
            label = kind if kind in DISCOUNTED_KINDS else "negotiated"
            code = f"discount:{label}"
            description = f"{label} discount, {format_amount(percent)}%"
            if self.terms.discount_reason:
                description += f": {self.terms.discount_reason}"
        else:
            return None
        positive = [line for line in priced if line.amount > 0]
        base = sum((Fraction(line.amount) for line in positive), ZERO)
        return self._line(
            code,
            description,
            quantity=base,
            unit=self.data.currency,
            unit_price=decimal(rate, RATE_MAX_PLACES),
            amount=base * rate,
            places=self.data.minor_digits,
            source={
                "kind": kind,
                "discount_percent": None if percent is None else format_amount(percent),
                "lines": [line.code for line in positive],
                **({"reason": self.terms.discount_reason} if self.terms.discount_reason else {}),
            },
        )

    def _year_to_date(self, priced: Sequence[Line]) -> YearToDate | None:
        """Under a yearly minimum: the group's contract year, what it committed up to and
        including this group, and whether the year (or the contract) ends with the group."""
        year = self.group.year
        if year is None:
            return None
        spent = sum((Fraction(line.amount) for line in priced), ZERO)
        self.committed[year.number] = self.committed.get(year.number, ZERO) + spent
        last = self.group.segments[-1]
        due = min(year.end, last.contract_end or year.end)
        fee_end = min(last.fee_end or self.group.end, self.data.period_end)
        ends = self.group.start < due <= max(self.group.end, fee_end)
        return YearToDate(year, due, self.committed[year.number], ends)

    def _bought(self) -> dict[str, int | None]:
        """The contract's bought quantities, which one-time and yearly fees may be per."""
        return {
            "seats": self.terms.contracted_seats,
            "instances": self.terms.contracted_instances,
        }

    def _window(self) -> contracted.Window:
        g = self.group
        return contracted.Window(g.start, g.end, self.seconds, self.fee_fraction, self.fee_days)

    def _line(
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
    ) -> Line | None:
        if quantity == 0 and unit_price == 0:
            return None
        if unit != self.data.currency:  # a price, not a factor of an amount: docs/billing.md
            unit_price = min_places(unit_price, self.data.minor_digits)
        return Line(
            code=code,
            description=description,
            quantity=decimal(quantity, places),
            unit=unit,
            unit_price=unit_price,
            amount=money(amount, self.data.minor_digits),
            source={  # fresh lists per line: a caller may edit one line's source
                "revisions": list(self.revisions),
                "policy_versions": list(self.versions),
                "plan": self.plan.name,
                "start": isoformat(self.group.start),
                "end": isoformat(self.group.end),
                **source,
            },
        )
