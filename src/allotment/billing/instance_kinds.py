"""Instance pricing by kind, pure: one `instances:<kind>` line per kind the plan prices in
`price.instances.kinds`, its lease-hours unweighted at the kind's rate (docs/billing.md).

The kind weights of `instances.kinds` are capacity (how much of the pool an instance takes);
these rates are price, independent of them. Kinds the plan does not price here stay in the
`instances` line, lease-hours × weight × `instance_hour`, as before.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from decimal import Decimal
from fractions import Fraction
from typing import Protocol

from allotment.billing.drafts import Draft
from allotment.billing.measure import SECONDS_PER_HOUR, ZERO, clip, seconds, text


class Lease(Protocol):
    """An instance lease [start, end) of a kind (billing/pricing.Interval)."""

    @property
    def start(self) -> datetime: ...
    @property
    def end(self) -> datetime | None: ...
    @property
    def weight(self) -> int: ...
    @property
    def kind(self) -> str | None: ...


def kind_lines(
    leases: Iterable[Lease], start: datetime, end: datetime, rates: Mapping[str, Decimal]
) -> list[Draft]:
    """One draft per priced kind, by kind name, for the leases' hours in [start, end)."""
    held: dict[str, list[Fraction]] = {kind: [ZERO, ZERO] for kind in rates}  # intervals, hours
    for lease in leases:
        if lease.kind not in held:
            continue
        clipped = clip(lease, start, end)
        if clipped is None:
            continue
        entry = held[lease.kind]
        entry[0] += 1
        entry[1] += seconds(clipped[1] - clipped[0]) / SECONDS_PER_HOUR
    drafts = []
    for kind in sorted(rates):
        intervals, hours = held[kind]
        rate = rates[kind]
        drafts.append(
            Draft(
                code=f"instances:{kind}",
                description=f"{kind} instance lease-hours",
                quantity=hours,
                unit=f"{kind} instance-hour",
                unit_price=rate,
                amount=hours * Fraction(rate),
                source={"kind": kind, "intervals": int(intervals), "hours": text(hours)},
            )
        )
    return drafts
