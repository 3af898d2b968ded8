"""The compiled catalog: one policy version as immutable values, defaults applied.

    Catalog
     ├── currency, minor_digits, digest
     ├── features: {name: Feature}       with `closure`, every feature it depends on
     ├── meters:   {name: Meter}
     ├── plans:    {name: Plan}          inheritance resolved
     │     ├── seats: SeatPool | None    burst: Burst | None
     │     ├── instances: InstancePool | None
     │     ├── limits: {meter: UsageLimit}
     │     └── price: Price              seat: SeatPrice | None, meters: {meter: MeterPrice},
     │                                   instance_kinds, minimum, one_time, credits
     ├── addons:   {name: Addon}         pricing: AddonPrice | None, raises: Raises
     └── rules:    {feature: (Rule, ...)}

Everything here is frozen and its collections are tuples, frozensets and read-only mappings,
so a catalog can be shared by every request of a worker without copying. Built only by
`compiler.compile_policy`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from types import MappingProxyType
from typing import Any, Literal

from allotment.policy.meter_filter import MeterFilter
from allotment.policy.rules import Rule

Aggregation = Literal["count", "sum", "max", "unique_count", "average"]
SeatModel = Literal["named", "concurrent"]
Period = Literal["year", "month", "day", "hour"]
Interval = Literal["month", "year"]
Enforcement = Literal["hard", "soft"]
UsageBasis = Literal["peak", "average", "end"]
SeatBasis = Literal["peak", "average", "end", "contracted"]
# per_instance add-ons also: the 95th or 99th percentile of the hourly peaks of live leases
AddonBasis = Literal["peak", "average", "end", "contracted", "p95", "p99"]
OnOutage = Literal["deny", "allow"]
TierMode = Literal["graduated", "volume"]
BoughtQuantity = Literal["seats", "instances"]  # a contract's quantities.<key>


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
    # count, sum, max: a period's value is this nearest-rank percentile of its hourly values
    percentile: Decimal | None = None
    # CEL over the event's `data`: only events it holds for are counted (docs/usage.md)
    filter: MeterFilter | None = None
    multiplier: Decimal | None = None  # each event's quantity times this; None: 1

    def is_level(self) -> bool:
        """A level (an average or a percentile), not a use that adds up over a period: it
        takes no usage limit and is priced per month, prorated like a fee (docs/billing.md)."""
        return self.aggregation == "average" or self.percentile is not None

    def counts(self, data: Any) -> bool:
        """Whether an event with `data` is counted by this meter (its filter holds)."""
        return self.filter is None or self.filter.matches(data)


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
    flat: Decimal | None = None  # charged once when the tier is reached (docs/billing.md)


@dataclass(frozen=True)
class Package:
    size: int  # units per package
    price: Decimal  # per started package


@dataclass(frozen=True)
class MeterPrice:
    meter: str
    included: int | Decimal  # a decimal only when the policy writes one ("0.5")
    tiers: tuple[Tier, ...]  # empty when `package` prices the meter
    mode: TierMode = "graduated"
    package: Package | None = None  # priced per started package of `size` units instead
    period: Interval = "month"  # year: included and tiers count over the contract year


@dataclass(frozen=True)
class SharedAllowance:
    """Included units a month shared by several meters (`price.allowances`): each meter in
    `draw` order takes what it can, a unit of it using `rate` allowance units."""

    name: str
    included: int | Decimal
    draw: tuple[tuple[str, int | Decimal], ...]  # (meter, rate)


@dataclass(frozen=True)
class SeatPrice:
    unit: Decimal | None  # None: `tiers` price the seats
    basis: SeatBasis
    included: int
    tiers: tuple[Tier, ...] = ()
    mode: TierMode = "graduated"
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


# What a wallet pays when a plan does not say (docs/billing.md, "Credit wallets"): the usage
# lines. An entry is a line code, or a prefix ending in `*`.
DEFAULT_CREDITS_APPLY_TO: tuple[str, ...] = ("meter:*", "instances", "instances:*", "burst")


@dataclass(frozen=True)
class Credits:
    """A plan's prepaid credits (`price.credits`)."""

    monthly: Decimal | None = None  # granted at the start of each month in force
    rollover: int = 0  # months a monthly grant stays valid after its own
    applies_to: tuple[str, ...] = DEFAULT_CREDITS_APPLY_TO
    enforce: bool = False  # deny metered features the wallet pays once it is empty


NO_CREDITS = Credits()


@dataclass(frozen=True)
class Price:
    base: Decimal
    seat: SeatPrice | None
    burst_seat_day: Decimal
    instance_hour: Decimal
    meters: Mapping[str, MeterPrice]
    # Per lease-hour of each kind named, unweighted; other kinds: instance_hour × weight.
    instance_kinds: Mapping[str, Decimal] = field(default_factory=dict)
    minimum: Decimal | None = None  # the least a month is billed, before adjustments
    minimum_period: Interval = "month"  # year: the least a contract year is billed
    allowances: tuple[SharedAllowance, ...] = ()  # by name
    one_time: Mapping[str, Decimal] = field(default_factory=dict)  # name → fee, once
    # name → the bought quantity a one-time fee is charged per (docs/billing.md)
    one_time_per: Mapping[str, BoughtQuantity] = field(default_factory=dict)
    instance_licence: LicencePrice | None = None
    interval: Interval = "month"  # year: `base` is a year's fee (billing/annual.py)
    credits: Credits | None = None  # the plan's wallet terms; None: defaults (NO_CREDITS)


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
    # Its prices in other currencies than the catalog's, by ISO 4217 code (docs/policy.md).
    price_lists: Mapping[str, Price] = field(default_factory=dict)


AddonPricing = Literal["seat", "instance", "unit", "percent"]
_NOTHING: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True)
class AddonPrice:
    """How an add-on is priced when not by its monthly `price` (docs/billing.md, addon lines)."""

    kind: AddonPricing
    unit: Decimal  # per seat or instance a month; per unit of `meter`; the percentage
    basis: AddonBasis | None = None  # seat (None: the plan's seat basis) and instance
    meter: str | None = None  # unit
    of: tuple[str, ...] = ()  # percent: the line codes it is a percentage of


@dataclass(frozen=True)
class Raises:
    """What one unit of an add-on adds to a contract's allowances (× the quantity bought)."""

    seats: int = 0
    instances: int = 0
    # meter → units added to its limit
    limits: Mapping[str, int] = field(default_factory=lambda: _NOTHING)
    # meter → units added to the free units of the line that prices it
    included: Mapping[str, int | Decimal] = field(default_factory=lambda: _NOTHING)


NO_RAISES = Raises()


@dataclass(frozen=True)
class Addon:
    name: str
    features: frozenset[str]
    price: Decimal  # the monthly fee (0 when priced otherwise)
    description: str | None = None
    interval: Interval = "month"  # year: `price` is a year's fee
    price_lists: Mapping[str, Decimal] = field(default_factory=dict)  # currency → price
    pricing: AddonPrice | None = None  # None: priced by `price` alone
    raises: Raises = NO_RAISES
    per: BoughtQuantity | None = None  # a yearly fee × the contract's bought quantity

    @property
    def priced_terms(self) -> tuple[object, ...]:
        """What its invoice lines and allowances depend on (not its name or features)."""
        return (self.price, self.interval, self.pricing, self.raises, self.per)


@dataclass(frozen=True)
class Surge:
    """A rise past `factor` times the baseline of `window` ago, by at least `min`."""

    factor: Decimal
    window: timedelta
    min: int

    def surged(self, *, now: int | Decimal, then: int | Decimal) -> bool:
        return now - then >= self.min and now > self.factor * then


@dataclass(frozen=True)
class Alerts:
    """The policy's `alerts` section, defaults filled (docs/policy.md, `alerts`)."""

    usage_thresholds: tuple[int, ...] = (80, 100)  # percentages of a meter's limit, ascending
    instance_surge: Surge | None = None
    usage_surge: Mapping[str, Surge] = field(default_factory=lambda: MappingProxyType({}))
    trial_ending_days: tuple[int, ...] = (7, 1)  # descending
    renewal_upcoming_days: tuple[int, ...] = (30, 7)  # descending


DEFAULT_ALERTS = Alerts()


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
    alerts: Alerts = DEFAULT_ALERTS

    def rules_for(self, feature: str) -> tuple[Rule, ...]:
        return self.rules.get(feature, ())
