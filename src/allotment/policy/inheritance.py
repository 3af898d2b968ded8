"""Plan inheritance: a plan that `extends` another starts from the parent's resolved plan.

The merge, applied from the root of the chain down to the plan:

    what                                   how
    objects (attributes, seats, burst,     merged key by key, recursively: the child's
    instances, kinds, limits, price,       value wins for every key it writes, the parent's
    price.seat, price.meters, ...)         is kept for every key it does not
    lists (price.meters.*.tiers,           replaced as a whole
    price.seat.tiers)
    alternatives: price.seat unit | tiers, the one the child writes replaces the other (and,
    price.meters.* tiers | package         for `unit` and `package`, the inherited `mode`)
    scalars                                replaced
    null                                   the same as not writing the key
    features                               the parent's set, then each entry in order:
                                           `name` or `+name` adds, `-name` removes
    extends, description                   not inherited
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from allotment.policy.document import PlanSpec

INHERITED_BLOCKS = ("attributes", "seats", "instances", "limits", "price", "grace", "price_lists")


class InheritanceError(ValueError):
    """A plan's chain of `extends` is broken (a missing parent or a cycle)."""


@dataclass(frozen=True)
class ResolvedPlan:
    """A plan after inheritance, still in document terms (python values, unset keys absent)."""

    name: str
    ancestors: tuple[str, ...]  # the parent first, the root last
    features: frozenset[str]
    settings: Mapping[str, Any]  # the merged INHERITED_BLOCKS, as written, without defaults


def split_entry(entry: str) -> tuple[str, str]:
    """`+sso` → ("+", "sso"); `sso` → ("", "sso")."""
    if entry[:1] in ("+", "-"):
        return entry[0], entry[1:]
    return "", entry


def apply_features(inherited: frozenset[str], entries: list[str] | None) -> frozenset[str]:
    features = set(inherited)
    for entry in entries or ():
        sign, name = split_entry(entry)
        if sign == "-":
            features.discard(name)
        else:
            features.add(name)
    return frozenset(features)


# Keys that price one thing in two exclusive ways: a child writing the key drops the ones
# listed that it inherits (docs/policy.md, "Inheritance"), so a plan can switch a parent's
# per-seat unit to seat tiers, or a meter's tiers to a package, without a way to unset keys.
SEAT_ALTERNATIVES = {"unit": ("tiers", "mode"), "tiers": ("unit",)}
METER_ALTERNATIVES = {"package": ("tiers", "mode"), "tiers": ("package",)}


def _replace(merged: dict[str, Any], own: Mapping[str, Any], rules: Mapping[str, Any]) -> None:
    for key, dropped in rules.items():
        if key in own:
            for other in dropped:
                if other not in own:
                    merged.pop(other, None)


def drop_replaced(merged: dict[str, Any], own: Mapping[str, Any]) -> None:
    """Apply the alternatives rule to `merged`, the parent's settings merged with `own`.
    Only blocks `own` writes are touched, and `merge` made those fresh dicts."""
    _drop_replaced_price(merged.get("price"), own.get("price"))
    lists, own_lists = merged.get("price_lists"), own.get("price_lists")
    if isinstance(lists, dict) and isinstance(own_lists, Mapping):
        for currency, own_list in own_lists.items():  # each currency's price like `price`
            _drop_replaced_price(lists.get(currency), own_list)


def _drop_replaced_price(price: Any, own_price: Any) -> None:
    if not isinstance(price, dict) or not isinstance(own_price, Mapping):
        return
    seat, own_seat = price.get("seat"), own_price.get("seat")
    if isinstance(seat, dict) and isinstance(own_seat, Mapping):
        _replace(seat, own_seat, SEAT_ALTERNATIVES)
    meters, own_meters = price.get("meters"), own_price.get("meters")
    if isinstance(meters, dict) and isinstance(own_meters, Mapping):
        for name, own_meter in own_meters.items():
            meter = meters.get(name)
            if isinstance(meter, dict) and isinstance(own_meter, Mapping):
                _replace(meter, own_meter, METER_ALTERNATIVES)


def merge(parent: Mapping[str, Any], child: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(parent)
    for key, value in child.items():
        inherited = merged.get(key)
        if isinstance(value, Mapping) and isinstance(inherited, Mapping):
            merged[key] = merge(inherited, value)
        else:
            merged[key] = value
    return merged


def _merged(parent: Mapping[str, Any], own: Mapping[str, Any]) -> dict[str, Any]:
    settings = merge(parent, own)
    drop_replaced(settings, own)
    return settings


def resolve_plans(
    plans: Mapping[str, PlanSpec], *, skip_broken: bool = False
) -> dict[str, ResolvedPlan]:
    """Resolve every plan. A broken chain raises InheritanceError, or with `skip_broken`
    leaves that plan (and the plans below it) out, which is what validation wants."""
    resolved: dict[str, ResolvedPlan] = {}
    for name in sorted(plans):
        try:
            _resolve(plans, name=name, resolved=resolved, chain=())
        except InheritanceError:
            if not skip_broken:
                raise
    return resolved


def _resolve(
    plans: Mapping[str, PlanSpec],
    *,
    name: str,
    resolved: dict[str, ResolvedPlan],
    chain: tuple[str, ...],
) -> ResolvedPlan:
    if name in resolved:
        return resolved[name]
    if name in chain:
        raise InheritanceError(f"inheritance cycle: {' -> '.join((*chain, name))}")
    spec = plans.get(name)
    if spec is None:
        raise InheritanceError(f"plan '{chain[-1]}' extends unknown plan '{name}'")
    # exclude_none: a null means "not written", as in the canonical form the digest hashes.
    own = spec.model_dump(include=set(INHERITED_BLOCKS), exclude_unset=True, exclude_none=True)
    if spec.extends is None:
        plan = ResolvedPlan(
            name=name,
            ancestors=(),
            features=apply_features(frozenset(), spec.features),
            settings=own,
        )
    else:
        parent = _resolve(plans, name=spec.extends, resolved=resolved, chain=(*chain, name))
        plan = ResolvedPlan(
            name=name,
            ancestors=(parent.name, *parent.ancestors),
            features=apply_features(parent.features, spec.features),
            settings=_merged(parent.settings, own),
        )
    resolved[name] = plan
    return plan
