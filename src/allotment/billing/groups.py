"""A month's segments as the groups the pricing core prices, pure (docs/billing.md).

    groups(data) → [Group, ...]   the segments clipped to the period, in time order

Adjacent segments whose priced terms are equal are merged into one group, so an amendment
that changes nothing priced changes nothing on the invoice; billing/pricing.py then gives
each group its lines. Under a yearly minimum (`price.minimum_period: year`) a segment is
first cut at its contract's anniversaries, so each group lies in one contract year.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from allotment.billing.priced import PricingInput, Segment
from allotment.contracts.years import ContractYear, contract_year, pieces
from allotment.policy.catalog import Price


@dataclass(frozen=True)
class Group:
    start: datetime
    end: datetime
    segments: tuple[Segment, ...]  # merged: equal priced terms, end to start
    year: ContractYear | None = None  # a yearly minimum's plan: the contract year it lies in

    @property
    def terms(self) -> Segment:
        return self.segments[0]


def _priced_terms(segment: Segment) -> tuple[Any, ...]:
    """What a segment's lines depend on besides time: equal terms price alike."""
    prices: Price = segment.plan.price
    bought = tuple(sorted((addon.name, addon.priced_terms) for addon in segment.addons))
    return (
        segment.plan.name,
        prices,
        bought,
        segment.addon_quantities,
        segment.kind,
        segment.discount_percent,
        segment.discount_reason,
        segment.seat_limit,
        segment.seat_model,
        segment.contracted_seats,
        segment.contracted_instances,
    )


def _by_year(segments: Sequence[Segment]) -> list[tuple[Segment, ContractYear | None]]:
    """Each segment whose plan has a yearly minimum cut at its contract's anniversaries, so
    each part lies in one contract year (its committed lines count toward that year's)."""
    out: list[tuple[Segment, ContractYear | None]] = []
    for segment in segments:
        starts_at = segment.contract_start
        if segment.plan.price.minimum_period != "year" or starts_at is None:
            out.append((segment, None))
            continue
        parts = pieces(starts_at, segment.start, segment.end) or [
            (contract_year(starts_at, segment.start), segment.start, segment.end)
        ]
        for index, (year, a, b) in enumerate(parts):
            last = index == len(parts) - 1
            fee_end = segment.fee_end if last else None
            out.append((dataclasses.replace(segment, start=a, end=b, fee_end=fee_end), year))
    return out


def groups(data: PricingInput) -> list[Group]:
    """The segments clipped to the period (empty ones dropped), adjacent ones with equal
    priced terms (and contract year, under a yearly minimum) merged."""
    merged: list[Group] = []
    previous_end: datetime | None = None
    for segment, year in _by_year(data.segments):
        if segment.end < segment.start:
            raise ValueError(f"revision {segment.revision}'s segment ends before it starts")
        if previous_end is not None and segment.start < previous_end:
            raise ValueError(
                f"revision {segment.revision}'s segment overlaps the one before it; "
                "segments are ordered and non-overlapping"
            )
        previous_end = segment.end
        start = max(segment.start, data.period_start)
        end = min(segment.end, data.period_end)
        if end <= start:
            continue
        last = merged[-1] if merged else None
        if (
            last is not None
            and last.end == start
            and last.year == year
            and _priced_terms(last.terms) == _priced_terms(segment)
        ):
            merged[-1] = Group(last.start, end, (*last.segments, segment), year)
        else:
            merged.append(Group(start, end, (segment,), year))
    return merged
