"""What an invoice is computed from, read for one contract and one calendar month, as known at
one instant (`as_of`, billing/instant.py): the same `as_of` always reads the same inputs.

    gather(session, contract, …)   → Gathered: segments (revision × policy version in force),
                                     member seats or sessions, instance leases, meter ledgers

The contract's active part of the month is [max(month start, starts_at), min(month end,
ends_at, as_of)); empty when the contract starts later (nothing before a scheduled start is
billed). It is cut at every revision's `effective_at` and, only where the revision in force
pins no version, at every policy activation: each segment names the version whose prices
apply (the pinned one; else the one active at its start; before the first activation, the
first version activated). Only revisions and activations recorded by `as_of` count. Intervals
still open end at `as_of` (a lease at its expiry if sooner). Meter totals come from
`usage/totals.py`: hourly counters for whole hours, the events themselves for every hour a
segment boundary cuts and for events received after `as_of` (docs/billing.md, "Boundaries").

A contract billed in another currency than its catalog's (`currency` in its terms) is priced
with its plan's and add-ons' price lists in that currency (a plan without one leaves the time
unpriced, as a plan missing from the catalog does). A plan with a yearly meter reads its use
from the start of the contract year the month opens in (billing/annual.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from allotment.billing.annual import Dues, annual_dues
from allotment.billing.commitments import plan_starts
from allotment.billing.priced import Interval, MeterTotal, PricingInput, Segment
from allotment.billing.pricing import price
from allotment.contracts import history as contracts_history
from allotment.contracts.limits import seat_limits
from allotment.contracts.terms import Terms
from allotment.contracts.years import contract_year, pieces
from allotment.errors import NotFound
from allotment.instances import history as instances_history
from allotment.policy import service as policies
from allotment.policy.catalog import Addon, Catalog, Meter, Plan
from allotment.policy.catalog_cache import load_catalog
from allotment.policy.money import minor_digits
from allotment.seats import history as seats_history
from allotment.usage import totals


@dataclass(frozen=True)
class Proposed:
    """A policy version taken as activated at `at`, after every activation recorded before
    it (the policy dry-run's estimate: the month keeps the versions it was priced under so
    far, and `version` applies from `at` on, as a publish at `at` would make it)."""

    version: int
    catalog: Catalog
    at: datetime


@dataclass(frozen=True)
class _Activation:
    version: int
    at: datetime


@dataclass(frozen=True)
class ContractRow:
    id: str
    customer_id: int
    customer: str
    starts_at: datetime
    ends_at: datetime | None


@dataclass(frozen=True)
class Gathered:
    contract: ContractRow
    period_start: datetime
    period_end: datetime
    as_of: datetime
    currency: str
    minor_digits: int
    segments: tuple[Segment, ...]
    seats: tuple[Interval, ...]
    instances: tuple[Interval, ...]
    usage: totals.Ledgers
    terms: dict[int, Terms]  # by revision, for reconciliation
    # Parts of the contract's active time no policy version could price: (start, end, why).
    unpriced: tuple[tuple[datetime, datetime, str], ...] = ()
    # A yearly minimum: what each contract year the month touches committed before it.
    committed_before: Mapping[int, Decimal] = dataclasses.field(default_factory=dict)

    def pricing_input(self) -> PricingInput:
        return PricingInput(
            period_start=self.period_start,
            period_end=self.period_end,
            currency=self.currency,
            minor_digits=self.minor_digits,
            segments=self.segments,
            seats=self.seats,
            instances=self.instances,
            meters=self.meters(),
            committed_before=self.committed_before,
        )

    def meters(self) -> Callable[[datetime, datetime, str], MeterTotal]:
        def total(start: datetime, end: datetime, meter: str) -> MeterTotal:
            ledger = self.usage.ledger(meter)
            if ledger is None:
                return MeterTotal(meter, Decimal(0), 0)
            found = ledger.total(start, end)
            return MeterTotal(
                meter,
                found.quantity,
                found.events,
                exact=found.exact,
                level=ledger.meter.is_level(),
            )

        return total


async def contract_row(session: AsyncSession, contract_id: str) -> ContractRow:
    row = await contracts_history.contract(session, contract_id)
    if row is None:
        raise NotFound(f"No contract {contract_id!r}.", type="contract-not-found")
    return ContractRow(row.id, row.customer_id, row.customer, row.starts_at, row.ends_at)


def _version_at(activations: list[Any], moment: datetime) -> int | None:
    """The version active at `moment`; before the first activation, the first version
    activated (a backdated contract is priced from its start with the catalog it first
    followed); None when nothing was ever published."""
    version = activations[0].version if activations else None
    for row in activations:
        if row.at <= moment:
            version = row.version
        else:
            break
    return version


def _priced(terms: Terms) -> tuple[Any, ...]:
    """What of a revision's terms its invoice lines depend on (billing/groups.py merges
    segments whose prices, add-ons, kind, discount and seat terms are equal)."""
    return (
        terms.plan,
        tuple(sorted(terms.addons)),
        terms.addon_quantities,
        terms.kind,
        terms.discount_percent,
        terms.discount_reason,
        terms.seats,
        terms.policy_version,
        terms.quantities,
    )


def _in_force(revisions: Sequence[Any], moment: datetime) -> Any:
    found = revisions[0]
    for candidate in revisions:
        if candidate.effective_at <= moment:
            found = candidate
    return found


async def gather(
    session: AsyncSession,
    *,
    contract: ContractRow,
    start: datetime,
    end: datetime,
    as_of: datetime,
    override: Proposed | None = None,
    year_to_date: bool = True,
    late_before: bool = False,
) -> Gathered:
    """Everything the month's invoice is computed from, as known at `as_of`. `override`
    adds an activation of the proposed version (the policy dry-run's estimate): unpinned
    segments from its instant on are priced with it, earlier ones as they were. Under a
    yearly minimum, the months of the contract year before this one are gathered and priced
    too, unless `year_to_date` is false (`_committed_before`). `late_before`: the late
    events reported are only those whose time lies before `as_of` (use the lines leave out
    of the time they price), not the use after the instant too."""
    revisions = await contracts_history.revisions(session, contract.id, as_of=as_of)
    terms = {r.revision: Terms.from_json(r.terms) for r in revisions}
    activations: list[Any] = list(await policies.activations(session, as_of=as_of))
    if override is not None:
        activations = [a for a in activations if a.at < override.at]
        activations.append(_Activation(override.version, override.at))
    catalogs: dict[int, Catalog] = {}

    async def catalog(version: int) -> Catalog:
        if override is not None and version == override.version:
            return override.catalog
        if version not in catalogs:
            catalogs[version] = (await load_catalog(session, version=version))[1]
        return catalogs[version]

    segments: list[Segment] = []
    unpriced: list[tuple[datetime, datetime, str]] = []
    currency, digits = "USD", 2
    window_start, window_end = start, start  # empty until the contract's terms are known
    term_end = start
    plans_started: dict[str, datetime] = {}  # when each plan's one-time fees fall due
    dues = Dues()  # when annual fees fall due (billing/annual.py)
    chosen: str | None = None  # the contract's currency; None: its catalog's
    contract_start: datetime | None = None
    contract_end: datetime | None = None
    if revisions:
        latest = terms[revisions[-1].revision]  # its term bounds are the contract's own
        chosen, contract_start = latest.currency, latest.starts_at
        contract_end = latest.ends_at
        window_start = max(start, latest.starts_at)
        term_end = min(end, latest.ends_at or end)
        window_end = min(as_of, term_end)
        plans_started = plan_starts(
            [(r.effective_at, terms[r.revision].plan, terms[r.revision].kind) for r in revisions],
            starts_at=latest.starts_at,
            ends_at=latest.ends_at,
        )
        dues = annual_dues(
            [
                (
                    r.effective_at,
                    terms[r.revision].plan,
                    terms[r.revision].kind,
                    terms[r.revision].addons,
                )
                for r in revisions
            ],
            starts_at=latest.starts_at,
            ends_at=latest.ends_at,
            until=end,
        )
    if chosen is not None:
        currency, digits = chosen, minor_digits(chosen)
    if window_end > window_start:
        # For the current month the fees run to the month's (or the term's) end, or to the
        # next scheduled revision; usage, seats and instances are counted to `as_of`.
        # A scheduled revision that changes nothing priced (an override, an attribute) does
        # not end the fees: it would merge with this one when it comes.
        fee_end = term_end
        current = _priced(terms[_in_force(revisions, window_end).revision])
        for candidate in revisions:
            if (
                candidate.effective_at > window_end
                and _priced(terms[candidate.revision]) != current
            ):
                fee_end = min(fee_end, candidate.effective_at)
                break
        cuts = {window_start, window_end}
        cuts.update(r.effective_at for r in revisions if window_start < r.effective_at < window_end)
        for activation in activations:  # a pinned revision is not cut by unrelated publishes
            if window_start < activation.at < window_end:
                pinned = terms[_in_force(revisions, activation.at).revision].policy_version
                if pinned is None:
                    cuts.add(activation.at)
        bounds = sorted(cuts)
        for seg_start, seg_end in zip(bounds, bounds[1:], strict=False):
            revision = _in_force(revisions, seg_start)
            revision_terms = terms[revision.revision]
            pinned = revision_terms.policy_version
            version = pinned or _version_at(activations, seg_start)
            if version is None:
                unpriced.append((seg_start, seg_end, "no policy version was ever published"))
                continue
            compiled = await catalog(version)
            if chosen is None:
                currency, digits = compiled.currency, compiled.minor_digits
            plan = compiled.plans.get(revision_terms.plan)
            addons = tuple(
                compiled.addons[a] for a in revision_terms.addons if a in compiled.addons
            )
            if plan is not None and chosen is not None and chosen != compiled.currency:
                plan, addons = _in_currency(plan, addons, chosen)
                if plan is None:
                    unpriced.append(
                        (
                            seg_start,
                            seg_end,
                            f"plan '{revision_terms.plan}' has no {chosen} price list in "
                            f"policy version {version}",
                        )
                    )
                    continue
            if plan is None:
                unpriced.append(
                    (
                        seg_start,
                        seg_end,
                        f"plan '{revision_terms.plan}' is not in policy version {version}",
                    )
                )
                continue
            pool = seat_limits(revision_terms, plan, addons=compiled.addons)
            bought = revision_terms.quantities
            segments.append(
                Segment(
                    start=seg_start,
                    end=seg_end,
                    revision=revision.revision,
                    policy_version=version,
                    plan=plan,
                    addons=addons,
                    kind=revision_terms.kind,
                    discount_percent=revision_terms.discount_percent,
                    discount_reason=revision_terms.discount_reason,
                    addon_quantities=revision_terms.addon_quantities,
                    seat_limit=pool.limit if pool is not None else None,
                    seat_model=pool.model if pool is not None else None,
                    fee_end=fee_end if seg_end == window_end else None,
                    plan_started=plans_started.get(revision_terms.plan),
                    contracted_seats=bought.seats if bought is not None else None,
                    contracted_instances=bought.instances if bought is not None else None,
                    contract_start=contract_start,
                    contract_end=contract_end,
                    dues=dues,
                )
            )
    customer_id = contract.customer_id
    if any(s.seat_model == "concurrent" for s in segments):
        seat_rows = await seats_history.sessions(
            session, customer_id=customer_id, start=start, end=end, now=as_of
        )
    else:
        seat_rows = await seats_history.members(
            session, customer_id=customer_id, start=start, end=end
        )
    instance_rows = await instances_history.held(
        session, customer_id=customer_id, start=start, end=end, now=as_of
    )
    meters: dict[str, Meter] = {}
    for version in sorted({s.policy_version for s in segments}):
        for name, meter in (await catalog(version)).meters.items():
            meters.setdefault(name, meter)
    # A yearly meter counts from its contract year's start, which may lie in an earlier month.
    read_from, year_cuts = window_start, []
    if contract_start is not None and any(_yearly(s.plan) for s in segments):
        year = contract_year(contract_start, window_start)
        read_from = min(window_start, max(year.start, contract_start))
        year_cuts = [year.start, year.end]
    usage = await totals.read(
        session,
        customer_id=contract.customer_id,
        meters=[meters[name] for name in sorted(meters)],
        start=read_from,
        end=max(window_start, window_end),
        cuts=[s.start for s in segments]
        + [s.end for s in segments]
        + [cut for cut in year_cuts if read_from < cut < window_end],
        as_of=as_of,
        # What a preview taken later would add: the contract's active time in the month,
        # not only up to as_of (use after as_of is late too).
        report=(
            window_start,
            max(window_start, min(term_end, as_of) if late_before else term_end),
        ),
    )
    gathered = Gathered(
        contract=contract,
        period_start=start,
        period_end=end,
        as_of=as_of,
        currency=currency,
        minor_digits=digits,
        segments=tuple(segments),
        seats=tuple(
            Interval(r.start, r.end if r.end is not None else min(as_of, end))
            for r in seat_rows
            if r.start <= as_of
        ),
        instances=tuple(
            Interval(r.start, r.end, weight=r.weight, kind=r.kind)
            for r in instance_rows
            if r.start <= as_of
        ),
        usage=usage,
        terms=terms,
        unpriced=tuple(unpriced),
    )
    if not year_to_date or contract_start is None:
        return gathered
    committed = await _committed_before(
        session,
        contract=contract,
        segments=segments,
        contract_start=contract_start,
        start=start,
        as_of=as_of,
        override=override,
    )
    return dataclasses.replace(gathered, committed_before=committed)


async def _committed_before(
    session: AsyncSession,
    *,
    contract: ContractRow,
    segments: Sequence[Segment],
    contract_start: datetime,
    start: datetime,
    as_of: datetime,
    override: Proposed | None,
) -> dict[int, Decimal]:
    """For each contract year a yearly minimum's segment of the month lies in, what the
    year's months before this one committed (docs/billing.md, "minimum"): each such month
    gathered and priced as its own preview, as known at `as_of`. At most 11 months a year."""
    yearly = [s for s in segments if s.plan.price.minimum_period == "year"]
    years = {year for s in yearly for year, _, _ in pieces(contract_start, s.start, s.end)}
    committed: dict[int, Decimal] = {}
    for year in sorted(years, key=lambda y: y.number):
        committed[year.number] = Decimal(0)
        month = max(year.start, contract_start).replace(
            day=1, hour=0, minute=0, second=0, microsecond=0
        )
        while month < start:
            following = (month + timedelta(days=32)).replace(day=1)
            earlier = await gather(
                session,
                contract=contract,
                start=month,
                end=following,
                as_of=as_of,
                override=override,
                year_to_date=False,
            )
            priced = price(earlier.pricing_input())
            committed[year.number] += priced.committed.get(year.number, Decimal(0))
            month = following
    return committed


def _in_currency(
    plan: Plan, addons: tuple[Addon, ...], currency: str
) -> tuple[Plan | None, tuple[Addon, ...]]:
    """The plan and add-ons with their `currency` price lists (None: the plan has none; an
    add-on without one is free, as contracts/terms.py lets only a free add-on lack one)."""
    listed = plan.price_lists.get(currency)
    if listed is None:
        return None, addons
    return dataclasses.replace(plan, price=listed), tuple(
        dataclasses.replace(addon, price=addon.price_lists.get(currency, Decimal(0)))
        for addon in addons
    )


def _yearly(plan: Plan) -> bool:
    """Whether the plan counts a meter over the contract year: a yearly allowance (priced) or
    a yearly limit (reconciled)."""
    return any(p.period == "year" for p in plan.price.meters.values()) or any(
        limit.period == "year" for limit in plan.limits.values()
    )
