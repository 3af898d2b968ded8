"""Amending and terminating a contract: each writes a new revision, never edits an old one.

    amend(session, contract_id=, data=, if_match=, actor=)      PATCH  (If-Match required)
    terminate(session, contract_id=, at=, if_match=, actor=)    POST …/terminate

A revision's `effective_at` is never before the previous revision's, so revisions in number
order are also in time order, and billing can price a period interval by interval:
revision n is in force over [effective_at(n), effective_at(n+1)).

Termination is a revision too: effective where the term now ends, with `ends_at` moved
there and `terminated_at` recording the time asked for. Terminating a contract before it
starts cancels it: its term becomes empty (ends_at = starts_at).

Other domains may refuse an amendment (tenants: quotas that would no longer fit) with an
async `guard(session, contract, terms, catalog, at)` returning problems (`[{path,
message}]`), or act on one in its transaction (seats: a burst episode the new limit ends);
`wiring.amendment_guards()` and `wiring.amendment_effects()` list them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from allotment import invalidation, wiring
from allotment.contracts import entitlements
from allotment.contracts.entitlements import entitled
from allotment.contracts.models import Contract
from allotment.contracts.schemas import ContractAmend
from allotment.contracts.service import (
    ContractView,
    add_revision,
    catalog_for,
    get,
    lock_customer,
    record,
    refuse_overlap,
    refuse_problems,
)
from allotment.contracts.terms import Terms, check_terms
from allotment.errors import (
    Conflict,
    PreconditionFailed,
    PreconditionRequired,
    ValidationFailed,
)
from allotment.kit.clock import isoformat, utcnow
from allotment.policy.catalog import Catalog

AmendmentGuard = Callable[
    [AsyncSession, Contract, Terms, Catalog, datetime], Awaitable[list[dict[str, str]]]
]
# Run after an amendment is written, in its transaction: (session, contract, terms, catalog,
# effective_at, now). Seats use it to end a burst episode the new limit ends.
AmendmentEffect = Callable[
    [AsyncSession, Contract, Terms, Catalog, datetime, datetime], Awaitable[None]
]


class ContractTerminated(Conflict):
    type = "contract-terminated"
    title = "Contract terminated"


async def locked(session: AsyncSession, contract_id: str, if_match: int | None) -> ContractView:
    """The contract, read again under its customer's lock, checked against If-Match (also
    the start of a trial's conversion, contracts/convert.py)."""
    found = await get(session, contract_id)
    await lock_customer(session, customer_id=found.contract.customer_id)
    view = await get(session, contract_id, for_update=True)
    if if_match is not None and if_match != view.contract.revision:
        raise PreconditionFailed(
            f"Contract {contract_id} is at revision {view.contract.revision}, not {if_match}.",
            extra={"current_revision": view.contract.revision},
        )
    if view.contract.terminated_at is not None:
        raise ContractTerminated(
            f"Contract {contract_id} was terminated at "
            f"{isoformat(view.contract.terminated_at)}; a terminated contract is not amended. "
            "Record a new contract instead."
        )
    return view


async def amend(
    session: AsyncSession,
    *,
    contract_id: str,
    data: ContractAmend,
    if_match: int | None,
    actor: str,
) -> ContractView:
    if if_match is None:
        raise PreconditionRequired(
            "Amending a contract needs `If-Match: <revision>` (its ETag), so an amendment "
            "never silently overwrites another."
        )
    refuse_problems(data.immutable_problems(), "amendment")
    view = await locked(session, contract_id, if_match)
    contract = view.contract
    now = utcnow()
    current = Terms.from_json(contract.terms)
    changes = data.changes()
    # A contract whose latest revision takes effect later (a scheduled contract, or one
    # with a scheduled amendment) is amended from then by default, not refused.
    effective_at = data.effective_at or max(now, contract.effective_at)
    if effective_at < contract.effective_at:
        raise ValidationFailed(
            "An amendment cannot take effect before the previous revision does.",
            errors=[
                {
                    "path": "effective_at",
                    "message": f"must be at or after {isoformat(contract.effective_at)}, "
                    f"when revision {contract.revision} takes effect",
                }
            ],
        )
    terms = current.replace(**changes)
    if terms == current:
        return view  # nothing changes: no revision, no audit record
    version, catalog = await catalog_for(session, policy_version=terms.policy_version)
    problems = check_terms(terms, catalog, version=version)
    ends_too_soon = terms.ends_at is not None and terms.ends_at < effective_at
    if "ends_at" in changes and ends_too_soon and not any(p["path"] == "ends_at" for p in problems):
        problems.append(
            {
                "path": "ends_at",
                "message": f"must not be before the amendment takes effect "
                f"({isoformat(effective_at)}); to end a contract earlier, terminate it",
            }
        )
    if (
        terms.kind == "standard"
        and terms.discount_percent not in (None, current.discount_percent)
        and "discount_reason" not in changes
        and not any(p["path"] == "discount_reason" for p in problems)
    ):
        problems.append(
            {
                "path": "discount_reason",
                "message": "required with a changed discount: why the new one was negotiated",
            }
        )
    return await apply_revision(
        session,
        contract,
        view,
        terms,
        catalog,
        problems,
        what="amendment",
        action="contract.amended",
        effective_at=effective_at,
        now=now,
        actor=actor,
        check_overlap=terms.ends_at != current.ends_at,
    )


async def apply_revision(
    session: AsyncSession,
    contract: Contract,
    view: ContractView,
    terms: Terms,
    catalog: Catalog,
    problems: list[dict[str, str]],
    *,
    what: str,
    action: str,
    effective_at: datetime,
    now: datetime,
    actor: str,
    check_overlap: bool,
) -> ContractView:
    """The steps an amendment and a trial's conversion share once `terms` are built: the
    other domains' guards, the 422 of every problem, the overlap check (when the term's end
    moved), the revision, its effects, the audit record and the customer's invalidation."""
    for guard in wiring.amendment_guards():
        problems += await guard(session, contract, terms, catalog, max(now, effective_at))
    refuse_problems(problems, what)
    if check_overlap:
        await refuse_overlap(
            session,
            customer_id=contract.customer_id,
            starts_at=terms.starts_at,
            ends_at=terms.ends_at,
            exclude=contract.id,
        )
    before = view.snapshot()
    previous = Terms.from_json(contract.terms)
    at = max(now, effective_at)
    _, previous_catalog = await catalog_for(session, policy_version=previous.policy_version)
    entitled_before = entitled(previous, previous_catalog, at)
    add_revision(session, contract, terms=terms, effective_at=effective_at, actor=actor, now=now)
    await session.flush()
    for effect in wiring.amendment_effects():
        await effect(session, contract, terms, catalog, effective_at, now)
    await entitlements.announce(
        session,
        customer_key=view.customer_key,
        contract_id=contract.id,
        cause=what,
        before=entitled_before,
        after=entitled(terms, catalog, at),
        at=at,
        revision=contract.revision,
    )
    record(
        session,
        action=action,
        actor=actor,
        before=before,
        after=view,
        effective_at=effective_at,
    )
    await invalidation.bump_customer(
        session, customer_id=contract.customer_id, customer_key=view.customer_key
    )
    return view


async def terminate(
    session: AsyncSession,
    *,
    contract_id: str,
    at: datetime | None,
    if_match: int | None,
    actor: str,
) -> ContractView:
    view = await locked(session, contract_id, if_match)
    contract = view.contract
    now = utcnow()
    at = at or now
    end = max(at, contract.starts_at)  # before the start: cancelled, an empty term
    if contract.ends_at is not None and end >= contract.ends_at:
        raise ValidationFailed(
            f"Contract {contract_id} already ends at {isoformat(contract.ends_at)}.",
            errors=[{"path": "at", "message": "must be before the term's end"}],
        )
    if end < contract.effective_at:
        raise ValidationFailed(
            "A termination cannot take effect before the latest revision does.",
            errors=[
                {
                    "path": "at",
                    "message": f"must be at or after {isoformat(contract.effective_at)}, "
                    f"when revision {contract.revision} takes effect",
                }
            ],
        )
    before = view.snapshot()
    terms = Terms.from_json(contract.terms).replace(ends_at=end, terminated_at=at)
    add_revision(session, contract, terms=terms, effective_at=end, actor=actor, now=now)
    await session.flush()
    record(
        session,
        action="contract.terminated",
        actor=actor,
        before=before,
        after=view,
        effective_at=end,
    )
    await invalidation.bump_customer(
        session, customer_id=contract.customer_id, customer_key=view.customer_key
    )
    return view
