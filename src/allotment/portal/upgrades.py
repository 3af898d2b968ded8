"""What would unlock a denied feature, and the feature graph's nodes and edges: pure
functions of the compiled catalog and the customer's entitlements document.

A plan unlocks feature f when it includes f and every feature f depends on. An add-on not
held unlocks f when, with the plan and the add-ons held, it grants f and its dependencies.
Plans include what they inherit (policy/catalog.py), so the plan edges are its features.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from allotment.policy.catalog import Catalog

# Denials a different plan or add-on can lift; other reasons (an expired trial, a rule, a
# used-up meter) are not about what was bought.
CATALOG_REASONS = frozenset({"feature_not_in_plan", "dependency_missing"})
# Denials that mean the feature is not held at all (no contract in force, or not entitled),
# as opposed to held but refused now (a used-up meter, a rule, a seat needed).
_NOT_HELD = CATALOG_REASONS | {
    "customer_unknown",
    "feature_unknown",
    "no_active_contract",
    "contract_not_started",
    "contract_expired",
    "trial_expired",
}

REASONS = {
    "ok": "Allowed",
    "customer_unknown": "Unknown customer",
    "no_active_contract": "No contract is in force",
    "contract_not_started": "The contract has not started yet",
    "contract_expired": "The contract has ended",
    "trial_expired": "The trial has ended",
    "feature_unknown": "Unknown feature",
    "feature_not_in_plan": "Not in your plan",
    "dependency_missing": "Needs a feature you do not have",
    "seat_required": "Needs a seat",
    "guest_not_allowed": "Not for guests",
    "instance_required": "Needs a registered instance",
    "instance_unknown": "Unknown instance",
    "lease_expired": "The instance's lease lapsed",
    "usage_limit_reached": "This period's usage limit is reached",
    "soft_limit_exceeded": "Allowed, over the soft limit",
    "tenant_quota_reached": "A tenant's quota is reached",
    "tenant_unknown": "Unknown tenant",
    "rule_denied": "A rule of your contract denies it",
    "outage_default": "Decided by the outage default",
    "credits_exhausted": "The credit balance is used up",
}


def describe(reason: str) -> str:
    return REASONS.get(reason, reason.replace("_", " ").capitalize())


def requirements(
    verdict: dict[str, Any], verdicts: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    """The features `verdict`'s feature requires (its `requires` in the entitlements
    document), each with whether it is met: held, under a contract in force, with everything
    it needs in turn, as the check's dependency step reads it (docs/check.md, step 6),
    whatever its own meter or rules say now."""
    found = []
    for name in verdict.get("requires") or ():
        required = verdicts.get(name)
        met = required is not None and required["reason"] not in _NOT_HELD
        found.append({"feature": name, "met": met})
    return found


def limit_state(limit: dict[str, Any] | None) -> dict[str, str] | None:
    """A meter limit of the entitlements document (`limits.meters.<name>`) in words: a hard
    limit reached (`exhausted`: a check is refused, and the feature's own verdict says
    `usage_limit_reached`), a soft limit passed, or one approached; None while far from it
    (docs/portal.md)."""
    if not limit:
        return None
    warnings = limit.get("warnings") or []
    if limit.get("exhausted"):
        return {
            "code": "limit_reached",
            "words": "Limit reached: checks are refused until the period ends",
        }
    if "soft_limit_exceeded" in warnings:
        return {
            "code": "over_soft_limit",
            "words": "Over the soft limit: still allowed, and the excess is reported",
        }
    if "approaching_limit" in warnings:
        return {"code": "approaching_limit", "words": "Approaching the limit"}
    return None


@dataclass(frozen=True)
class Unlock:
    plans: tuple[str, ...]
    addons: tuple[str, ...]


def held_features(catalog: Catalog, contract: dict[str, Any] | None) -> frozenset[str]:
    if contract is None or contract["plan"] not in catalog.plans:
        return frozenset()
    found = set(catalog.plans[contract["plan"]].features)
    for name in contract["addons"]:
        if name in catalog.addons:
            found |= catalog.addons[name].features
    return frozenset(found)


def unlock(catalog: Catalog, contract: dict[str, Any] | None, feature: str) -> Unlock:
    spec = catalog.features.get(feature)
    if spec is None:
        return Unlock((), ())
    needed = {feature, *spec.closure}
    current = contract["plan"] if contract is not None else None
    held_addons = set(contract["addons"]) if contract is not None else set()
    held = held_features(catalog, contract)
    plans = tuple(
        name
        for name, plan in sorted(catalog.plans.items())
        if name != current and needed <= plan.features | _addon_features(catalog, held_addons)
    )
    addons = tuple(
        name
        for name, addon in sorted(catalog.addons.items())
        if name not in held_addons
        and feature in addon.features | held
        and needed <= held | addon.features
    )
    return Unlock(plans, addons)


def _addon_features(catalog: Catalog, names: set[str]) -> frozenset[str]:
    found: set[str] = set()
    for name in names:
        if name in catalog.addons:
            found |= catalog.addons[name].features
    return frozenset(found)


@dataclass(frozen=True)
class Graph:
    """The feature graph: `nodes` as (kind, name, state) with kind plan | addon | feature and
    state held | upgrade | allowed | denied | other; `edges` as (kind, source, target, state)
    with kind grants | requires."""

    nodes: tuple[tuple[str, str, str], ...]
    edges: tuple[tuple[str, str, str, str], ...]
    upgrades: dict[str, Unlock]  # denied feature → what would unlock it


def graph(catalog: Catalog, document: dict[str, Any]) -> Graph:
    contract = document["contract"]
    verdicts = {f["feature"]: f for f in document["features"]}
    upgrades = {
        name: found
        for name, verdict in sorted(verdicts.items())
        if verdict["reason"] in CATALOG_REASONS
        and ((found := unlock(catalog, contract, name)).plans or found.addons)
    }
    upgrade_plans = {p for u in upgrades.values() for p in u.plans}
    upgrade_addons = {a for u in upgrades.values() for a in u.addons}
    held_plan = contract["plan"] if contract is not None else None
    held_addons = set(contract["addons"]) if contract is not None else set()

    def state(kind: str, name: str) -> str:
        if kind == "feature":
            return "allowed" if verdicts.get(name, {}).get("allowed") else "denied"
        held = name == held_plan if kind == "plan" else name in held_addons
        upgrade = name in (upgrade_plans if kind == "plan" else upgrade_addons)
        return "held" if held else "upgrade" if upgrade else "other"

    nodes: list[tuple[str, str, str]] = []
    edges: list[tuple[str, str, str, str]] = []
    granting: list[tuple[str, str, frozenset[str]]] = [
        *(("plan", name, plan.features) for name, plan in sorted(catalog.plans.items())),
        *(("addon", name, addon.features) for name, addon in sorted(catalog.addons.items())),
    ]
    for kind, name, features in granting:
        source_state = state(kind, name)
        nodes.append((kind, name, source_state))
        for feature in sorted(features):
            upgrade = source_state == "upgrade" and feature in upgrades
            edge = "held" if source_state == "held" else "upgrade" if upgrade else "other"
            edges.append(("grants", f"{kind}:{name}", f"feature:{feature}", edge))
    for name, spec in sorted(catalog.features.items()):
        nodes.append(("feature", name, state("feature", name)))
        for required in sorted(spec.requires):
            edges.append(("requires", f"feature:{name}", f"feature:{required}", "requires"))
    return Graph(tuple(nodes), tuple(edges), upgrades)


def names(items: Sequence[str]) -> str:
    return ", ".join(items) if items else "—"
