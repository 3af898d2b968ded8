"""Tenant quotas, pure: what a tenant may use, and whether all of them fit the contract.

    Quotas.from_json / to_json          {seats?, instances?, meters: {name: n}}
    total(quotas...)        → Quotas    the sum of each quota over tenants
    excesses(total, limits) → [Excess]  each pool or meter the quotas overrun

A quota left out is no carve-out of its own: that tenant draws on whatever the pool has
left. A meter the contract does not limit may be given quotas freely (there is nothing to
overrun); a pool the contract does not have (no seats on the plan) cannot be carved at all.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from allotment.contracts.limits import EffectiveLimits


@dataclass(frozen=True)
class Quotas:
    seats: int | None = None
    instances: int | None = None
    meters: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.seats is not None:
            out["seats"] = self.seats
        if self.instances is not None:
            out["instances"] = self.instances
        if self.meters:
            out["meters"] = dict(sorted(self.meters.items()))
        return out

    @classmethod
    def from_json(cls, value: Mapping[str, Any] | None) -> Quotas:
        value = value or {}
        return cls(
            seats=value.get("seats"),
            instances=value.get("instances"),
            meters=MappingProxyType(dict(value.get("meters") or {})),
        )


def total(quotas: Iterable[Quotas]) -> Quotas:
    seats: int | None = None
    instances: int | None = None
    meters: dict[str, int] = {}
    for quota in quotas:
        if quota.seats is not None:
            seats = (seats or 0) + quota.seats
        if quota.instances is not None:
            instances = (instances or 0) + quota.instances
        for meter, amount in quota.meters.items():
            meters[meter] = meters.get(meter, 0) + amount
    return Quotas(seats=seats, instances=instances, meters=MappingProxyType(meters))


@dataclass(frozen=True)
class Excess:
    """One pool or meter whose quotas total more than the contract allows.

    `limit` is None when the contract has no such pool at all."""

    dimension: Literal["seats", "instances", "meter"]
    meter: str | None
    total: int
    limit: int | None

    @property
    def over(self) -> int:
        return self.total - (self.limit or 0)

    @property
    def noun(self) -> str:
        return {"seats": "seat", "instances": "instance"}.get(self.dimension, f"{self.meter}")


def excesses(quotas: Quotas, limits: EffectiveLimits) -> list[Excess]:
    found: list[Excess] = []
    if quotas.seats is not None:
        seat_limit = limits.seats.limit if limits.seats is not None else None
        if seat_limit is None or quotas.seats > seat_limit:
            found.append(Excess("seats", None, quotas.seats, seat_limit))
    if quotas.instances is not None:
        instance_limit = limits.instances.limit if limits.instances is not None else None
        if instance_limit is None or quotas.instances > instance_limit:
            found.append(Excess("instances", None, quotas.instances, instance_limit))
    for meter, amount in sorted(quotas.meters.items()):
        usage_limit = limits.meters.get(meter)
        if usage_limit is not None and amount > usage_limit.limit:
            found.append(Excess("meter", meter, amount, usage_limit.limit))
    return found
