"""Reconciliation, pure: what was enforced over a period against what the contract allows.

For each segment (billing/data.py): the seat limit, the peak held and the seat-days over it,
with the burst episodes behind them; the instance limit and the peak weight; every limited
meter's use against its limit (month limits over the segment, day and hour limits at their
busiest day or hour); and the overrides in force. `discrepancies` says in words each place
where the held or used figure passed the contract's — a downgrade below the seats held, a
soft limit passed, an override that granted more — so finance sees it before customers do.
`passed` lists the places where enforced use passed the contracted terms (seats, instances, a
meter), each once per pool or meter: billing/service.py announces each as
reconciliation.discrepancy (docs/webhooks.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from allotment.billing.data import Gathered
from allotment.billing.measure import ZERO, steps, weighted
from allotment.billing.priced import Interval, MeterTotal, Segment
from allotment.contracts.addons import bought, total
from allotment.contracts.limits import instance_limits
from allotment.contracts.years import pieces
from allotment.kit.clock import isoformat
from allotment.policy.catalog import UsageLimit

DAY = Decimal(86400)
MeterTotals = Callable[[datetime, datetime, str], MeterTotal]


def sweep(
    intervals: Sequence[Interval], start: datetime, end: datetime, limit: int | None
) -> tuple[int, Decimal]:
    """(peak weight held in [start, end), weight-days held over `limit`): the same held-weight
    steps pricing bills seats from (billing/measure.py)."""
    pieces, _ = steps(intervals, start, end)
    peak = max((held for _, held in pieces), default=0)
    over = ZERO
    if limit is not None:
        over = weighted(pieces, above=limit)
    return peak, Decimal(over.numerator) / Decimal(over.denominator) / DAY


def _limits(segment: Segment, gathered: Gathered) -> dict[str, UsageLimit]:
    """The meter limits of the segment's start, as `contracts.limits.effective_limits` gives
    them: overrides replace the plan's limit, add-ons raise either."""
    terms = gathered.terms[segment.revision]
    limits = dict(segment.plan.limits)
    for override in terms.overrides:
        if override.meter is None or override.limit is None:
            continue
        if override.expires_at is not None and override.expires_at <= segment.start:
            continue
        base = limits.get(override.meter)
        limits[override.meter] = UsageLimit(
            override.meter,
            override.limit,
            base.period if base else "month",
            base.enforcement if base else "hard",
        )
    raised = total(bought(terms, {addon.name: addon for addon in segment.addons})).limits
    for meter, units in raised.items():
        if meter in limits:
            limits[meter] = replace(limits[meter], limit=limits[meter].limit + units)
    return limits


def _busiest(total: MeterTotals, segment: Segment, meter: str, period: str) -> Decimal:
    """The meter's use in the segment, or for day and hour limits its busiest day or hour;
    for a yearly limit, its contract year's use to the segment's end (the greater, when an
    anniversary cuts the segment)."""
    if period == "month":
        return total(segment.start, segment.end, meter).quantity
    if period == "year":  # per contract year the segment touches: the greatest
        if segment.contract_start is None:
            return total(segment.start, segment.end, meter).quantity
        return max(
            total(year.start, upper, meter).quantity
            for year, _, upper in pieces(segment.contract_start, segment.start, segment.end)
        )
    step = timedelta(days=1) if period == "day" else timedelta(hours=1)
    cursor = segment.start.replace(minute=0, second=0, microsecond=0)
    if period == "day":
        cursor = cursor.replace(hour=0)
    busiest = Decimal(0)
    while cursor < segment.end:
        busiest = max(busiest, total(cursor, cursor + step, meter).quantity)
        cursor += step
    return busiest


def report(gathered: Gathered, bursts: Sequence[Any]) -> dict[str, Any]:
    seats: list[dict[str, Any]] = []
    instances: list[dict[str, Any]] = []
    meters: list[dict[str, Any]] = []
    overrides: list[dict[str, Any]] = []
    found: list[str] = []
    passed: dict[str, dict[str, Any]] = {}  # by pool or meter: the first place it passed
    totals = gathered.meters()
    for segment in gathered.segments:
        where = (
            f"revision {segment.revision} ({isoformat(segment.start)} to {isoformat(segment.end)})"
        )
        if segment.seat_limit is not None:
            peak, over = sweep(gathered.seats, segment.start, segment.end, segment.seat_limit)
            episodes = [
                {
                    "started_at": isoformat(b.started_at),
                    "window_ends_at": isoformat(b.window_ends_at),
                    "ended_at": None if b.ended_at is None else isoformat(b.ended_at),
                }
                for b in bursts
                if b.started_at < segment.end and (b.ended_at is None or b.ended_at > segment.start)
            ]
            seats.append(
                {
                    "revision": segment.revision,
                    "model": segment.seat_model,
                    "limit": segment.seat_limit,
                    "peak": peak,
                    "seat_days_over_limit": str(over.quantize(Decimal("0.0001"))),
                    "burst_episodes": episodes,
                }
            )
            if peak > segment.seat_limit:
                found.append(
                    f"seats: {peak} held at peak over the limit of {segment.seat_limit} in {where}"
                )
                passed.setdefault(
                    "seats", {"pool": "seats", "limit": segment.seat_limit, "used": peak}
                )
        pool = instance_limits(
            gathered.terms[segment.revision],
            segment.plan,
            addons={addon.name: addon for addon in segment.addons},
        )
        if pool is not None:
            peak_weight, _ = sweep(gathered.instances, segment.start, segment.end, pool.limit)
            instances.append(
                {"revision": segment.revision, "limit": pool.limit, "peak_weight": peak_weight}
            )
            if peak_weight > pool.limit:
                found.append(
                    f"instances: weight {peak_weight} at peak over the limit of {pool.limit} "
                    f"in {where}"
                )
                passed.setdefault(
                    "instances", {"pool": "instances", "limit": pool.limit, "used": peak_weight}
                )
        for name, limit in sorted(_limits(segment, gathered).items()):
            used = _busiest(totals, segment, name, limit.period)
            status = "within"
            if used > limit.limit:
                status = f"over_{limit.enforcement}"
                found.append(
                    f"meter {name}: {used} used, over its {limit.enforcement} limit of "
                    f"{limit.limit} per {limit.period} in {where}"
                )
                passed.setdefault(
                    f"meter:{name}",
                    {
                        "meter": name,
                        "limit": limit.limit,
                        "used": str(used),
                        "period": limit.period,
                        "enforcement": limit.enforcement,
                    },
                )
            meters.append(
                {
                    "revision": segment.revision,
                    "meter": name,
                    "limit": limit.limit,
                    "period": limit.period,
                    "enforcement": limit.enforcement,
                    "used": str(used),
                    "status": status,
                }
            )
        for override in gathered.terms[segment.revision].overrides:
            if override.expires_at is None or override.expires_at > segment.start:
                overrides.append({"revision": segment.revision, **override.to_json()})
                found.append(f"override in force in {where}: {override.reason}")
    for start, end, why in gathered.unpriced:
        found.append(
            f"nothing priced {isoformat(start)} to {isoformat(end)}: {why}; no line covers it"
        )
    return {
        "seats": seats,
        "instances": instances,
        "meters": meters,
        "overrides": overrides,
        "discrepancies": found,
        "passed": passed,
    }
