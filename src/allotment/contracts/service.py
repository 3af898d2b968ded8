"""Contracts: create, read and list them, and find the terms in force at a moment.

    create(session, customer_key=, data=, actor=)      → ContractView   (revision 1)
    get(session, contract_id)                          → ContractView
    list_for_customer(session, customer_key=, ...)     → Page[ContractView]
    list_revisions(session, contract_id=, ...)         → Page[ContractRevision]
    current_terms(session, customer_id=, at=)          → ContractTerms | None
    catalog_for(session, policy_version=)              → (version, Catalog)

Amendments and termination live in `amend.py`. Every write here and there:
- locks the customer row first (`lock_customer`), so a customer's contract and tenant
  writes run one at a time and the overlap and quota checks read a settled state;
- writes an audit record with before and after, in the same transaction;
- bumps the customer's state version (allotment.invalidation), broadcast after commit.

At most one contract is in force per customer at any instant: terms are half-open,
[starts_at, ends_at), an open end is +infinity, and a terminated contract's term ends where
the termination cut it (`ends_at` is moved there).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, or_, select, true
from sqlalchemy.ext.asyncio import AsyncSession

from allotment import invalidation
from allotment.audit import service as audit
from allotment.contracts.models import Contract, ContractRevision
from allotment.contracts.reads import ContractRead
from allotment.contracts.schemas import ContractCreate, create_terms
from allotment.contracts.terms import (
    ContractTerms,
    Terms,
    check_terms,
    initial_attributes,
    status,
)
from allotment.customers import service as customers
from allotment.customers.models import Customer
from allotment.errors import Conflict, NotFound, ValidationFailed
from allotment.kit.clock import isoformat, utcnow
from allotment.kit.ids import new_id
from allotment.kit.pagination import Page, paginate
from allotment.policy import service as policies
from allotment.policy.catalog import Catalog
from allotment.usage import lifecycle


class ContractNotFound(NotFound):
    type = "contract-not-found"


class ContractOverlap(Conflict):
    type = "contract-overlap"
    title = "Contract terms overlap"


@dataclass(frozen=True)
class ContractView:
    """A contract row with its customer's key, as the API shows it."""

    contract: Contract
    customer_key: str

    def read(self, *, now: datetime | None = None) -> ContractRead:
        row = self.contract
        return ContractRead.model_validate(
            {
                **row.terms,
                "id": row.id,
                "customer": self.customer_key,
                "status": status(
                    starts_at=row.starts_at,
                    ends_at=row.ends_at,
                    terminated_at=row.terminated_at,
                    now=now or utcnow(),
                ),
                "revision": row.revision,
                "effective_at": row.effective_at,
                "created_at": row.created_at,
                "updated_at": row.updated_at,
            }
        )

    def snapshot(self) -> dict[str, Any]:
        """What the audit log keeps as before / after."""
        return self.read().model_dump(mode="json")


# -- shared with amend.py and tenants --------------------------------------------------------


async def lock_customer(session: AsyncSession, *, customer_id: int) -> Customer:
    """Lock the customer's row until commit.

    Every write to a customer's contracts or tenants takes this lock first. Without it two
    requests could each find no overlapping contract (or room under the contract's limits)
    and both commit, leaving two contracts in force at once (or quotas over the limit);
    with it, the second waits and then sees the first's row.
    """
    customer = (
        await session.execute(
            select(Customer)
            .where(Customer.id == customer_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    ).scalar_one_or_none()
    if customer is None:  # deleted between the lookup and the lock
        raise NotFound("The contract's customer no longer exists.", type="customer-not-found")
    return customer


async def catalog_for(session: AsyncSession, *, policy_version: int | None) -> tuple[int, Catalog]:
    """The catalog a contract follows: its pinned version, else the active one.

    Nothing published yet is a 409 (NoPublishedPolicy, from the policy service). A pinned
    version that does not exist or is a draft is a 422 on `policy_version`: it is a bad
    value in the request, not a missing resource.
    """
    if policy_version is None:
        return await policies.load_catalog(session)
    try:
        return await policies.load_catalog(session, version=policy_version, published_only=True)
    except (NotFound, policies.PolicyNotPublished) as exc:
        raise ValidationFailed(
            f"Policy version {policy_version} cannot be pinned: {exc.message}",
            errors=[{"path": "policy_version", "message": exc.message}],
        ) from None


def refuse_problems(problems: list[dict[str, str]], what: str) -> None:
    if problems:
        count = len(problems)
        raise ValidationFailed(
            f"The {what} is not valid: {count} problem{'s' if count != 1 else ''}; "
            "see `errors` for each, by path.",
            errors=problems,
        )


async def refuse_overlap(
    session: AsyncSession,
    *,
    customer_id: int,
    starts_at: datetime,
    ends_at: datetime | None,
    exclude: str | None = None,
) -> None:
    """409 naming the first of the customer's contracts whose term shares an instant with
    [starts_at, ends_at). Call with the customer locked (`lock_customer`)."""
    if ends_at is not None and ends_at <= starts_at:
        return  # an empty term holds no instant
    query = (
        select(Contract.id, Contract.starts_at, Contract.ends_at)
        .where(
            Contract.customer_id == customer_id,
            # A contract cancelled before it started has an empty term: it holds nothing.
            or_(Contract.ends_at.is_(None), Contract.ends_at > Contract.starts_at),
            or_(Contract.ends_at.is_(None), Contract.ends_at > starts_at),
            Contract.starts_at < ends_at if ends_at is not None else true(),
        )
        .order_by(Contract.starts_at)
        .limit(1)
    )
    if exclude is not None:
        query = query.where(Contract.id != exclude)
    found = (await session.execute(query)).one_or_none()
    if found is None:
        return
    other_id, other_start, other_end = found
    until = isoformat(other_end) if other_end is not None else "open-ended"
    raise ContractOverlap(
        f"The term overlaps contract {other_id} ({isoformat(other_start)} to {until}); "
        "a customer has at most one contract in force at any instant. End or terminate "
        f"{other_id} first, or start this one when it ends.",
        extra={"conflicting_contract": other_id},
    )


def add_revision(
    session: AsyncSession,
    contract: Contract,
    *,
    terms: Terms,
    effective_at: datetime,
    actor: str,
    now: datetime,
) -> None:
    """Write `terms` as the contract's next revision and its latest terms."""
    contract.revision = (contract.revision or 0) + 1
    contract.plan = terms.plan
    contract.kind = terms.kind
    contract.starts_at = terms.starts_at
    contract.ends_at = terms.ends_at
    contract.terminated_at = terms.terminated_at
    contract.policy_version = terms.policy_version
    contract.terms = terms.to_json()
    contract.effective_at = effective_at
    contract.updated_at = now
    session.add(
        ContractRevision(
            contract_id=contract.id,
            revision=contract.revision,
            customer_id=contract.customer_id,
            effective_at=effective_at,
            terms=contract.terms,
            actor=actor,
            request_id=session.info.get("request_id"),
            created_at=now,
        )
    )


def record(
    session: AsyncSession,
    *,
    action: str,
    actor: str,
    before: dict[str, Any] | None,
    after: ContractView,
    effective_at: datetime,
) -> None:
    """Audit a contract change; `before` is a snapshot taken before the change."""
    audit.record(
        session,
        actor=actor,
        action=action,
        target_type="contract",
        target_key=after.contract.id,
        before=before,
        after={**after.snapshot(), "revision_effective_at": isoformat(effective_at)},
    )
    lifecycle.emit(
        session, type=action, customer_id=after.contract.customer_id, data=after.snapshot()
    )


# -- create ----------------------------------------------------------------------------------


async def create(
    session: AsyncSession, *, customer_key: str, data: ContractCreate, actor: str
) -> ContractView:
    customer = await customers.get(session, customer_key, for_update=True)  # see lock_customer
    version, catalog = await catalog_for(session, policy_version=data.policy_version)
    attributes = initial_attributes(catalog.plans.get(data.plan), data.attributes)
    terms = create_terms(data, attributes=attributes)
    refuse_problems(check_terms(terms, catalog, version=version), "contract")
    await refuse_overlap(
        session, customer_id=customer.id, starts_at=terms.starts_at, ends_at=terms.ends_at
    )
    now = utcnow()
    contract = Contract(id=new_id("ctr"), customer_id=customer.id, created_at=now, revision=0)
    # Revision 1 takes effect when the term starts, even when that lies in the past.
    add_revision(session, contract, terms=terms, effective_at=terms.starts_at, actor=actor, now=now)
    session.add(contract)
    await session.flush()
    view = ContractView(contract, customer.key)
    record(
        session,
        action="contract.created",
        actor=actor,
        before=None,
        after=view,
        effective_at=terms.starts_at,
    )
    await invalidation.bump_customer(session, customer_id=customer.id, customer_key=customer.key)
    return view


# -- reads -----------------------------------------------------------------------------------


async def get(session: AsyncSession, contract_id: str, *, for_update: bool = False) -> ContractView:
    query = (
        select(Contract, Customer.key)
        .join(Customer, Customer.id == Contract.customer_id)
        .where(Contract.id == contract_id)
    )
    if for_update:
        query = query.with_for_update(of=Contract).execution_options(populate_existing=True)
    found = (await session.execute(query)).one_or_none()
    if found is None:
        raise ContractNotFound(f"Contract {contract_id!r} does not exist.")
    return ContractView(found[0], found[1])


async def list_for_customer(
    session: AsyncSession, *, customer_key: str, limit: int, cursor: str | None
) -> Page[ContractView]:
    """Oldest first (ids are ULIDs, so creation order)."""
    customer = await customers.get(session, customer_key)
    page = await paginate(
        session,
        select(Contract).where(Contract.customer_id == customer.id),
        Contract.id,
        limit=limit,
        cursor=cursor,
    )
    return Page(
        items=[ContractView(c, customer.key) for c in page.items], next_cursor=page.next_cursor
    )


async def list_revisions(
    session: AsyncSession, *, contract_id: str, limit: int, cursor: str | None
) -> Page[ContractRevision]:
    """In revision order, which is also `effective_at` order (amendments never go back)."""
    await get(session, contract_id)
    return await paginate(
        session,
        select(ContractRevision).where(ContractRevision.contract_id == contract_id),
        ContractRevision.revision,
        limit=limit,
        cursor=cursor,
    )


async def current_terms(
    session: AsyncSession, *, customer_id: int, at: datetime
) -> ContractTerms | None:
    """The customer's contract in force at `at` and the revision of it in force then.

    None when no contract's term holds `at` (none yet, expired, terminated, or scheduled
    later). The term bounds come from the contract as it stands (an amendment or a
    termination moves them for the whole term); everything else from the revision with the
    latest `effective_at` at or before `at`. Core selects only: the decision path calls it.
    """
    found = (
        await session.execute(
            select(Contract.id, Contract.starts_at, Contract.ends_at, Contract.terminated_at)
            .where(
                Contract.customer_id == customer_id,
                Contract.starts_at <= at,
                or_(Contract.ends_at.is_(None), Contract.ends_at > at),
            )
            .order_by(Contract.starts_at.desc())
            .limit(1)
        )
    ).one_or_none()
    if found is None:
        return None
    contract_id, starts_at, ends_at, terminated_at = found
    revision = (
        await session.execute(
            select(ContractRevision.revision, ContractRevision.effective_at, ContractRevision.terms)
            .where(
                ContractRevision.contract_id == contract_id,
                ContractRevision.effective_at <= at,
            )
            .order_by(ContractRevision.revision.desc())
            .limit(1)
        )
    ).one()  # revision 1 takes effect at starts_at <= at, so one always exists
    terms = Terms.from_json(revision.terms).replace(
        starts_at=starts_at, ends_at=ends_at, terminated_at=terminated_at
    )
    return ContractTerms(
        contract_id=contract_id,
        customer_id=customer_id,
        revision=revision.revision,
        effective_at=revision.effective_at,
        terms=terms,
    )


# -- the customer delete guard ---------------------------------------------------------------


async def refuse_customer_delete(session: AsyncSession, customer: Customer) -> str | None:
    """Contracts (and their revisions) are what invoices are computed from: they stay, and
    so does their customer."""
    count, first = (
        await session.execute(
            select(func.count(), func.min(Contract.id)).where(Contract.customer_id == customer.id)
        )
    ).one()
    if not count:
        return None
    return (
        f"Customer {customer.key!r} has {count} contract{'s' if count != 1 else ''} "
        f"(e.g. {first}); contracts are kept for billing and audit, so the customer cannot "
        "be deleted. Terminate its contract instead."
    )
