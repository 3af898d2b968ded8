"""Contracts a policy version would orphan: what each live unpinned contract would lose.

    problems(terms, current=, proposed=, held=, quotas=, at=)  → [{path, message}]   pure
    find_orphans(session, proposed=, now=)                     → [Orphan]  every live one
    Orphan.to_json()                                           → {contract, customer, problems}

The one place that decides it (docs/policy.md#orphaned-contracts): the policy dry-run lists
these, and publish and rollback refuse a version that has any (409 `policy-orphans-contracts`)
unless forced. A contract is *live* when its term has not ended (in force or scheduled, not
cancelled); a revision that pins a `policy_version` is not affected by a publish and is
skipped. For each revision of a live contract still to apply (the one in force now and any
scheduled), the problems are those the proposed catalog raises and the active one does not:

    plan                       the plan is not in the proposed version
    addons[i]                  an add-on it lists is not
    overrides[i].feature|meter a feature or meter an override names is not
    seats, instances, seats.burst   the contract sizes a pool the plan no longer has…
    seats.limit                the contract in force holds more member seats (or live sessions)
                               than the proposed limit, which is lower than the active one
    seats.guests               the same for guest seats
    seats.model                seats of one model are held and the plan switches model
    instances.limit            the live instances' weight, against a lowered instance limit
    tenants.quotas.seats|instances|meters.<m>   the tenants' quotas over a lowered limit

Capacity is judged for the contract in force now only (a scheduled one holds nothing), and
only where the proposed version lowers what the active one allows: a pool already over its
limit (a burst, an amendment) is not the publish's doing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from allotment.contracts.limits import effective_limits as limits_of
from allotment.contracts.models import Contract, ContractRevision
from allotment.contracts.terms import Problem, Terms, TermsOutOfCatalog, check_terms
from allotment.customers.models import Customer
from allotment.policy.catalog import Catalog
from allotment.tenants.quotas import Quotas, excesses, total

__all__ = ["BATCH_SIZE", "Held", "Orphan", "find_orphans", "problems"]

BATCH_SIZE = 500
Version = tuple[int, Catalog]


@dataclass(frozen=True)
class Held:
    """What a customer holds now: live member and guest seats, live sessions, instance weight,
    and its tenants' quotas."""

    members: int = 0
    guests: int = 0
    sessions: int = 0
    weight: int = 0
    quotas: tuple[Quotas, ...] = field(default=())


@dataclass(frozen=True)
class Orphan:
    contract: str
    customer: str
    problems: tuple[Problem, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "contract": self.contract,
            "customer": self.customer,
            "problems": [dict(p) for p in self.problems],
        }


# -- the pure rule ---------------------------------------------------------------------------


def problems(
    terms: Terms, *, current: Version, proposed: Version, held: Held | None, at: datetime
) -> list[Problem]:
    """What `terms` (an unpinned revision) would lose were `proposed` to replace `current`.

    `held` is what the customer holds now when `terms` is the revision in force now, else None
    (a scheduled contract or amendment holds nothing yet)."""
    before_paths = {p["path"] for p in check_terms(terms, current[1], version=current[0])}
    found = [
        p
        for p in check_terms(terms, proposed[1], version=proposed[0])
        if p["path"] not in before_paths
    ]
    if held is None or any(p["path"] == "plan" for p in found):
        return found
    try:
        old = limits_of(terms, current[1], at=at)
        new = limits_of(terms, proposed[1], at=at)
    except TermsOutOfCatalog:
        return found  # already broken under the active version: not this publish's doing
    version = proposed[0]
    reported = {p["path"] for p in found}

    def add(path: str, message: str) -> None:
        if path not in reported:
            reported.add(path)
            found.append({"path": path, "message": message})

    if old.seats is not None:
        in_use = held.sessions if old.seats.model == "concurrent" else held.members
        noun = "sessions" if old.seats.model == "concurrent" else "member seats"
        if new.seats is None:
            if in_use or held.guests:
                add(
                    "seats",
                    f"plan '{terms.plan}' has no seat pool in policy version {version}; "
                    f"{in_use + held.guests} seats are held",
                )
        elif new.seats.model != old.seats.model and in_use:
            add(
                "seats.model",
                f"plan '{terms.plan}' has {new.seats.model} seats in policy version {version}; "
                f"{in_use} {noun} are held",
            )
        else:
            if in_use > new.seats.limit and new.seats.limit < old.seats.limit:
                add(
                    "seats.limit",
                    f"{in_use} {noun} are held; policy version {version} allows "
                    f"{new.seats.limit} (now {old.seats.limit})",
                )
            if held.guests > new.seats.guests and new.seats.guests < old.seats.guests:
                add(
                    "seats.guests",
                    f"{held.guests} guest seats are held; policy version {version} allows "
                    f"{new.seats.guests} (now {old.seats.guests})",
                )
    if old.instances is not None:
        if new.instances is None:
            if held.weight:
                add(
                    "instances",
                    f"plan '{terms.plan}' has no instance pool in policy version {version}; "
                    f"live instances weigh {held.weight}",
                )
        elif held.weight > new.instances.limit and new.instances.limit < old.instances.limit:
            add(
                "instances.limit",
                f"live instances weigh {held.weight}; policy version {version} allows "
                f"{new.instances.limit} (now {old.instances.limit})",
            )
    if held.quotas:
        summed = total(held.quotas)
        already = {(e.dimension, e.meter) for e in excesses(summed, old)}
        for excess in excesses(summed, new):
            if (excess.dimension, excess.meter) in already:
                continue
            path = (
                f"tenants.quotas.meters.{excess.meter}"
                if excess.dimension == "meter"
                else f"tenants.quotas.{excess.dimension}"
            )
            limit = "no such pool" if excess.limit is None else f"a limit of {excess.limit}"
            add(
                path,
                f"the tenants' {excess.noun} quotas total {excess.total}; policy version "
                f"{version} leaves {limit}",
            )
    return found


# -- reading live contracts ------------------------------------------------------------------

_HELD = text(
    "SELECT c.id AS customer_id, "
    "(SELECT count(*) FROM seats s WHERE s.customer_id = c.id AND s.released_at IS NULL "
    " AND s.type = 'member') AS members, "
    "(SELECT count(*) FROM seats s WHERE s.customer_id = c.id AND s.released_at IS NULL "
    " AND s.type = 'guest') AS guests, "
    "(SELECT count(*) FROM seat_sessions x WHERE x.customer_id = c.id AND x.ended_at IS NULL "
    " AND x.expires_at > :now) AS sessions, "
    "(SELECT coalesce(sum(i.weight), 0) FROM instances i WHERE i.customer_id = c.id "
    " AND i.ended_at IS NULL AND i.lease_expires_at > :now) AS weight, "
    "(SELECT coalesce(json_agg(t.quotas), '[]'::json) FROM tenants t "
    " WHERE t.customer_id = c.id) AS quotas "
    "FROM customers c WHERE c.id = ANY(:ids)"
)


async def _held(
    session: AsyncSession, customer_ids: Sequence[int], now: datetime
) -> dict[int, Held]:
    rows = await session.execute(_HELD, {"ids": list(customer_ids), "now": now})
    return {
        row.customer_id: Held(
            members=row.members,
            guests=row.guests,
            sessions=row.sessions,
            weight=int(row.weight),
            quotas=tuple(Quotas.from_json(q) for q in row.quotas or ()),
        )
        for row in rows
    }


async def find_orphans(
    session: AsyncSession,
    *,
    current: Version,
    proposed: Version,
    now: datetime,
    batch_size: int = BATCH_SIZE,
) -> list[Orphan]:
    """Every live contract `proposed` would orphan were it to replace `current` (the active
    version), in contract id order. Reads in keyset batches of `batch_size` contracts."""
    if proposed[1] is current[1]:
        return []
    found: list[Orphan] = []
    last = ""
    while True:
        contracts = (
            await session.execute(
                select(
                    Contract.id,
                    Contract.customer_id,
                    Customer.key,
                    Contract.starts_at,
                    Contract.ends_at,
                    Contract.terminated_at,
                )
                .join(Customer, Customer.id == Contract.customer_id)
                .where(
                    Contract.id > last,
                    or_(Contract.ends_at.is_(None), Contract.ends_at > now),
                    or_(Contract.ends_at.is_(None), Contract.ends_at > Contract.starts_at),
                )
                .order_by(Contract.id)
                .limit(batch_size)
            )
        ).all()
        if not contracts:
            return found
        last = contracts[-1].id
        revisions: dict[str, list[Any]] = {}
        for row in (
            await session.execute(
                select(
                    ContractRevision.contract_id,
                    ContractRevision.revision,
                    ContractRevision.effective_at,
                    ContractRevision.terms,
                )
                .where(ContractRevision.contract_id.in_([c.id for c in contracts]))
                .order_by(ContractRevision.contract_id, ContractRevision.revision)
            )
        ).all():
            revisions.setdefault(row.contract_id, []).append(row)
        in_force = [c for c in contracts if c.starts_at <= now]
        held = (
            await _held(session, sorted({c.customer_id for c in in_force}), now) if in_force else {}
        )
        for contract in contracts:
            # The revision in force now (the last one at or before now) and every later one.
            rows = revisions.get(contract.id, [])
            applies = [r for r in rows if r.effective_at > now]
            past = [r for r in rows if r.effective_at <= now]
            if past:
                applies.insert(0, past[-1])
            seen: dict[tuple[str, str], Problem] = {}
            for row in applies:
                terms = Terms.from_json(row.terms).replace(
                    starts_at=contract.starts_at,
                    ends_at=contract.ends_at,
                    terminated_at=contract.terminated_at,
                )
                if terms.policy_version is not None:
                    continue  # pinned: a publish does not move it
                now_in_force = contract.starts_at <= now and row.effective_at <= now
                for problem in problems(
                    terms,
                    current=current,
                    proposed=proposed,
                    held=held.get(contract.customer_id, Held()) if now_in_force else None,
                    at=now,
                ):
                    seen.setdefault((problem["path"], problem["message"]), problem)
            if seen:
                found.append(Orphan(contract.id, contract.key, tuple(seen.values())))
