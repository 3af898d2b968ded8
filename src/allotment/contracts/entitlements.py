"""entitlements.changed: a customer's entitled features or limits changed (docs/webhooks.md).

What a contract entitles is `limits.effective_limits` (the plan's features, its add-ons',
the grants in force minus the revocations; its pools and meter limits), compared by
`entitled` before and after the change. An event goes out only when they differ:

    announce(session, …)             one contract: an amendment, a trial's conversion, an
                                     override or a contract expiring (the worker)
    announce_activation(session, …)  a publish or a rollback: every contract in force now
                                     that follows the active version (pinned ones do not
                                     move), read in keyset batches

Dependencies and rules are the evaluator's to apply on top and are not part of it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from allotment.alerts import service as alerts
from allotment.contracts.limits import effective_limits, flat_limits
from allotment.contracts.terms import Terms, TermsOutOfCatalog
from allotment.kit.clock import isoformat
from allotment.policy.catalog import Catalog

BATCH_SIZE = 500

# The contracts in force at :now with the revision in force (the latest at or before :now).
_IN_FORCE = text(
    "SELECT k.id, k.customer_id, c.key AS customer, k.starts_at, k.ends_at, k.terminated_at, "
    "r.terms FROM contracts k JOIN customers c ON c.id = k.customer_id "
    "JOIN LATERAL (SELECT terms FROM contract_revisions WHERE contract_id = k.id "
    "AND effective_at <= :now ORDER BY revision DESC LIMIT 1) r ON true "
    "WHERE k.id > :after AND k.starts_at <= :now AND (k.ends_at IS NULL OR k.ends_at > :now) "
    "ORDER BY k.id LIMIT :size"
)


def entitled(terms: Terms | None, catalog: Catalog, at: datetime) -> dict[str, Any]:
    """The plan, features and limits `terms` entitle at `at`; empty when nothing (no terms,
    or a plan the catalog lacks)."""
    if terms is None:
        return {"plan": None, "features": [], "limits": {}}
    try:
        effective = effective_limits(terms, catalog, at=at)
    except TermsOutOfCatalog:
        return {"plan": terms.plan, "features": [], "limits": {}}
    return {
        "plan": effective.plan,
        "features": sorted(effective.features),
        "limits": flat_limits(effective),
    }


def difference(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any] | None:
    """What changed between two `entitled` values; None when nothing did."""
    old, new = set(before["features"]), set(after["features"])
    paths = sorted(before["limits"].keys() | after["limits"].keys())
    limits = [
        {"path": p, "old": before["limits"].get(p), "new": after["limits"].get(p)}
        for p in paths
        if before["limits"].get(p) != after["limits"].get(p)
    ]
    if old == new and not limits and before["plan"] == after["plan"]:
        return None
    return {
        "features_gained": sorted(new - old),
        "features_lost": sorted(old - new),
        "limits_changed": limits,
    }


async def announce(
    session: AsyncSession,
    *,
    customer_key: str,
    contract_id: str,
    cause: str,
    before: dict[str, Any],
    after: dict[str, Any],
    at: datetime,
    **extra: Any,
) -> bool:
    """entitlements.changed when `before` and `after` differ; whether it was sent."""
    changed = difference(before, after)
    if changed is None:
        return False
    await alerts.announce(
        session,
        "entitlements.changed",
        {
            "customer": customer_key,
            "contract": contract_id,
            "cause": cause,
            "effective_at": isoformat(at),
            **extra,
            **changed,
            "before": before,
            "after": after,
        },
        customer_key=customer_key,
    )
    return True


async def announce_activation(
    session: AsyncSession,
    *,
    current: tuple[int, Catalog],
    proposed: tuple[int, Catalog],
    cause: str,
    now: datetime,
) -> int:
    """entitlements.changed for every contract in force whose entitlements the move from
    `current` to `proposed` changes; how many were announced."""
    if current[1] is proposed[1]:
        return 0
    sent, after_id = 0, ""
    while True:
        rows = (
            await session.execute(_IN_FORCE, {"now": now, "after": after_id, "size": BATCH_SIZE})
        ).all()
        if not rows:
            return sent
        after_id = rows[-1].id
        for row in rows:
            terms = Terms.from_json(row.terms)
            if terms.policy_version is not None:
                continue  # pinned: a publish does not move it
            sent += await announce(
                session,
                customer_key=row.customer,
                contract_id=row.id,
                cause=cause,
                before=entitled(terms, current[1], now),
                after=entitled(terms, proposed[1], now),
                at=now,
                policy_version=proposed[0],
                previous_policy_version=current[0],
            )
