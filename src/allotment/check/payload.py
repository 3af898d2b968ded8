"""A customer's snapshot payload and the Snapshot built from it.

    pick_rows(rows, now)          the contract in force (or next, or last) over `_LOAD`'s rows
                                  of check/snapshot.py, as a payload, with when it changes
    customer_payload / contract_payload
                                  the payload: the form L2 stores and `build` reads
    build(payload, catalog, v)    the Snapshot checks evaluate

Pure functions, no I/O: the snapshot cache (check/snapshot.py) and the dry-run of a policy
change (impact/service.py) build snapshots the same way from the same payload.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from allotment.check import holdings
from allotment.check.values import ContractView, FeatureOverride, LimitOverride, Snapshot
from allotment.contracts import addons as contract_addons
from allotment.contracts.limits import instance_limits, seat_limits
from allotment.contracts.terms import Terms
from allotment.kit.clock import isoformat
from allotment.policy.catalog import Catalog


class _ContractRow(NamedTuple):
    id: str
    starts_at: datetime
    ends_at: datetime | None


class _RevisionRow(NamedTuple):
    revision: int
    effective_at: datetime
    terms: dict[str, Any]
    pinned_digest: str | None


def instant(value: str | None) -> datetime | None:
    """A payload's ISO 8601 instant (None stays None)."""
    return None if value is None else datetime.fromisoformat(value)


def pick_contract(rows: list[Any], now: datetime) -> Any | None:
    """The contract in force at `now`, else the next to start, else the last to end."""
    in_force = [r for r in rows if r.starts_at <= now and (r.ends_at is None or now < r.ends_at)]
    if in_force:
        return max(in_force, key=lambda r: r.starts_at)
    upcoming = [r for r in rows if r.starts_at > now]
    if upcoming:
        return min(upcoming, key=lambda r: r.starts_at)
    return max(rows, key=lambda r: r.ends_at) if rows else None


def build(
    payload: Mapping[str, Any], catalog: Catalog | None, policy_version: int | None
) -> Snapshot:
    """A Snapshot from the loaded rows (as cached in L2) and the catalog they follow."""
    contract_row = payload.get("contract")
    if contract_row is None:
        return Snapshot(
            customer=payload["customer"],
            known=payload["known"],
            state_version=payload.get("state_version", 0),
            policy_version=policy_version,
            catalog=catalog,
            contract=None,
            plan=None,
            customer_attributes=payload.get("attributes") or {},
            holdings=holdings.from_payload(payload.get("holdings")),
            customer_id=payload.get("customer_id"),
            customer_name=payload.get("name"),
        )
    terms = Terms.from_json(contract_row["terms"])
    plan = catalog.plans.get(terms.plan) if catalog else None
    base = set(plan.features) if plan else set()
    for addon in terms.addons:
        spec = catalog.addons.get(addon) if catalog else None
        if spec is not None:
            base |= spec.features
    contract = ContractView(
        id=contract_row["id"],
        revision=contract_row["revision"],
        plan=terms.plan,
        kind=terms.kind,
        starts_at=instant(contract_row["starts_at"]),  # type: ignore[arg-type]
        ends_at=instant(contract_row["ends_at"]),
        attributes=dict(terms.attributes),
        addons=frozenset(terms.addons),
        feature_overrides=tuple(
            FeatureOverride(o.feature, o.action, o.expires_at, o.reason)  # type: ignore[arg-type]
            for o in terms.overrides
            if o.feature is not None
        ),
        limit_overrides=tuple(
            LimitOverride(o.meter, o.limit, o.expires_at, o.reason)  # type: ignore[arg-type]
            for o in terms.overrides
            if o.meter is not None
        ),
        pinned=terms.policy_version is not None,
        seats=seat_limits(terms, plan, addons=catalog.addons) if plan and catalog else None,
        instances=instance_limits(terms, plan, addons=catalog.addons) if plan and catalog else None,
        limit_raises=contract_addons.total(contract_addons.bought(terms, catalog.addons)).limits
        if catalog
        else {},
        addon_quantities={addon: terms.quantity(addon) for addon in sorted(terms.addons)},
        quantities=None if terms.quantities is None else terms.quantities.to_json(),
    )
    return Snapshot(
        customer=payload["customer"],
        known=True,
        state_version=payload["state_version"],
        policy_version=policy_version,
        catalog=catalog,
        contract=contract,
        plan=plan,
        customer_attributes=payload.get("attributes") or {},
        base_features=frozenset(base),
        holdings=holdings.from_payload(payload.get("holdings")),
        customer_id=payload.get("customer_id"),
        customer_name=payload.get("name"),
    )


def contract_payload(contract: Any, revision: Any) -> dict[str, Any]:
    """The `contract` part of a snapshot payload (as cached in L2), from a contracts row
    (`id`, `starts_at`, `ends_at`) and the revision in force (`revision`, `terms`)."""
    return {
        "id": contract.id,
        "revision": revision.revision,
        "starts_at": isoformat(contract.starts_at),
        "ends_at": None if contract.ends_at is None else isoformat(contract.ends_at),
        "terms": revision.terms,
    }


def customer_payload(
    *,
    customer: str,
    attributes: dict[str, Any] | None,
    state_version: int,
    contract: dict[str, Any] | None,
    valid_until: datetime | None,
) -> dict[str, Any]:
    """A known customer's snapshot payload, the form `build()` reads and L2 stores."""
    return {
        "customer": customer,
        "known": True,
        "attributes": attributes,
        "state_version": state_version,
        "contract": contract,
        "valid_until": None if valid_until is None else isoformat(valid_until),
    }


def pick_rows(
    rows: Sequence[Any], now: datetime
) -> tuple[dict[str, Any] | None, datetime | None, str | None]:
    """The contract choice over the rows of `_LOAD`: (contract payload, valid_until, the digest of
    the version the revision in force pins, if any)."""
    contracts: dict[str, _ContractRow] = {}
    revisions: dict[str, list[_RevisionRow]] = {}
    for row in rows:
        if row.contract_id is None:
            continue
        if row.contract_id not in contracts:
            contracts[row.contract_id] = _ContractRow(row.contract_id, row.starts_at, row.ends_at)
            revisions[row.contract_id] = []
        if row.revision is not None:
            revisions[row.contract_id].append(
                _RevisionRow(row.revision, row.effective_at, row.terms, row.pinned_digest)
            )
    listed = list(contracts.values())
    chosen = pick_contract(listed, now)
    boundaries = [
        moment
        for row in listed
        for moment in (row.starts_at, row.ends_at)
        if moment is not None and moment > now
    ]
    if chosen is None:
        return None, min(boundaries, default=None), None
    found = revisions[chosen.id]  # ordered by revision
    in_force = found[0]
    for revision in found:
        if revision.effective_at <= now:
            in_force = revision
        else:
            boundaries.append(revision.effective_at)
    return (
        contract_payload(chosen, in_force),
        min(boundaries, default=None),
        in_force.pinned_digest,
    )
