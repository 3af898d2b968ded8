"""The worker's contract alerts: what a contract's calendar brings (docs/webhooks.md).

    contract.trial_ending       a trial in force ends within N days, for N in the policy's
    contract.renewal_upcoming   `alerts.trial_ending_days` / `renewal_upcoming_days` (other
                                kinds; a terminated contract is not up for renewal)
    contract.expired            a contract's term ended (also by termination), with
                                entitlements.changed when what the customer holds changed
                                (the contract that follows it, if any, is the `after`)
    entitlements.changed        an override in force expired

Each pass reads only what is due: contracts ending within the look-ahead (the largest N of
the active policy's alerts), ended within `LOOKBACK`, or with an override that expired
within it — each with the alerts already fired for it, so nothing is claimed twice. Of the
day thresholds a contract has crossed, only the nearest fires: a contract recorded five
days before its end hears "5 days left" once, not "30 days" and "7 days" as well. The
catalog is the one the contract follows (its pinned version, else the active one).
`run(session, now=)` is one pass; `worker.run_once` calls it with its (controllable) clock.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from allotment.alerts import service as alerts
from allotment.contracts import entitlements
from allotment.contracts.entitlements import entitled
from allotment.contracts.service import catalog_for, current_terms
from allotment.contracts.terms import Terms
from allotment.kit.clock import isoformat
from allotment.policy.catalog import DEFAULT_ALERTS, Catalog
from allotment.policy.catalog_cache import NoPublishedPolicy

# How far back a pass looks for terms and overrides that ended (a worker stopped for longer
# misses what ended before then rather than announcing stale news).
LOOKBACK = timedelta(days=7)
DAY = timedelta(days=1)
EPSILON = timedelta(microseconds=1)

_FIRED = (
    "ARRAY(SELECT a.type || ' ' || a.threshold || ' ' || a.period FROM alerts_fired a "
    "WHERE a.customer_id = k.customer_id AND a.subject = k.id) AS fired"
)
_ENDING = text(
    "SELECT k.id, k.customer_id, c.key AS customer, k.ends_at, r.terms, "
    + _FIRED
    + " FROM contracts k JOIN customers c ON c.id = k.customer_id "
    "JOIN LATERAL (SELECT terms FROM contract_revisions WHERE contract_id = k.id "
    "AND effective_at <= :now ORDER BY revision DESC LIMIT 1) r ON true "
    "WHERE k.starts_at <= :now AND k.ends_at > :now AND k.ends_at <= :horizon "
    "AND k.terminated_at IS NULL ORDER BY k.id"
)
_ENDED = text(
    "SELECT k.id, k.customer_id, c.key AS customer, k.ends_at, k.terminated_at, r.terms, "
    + _FIRED
    + " FROM contracts k JOIN customers c ON c.id = k.customer_id "
    "JOIN LATERAL (SELECT terms FROM contract_revisions WHERE contract_id = k.id "
    "AND effective_at < k.ends_at ORDER BY revision DESC LIMIT 1) r ON true "
    "WHERE k.ends_at <= :now AND k.ends_at > :since AND k.ends_at > k.starts_at ORDER BY k.id"
)
_OVERRIDES = text(
    "SELECT k.id, k.customer_id, c.key AS customer, r.terms, "
    + _FIRED
    + " FROM contracts k JOIN customers c ON c.id = k.customer_id "
    "JOIN LATERAL (SELECT terms FROM contract_revisions WHERE contract_id = k.id "
    "AND effective_at <= :now ORDER BY revision DESC LIMIT 1) r ON true "
    "WHERE k.starts_at <= :now AND (k.ends_at IS NULL OR k.ends_at > :now) AND EXISTS ("
    "SELECT 1 FROM jsonb_array_elements(coalesce(r.terms -> 'overrides', '[]'::jsonb)) o "
    "WHERE o ->> 'expires_at' IS NOT NULL AND CAST(o ->> 'expires_at' AS timestamptz) > :since "
    "AND CAST(o ->> 'expires_at' AS timestamptz) <= :now) ORDER BY k.id"
)


async def run(session: AsyncSession, *, now: datetime) -> int:
    """One pass: every alert due at `now`; how many fired."""
    try:
        _, active = await catalog_for(session, policy_version=None)
    except NoPublishedPolicy:
        return 0  # no policy, no contracts
    days = (*active.alerts.trial_ending_days, *active.alerts.renewal_upcoming_days)
    horizon = now + max(days, default=0) * DAY
    fired = 0
    for row in (await session.execute(_ENDING, {"now": now, "horizon": horizon})).all():
        fired += await _ending(session, row, now)
    for row in (await session.execute(_ENDED, {"now": now, "since": now - LOOKBACK})).all():
        fired += await _ended(session, row, now)
    for row in (await session.execute(_OVERRIDES, {"now": now, "since": now - LOOKBACK})).all():
        fired += await _overrides_expired(session, row, now)
    return fired


async def _catalog(session: AsyncSession, terms: Terms) -> Catalog | None:
    try:
        return (await catalog_for(session, policy_version=terms.policy_version))[1]
    except Exception:  # a pinned version gone: nothing to judge the contract by
        return None


def _facts(row: Any, terms: Terms) -> dict[str, Any]:
    return {
        "customer": row.customer,
        "contract": row.id,
        "plan": terms.plan,
        "kind": terms.kind,
        "ends_at": isoformat(row.ends_at),
    }


async def _ending(session: AsyncSession, row: Any, now: datetime) -> int:
    terms = Terms.from_json(row.terms)
    catalog = await _catalog(session, terms)
    rules = catalog.alerts if catalog is not None else DEFAULT_ALERTS
    trial = terms.kind == "trial"
    event_type = "contract.trial_ending" if trial else "contract.renewal_upcoming"
    days = rules.trial_ending_days if trial else rules.renewal_upcoming_days
    crossed = [n for n in days if row.ends_at - n * DAY <= now]
    if not crossed:
        return 0
    nearest = min(crossed)
    period = isoformat(row.ends_at)
    if f"{event_type} {nearest}d {period}" in row.fired:
        return 0  # went out already (farther ones crossed since then stay quiet)
    return int(
        await alerts.fire(
            session,
            event_type,
            {
                **_facts(row, terms),
                "days_before": nearest,
                "days_left": math.ceil((row.ends_at - now) / DAY),
            },
            customer_id=row.customer_id,
            customer_key=row.customer,
            subject=row.id,
            threshold=f"{nearest}d",
            period=period,
            at=now,
        )
    )


async def _ended(session: AsyncSession, row: Any, now: datetime) -> int:
    period = isoformat(row.ends_at)
    if f"contract.expired  {period}" in row.fired:
        return 0
    terms = Terms.from_json(row.terms)
    sent = await alerts.fire(
        session,
        "contract.expired",
        {**_facts(row, terms), "terminated": row.terminated_at is not None},
        customer_id=row.customer_id,
        customer_key=row.customer,
        subject=row.id,
        threshold="",
        period=period,
        at=now,
    )
    if not sent:
        return 0
    catalog = await _catalog(session, terms)
    if catalog is None:
        return 1
    following = await current_terms(session, customer_id=row.customer_id, at=row.ends_at)
    after: dict[str, Any] = entitled(None, catalog, row.ends_at)
    if following is not None:
        next_catalog = await _catalog(session, following.terms)
        if next_catalog is not None:
            after = entitled(following.terms, next_catalog, row.ends_at)
    await entitlements.announce(
        session,
        customer_key=row.customer,
        contract_id=row.id,
        cause="contract_expired",
        before=entitled(terms, catalog, row.ends_at - EPSILON),
        after=after,
        at=row.ends_at,
    )
    return 1


async def _overrides_expired(session: AsyncSession, row: Any, now: datetime) -> int:
    terms = Terms.from_json(row.terms)
    catalog = await _catalog(session, terms)
    if catalog is None:
        return 0
    fired = 0
    for override in terms.overrides:
        expires = override.expires_at
        if expires is None or not now - LOOKBACK < expires <= now:
            continue
        what = f"override:{override.feature or override.meter}"
        period = isoformat(expires)
        if f"entitlements.changed {what} {period}" in row.fired:
            continue
        before = entitled(terms, catalog, expires - EPSILON)
        after = entitled(terms, catalog, expires)
        changed = entitlements.difference(before, after)
        if changed is None:
            continue
        fired += await alerts.fire(
            session,
            "entitlements.changed",
            {
                "customer": row.customer,
                "contract": row.id,
                "cause": "override_expired",
                "effective_at": period,
                "override": override.to_json(),
                **changed,
                "before": before,
                "after": after,
            },
            customer_id=row.customer_id,
            customer_key=row.customer,
            subject=row.id,
            threshold=what,
            period=period,
            at=now,
        )
    return fired
