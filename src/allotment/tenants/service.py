"""Tenants: create, read, list, update (quotas) and delete a customer's tenants.

The tenants' quotas, summed, must fit the limits of the customer's contract in force now
(seats limit, instance limit, meter limits after overrides): a write that would overrun one
is a 422 that says by how much. The check runs with the customer's row locked
(`contracts.service.lock_customer`), so two concurrent writes cannot both fit on their own
and overrun together. An amendment of the contract in force that would leave the quotas
over its new limits is refused the same way (registered in `contracts.amend`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from allotment import invalidation
from allotment.audit import service as audit
from allotment.contracts import service as contracts
from allotment.contracts.limits import effective_limits
from allotment.contracts.models import Contract
from allotment.contracts.pools import NoContractInForce
from allotment.contracts.terms import Terms, TermsOutOfCatalog
from allotment.customers import service as customers
from allotment.customers.models import Customer
from allotment.errors import Conflict, NotFound, PreconditionFailed, ValidationFailed
from allotment.kit.clock import utcnow
from allotment.kit.pagination import Page, paginate
from allotment.kit.reads import from_row
from allotment.policy.catalog import Catalog
from allotment.tenants.models import Tenant
from allotment.tenants.quotas import Excess, Quotas, excesses, total
from allotment.tenants.schemas import TenantCreate, TenantRead, TenantUpdate

_LIVE_IN_TENANT = text(
    "SELECT (SELECT count(*) FROM seats WHERE customer_id = :c AND tenant = :t "
    "AND released_at IS NULL) AS seats, "
    "(SELECT count(*) FROM seat_sessions WHERE customer_id = :c AND tenant = :t "
    "AND ended_at IS NULL AND expires_at > :now) AS sessions, "
    "(SELECT count(*) FROM instances WHERE customer_id = :c AND tenant = :t "
    "AND ended_at IS NULL AND lease_expires_at > :now) AS instances"
)


class TenantNotFound(NotFound):
    type = "tenant-not-found"


@dataclass(frozen=True)
class TenantView:
    tenant: Tenant
    customer_key: str

    def read(self) -> TenantRead:
        return from_row(TenantRead, self.tenant, customer=self.customer_key)

    def snapshot(self) -> dict[str, Any]:
        return self.read().model_dump(mode="json")


# -- the quota rule --------------------------------------------------------------------------


def _quota_message(excess: Excess, *, would: bool, whose: str) -> str:
    verb = "would total" if would else "total"
    if excess.limit is None:
        return f"the contract has no {excess.noun} pool to carve a quota from"
    return (
        f"{excess.noun} quotas {verb} {excess.total}, {excess.over} over {whose} limit "
        f"of {excess.limit}"
    )


async def _other_quotas(
    session: AsyncSession, *, customer_id: int, excluding: str | None
) -> list[Quotas]:
    query = select(Tenant.quotas).where(Tenant.customer_id == customer_id)
    if excluding is not None:
        query = query.where(Tenant.key != excluding)
    return [Quotas.from_json(q) for q in (await session.execute(query)).scalars()]


async def _check_quotas(
    session: AsyncSession, *, customer: Customer, tenant_key: str, quotas: Quotas
) -> None:
    """422 unless `quotas`, with every other tenant's, fit the contract in force now."""
    now = utcnow()
    current = await contracts.current_terms(session, customer_id=customer.id, at=now)
    if current is None:
        raise NoContractInForce(
            f"Customer {customer.key!r} has no contract in force; a tenant's quotas are "
            "carved out of one. Record a contract first."
        )
    version, catalog = await contracts.catalog_for(
        session, policy_version=current.terms.policy_version
    )
    problems = [
        {
            "path": f"quotas.meters.{meter}",
            "message": f"no meter '{meter}' in policy version {version}"
            if meter not in catalog.meters
            else f"meter '{meter}' is a level (an average or a percentile): it takes no quota",
        }
        for meter in sorted(quotas.meters)
        if meter not in catalog.meters or catalog.meters[meter].is_level()
    ]
    if problems:
        contracts.refuse_problems(problems, "tenant")
    try:
        limits = effective_limits(current.terms, catalog, at=now)
    except TermsOutOfCatalog as exc:
        raise Conflict(
            f"Contract {current.contract_id}'s plan is not in policy version {version} "
            f"({exc}); amend the contract before carving quotas out of it."
        ) from None
    others = await _other_quotas(session, customer_id=customer.id, excluding=tenant_key)
    summed = total([*others, quotas])
    for excess in excesses(summed, limits):
        path = (
            f"quotas.meters.{excess.meter}"
            if excess.dimension == "meter"
            else f"quotas.{excess.dimension}"
        )
        problems.append(
            {"path": path, "message": _quota_message(excess, would=True, whose="the contract's")}
        )
    if problems:
        raise ValidationFailed(
            "The tenants' quotas would exceed the contract's limits: "
            + "; ".join(p["message"] for p in problems)
            + ".",
            errors=problems,
        )


async def quotas_still_fit(
    session: AsyncSession, contract: Contract, terms: Terms, catalog: Catalog, at: datetime
) -> list[dict[str, str]]:
    """The amendment guard: the contract in force must keep room for its tenants' quotas."""
    current = await contracts.current_terms(session, customer_id=contract.customer_id, at=utcnow())
    if current is None or current.contract_id != contract.id:
        return []  # tenants are checked against the contract in force, not a scheduled one
    quotas = await _other_quotas(session, customer_id=contract.customer_id, excluding=None)
    if not quotas:
        return []
    try:
        limits = effective_limits(terms, catalog, at=at)
    except TermsOutOfCatalog:
        return []  # check_terms already reports the unknown plan
    return [
        {
            "path": {"seats": "seats.limit", "instances": "instances.limit"}.get(
                excess.dimension, "overrides"
            ),
            "message": "the tenants' "
            + _quota_message(excess, would=False, whose="the amended")
            + "; lower their quotas first",
        }
        for excess in excesses(total(quotas), limits)
    ]


# -- reads -----------------------------------------------------------------------------------


async def _find(
    session: AsyncSession, *, customer: Customer, tenant_key: str, for_update: bool = False
) -> Tenant:
    query = select(Tenant).where(Tenant.customer_id == customer.id, Tenant.key == tenant_key)
    if for_update:
        query = query.with_for_update().execution_options(populate_existing=True)
    tenant = (await session.execute(query)).scalar_one_or_none()
    if tenant is None:
        raise TenantNotFound(f"Customer {customer.key!r} has no tenant {tenant_key!r}.")
    return tenant


async def get(session: AsyncSession, *, customer_key: str, tenant_key: str) -> TenantView:
    customer = await customers.get(session, customer_key)
    return TenantView(await _find(session, customer=customer, tenant_key=tenant_key), customer.key)


async def list_tenants(
    session: AsyncSession, *, customer_key: str, limit: int, cursor: str | None
) -> Page[TenantView]:
    customer = await customers.get(session, customer_key)
    page = await paginate(
        session,
        select(Tenant).where(Tenant.customer_id == customer.id),
        Tenant.key,
        limit=limit,
        cursor=cursor,
    )
    return Page(
        items=[TenantView(t, customer.key) for t in page.items], next_cursor=page.next_cursor
    )


# -- writes ----------------------------------------------------------------------------------


def _record(
    session: AsyncSession,
    *,
    action: str,
    actor: str,
    customer_key: str,
    tenant_key: str,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> None:
    audit.record(
        session,
        actor=actor,
        action=action,
        target_type="tenant",
        target_key=f"{customer_key}/{tenant_key}",
        before=before,
        after=after,
    )


def _check_revision(tenant: Tenant, customer_key: str, if_match: int | None) -> None:
    if if_match is not None and if_match != tenant.revision:
        raise PreconditionFailed(
            f"Tenant {customer_key}/{tenant.key} is at revision {tenant.revision}, not {if_match}.",
            extra={"current_revision": tenant.revision},
        )


async def create(
    session: AsyncSession, *, customer_key: str, data: TenantCreate, actor: str
) -> TenantView:
    customer = await customers.get(session, customer_key, for_update=True)  # see module doc
    quotas = data.quotas.to_quotas()
    await _check_quotas(session, customer=customer, tenant_key=data.key, quotas=quotas)
    now = utcnow()
    inserted = (
        await session.execute(
            insert(Tenant)
            .values(
                customer_id=customer.id,
                key=data.key,
                quotas=quotas.to_json(),
                revision=1,
                created_at=now,
                updated_at=now,
            )
            .on_conflict_do_nothing(index_elements=["customer_id", "key"])
            .returning(Tenant.id)
        )
    ).scalar_one_or_none()
    if inserted is None:
        raise Conflict(
            f"Customer {customer.key!r} already has a tenant {data.key!r}.", type="tenant-exists"
        )
    view = TenantView(await session.get_one(Tenant, inserted), customer.key)
    _record(
        session,
        action="tenant.created",
        actor=actor,
        customer_key=customer.key,
        tenant_key=data.key,
        after=view.snapshot(),
    )
    await invalidation.bump_customer(session, customer_id=customer.id, customer_key=customer.key)
    return view


async def update(
    session: AsyncSession,
    *,
    customer_key: str,
    tenant_key: str,
    data: TenantUpdate,
    if_match: int | None,
    actor: str,
) -> TenantView:
    customer = await customers.get(session, customer_key, for_update=True)
    tenant = await _find(session, customer=customer, tenant_key=tenant_key, for_update=True)
    _check_revision(tenant, customer.key, if_match)
    quotas = data.quotas.to_quotas()
    view = TenantView(tenant, customer.key)
    if quotas.to_json() == tenant.quotas:
        return view
    await _check_quotas(session, customer=customer, tenant_key=tenant_key, quotas=quotas)
    before = view.snapshot()
    tenant.quotas = quotas.to_json()
    tenant.revision += 1
    tenant.updated_at = utcnow()
    await session.flush()
    _record(
        session,
        action="tenant.updated",
        actor=actor,
        customer_key=customer.key,
        tenant_key=tenant_key,
        before=before,
        after=view.snapshot(),
    )
    await invalidation.bump_customer(session, customer_id=customer.id, customer_key=customer.key)
    return view


async def delete(
    session: AsyncSession, *, customer_key: str, tenant_key: str, if_match: int | None, actor: str
) -> None:
    customer = await customers.get(session, customer_key, for_update=True)
    tenant = await _find(session, customer=customer, tenant_key=tenant_key, for_update=True)
    _check_revision(tenant, customer.key, if_match)
    # Allocations name their tenant by key; deleting it under live ones would hand them to
    # any later tenant of the same key. (The customer's row lock keeps new ones out.)
    held = (
        await session.execute(_LIVE_IN_TENANT, {"c": customer.id, "t": tenant_key, "now": utcnow()})
    ).one()
    if any(held):
        raise Conflict(
            f"Tenant {tenant_key!r} still holds {held.seats} seats, {held.sessions} sessions "
            f"and {held.instances} instances; release them first.",
            type="tenant-in-use",
        )
    before = TenantView(tenant, customer.key).snapshot()
    await session.delete(tenant)
    await session.flush()
    _record(
        session,
        action="tenant.deleted",
        actor=actor,
        customer_key=customer.key,
        tenant_key=tenant_key,
        before=before,
    )
    await invalidation.bump_customer(session, customer_id=customer.id, customer_key=customer.key)
