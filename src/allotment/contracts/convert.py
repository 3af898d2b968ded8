"""A trial's conversion to a paid contract, in place (docs/contracts.md, "Converting a trial").

    convert(session, contract_id=, data=, if_match=, actor=)    POST …/convert

One revision, effective at `at` (default now): kind standard, the target plan, add-ons and
bought quantities, the paid term's end (default open-ended). The trial's revisions stay as
they were, so its invoice credits the trial up to `at` and prices the paid terms after it.
The contract's term never has a gap: the new revision takes effect no later than the trial
ends, and it moves the term's end in the same write, so no instant lies between a trial that
ended and a contract that began (a check answers from the trial's terms before `at` and from
the paid terms from `at` on, never `trial_expired`).
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from allotment.contracts.amend import apply_revision, locked
from allotment.contracts.schemas import ContractConvert
from allotment.contracts.service import (
    ContractView,
    catalog_for,
)
from allotment.contracts.terms import Terms, check_terms
from allotment.errors import Conflict, ValidationFailed
from allotment.kit.clock import isoformat, utcnow


class NotATrial(Conflict):
    type = "contract-not-trial"
    title = "Not a trial"


async def convert(
    session: AsyncSession,
    *,
    contract_id: str,
    data: ContractConvert,
    if_match: int | None,
    actor: str,
) -> ContractView:
    view = await locked(session, contract_id, if_match)
    contract = view.contract
    current = Terms.from_json(contract.terms)
    if current.kind != "trial":
        raise NotATrial(
            f"Contract {contract_id} is a {current.kind} contract, not a trial; only a trial "
            "converts. Amend it (PATCH) to change its plan or add-ons.",
            extra={"kind": current.kind},
        )
    now = utcnow()
    at = data.at or max(now, contract.effective_at)
    trial_end = current.ends_at
    if at < contract.effective_at:
        raise ValidationFailed(
            "A conversion cannot take effect before the latest revision does.",
            errors=[
                {
                    "path": "at",
                    "message": f"must be at or after {isoformat(contract.effective_at)}, "
                    f"when revision {contract.revision} takes effect",
                }
            ],
        )
    if trial_end is not None and at > trial_end:
        raise ValidationFailed(
            f"The trial ended at {isoformat(trial_end)}; a conversion takes effect at the "
            "latest when the trial ends (it may be backdated), or record a new contract.",
            errors=[{"path": "at", "message": f"must not be after {isoformat(trial_end)}"}],
        )
    terms = current.replace(
        kind="standard",
        ends_at=data.ends_at,
        # A trial carries no discount; the paid contract a negotiated one if the request
        # gives it (with its reason).
        **{"discount_percent": None, "discount_reason": None, **data.changes()},
    )
    version, catalog = await catalog_for(session, policy_version=terms.policy_version)
    problems = check_terms(terms, catalog, version=version)
    if terms.ends_at is not None and terms.ends_at <= at:
        problems.append({"path": "ends_at", "message": "must be after the conversion (at)"})
    return await apply_revision(
        session,
        contract,
        view,
        terms,
        catalog,
        problems,
        what="conversion",
        action="contract.converted",
        effective_at=at,
        now=now,
        actor=actor,
        check_overlap=True,
    )
