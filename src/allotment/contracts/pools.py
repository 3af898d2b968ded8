"""A customer's allocation pools at one moment, read under the customer's row lock.

Every allocation that can take capacity (seat assignment, session open, instance
registration) starts with `lock()`. The lock on the customer's row is the pool lock: it is
held until commit, so two requests racing for the last seat, or for the last unit of a
tenant's quota, run one after the other and the second counts the first's row. Counting
live rows and inserting under it is exact; the tenants' quotas are covered by the same lock
because a tenant belongs to one customer. Releases do not need it: they only free capacity
(and `invalidation.bump_customer` takes the row lock at its UPDATE anyway).

The limits are those of the contract in force at `at` (`contracts.service.current_terms`)
under the policy version it follows, so an amendment or a policy publish changes them at
once; allocations already held above a lowered limit stay held.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from allotment import invalidation
from allotment.contracts import service as contracts
from allotment.contracts.limits import EffectiveLimits, SeatLimits
from allotment.contracts.terms import TermsOutOfCatalog
from allotment.errors import AllotmentError, Conflict, NotFound, ValidationFailed
from allotment.kit import leases
from allotment.kit.clock import isoformat, utcnow
from allotment.kit.metrics import ALLOCATIONS
from allotment.policy.catalog import DEFAULT_ALERTS, Alerts, InstancePool
from allotment.privacy import pseudonyms
from allotment.tenants.quotas import Quotas
from allotment.usage import lifecycle

_LOCK = text("SELECT id FROM customers WHERE key = :key FOR UPDATE")
_FIND = text("SELECT id FROM customers WHERE key = :key")
_TENANT = text("SELECT quotas FROM tenants WHERE customer_id = :customer AND key = :key")
_KEY = text("SELECT key FROM customers WHERE id = :c")


class NoContractInForce(Conflict):
    type = "no-contract-in-force"
    title = "No contract in force"


class NoPool(Conflict):
    type = "no-pool"
    title = "The plan has no such pool"


@dataclass(frozen=True)
class Pools:
    customer_id: int
    customer_key: str
    at: datetime  # the moment the limits were read at, once the lock was held
    limits: EffectiveLimits | None  # None: no contract in force at `at`
    why_none: str | None = None
    # Where the limits came from: the contract and revision in force, and the policy version
    # (None when the revision pins it, so only the revision matters).
    contract_id: str | None = None
    revision: int | None = None
    active_version: int | None = None
    alerts: Alerts = DEFAULT_ALERTS  # the catalog's `alerts` (instances.surge reads it)

    def _in_force(self) -> EffectiveLimits:
        if self.limits is None:
            raise NoContractInForce(self.why_none or "")
        return self.limits

    def seats(self) -> SeatLimits:
        limits = self._in_force()
        if limits.seats is None:
            raise NoPool(f"Plan '{limits.plan}' has no seats to assign.")
        return limits.seats

    def instances(self) -> InstancePool:
        limits = self._in_force()
        if limits.instances is None:
            raise NoPool(f"Plan '{limits.plan}' has no instance pool to register into.")
        return limits.instances


async def customer_id(session: AsyncSession, *, customer_key: str, lock: bool = False) -> int:
    found = (await session.execute(_LOCK if lock else _FIND, {"key": customer_key})).scalar()
    if found is None:
        raise NotFound(f"Customer {customer_key!r} does not exist.", type="customer-not-found")
    return int(found)


async def lock(session: AsyncSession, *, customer_key: str, at: datetime | None = None) -> Pools:
    """Lock the customer's row (the pool lock, until commit) and read its limits at `at`.

    Without `at`, the clock is read once the lock is held, not before: a request that waited
    behind others must not judge leases and burst windows by the time it started waiting."""
    found = await customer_id(session, customer_key=customer_key, lock=True)
    at = at or utcnow()
    current = await contracts.current_terms(session, customer_id=found, at=at)
    if current is None:
        return Pools(
            found,
            customer_key,
            at,
            None,
            f"Customer {customer_key!r} has no contract in force; allocations draw on one.",
        )
    version, catalog = await contracts.catalog_for(
        session, policy_version=current.terms.policy_version
    )
    try:
        limits = current.limits(catalog, at=at)
    except TermsOutOfCatalog:
        return Pools(
            found,
            customer_key,
            at,
            None,
            f"Contract {current.contract_id}'s plan '{current.terms.plan}' is not in policy "
            f"version {version}; amend the contract first.",
        )
    return Pools(
        found,
        customer_key,
        at,
        limits,
        contract_id=current.contract_id,
        revision=current.revision,
        active_version=None if current.terms.policy_version is not None else version,
        alerts=catalog.alerts,
    )


async def tenant_quotas(session: AsyncSession, *, customer_id: int, tenant: str) -> Quotas:
    """The quotas of the customer's tenant `tenant`; an unknown tenant is a 422 on `tenant`."""
    quotas = (await session.execute(_TENANT, {"customer": customer_id, "key": tenant})).scalar()
    if quotas is None:
        raise unknown_tenant(tenant)
    return Quotas.from_json(quotas)


def unknown_tenant(tenant: str) -> ValidationFailed:
    message = f"no tenant '{tenant}' for this customer"
    return ValidationFailed(
        f"The request names {message}.", errors=[{"path": "tenant", "message": message}]
    )


# -- refusals shared by every pool -----------------------------------------------------------


class PoolFull(Conflict):
    """A pool (or a tenant's quota of it) has no room; `extra` says how full and until when."""

    type = "pool-full"
    title = "Pool full"

    def __init__(
        self,
        message: str,
        *,
        reason: str,
        pool: str,
        limit: int,
        held: int,
        frees_at: datetime | None,
        tenant: str | None = None,
        **more: object,
    ) -> None:
        extra: dict[str, object] = {
            "reason": reason,
            "pool": pool,
            "limit": limit,
            "held": held,
            "frees_at": None if frees_at is None else isoformat(frees_at),
        }
        if tenant is not None:
            extra["tenant"] = tenant
        extra.update(more)
        super().__init__(message, type=reason.replace("_", "-"), extra=extra)
        ALLOCATIONS.labels(pool, "refused").inc()


def refuse_tenant(
    *, tenant: str, pool: str, quota: int, held: int, wanted: int, frees_at: datetime | None
) -> None:
    """Raise tenant_quota_reached unless `wanted` more fits the tenant's `quota` of `pool`."""
    if held + wanted > quota:
        raise PoolFull(
            f"Tenant '{tenant}' holds {held} of its {pool} quota of {quota}; "
            f"{wanted} more does not fit.",
            reason="tenant_quota_reached",
            pool=pool,
            limit=quota,
            held=held,
            frees_at=frees_at,
            tenant=tenant,
        )


class LeaseGone(AllotmentError):
    """410: the session or instance is no longer live; `reason` says why."""

    status, type, title = 410, "lease-gone", "Lease gone"

    def __init__(self, message: str, *, reason: str, ended_at: datetime | None) -> None:
        super().__init__(
            message,
            type=reason.replace("_", "-"),
            extra={"reason": reason, "ended_at": None if ended_at is None else isoformat(ended_at)},
        )


# How an end reason reads in a sentence ("The instance was … at …").
_ENDED = {"seat_released": "ended with its holder's seat"}


async def lease_gone(
    session: AsyncSession, table: leases.LeaseTable, lease_id: str, noun: str
) -> Exception:
    """Why `lease_id` could not be renewed or ended: 404 unknown, 410 ended or lapsed."""
    row = await leases.find(session, table, lease_id)
    if row is None:
        return NotFound(f"No {noun} {lease_id!r}.", type=f"{noun}-not-found")
    if row.ended_at is None or row.end_reason == "expired":
        expiry = getattr(row, table.expiry)
        return LeaseGone(
            f"The {noun}'s lease lapsed at {isoformat(expiry)}; "
            + ("open a new session." if noun == "session" else "register it again."),
            reason="lease_expired",
            ended_at=row.ended_at or expiry,
        )
    return LeaseGone(
        f"The {noun} was {_ENDED.get(row.end_reason, row.end_reason)} at "
        f"{isoformat(row.ended_at)}.",
        reason=str(row.end_reason),
        ended_at=row.ended_at,
    )


# -- leases: what sessions and instances share -------------------------------------------------

# A row as its audit record and event show it, given its subject's pseudonym (docs/privacy.md).
LeaseView = Callable[[Any, str | None], dict[str, Any]]


def _view(session: AsyncSession, view: LeaseView, row: Any, customer_key: str) -> dict[str, Any]:
    return view(row, pseudonyms.of_session(session).ref(customer_key, row.subject))


async def _customer_key(session: AsyncSession, customer_id: int) -> str:
    return str((await session.execute(_KEY, {"c": customer_id})).scalar_one())


async def renew_lease(
    session: AsyncSession, table: leases.LeaseTable, lease_id: str, noun: str, now: datetime
) -> tuple[Any, str]:
    """Renew a live lease by its TTL: (row, customer key), or 404/410. A renewal changes no
    one's entitlement (the lease was live and stays live), so it is neither audited nor
    invalidates snapshots (they reload by themselves at the lease's old expiry)."""
    row = await leases.renew(session, table, lease_id, now)
    if row is None:
        raise await lease_gone(session, table, lease_id, noun)
    return row, await _customer_key(session, row.customer_id)


async def end_lease(
    session: AsyncSession,
    table: leases.LeaseTable,
    lease_id: str,
    noun: str,
    *,
    actor: str,
    view: LeaseView,
    now: datetime,
) -> tuple[Any, str]:
    """End a live lease now (`<noun>.closed` / `.deregistered`), audited, with its lifecycle
    event and an invalidation: (row, customer key), or 404/410."""
    row = await leases.end(session, table, lease_id, now)
    if row is None:
        raise await lease_gone(session, table, lease_id, noun)
    customer_key = await _customer_key(session, row.customer_id)
    lifecycle.record(
        session,
        customer_id=row.customer_id,
        actor=actor,
        action=f"{noun}.{row.end_reason}",
        target_type=noun,
        target_key=f"{customer_key}/{row.id}",
        after=_view(session, view, row, customer_key),
    )
    await invalidation.bump_customer(
        session, customer_id=row.customer_id, customer_key=customer_key
    )
    return row, customer_key


async def reap_leases(
    session: AsyncSession,
    table: leases.LeaseTable,
    noun: str,
    *,
    view: LeaseView,
    now: datetime,
    batch: int,
) -> int:
    """End up to `batch` lapsed leases at their expiry (`<noun>.expired`), audited; safe with
    any number of reapers at once. Caches need no invalidation (a lapsed lease stopped
    counting at its expiry, and every snapshot that held it live was valid only until then),
    but each customer's version moves, so the change stream announces the lapse."""
    rows = await leases.reap(session, table, now, batch=batch)
    for customer_id, customer_key in sorted({(r.customer_id, r.customer_key) for r in rows}):
        await invalidation.bump_customer(
            session, customer_id=customer_id, customer_key=customer_key
        )
    for row in rows:
        lifecycle.record(
            session,
            customer_id=row.customer_id,
            actor="system:reaper",
            action=f"{noun}.expired",
            target_type=noun,
            target_key=f"{row.customer_key}/{row.id}",
            after=_view(session, view, row, row.customer_key),
        )
    return len(rows)
