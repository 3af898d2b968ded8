"""The limits a contract grants at a given moment, pure: its plan in the catalog of its
policy version, with the contract's own seat and instance limits, its add-ons' features and
raises, and the overrides in force (docs/contracts.md, "Effective limits"). No I/O, no clock
reads.

    effective_limits(terms, catalog, at=)  → EffectiveLimits
    flat_limits(effective)                 → {path: value}: seats.limit, meters.<m>.limit, …
    seat_limits(terms, plan, addons=)      → SeatLimits | None
    instance_limits(...)                   → InstancePool | None
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any

from allotment.contracts import addons as contract_addons
from allotment.contracts.terms import (
    DEFAULT_ENFORCEMENT,
    DEFAULT_PERIOD,
    Override,
    Terms,
    TermsOutOfCatalog,
)
from allotment.policy.catalog import Addon, Catalog, InstancePool, Plan, SeatModel, UsageLimit


@dataclass(frozen=True)
class SeatLimits:
    limit: int
    model: SeatModel
    guests: int
    burst_extra: int  # 0: no seat over the limit
    burst_window: timedelta | None
    session_ttl: timedelta | None
    devices_per_seat: int | None = None  # live instances per seat holder (docs/seats.md)

    @property
    def ceiling(self) -> int:
        """Seats assignable while a burst window is open."""
        return self.limit + self.burst_extra


@dataclass(frozen=True)
class EffectiveLimits:
    """What a contract grants at one moment: its pools, its meter limits and its features.

    `features` is the plan's, plus its add-ons', plus the grants, minus the revocations in
    force; dependencies (`requires`) and rules are the evaluator's to apply on top.
    """

    plan: str
    features: frozenset[str]
    seats: SeatLimits | None
    instances: InstancePool | None  # the plan's pool, with the contract's limit
    meters: Mapping[str, UsageLimit]  # unlimited meters are absent
    overrides: tuple[Override, ...]  # those in force at the moment asked about


def effective_limits(terms: Terms, catalog: Catalog, *, at: datetime) -> EffectiveLimits:
    """The pools, meter limits and features `terms` grant at `at` under `catalog`.

    Overrides whose `expires_at` has passed at `at` are ignored. An add-on or override that
    names something the catalog no longer has (a later policy removed it) grants nothing.
    Raises TermsOutOfCatalog when the plan itself is missing.
    """
    plan = catalog.plans.get(terms.plan)
    if plan is None:
        raise TermsOutOfCatalog(f"plan '{terms.plan}' is not in the catalog")
    in_force = tuple(o for o in terms.overrides if o.in_force(at))

    features = set(plan.features)
    for addon in terms.addons:
        if addon in catalog.addons:
            features |= catalog.addons[addon].features
    for override in in_force:
        if override.feature is None or override.feature not in catalog.features:
            continue
        if override.action == "grant":
            features.add(override.feature)
        else:
            features.discard(override.feature)

    raises = contract_addons.total(contract_addons.bought(terms, catalog.addons))
    meters = dict(plan.limits)
    for override in in_force:
        if override.meter is None or override.limit is None or override.meter not in catalog.meters:
            continue
        if catalog.meters[override.meter].is_level():  # a level takes no limit (docs/usage.md)
            continue
        base = plan.limits.get(override.meter)
        meters[override.meter] = UsageLimit(
            meter=override.meter,
            limit=override.limit,
            period=base.period if base else DEFAULT_PERIOD,
            enforcement=base.enforcement if base else DEFAULT_ENFORCEMENT,
        )
    for meter, units in raises.limits.items():  # on top of the plan's or an override's limit
        if meter in meters:
            meters[meter] = dataclasses.replace(meters[meter], limit=meters[meter].limit + units)

    return EffectiveLimits(
        plan=plan.name,
        features=frozenset(features),
        seats=seat_limits(terms, plan, addons=catalog.addons),
        instances=instance_limits(terms, plan, addons=catalog.addons),
        meters=MappingProxyType(dict(sorted(meters.items()))),
        overrides=in_force,
    )


def flat_limits(effective: EffectiveLimits) -> dict[str, Any]:
    """The limits by path, as the dry-run and entitlements.changed compare them."""
    flat: dict[str, Any] = {}
    if effective.seats is not None:
        flat["seats.limit"] = effective.seats.limit
        flat["seats.guests"] = effective.seats.guests
        flat["seats.burst_extra"] = effective.seats.burst_extra
    if effective.instances is not None:
        flat["instances.limit"] = effective.instances.limit
    for meter, limit in effective.meters.items():
        flat[f"meters.{meter}.limit"] = limit.limit
        flat[f"meters.{meter}.period"] = limit.period
        flat[f"meters.{meter}.enforcement"] = limit.enforcement
    return flat


def seat_limits(terms: Terms, plan: Plan, *, addons: Mapping[str, Addon]) -> SeatLimits | None:
    """The seat pool in force: the contract's limit, else the plan's, plus what the bought
    add-ons (of `addons`, the catalog's) raise it by."""
    pool = plan.seats
    if pool is None:
        return None
    extra = pool.burst.extra if pool.burst else 0
    window = pool.burst.window if pool.burst else None
    limit = pool.limit
    if terms.seats is not None:
        limit = terms.seats.limit
        # Concurrent seats never burst (docs/seats.md); a stored contract may still say so.
        if terms.seats.burst is not None and pool.model == "named":
            extra = terms.seats.burst.extra
            window = terms.seats.burst.window or window
    if extra == 0:
        window = None
    return SeatLimits(
        limit=limit + contract_addons.total(contract_addons.bought(terms, addons)).seats,
        model=pool.model,
        guests=pool.guests,
        burst_extra=extra,
        burst_window=window,
        session_ttl=pool.session_ttl,
        devices_per_seat=pool.devices_per_seat,
    )


def instance_limits(
    terms: Terms, plan: Plan, *, addons: Mapping[str, Addon]
) -> InstancePool | None:
    pool = plan.instances
    if pool is None:
        return None
    raised = contract_addons.total(contract_addons.bought(terms, addons)).instances
    return InstancePool(
        limit=(terms.instances.limit if terms.instances is not None else pool.limit) + raised,
        kinds=pool.kinds,
        lease_ttl=pool.lease_ttl,
    )
