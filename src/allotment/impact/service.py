"""Policy dry-run: what publishing a version would change, customer by customer, before
anyone publishes it (the route: impact/endpoints.py, POST /v1/policies/{version}/dry-run).

Every customer whose contract in force now follows the active version (its revision in
force pins no `policy_version`) is evaluated twice, under the active catalog and under the
catalog of `version` (a draft or a published one), by the code that answers checks:
`payload.build` over the same payload the snapshot cache loads, then
`evaluator.evaluate_many` over every feature of the catalog, catalog-only (`gates=()`, no
subject, instance, tenant or context: the answer `GET /v1/customers/{key}/entitlements`
gives). Limits come from `contracts.limits.effective_limits`. A customer appears when
anything differs:

    features_gained   allowed under `version`, not under the active one
    features_lost     allowed under the active one, not under `version`
    limits_changed    [{path, old, new}]: seats.limit, seats.guests, seats.burst_extra,
                      instances.limit, meters.<meter>.limit|period|enforcement
    plan_missing      the contract's plan is not in `version` (and was in the active one)

Pinned contracts do not move on publish: they are not evaluated, only listed (`pinned`).

`orphaned` names every live contract (in force or scheduled, unpinned) the version would
orphan and what each would lose: `contracts.orphans.find_orphans`, the very computation that
makes publish and rollback refuse the version (409) unless forced. It is not paginated
(at most `policy.moves.MAX_ORPHANS_LISTED`, with `summary.contracts_orphaned` the total).

Customers are read with Core selects in keyset batches of `BATCH_SIZE` (two queries a
batch), so memory stays flat however many there are, and evaluation yields to the event
loop every `YIELD_EVERY` customers, so checks on the same worker keep flowing. `summary`
always covers all of them, while `customers` and `pinned` hold at most `limit` entries
each, and `next_cursor` pages on.

Billing impact: a customer whose plan or add-on prices differ counts as affected
(`prices_changed`), and each listed customer carries `estimated_invoice_change`: this
month's invoice preview to date with the proposed version active from now minus the preview
as it stands (billing/service.py). Both keep the month's earlier activations, so the change
is what the move does, not what earlier moves did. A contract whose plan the version drops
is estimated too: from now on its plan is not priced, so its fees stop at the move.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.dialects.postgresql import distinct_on
from sqlalchemy.ext.asyncio import AsyncSession

from allotment.check import evaluator
from allotment.check.payload import build, contract_payload, customer_payload
from allotment.check.values import CheckRequest, Snapshot
from allotment.contracts.limits import effective_limits, flat_limits
from allotment.contracts.models import Contract, ContractRevision
from allotment.contracts.orphans import find_orphans
from allotment.contracts.terms import Terms, TermsOutOfCatalog
from allotment.customers.models import Customer
from allotment.errors import BadRequest
from allotment.kit.clock import isoformat, utcnow
from allotment.kit.pagination import decode_cursor, encode_cursor
from allotment.policy.catalog import Catalog
from allotment.policy.catalog_cache import load_catalog
from allotment.policy.moves import MAX_ORPHANS_LISTED

__all__ = ["BATCH_SIZE", "CustomerImpact", "LimitChange", "dry_run", "impact"]

BATCH_SIZE = 500
# Evaluating a customer twice takes ~0.3 ms of CPU; yielding to the event loop every this
# many keeps a large dry-run from stalling the checks this worker serves meanwhile.
YIELD_EVERY = 25
DEFAULT_LIMIT = 500
MAX_LIMIT = 5_000

Version = tuple[int, Catalog]


# -- the pure comparison ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LimitChange:
    path: str
    old: Any
    new: Any


@dataclass(frozen=True, slots=True)
class CustomerImpact:
    customer: str
    contract: str
    contract_revision: int
    plan: str
    features_gained: tuple[str, ...]
    features_lost: tuple[str, ...]
    limits_changed: tuple[LimitChange, ...]
    plan_missing: bool  # the plan is not in the proposed version
    plan_missing_now: bool  # ...nor in the active one (then it is no change)
    prices_changed: bool = False  # the plan's or an add-on's prices differ
    invoice_change: str | None = None  # this period's preview, proposed minus active

    @property
    def changed(self) -> bool:
        return bool(
            self.features_gained
            or self.features_lost
            or self.limits_changed
            or (self.plan_missing and not self.plan_missing_now)
            or self.prices_changed
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "customer": self.customer,
            "contract": self.contract,
            "contract_revision": self.contract_revision,
            "plan": self.plan,
            "features_gained": list(self.features_gained),
            "features_lost": list(self.features_lost),
            "limits_changed": [
                {"path": c.path, "old": c.old, "new": c.new} for c in self.limits_changed
            ],
            "plan_missing": self.plan_missing,
            "prices_changed": self.prices_changed,
            "estimated_invoice_change": self.invoice_change,
        }


async def estimated_invoice_change(
    session: AsyncSession, impact: CustomerImpact, *, proposed: Version, now: datetime
) -> str | None:
    """This month's invoice preview to date with `proposed` made active at `now` minus the
    preview as it stands, as a decimal string: what a publish at `now` would change. Both
    are taken a microsecond after `now`, so the moved part of the month is not empty (its
    fees run to the month's end, as they would after a real publish)."""
    from allotment.billing import data
    from allotment.billing import service as billing

    period = now.strftime("%Y-%m")
    taken = now + timedelta(microseconds=1)
    before = await billing.preview(
        session, contract_id=impact.contract, period=period, now=taken, as_of=taken
    )
    after = await billing.preview(
        session,
        contract_id=impact.contract,
        period=period,
        now=taken,
        as_of=taken,
        override=data.Proposed(version=proposed[0], catalog=proposed[1], at=now),
    )
    return str(after.subtotal - before.subtotal)


def _prices_changed(terms: Terms, current: Catalog, proposed: Catalog) -> bool:
    before, after = current.plans.get(terms.plan), proposed.plans.get(terms.plan)
    if before is None or after is None:
        return False  # reported as plan_missing
    if before.price != after.price:
        return True
    return any(
        (current.addons[a].priced_terms if a in current.addons else None)
        != (proposed.addons[a].priced_terms if a in proposed.addons else None)
        for a in terms.addons
    )


def allowed_features(snapshot: Snapshot, now: datetime) -> frozenset[str]:
    """The catalog's features the evaluator allows for the snapshot's customer at `now`,
    catalog-only: entitlement, dependencies and rules; no gates, no request variables."""
    catalog = snapshot.catalog
    if catalog is None:
        return frozenset()
    names = sorted(catalog.features)
    base = CheckRequest(customer=snapshot.customer, feature="")
    verdicts = evaluator.evaluate_many(snapshot, names, base, now, gates=())
    return frozenset(name for name, v in zip(names, verdicts, strict=True) if v.allowed)


def limits(terms: Terms, catalog: Catalog, now: datetime) -> dict[str, Any]:
    """The contract's limits under `catalog`, flat by path; {} when the plan is missing."""
    try:
        return flat_limits(effective_limits(terms, catalog, at=now))
    except TermsOutOfCatalog:
        return {}


def _limit_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> tuple[LimitChange, ...]:
    """Every path whose value differs; a path on one side only has None on the other."""
    return tuple(
        LimitChange(path, old.get(path), new.get(path))
        for path in sorted(old.keys() | new.keys())
        if old.get(path) != new.get(path)
    )


def impact(
    payload: Mapping[str, Any], *, current: Version, proposed: Version, now: datetime
) -> CustomerImpact:
    """What moving from `current` to `proposed` changes for one customer, whose snapshot
    payload (`payload.customer_payload`) names the contract in force at `now`."""
    contract = payload["contract"]
    terms = Terms.from_json(contract["terms"])
    before = build(payload, current[1], current[0])
    after = build(payload, proposed[1], proposed[0])
    allowed_before = allowed_features(before, now)
    allowed_after = allowed_features(after, now)
    return CustomerImpact(
        customer=payload["customer"],
        contract=contract["id"],
        contract_revision=contract["revision"],
        plan=terms.plan,
        features_gained=tuple(sorted(allowed_after - allowed_before)),
        features_lost=tuple(sorted(allowed_before - allowed_after)),
        limits_changed=_limit_changes(
            limits(terms, current[1], now), limits(terms, proposed[1], now)
        ),
        plan_missing=after.plan is None,
        plan_missing_now=before.plan is None,
        prices_changed=_prices_changed(terms, current[1], proposed[1]),
    )


# -- reading contracts in force, in batches ---------------------------------------------------


async def _in_force(
    session: AsyncSession, *, after: int, now: datetime, size: int
) -> list[tuple[int, dict[str, Any]]]:
    """(customer id, snapshot payload) of the next `size` customers by id after `after`
    with a contract in force at `now`, loaded as `SnapshotCache` loads them: the contract
    in force that started last, and its latest revision in force."""
    chosen = (
        await session.execute(
            select(
                Customer.id.label("customer_id"),
                Customer.key,
                Customer.attributes,
                Customer.state_version,
                Contract.id,
                Contract.starts_at,
                Contract.ends_at,
            )
            .join(Contract, Contract.customer_id == Customer.id)
            .where(
                Customer.id > after,
                Contract.starts_at <= now,
                or_(Contract.ends_at.is_(None), Contract.ends_at > now),
            )
            .ext(distinct_on(Customer.id))
            .order_by(Customer.id, Contract.starts_at.desc())
            .limit(size)
        )
    ).all()
    if not chosen:
        return []
    # Revision 1 takes effect at starts_at <= now, so every contract in force has one.
    revisions = {
        row.contract_id: row
        for row in (
            await session.execute(
                select(
                    ContractRevision.contract_id,
                    ContractRevision.revision,
                    ContractRevision.terms,
                )
                .where(
                    ContractRevision.contract_id.in_([row.id for row in chosen]),
                    ContractRevision.effective_at <= now,
                )
                .ext(distinct_on(ContractRevision.contract_id))
                .order_by(ContractRevision.contract_id, ContractRevision.revision.desc())
            )
        ).all()
    }
    return [
        (
            row.customer_id,
            customer_payload(
                customer=row.key,
                attributes=row.attributes,
                state_version=row.state_version,
                contract=contract_payload(row, revisions[row.id]),
                valid_until=None,
            ),
        )
        for row in chosen
    ]


async def dry_run(
    session: AsyncSession,
    *,
    version: int,
    limit: int = DEFAULT_LIMIT,
    cursor: str | None = None,
    now: datetime | None = None,
    batch_size: int = BATCH_SIZE,
) -> dict[str, Any]:
    """The dry-run report of `version` against the active version (see the module doc).

    Raises PolicyNotFound (404) for an unknown version and NoPublishedPolicy (409) when
    nothing is active yet.
    """
    proposed = await load_catalog(session, version=version)
    current = await load_catalog(session)
    now = now or utcnow()
    start = _start(cursor)

    evaluated = affected = pinned_total = 0
    customers: list[CustomerImpact] = []
    pinned: list[str] = []
    page_end: int | None = None  # the id of the last customer listed on this page
    full = False  # a list reached `limit`: the page ends at page_end
    last = 0
    while batch := await _in_force(session, after=last, now=now, size=batch_size):
        last = batch[-1][0]
        for index, (customer_id, payload) in enumerate(batch, 1):
            if index % YIELD_EVERY == 0:
                await asyncio.sleep(0)
            found: CustomerImpact | None = None
            is_pinned = payload["contract"]["terms"].get("policy_version") is not None
            if is_pinned:
                pinned_total += 1
            else:
                evaluated += 1
                found = impact(payload, current=current, proposed=proposed, now=now)
                if not found.changed:
                    continue
                affected += 1
            # Counted above whatever the page; listed only inside the page's window.
            if full or customer_id <= start:
                continue
            if len(pinned if is_pinned else customers) >= limit:
                full = True
                continue
            if found is None:
                pinned.append(payload["customer"])
            else:
                customers.append(found)
            page_end = customer_id

    orphaned = await find_orphans(session, current=current, proposed=proposed, now=now)
    customers = [
        replace(
            found,
            invoice_change=await estimated_invoice_change(
                session, found, proposed=proposed, now=now
            ),
        )
        for found in customers
    ]
    return {
        "version": proposed[0],
        "active_version": current[0],
        "computed_at": isoformat(now),
        "summary": {
            "customers_evaluated": evaluated,
            "customers_affected": affected,
            "customers_pinned": pinned_total,
            "contracts_orphaned": len(orphaned),
        },
        "orphaned": [o.to_json() for o in orphaned[:MAX_ORPHANS_LISTED]],
        "customers": [found.to_json() for found in customers],
        "pinned": pinned,
        "next_cursor": encode_cursor(page_end) if full and page_end is not None else None,
    }


def _start(cursor: str | None) -> int:
    if cursor is None:
        return 0
    value = decode_cursor(cursor)
    if not isinstance(value, int) or isinstance(value, bool):
        raise BadRequest("The cursor is not one this API issued.", type="invalid-cursor")
    return value
