"""The policy compiler: a validated document in, an immutable `Catalog` out, with no I/O.

    compile_policy(document) → Catalog   inheritance resolved, defaults applied, closures
                                         computed, every rule's CEL compiled once
    digest(document)         → str       SHA-256 of the canonical form: same meaning, same digest

Compile a document that `validation.validate` accepted; the compiler guards only what would
otherwise go wrong silently (a broken `extends` chain, a missing required value) and
raises PolicyCompileError for it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import timedelta
from decimal import Decimal
from types import MappingProxyType
from typing import Any, TypeVar

from allotment.kit.jsonx import canonical
from allotment.policy.catalog import (
    DEFAULT_ALERTS,
    DEFAULT_CREDITS_APPLY_TO,
    NO_RAISES,
    Addon,
    AddonPrice,
    Alerts,
    Burst,
    Catalog,
    Credits,
    Feature,
    InstancePool,
    LicencePrice,
    Meter,
    MeterPrice,
    Package,
    Plan,
    Price,
    Raises,
    SeatModel,
    SeatPool,
    SeatPrice,
    SharedAllowance,
    Surge,
    Tier,
    UsageLimit,
)
from allotment.policy.document import (
    AddonSpec,
    AlertsSpec,
    PolicyDocument,
    SurgeSpec,
    canonical_form,
)
from allotment.policy.graph import closures
from allotment.policy.inheritance import InheritanceError, ResolvedPlan, resolve_plans
from allotment.policy.meter_filter import compile_filter
from allotment.policy.money import minor_digits
from allotment.policy.rules import Rule

DEFAULT_LEASE_TTL = timedelta(minutes=10)
DEFAULT_SESSION_TTL = timedelta(minutes=15)
ZERO = Decimal("0")

V = TypeVar("V")


class PolicyCompileError(ValueError):
    """The document was not validated, and is not compilable as it stands."""


def digest(document: PolicyDocument) -> str:
    """Hex SHA-256 of the document's canonical JSON (sorted keys, defaults filled)."""
    return hashlib.sha256(canonical(canonical_form(document)).encode()).hexdigest()


def compile_policy(document: PolicyDocument) -> Catalog:
    try:
        resolved = resolve_plans(document.plans)
    except InheritanceError as exc:
        raise PolicyCompileError(str(exc)) from exc
    rules: dict[str, list[Rule]] = {}
    for spec in document.rules:
        try:
            rule = Rule.compile(feature=spec.feature, reason=spec.reason, source=spec.when)
        except ValueError as exc:
            raise PolicyCompileError(f"rule on '{spec.feature}': {exc}") from exc
        rules.setdefault(spec.feature, []).append(rule)
    return Catalog(
        currency=document.currency,
        minor_digits=minor_digits(document.currency),
        digest=digest(document),
        features=_features(document),
        meters=_frozen(
            {
                name: Meter(
                    name=name,
                    event_type=spec.event_type,
                    aggregation=spec.aggregation,
                    property=spec.property,
                    description=spec.description,
                    corrections=spec.corrections is True,
                    percentile=_decimal(spec.percentile),
                    filter=None if spec.filter is None else compile_filter(spec.filter),
                    multiplier=_decimal(spec.multiplier),
                )
                for name, spec in document.meters.items()
            }
        ),
        plans=_frozen(
            {
                name: _plan(plan, description=document.plans[name].description)
                for name, plan in resolved.items()
            }
        ),
        addons=_frozen({name: _addon(name, spec) for name, spec in document.addons.items()}),
        rules=_frozen({feature: tuple(found) for feature, found in rules.items()}),
        alerts=_alerts(document.alerts),
    )


def _surge(spec: SurgeSpec) -> Surge:
    return Surge(factor=Decimal(spec.factor), window=spec.window, min=spec.min)


def _alerts(spec: AlertsSpec | None) -> Alerts:
    if spec is None:
        return DEFAULT_ALERTS
    default = DEFAULT_ALERTS
    return Alerts(
        usage_thresholds=default.usage_thresholds
        if spec.usage_thresholds is None
        else tuple(sorted(set(spec.usage_thresholds))),
        instance_surge=None if spec.instance_surge is None else _surge(spec.instance_surge),
        usage_surge=_frozen({m: _surge(s) for m, s in (spec.usage_surge or {}).items()}),
        trial_ending_days=default.trial_ending_days
        if spec.trial_ending_days is None
        else tuple(sorted(set(spec.trial_ending_days), reverse=True)),
        renewal_upcoming_days=default.renewal_upcoming_days
        if spec.renewal_upcoming_days is None
        else tuple(sorted(set(spec.renewal_upcoming_days), reverse=True)),
    )


def _addon(name: str, spec: AddonSpec) -> Addon:
    pricing: AddonPrice | None = None
    if spec.per_seat is not None:
        pricing = AddonPrice("seat", spec.per_seat.unit, basis=spec.per_seat.basis)
    elif spec.per_instance is not None:
        pricing = AddonPrice("instance", spec.per_instance.unit, spec.per_instance.basis or "peak")
    elif spec.per_unit is not None:
        pricing = AddonPrice("unit", spec.per_unit.unit, meter=spec.per_unit.meter)
    elif spec.percent is not None:
        pricing = AddonPrice("percent", spec.percent, of=tuple(spec.of or ()))
    raises = spec.raises
    return Addon(
        name=name,
        features=frozenset(spec.features),
        price=spec.price if spec.price is not None else ZERO,
        description=spec.description,
        interval=spec.interval or "month",
        price_lists=_frozen(spec.price_lists or {}),
        pricing=pricing,
        per=spec.per,
        raises=NO_RAISES
        if raises is None
        else Raises(
            seats=raises.seats or 0,
            instances=raises.instances or 0,
            limits=_frozen(raises.limits or {}),
            included=_frozen(raises.included or {}),
        ),
    )


def _frozen(mapping: Mapping[str, V]) -> Mapping[str, V]:
    # Sorted so iteration order does not depend on how the document was written.
    return MappingProxyType({key: mapping[key] for key in sorted(mapping)})


def _features(document: PolicyDocument) -> Mapping[str, Feature]:
    dependencies = closures({name: spec.requires for name, spec in document.features.items()})
    return _frozen(
        {
            name: Feature(
                name=name,
                seat_required=spec.seat == "required",
                instance_required=spec.instance == "required",
                guests=spec.guests,
                requires=frozenset(spec.requires),
                closure=dependencies[name],
                meter=spec.meter,
                on_outage=spec.on_outage,
                description=spec.description,
            )
            for name, spec in document.features.items()
        }
    )


def _plan(resolved: ResolvedPlan, *, description: str | None) -> Plan:
    settings = resolved.settings
    where = f"plans.{resolved.name}"
    limits = _block(settings, "limits")
    return Plan(
        name=resolved.name,
        ancestors=resolved.ancestors,
        attributes=_frozen(_block(settings, "attributes")),
        features=resolved.features,
        seats=_seats(settings.get("seats"), where=f"{where}.seats"),
        instances=_instances(settings.get("instances"), where=f"{where}.instances"),
        limits=_frozen(
            {
                meter: UsageLimit(
                    meter=meter,
                    limit=_required(limit, "limit", where=f"{where}.limits.{meter}"),
                    period=limit.get("period") or "month",
                    enforcement=limit.get("enforcement") or "hard",
                )
                for meter, limit in limits.items()
                if limit is not None
            }
        ),
        price=_price(_block(settings, "price"), where=f"{where}.price"),
        description=description,
        grace=settings.get("grace"),
        price_lists=_frozen(
            {
                currency: _price(dict(block), where=f"{where}.price_lists.{currency}")
                for currency, block in _block(settings, "price_lists").items()
                if isinstance(block, Mapping)
            }
        ),
    )


def _block(settings: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = settings.get(key)
    return dict(value) if isinstance(value, Mapping) else {}


def _required(block: Mapping[str, Any], key: str, *, where: str) -> Any:
    value = block.get(key)
    if value is None:
        raise PolicyCompileError(f"{where}.{key} is required; validate the policy first")
    return value


def _seats(block: Mapping[str, Any] | None, *, where: str) -> SeatPool | None:
    if block is None:
        return None
    model: SeatModel = block.get("model") or "named"
    burst = block.get("burst") or {}
    extra = burst.get("extra") or 0
    return SeatPool(
        limit=_required(block, "limit", where=where),
        model=model,
        guests=block.get("guests") or 0,
        burst=(
            Burst(extra=extra, window=_required(burst, "window", where=f"{where}.burst"))
            if extra > 0 and model == "named"
            else None  # concurrent seats never burst (docs/seats.md); only stored ones say so
        ),
        session_ttl=(
            (block.get("session_ttl") or DEFAULT_SESSION_TTL) if model == "concurrent" else None
        ),
        devices_per_seat=block.get("devices_per_seat") if model == "named" else None,
    )


def _instances(block: Mapping[str, Any] | None, *, where: str) -> InstancePool | None:
    if block is None:
        return None
    return InstancePool(
        limit=_required(block, "limit", where=where),
        kinds=_frozen(block.get("kinds") or {}),
        lease_ttl=block.get("lease_ttl") or DEFAULT_LEASE_TTL,
    )


def _price(block: Mapping[str, Any], *, where: str) -> Price:
    seat = block.get("seat")
    meters = block.get("meters") or {}
    instances = block.get("instances") or {}
    return Price(
        base=_amount(block.get("base")),
        seat=_seat_price(seat, where=f"{where}.seat") if seat is not None else None,
        burst_seat_day=_amount(block.get("burst_seat_day")),
        instance_hour=_amount(block.get("instance_hour")),
        instance_licence=_licence(block.get("instance_licence"), where=f"{where}.instance_licence"),
        meters=_frozen(
            {
                meter: _meter_price(meter, price, where=f"{where}.meters.{meter}")
                for meter, price in meters.items()
                if price is not None
            }
        ),
        instance_kinds=_frozen(instances.get("kinds") or {}),
        minimum=block.get("minimum"),
        minimum_period=block.get("minimum_period") or "month",
        allowances=tuple(
            SharedAllowance(
                name,
                spec["included"],
                tuple((entry["meter"], entry.get("rate") or 1) for entry in spec["draw"]),
            )
            for name, spec in sorted((block.get("allowances") or {}).items())
        ),
        one_time=_frozen(block.get("one_time") or {}),
        one_time_per=_frozen(block.get("one_time_per") or {}),
        interval=block.get("interval") or "month",
        credits=_credits(block.get("credits")),
    )


def _credits(block: Mapping[str, Any] | None) -> Credits | None:
    if block is None:
        return None
    return Credits(
        monthly=block.get("monthly"),
        rollover=block.get("rollover") or 0,
        applies_to=tuple(block.get("applies_to") or DEFAULT_CREDITS_APPLY_TO),
        enforce=bool(block.get("enforce")),
    )


def _tiers(written: Any) -> tuple[Tier, ...]:
    return tuple(
        Tier(up_to=tier.get("up_to"), unit=tier["unit"], flat=tier.get("flat")) for tier in written
    )


def _seat_price(seat: Mapping[str, Any], *, where: str) -> SeatPrice:
    tiers = seat.get("tiers")
    return SeatPrice(
        unit=_required(seat, "unit", where=where) if not tiers else None,
        basis=seat.get("basis") or "peak",
        included=seat.get("included") or 0,
        tiers=_tiers(tiers or ()),
        mode=seat.get("mode") or "graduated",
        overage=seat.get("overage") or "peak",
        overage_unit=seat.get("overage_unit"),
    )


def _meter_price(meter: str, price: Mapping[str, Any], *, where: str) -> MeterPrice:
    package = price.get("package")
    return MeterPrice(
        meter=meter,
        included=price.get("included") or 0,
        tiers=() if package else _tiers(_required(price, "tiers", where=where)),
        mode=price.get("mode") or "graduated",
        package=Package(size=package["size"], price=package["price"]) if package else None,
        period=price.get("period") or "month",
    )


def _decimal(value: int | Decimal | None) -> Decimal | None:
    return None if value is None else Decimal(value)


def _licence(block: Mapping[str, Any] | None, *, where: str) -> LicencePrice | None:
    if block is None:
        return None
    return LicencePrice(
        unit=_required(block, "unit", where=where),
        basis=block.get("basis") or "peak",
        overage=block.get("overage") or "peak",
        overage_unit=block.get("overage_unit"),
    )


def _amount(value: Decimal | None) -> Decimal:
    return value if value is not None else ZERO
