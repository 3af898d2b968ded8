"""Customers: create, read, list, amend (with optimistic concurrency) and delete."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from allotment import invalidation, wiring
from allotment.audit import service as audit
from allotment.customers.models import Customer
from allotment.customers.schemas import CustomerCreate, CustomerRead, CustomerUpdate
from allotment.errors import Conflict, NotFound, PreconditionFailed
from allotment.kit.clock import utcnow
from allotment.kit.pagination import Page, paginate

# Later domains (contracts) may refuse a delete, so this module need not know about them:
# each guard returns a reason to refuse, or None. wiring.customer_delete_guards lists them.
DeleteGuard = Callable[[AsyncSession, Customer], Awaitable[str | None]]


def _snapshot(customer: Customer) -> dict[str, Any]:
    return CustomerRead.model_validate(customer).model_dump(mode="json")


async def create(session: AsyncSession, *, data: CustomerCreate, actor: str) -> Customer:
    now = utcnow()
    # ON CONFLICT DO NOTHING: a duplicate key is a clean 409, not an aborted transaction.
    inserted = (
        await session.execute(
            insert(Customer)
            .values(
                key=data.key,
                name=data.name,
                attributes=data.attributes,
                revision=1,
                created_at=now,
                updated_at=now,
            )
            .on_conflict_do_nothing(index_elements=["key"])
            .returning(Customer.id)
        )
    ).scalar_one_or_none()
    if inserted is None:
        raise Conflict(f"A customer with key {data.key!r} already exists.", type="customer-exists")
    customer = await session.get_one(Customer, inserted)
    invalidation.customer_changed(
        session, customer_key=customer.key, state_version=customer.state_version
    )
    audit.record(
        session,
        actor=actor,
        action="customer.created",
        target_type="customer",
        target_key=customer.key,
        after=_snapshot(customer),
    )
    return customer


async def get(session: AsyncSession, key: str, *, for_update: bool = False) -> Customer:
    query = select(Customer).where(Customer.key == key)
    if for_update:
        query = query.with_for_update()
    customer = (await session.execute(query)).scalar_one_or_none()
    if customer is None:
        raise NotFound(f"Customer {key!r} does not exist.", type="customer-not-found")
    return customer


async def key_of(session: AsyncSession, customer_id: int) -> str:
    """The key of the customer with id `customer_id` (which must exist)."""
    return (
        await session.execute(select(Customer.key).where(Customer.id == customer_id))
    ).scalar_one()


async def list_customers(
    session: AsyncSession, *, limit: int, cursor: str | None
) -> Page[Customer]:
    return await paginate(session, select(Customer), Customer.key, limit=limit, cursor=cursor)


def _check_revision(customer: Customer, if_match: int | None) -> None:
    if if_match is not None and if_match != customer.revision:
        raise PreconditionFailed(
            f"Customer {customer.key!r} is at revision {customer.revision}, not {if_match}.",
            extra={"current_revision": customer.revision},
        )


async def update(
    session: AsyncSession, *, key: str, data: CustomerUpdate, if_match: int | None, actor: str
) -> Customer:
    customer = await get(session, key, for_update=True)
    _check_revision(customer, if_match)
    before = _snapshot(customer)
    changes = data.model_dump(exclude_unset=True, exclude_none=True)
    if not changes:
        return customer
    for field, value in changes.items():
        setattr(customer, field, value)
    customer.revision += 1
    customer.updated_at = utcnow()
    await session.flush()
    # Customer attributes are visible to policy rules, so a change invalidates snapshots.
    await invalidation.bump_customer(session, customer_id=customer.id, customer_key=customer.key)
    audit.record(
        session,
        actor=actor,
        action="customer.updated",
        target_type="customer",
        target_key=customer.key,
        before=before,
        after=_snapshot(customer),
    )
    return customer


async def delete(session: AsyncSession, *, key: str, if_match: int | None, actor: str) -> None:
    customer = await get(session, key, for_update=True)
    _check_revision(customer, if_match)
    for guard in wiring.customer_delete_guards():
        reason = await guard(session, customer)
        if reason:
            raise Conflict(reason, type="customer-in-use")
    before = _snapshot(customer)
    await session.delete(customer)
    await session.flush()
    invalidation.customer_changed(session, customer_key=key)
    audit.record(
        session,
        actor=actor,
        action="customer.deleted",
        target_type="customer",
        target_key=key,
        before=before,
    )
