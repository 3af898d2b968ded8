"""The compiled catalog: one policy version as immutable values, defaults applied.

    Catalog
     ├── currency, minor_digits, digest
     ├── features: {name: Feature}       with `closure`, every feature it depends on
     ├── meters:   {name: Meter}
     ├── plans:    {name: Plan}          inheritance resolved
     │     ├── seats: SeatPool | None    burst: Burst | None
     │     ├── instances: InstancePool | None
     │     ├── limits: {meter: UsageLimit}
     │     └── price: Price              seat: SeatPrice | None, meters: {meter: MeterPrice}
     ├── addons:   {name: Addon}
     └── rules:    {feature: (Rule, ...)}

Everything here is frozen and its collections are tuples, frozensets and read-only mappings,
so a catalog can be shared by every request of a worker without copying. Built only by
`compiler.compile_policy`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Literal

from allotment.policy.rules import Rule

Aggregation = Literal["count", "sum", "max", "unique_count"]
SeatModel = Literal["named", "concurrent"]
Period = Literal["month", "day", "hour"]
Enforcement = Literal["hard", "soft"]
UsageBasis = Literal["peak", "average", "end"]
SeatBasis = Literal["peak", "average", "end", "contracted"]
OnOutage = Literal["deny", "allow"]


@dataclass(frozen=True)
class Feature:
    name: str
    seat_required: bool
    instance_required: bool
    guests: bool
    requires: frozenset[str]  # direct dependencies
    closure: frozenset[str]  # every feature it depends on, transitively, never itself
    meter: str | None
    on_outage: OnOutage
    description: str | None = None


@dataclass(frozen=True)
class Meter:
    name: str
    event_type: str
    aggregation: Aggregation
    property: str | None
    description: str | None = None
    corrections: bool = False  # sum only: negative quantities accepted, each one audited


@dataclass(frozen=True)
class Burst:
    extra: int
    window: timedelta


@dataclass(frozen=True)
class SeatPool:
    limit: int
    model: SeatModel
    guests: int
    burst: Burst | None  # None when the plan allows no seats over the limit
    session_ttl: timedelta | None  # concurrent seats only
    devices_per_seat: int | None = None  # named seats: live instances per seat holder


@dataclass(frozen=True)
class InstancePool:
    limit: int  # total kind weight
    kinds: Mapping[str, int]  # empty: any kind, weight 1
    lease_ttl: timedelta

    def weight(self, kind: str) -> int | None:
        """The weight of an instance of `kind`, or None when the plan does not allow it."""
        if not self.kinds:
            return 1
        return self.kinds.get(kind)


@dataclass(frozen=True)
class UsageLimit:
    meter: str
    limit: int
    period: Period
    enforcement: Enforcement


@dataclass(frozen=True)
class Tier:
    up_to: int | None  # a total count over the period; None: unbounded
    unit: Decimal


@dataclass(frozen=True)
class MeterPrice:
    meter: str
    included: int
    tiers: tuple[Tier, ...]


@dataclass(frozen=True)
class SeatPrice:
    unit: Decimal
    basis: SeatBasis
    included: int
    # basis "contracted" only (docs/billing.md, "Bought quantities"): how use above the
    # contracted quantity is measured, and its price (None: `unit`).
    overage: UsageBasis = "peak"
    overage_unit: Decimal | None = None


@dataclass(frozen=True)
class LicencePrice:
    """A per-instance licence fee per month: on the contracted quantity (basis contracted,
    with overage measured by `overage`) or on the live instances by peak, average or end."""

    unit: Decimal
    basis: SeatBasis
    overage: UsageBasis = "peak"
    overage_unit: Decimal | None = None


@dataclass(frozen=True)
class Price:
    base: Decimal
    seat: SeatPrice | None
    burst_seat_day: Decimal
    instance_hour: Decimal
    meters: Mapping[str, MeterPrice]
    instance_licence: LicencePrice | None = None


@dataclass(frozen=True)
class Plan:
    name: str
    ancestors: tuple[str, ...]  # the plan it extends first, the root last
    attributes: Mapping[str, str | int | bool]
    features: frozenset[str]
    seats: SeatPool | None
    instances: InstancePool | None
    limits: Mapping[str, UsageLimit]
    price: Price
    description: str | None = None
    grace: timedelta | None = None  # offline grace of its artifacts; None: the deployment's


@dataclass(frozen=True)
class Addon:
    name: str
    features: frozenset[str]
    price: Decimal
    description: str | None = None


@dataclass(frozen=True)
class Catalog:
    currency: str
    minor_digits: int
    digest: str
    features: Mapping[str, Feature]
    meters: Mapping[str, Meter]
    plans: Mapping[str, Plan]
    addons: Mapping[str, Addon]
    rules: Mapping[str, tuple[Rule, ...]]  # by feature, in document order

    def rules_for(self, feature: str) -> tuple[Rule, ...]:
        return self.rules.get(feature, ())
