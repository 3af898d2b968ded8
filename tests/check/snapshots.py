"""Builders for evaluator tests: a small catalog, contracts, overrides and snapshots, no I/O.

`snapshot(...)` fills `plan` and `base_features` from the catalog the way `check/snapshot.py`
must: the plan's features plus the add-ons' features, overrides left to the evaluator.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, Literal

from allotment.check.values import (
    CheckRequest,
    ContractKind,
    ContractView,
    FeatureOverride,
    Snapshot,
)
from allotment.policy import Catalog, compile_policy, load, validate

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
START = datetime(2026, 1, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)

POLICY = """
currency: USD
features:
  reports: {}
  dashboards: {}
  editor: {seat: required}
  audit_log: {}
  sso: {requires: [audit_log]}
  scim: {requires: [sso]}
  exports: {}
  beta: {}
  sunset: {}
  guarded: {}
  personal: {}
  priority_support: {}
plans:
  team:
    attributes: {edition: team, support_level: standard}
    features: [reports, dashboards, editor, exports, beta, sunset, guarded, personal]
  enterprise:
    extends: team
    attributes: {edition: enterprise}
    features: [+audit_log, +sso, +scim]
  sso_only:
    extends: team
    features: [+sso]
addons:
  audit_pack: {features: [audit_log], price: "100.00"}
  priority_support: {features: [priority_support], price: "250.00"}
rules:
  - feature: sso
    when: "contract.attributes.region != 'cn'"
    reason: region_not_supported
  - feature: exports
    when: "contract.kind != 'trial'"
    reason: not_in_trial
  - feature: beta
    when: "has(context.tags) && context.tags.exists(t, t == 'beta')"
    reason: not_in_beta
  - feature: sunset
    when: "now < timestamp('2027-01-01T00:00:00Z')"
    reason: sunset_passed
  - feature: guarded
    when: "customer.attributes.tier != 'blocked'"
    reason: customer_blocked
  - feature: guarded
    when: "contract.attributes.edition == 'enterprise'"
    reason: enterprise_only
  - feature: personal
    when: "subject != null && subject.id.startsWith('u-')"
    reason: needs_user
"""


@lru_cache(maxsize=64)
def catalog(text: str = POLICY) -> Catalog:
    """The compiled catalog of a YAML policy (compiled once per text)."""
    result = load(text, "application/yaml")
    assert result.document is not None, result.errors
    return compile_policy(result.document)


def compile_dict(document: Mapping[str, Any]) -> Catalog:
    result = validate(document)
    assert result.document is not None, result.errors
    return compile_policy(result.document)


def grant(feature: str, *, expires_at: datetime | None = None) -> FeatureOverride:
    return FeatureOverride(feature=feature, action="grant", expires_at=expires_at, reason="sales")


def revoke(feature: str, *, expires_at: datetime | None = None) -> FeatureOverride:
    return FeatureOverride(
        feature=feature, action="revoke", expires_at=expires_at, reason="abuse review"
    )


def contract(
    *,
    catalog_: Catalog | None = None,
    plan: str = "team",
    kind: ContractKind = "standard",
    starts_at: datetime = START,
    ends_at: datetime | None = None,
    attributes: Mapping[str, Any] | None = None,
    addons: Iterable[str] = (),
    overrides: Iterable[FeatureOverride] = (),
    revision: int = 1,
    id: str = "c-1",
) -> ContractView:
    """A contract on `plan`; its attributes are the plan's overlaid by `attributes`."""
    found = (catalog_ or catalog()).plans.get(plan)
    merged = {**(found.attributes if found is not None else {}), **(attributes or {})}
    return ContractView(
        id=id,
        revision=revision,
        plan=plan,
        kind=kind,
        starts_at=starts_at,
        ends_at=ends_at,
        attributes=merged,
        addons=frozenset(addons),
        feature_overrides=tuple(overrides),
        limit_overrides=(),
        pinned=False,
        seats=None,
        instances=None,
    )


Missing = Literal["missing"]


def snapshot(
    *,
    catalog_: Catalog | None | Missing = "missing",
    contract_: ContractView | None | Missing = "missing",
    known: bool = True,
    customer: str = "acme",
    customer_attributes: Mapping[str, Any] | None = None,
    **contract_fields: Any,
) -> Snapshot:
    """A snapshot of `customer`; by default on the test catalog with `contract(**fields)`."""
    compiled = catalog() if catalog_ == "missing" else catalog_
    assert not isinstance(compiled, str)
    if contract_ == "missing":
        view: ContractView | None = contract(catalog_=compiled, **contract_fields)
    else:
        assert not isinstance(contract_, str)
        view = contract_
    plan = None
    base: frozenset[str] = frozenset()
    if compiled is not None and view is not None:
        plan = compiled.plans.get(view.plan)
        features = set(plan.features) if plan is not None else set()
        for addon in view.addons:
            if addon in compiled.addons:
                features |= compiled.addons[addon].features
        base = frozenset(features)
    if not known:
        view, plan, base = None, None, frozenset()
    return Snapshot(
        customer=customer,
        known=known,
        state_version=1,
        policy_version=1 if compiled is not None else None,
        catalog=compiled,
        contract=view,
        plan=plan,
        customer_attributes=dict(customer_attributes or {}),
        base_features=base,
    )


def request(feature: str, **fields: Any) -> CheckRequest:
    return CheckRequest(customer=fields.pop("customer", "acme"), feature=feature, **fields)
