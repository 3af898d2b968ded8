"""What an invoice is computed from, read for one contract and one calendar month.

    period(text, now)              "2026-11" → [start, end) in UTC; a future month is a 422
    gather(session, contract, …)   → Gathered: segments (revision × policy version in force),
                                     member seats or sessions, instance leases, counters

Segments split the contract's active part of the month at every revision's `effective_at`
and, for revisions that pin no version, at every policy activation (`policy_activations`):
each segment names the version whose prices apply. Intervals still open end at `now` (a lease
at its expiry if sooner). Meter totals come from the hourly counters, attributed by the hour
they were counted in — never from a scan of the events.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from allotment.billing.pricing import Interval, MeterTotal, Segment
from allotment.contracts.terms import Terms, seat_limits
from allotment.errors import NotFound, ValidationFailed
from allotment.policy.catalog import Catalog
from allotment.policy.catalogs import load_catalog

_PERIOD = re.compile(r"^([0-9]{4})-([0-9]{2})$")  # ASCII: \d takes any script's digits

_CONTRACT = text(
    "SELECT k.id, k.customer_id, k.starts_at, k.ends_at, c.key AS customer "
    "FROM contracts k JOIN customers c ON c.id = k.customer_id WHERE k.id = :id"
)
_REVISIONS = text(
    "SELECT revision, effective_at, terms FROM contract_revisions WHERE contract_id = :id "
    "ORDER BY revision"
)
_ACTIVATIONS = text("SELECT version, at FROM policy_activations ORDER BY at, id")
_SEATS = text(
    "SELECT assigned_at AS start, released_at AS end FROM seats WHERE customer_id = :c "
    "AND type = 'member' AND assigned_at < :to AND (released_at IS NULL OR released_at > :from) "
    "ORDER BY assigned_at, id"
)
_SESSIONS = text(
    "SELECT opened_at AS start, coalesce(ended_at, least(expires_at, :now)) AS end "
    "FROM seat_sessions WHERE customer_id = :c AND opened_at < :to "
    "AND coalesce(ended_at, least(expires_at, :now)) > :from ORDER BY opened_at, id"
)
_INSTANCES = text(
    "SELECT registered_at AS start, coalesce(ended_at, least(lease_expires_at, :now)) AS end, "
    "weight, kind FROM instances WHERE customer_id = :c AND registered_at < :to "
    "AND coalesce(ended_at, least(lease_expires_at, :now)) > :from ORDER BY registered_at, id"
)
_COUNTERS = text(
    "SELECT meter, hour, kind, value, events FROM usage_counters "
    "WHERE customer_id = :c AND hour >= :from AND hour < :to"
)


def period(value: str, now: datetime) -> tuple[datetime, datetime]:
    found = _PERIOD.match(value)
    year, month = (int(found.group(1)), int(found.group(2))) if found else (0, 0)
    if found is None or not 1 <= month <= 12 or year < 1:  # there is no year 0000
        raise ValidationFailed(
            f"period {value!r} is not a month: write YYYY-MM",
            errors=[{"path": "period", "message": "a month, as YYYY-MM"}],
        )
    start = datetime(year, month, 1, tzinfo=UTC)
    if start > now:  # before `end`, which 9999-12 has not (year 10000)
        raise ValidationFailed(
            f"period {value} has not started: a preview is of this month or an earlier one",
            errors=[{"path": "period", "message": "a future month"}],
        )
    end = (
        datetime(year + 1, 1, 1, tzinfo=UTC)
        if month == 12
        else datetime(year, month + 1, 1, tzinfo=UTC)
    )
    return start, end


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
    now: datetime
    currency: str
    minor_digits: int
    segments: tuple[Segment, ...]
    seats: tuple[Interval, ...]
    instances: tuple[Interval, ...]
    counters: tuple[Any, ...]  # rows: meter, hour, kind, value, events
    terms: dict[int, Terms]  # by revision, for reconciliation

    def meters(self) -> Callable[[datetime, datetime, str], MeterTotal]:
        by_meter: dict[str, list[Any]] = {}
        for row in self.counters:
            by_meter.setdefault(row.meter, []).append(row)

        def total(start: datetime, end: datetime, meter: str) -> MeterTotal:
            rows = [r for r in by_meter.get(meter, ()) if start <= r.hour < end]
            if not rows:
                return MeterTotal(meter, Decimal(0), 0)
            values = [Decimal(r.value) for r in rows]
            quantity = max(values) if rows[0].kind == "max" else sum(values, Decimal(0))
            return MeterTotal(meter, quantity, sum(int(r.events) for r in rows))

        return total


async def contract_row(session: AsyncSession, contract_id: str) -> ContractRow:
    row = (await session.execute(_CONTRACT, {"id": contract_id})).one_or_none()
    if row is None:
        raise NotFound(f"No contract {contract_id!r}.", type="contract-not-found")
    return ContractRow(row.id, row.customer_id, row.customer, row.starts_at, row.ends_at)


def _version_at(activations: list[Any], moment: datetime, fallback: int | None) -> int | None:
    version = activations[0].version if activations else fallback
    for row in activations:
        if row.at <= moment:
            version = row.version
        else:
            break
    return version


async def gather(
    session: AsyncSession,
    *,
    contract: ContractRow,
    start: datetime,
    end: datetime,
    now: datetime,
    override: tuple[int, Catalog] | None = None,
) -> Gathered:
    """Everything the month's invoice is computed from. `override` prices every unpinned
    segment with that (version, catalog) instead (the policy dry-run's estimate)."""
    window_start = max(start, contract.starts_at)
    window_end = min(end, now, contract.ends_at or end)
    revisions = (await session.execute(_REVISIONS, {"id": contract.id})).all()
    terms = {r.revision: Terms.from_json(r.terms) for r in revisions}
    activations = list((await session.execute(_ACTIVATIONS)).all())
    catalogs: dict[int, Catalog] = {}

    async def catalog(version: int) -> Catalog:
        if override is not None and version == override[0]:
            return override[1]
        if version not in catalogs:
            catalogs[version] = (await load_catalog(session, version=version))[1]
        return catalogs[version]

    # For the current month the fees run to the month's (or the term's) end, or to the next
    # scheduled revision; usage, seats and instances are counted to now.
    fee_end = min(end, contract.ends_at or end)
    for candidate in revisions:
        if candidate.effective_at > window_end:
            fee_end = min(fee_end, candidate.effective_at)
            break
    cuts = {window_start, window_end}
    cuts.update(r.effective_at for r in revisions if window_start < r.effective_at < window_end)
    cuts.update(a.at for a in activations if window_start < a.at < window_end)
    bounds = sorted(cuts)
    segments: list[Segment] = []
    currency, digits = "USD", 2
    for seg_start, seg_end in zip(bounds, bounds[1:], strict=False):
        if seg_end <= seg_start:
            continue
        revision = revisions[0]
        for candidate in revisions:
            if candidate.effective_at <= seg_start:
                revision = candidate
        revision_terms = terms[revision.revision]
        pinned = revision_terms.policy_version
        if pinned is None and override is not None:
            version: int | None = override[0]
        else:
            version = pinned or _version_at(activations, seg_start, None)
        if version is None:
            continue  # nothing was ever published
        compiled = await catalog(version)
        currency, digits = compiled.currency, compiled.minor_digits
        plan = compiled.plans.get(revision_terms.plan)
        if plan is None:
            continue  # the plan is not in that version: nothing can price it
        pool = seat_limits(revision_terms, plan)
        segments.append(
            Segment(
                start=seg_start,
                end=seg_end,
                revision=revision.revision,
                policy_version=version,
                plan=plan,
                addons=tuple(
                    compiled.addons[a] for a in revision_terms.addons if a in compiled.addons
                ),
                kind=revision_terms.kind,
                discount_percent=revision_terms.discount_percent,
                seat_limit=pool.limit if pool is not None else None,
                seat_model=pool.model if pool is not None else None,
                fee_end=fee_end if seg_end == window_end else None,
            )
        )
    params = {"c": contract.customer_id, "from": start, "to": end, "now": now}
    concurrent = any(s.seat_model == "concurrent" for s in segments)
    seat_rows = (await session.execute(_SESSIONS if concurrent else _SEATS, params)).all()
    instance_rows = (await session.execute(_INSTANCES, params)).all()
    counters = tuple((await session.execute(_COUNTERS, params)).all())
    return Gathered(
        contract=contract,
        period_start=start,
        period_end=end,
        now=now,
        currency=currency,
        minor_digits=digits,
        segments=tuple(segments),
        seats=tuple(
            Interval(r.start, r.end if r.end is not None else min(now, end)) for r in seat_rows
        ),
        instances=tuple(
            Interval(r.start, r.end, weight=r.weight, kind=r.kind) for r in instance_rows
        ),
        counters=counters,
        terms=terms,
    )
