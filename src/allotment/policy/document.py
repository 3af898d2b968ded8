"""The policy document as written: pydantic models for the catalog of docs/policy.md.

    PolicyDocument
     ├── currency                 ISO 4217 code
     ├── features: {name: FeatureSpec}
     ├── meters:   {name: MeterSpec}
     ├── plans:    {name: PlanSpec}    seats, instances, limits, price (partial when `extends`)
     ├── addons:   {name: AddonSpec}
     ├── rules:    [RuleSpec]          CEL conditions on a feature
     └── alerts:   AlertsSpec          usage thresholds, surges, trial and renewal notices
    fill_empty_entries(raw)            `name:` with nothing after it is the entry `name: {}`
    canonical_form(document)           → plain JSON values: what is stored and digested

The price blocks (a plan's `price` and `price_lists`, an add-on's per-seat, per-instance and
per-unit prices) are modelled in price_specs.py; the base model and the field types every
model shares (names, counts, attribute values) in spec.py.

These models check what one value can say about itself: unknown keys, types, name syntax,
durations, amounts. What needs the whole document — references, cycles, inheritance, CEL —
is checked by `validation.validate`, the one entry point for untrusted input, which also
passes the currency to the amount validators. Every field of a plan's blocks is optional
here because a plan that `extends` another writes only what it changes; the required ones
are checked after inheritance is resolved.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from allotment.policy.durations import Duration
from allotment.policy.money import ListCurrency, Money, Percentage, PriceListsGuard
from allotment.policy.price_specs import (
    AddonInstancePriceSpec,
    AddonSeatPriceSpec,
    AddonUnitPriceSpec,
    Interval,
    PriceSpec,
)
from allotment.policy.quantities import Multiplier, Percentile, SurgeFactor, Units
from allotment.policy.spec import (
    AttributeValue,
    BoughtQuantity,
    Currency,
    FeatureEntry,
    Name,
    NonNegative,
    Positive,
    Spec,
)


class FeatureSpec(Spec):
    seat: Literal["required", "optional"] = Field(
        default="optional", description="required: the subject must hold a seat."
    )
    instance: Literal["required", "optional"] = Field(
        default="optional", description="required: the instance must hold a live lease."
    )
    guests: bool = Field(default=False, description="Whether a guest seat unlocks it.")
    requires: list[Name] = Field(
        default_factory=list, description="Features that must be entitled too."
    )
    meter: Name | None = Field(default=None, description="The meter that counts its use.")
    on_outage: Literal["deny", "allow"] = Field(
        default="deny", description="The answer when the store is down and nothing is cached."
    )
    description: str | None = None


class MeterSpec(Spec):
    event_type: str = Field(min_length=1, description="The CloudEvents `type` it counts.")
    aggregation: Literal["count", "sum", "max", "unique_count", "average"]
    property: str | None = Field(
        default=None,
        min_length=1,
        description="The key in the event's `data` (sum, max, unique_count, average; not count).",
    )
    percentile: Percentile | None = Field(
        default=None,
        description="count, sum or max: a period's value is this nearest-rank percentile of "
        "its hourly values (docs/usage.md).",
    )
    filter: str | None = Field(
        default=None,
        min_length=1,
        description="CEL over `data`: only events for which it is true are counted.",
    )
    multiplier: Multiplier | None = Field(
        default=None, description="Each event's quantity times this (default 1)."
    )
    corrections: bool | None = Field(
        default=None,
        description="sum only: true accepts negative quantities (corrections, each audited); "
        "default false, a negative quantity is rejected.",
    )
    description: str | None = None

    @field_validator("corrections")
    @classmethod
    def _false_is_not_written(cls, value: bool | None) -> bool | None:
        # false is the default: left out of the canonical form, so a document written before
        # `corrections` existed, or one spelling out false, keeps its digest.
        return value or None


class BurstSpec(Spec):
    extra: NonNegative | None = Field(default=None, description="Seats allowed over the limit.")
    window: Duration | None = Field(
        default=None, description="How long, from the first assignment over the limit."
    )


class SeatsSpec(Spec):
    limit: NonNegative | None = None
    model: Literal["named", "concurrent"] | None = Field(
        default=None, description="named (default): assigned seats; concurrent: live sessions."
    )
    guests: NonNegative | None = Field(default=None, description="Guest seats (default 0).")
    burst: BurstSpec | None = None
    session_ttl: Duration | None = Field(
        default=None, description="Concurrent seats: a session's lease (default 15m)."
    )
    devices_per_seat: Positive | None = Field(
        default=None,
        description="Named seats: live instances a seat holder may register under its "
        "subject (docs/seats.md, Devices per seat); omitted: no per-seat cap.",
    )


class InstancesSpec(Spec):
    limit: NonNegative | None = Field(default=None, description="Total kind weight allowed.")
    kinds: dict[Name, Positive] | None = Field(
        default=None, description="Kind → weight; when given, only these kinds may register."
    )
    lease_ttl: Duration | None = Field(default=None, description="Lease length (default 10m).")


class LimitSpec(Spec):
    limit: NonNegative | None = None
    period: Literal["year", "month", "day", "hour"] | None = Field(
        default=None, description="Default month; year: the contract year (docs/contracts.md)."
    )
    enforcement: Literal["hard", "soft"] | None = Field(default=None, description="Default hard.")


class PlanSpec(Spec):
    extends: Name | None = Field(default=None, description="The plan this one starts from.")
    attributes: dict[Name, AttributeValue] | None = None
    features: list[FeatureEntry] | None = None
    seats: SeatsSpec | None = None
    instances: InstancesSpec | None = None
    limits: dict[Name, LimitSpec] | None = None
    price: PriceSpec | None = None
    price_lists: Annotated[dict[ListCurrency, PriceSpec], PriceListsGuard] | None = Field(
        default=None,
        description="Currency → the plan's whole price in that currency (fees to its minor "
        "unit), for contracts in another currency than the document's.",
    )
    grace: Duration | None = Field(
        default=None,
        description="Offline grace: how long after a signed artifact's expiry access still "
        "holds (with the warning grace_period); at most 30d (docs/artifacts.md).",
    )
    description: str | None = None

    @field_validator("grace")
    @classmethod
    def _grace_within_bounds(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and value > MAX_GRACE:
            raise ValueError("grace is at most 30d")
        return value


MAX_GRACE = timedelta(days=30)


class AddonRaisesSpec(Spec):
    """What one unit of the add-on adds to the contract's allowances (× its quantity)."""

    seats: NonNegative | None = Field(default=None, description="Added to the seat limit.")
    instances: NonNegative | None = Field(
        default=None, description="Added to the instance limit (total kind weight)."
    )
    limits: dict[Name, NonNegative] | None = Field(
        default=None, description="Meter → units added to its limit per period."
    )
    included: dict[Name, Units] | None = Field(
        default=None,
        description="Meter → units added to the free units of its line (an integer, or a "
        'decimal as "0.5").',
    )


class AddonSpec(Spec):
    features: list[Name] = Field(default_factory=list)
    price: Money | None = Field(default=None, description="Monthly fee, prorated by active days.")
    interval: Interval | None = Field(
        default=None,
        description="Of `price` or `percent`: month (default), or year: a year's fee, or a "
        "year's percentage of yearly and one-time lines.",
    )
    per: BoughtQuantity | None = Field(
        default=None,
        description="A yearly `price` times the contract's quantities.seats or "
        "quantities.instances.",
    )
    price_lists: Annotated[dict[ListCurrency, Money], PriceListsGuard] | None = Field(
        default=None, description="Currency → its price in that currency."
    )
    per_seat: AddonSeatPriceSpec | None = None
    per_instance: AddonInstancePriceSpec | None = None
    per_unit: AddonUnitPriceSpec | None = None
    percent: Percentage | None = Field(
        default=None, description="A percentage of the lines named in `of`."
    )
    of: list[str] | None = Field(
        default=None,
        min_length=1,
        description="Line codes the percentage is of: base, seats, burst, instances, "
        "meter:<meter>, addon:<add-on>; with interval year, one_time:<fee> and yearly "
        "addon:<add-on>.",
    )
    raises: AddonRaisesSpec | None = None
    description: str | None = None


class RuleSpec(Spec):
    feature: Name
    when: str = Field(min_length=1, description="CEL: the feature is allowed only while true.")
    reason: Name = Field(description="The reason code a denial carries.")
    description: str | None = None


ThresholdPercent = Annotated[int, Field(gt=0, le=1000)]
DaysBefore = Annotated[int, Field(gt=0, le=3660)]


class SurgeSpec(Spec):
    factor: SurgeFactor = Field(description="The rise must exceed this many times the baseline.")
    window: Duration = Field(description="How far back the baseline is taken.")
    min: Positive = Field(default=1, description="The smallest rise that counts (default 1).")


class AlertsSpec(Spec):
    """When the service announces what a customer is about to run into (docs/policy.md,
    `alerts`). Omitted lists take their defaults; an empty list turns that alert off."""

    usage_thresholds: list[ThresholdPercent] | None = Field(
        default=None, description="Percentages of a meter's limit (default [80, 100])."
    )
    instance_surge: SurgeSpec | None = Field(
        default=None, description="Live instances rising fast (default: off)."
    )
    usage_surge: dict[Name, SurgeSpec] | None = Field(
        default=None, description="Per meter: its use over a window rising fast (default: off)."
    )
    trial_ending_days: list[DaysBefore] | None = Field(
        default=None, description="Days before a trial ends (default [7, 1])."
    )
    renewal_upcoming_days: list[DaysBefore] | None = Field(
        default=None, description="Days before a term ends (default [30, 7])."
    )


NAMED_SECTIONS = ("features", "meters", "plans", "addons")


def fill_empty_entries(raw: Mapping[str, Any]) -> dict[str, Any]:
    """`reports:` with nothing after it (a null in YAML) is the entry `reports: {}`."""
    filled = dict(raw)
    for section in NAMED_SECTIONS:
        entries = filled.get(section)
        if isinstance(entries, Mapping):
            filled[section] = {name: {} if spec is None else spec for name, spec in entries.items()}
    return filled


class PolicyDocument(Spec):
    """A whole policy: the catalog one policy version publishes."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        frozen=True,
        title="Allotment policy",
        json_schema_extra={"$schema": "https://json-schema.org/draft/2020-12/schema"},
    )

    currency: Currency = Field(description="ISO 4217 code, such as USD.")
    features: dict[Name, FeatureSpec] = Field(default_factory=dict)
    meters: dict[Name, MeterSpec] = Field(default_factory=dict)
    plans: dict[Name, PlanSpec] = Field(default_factory=dict)
    addons: dict[Name, AddonSpec] = Field(default_factory=dict)
    rules: list[RuleSpec] = Field(default_factory=list)
    alerts: AlertsSpec | None = None

    @model_validator(mode="before")
    @classmethod
    def _empty_entries(cls, value: Any) -> Any:
        return fill_empty_entries(value) if isinstance(value, Mapping) else value


def canonical_form(document: PolicyDocument) -> dict[str, Any]:
    """The document as plain JSON values, defaults filled and nulls dropped.

    Durations come out in their canonical unit and amounts as written; two documents that
    mean the same (key order, YAML or JSON, defaults spelled out or not) give the same form.
    """
    return document.model_dump(mode="json", exclude_none=True)
