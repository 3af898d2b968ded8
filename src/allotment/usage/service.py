"""Ingesting usage events exactly once, and keeping the counters exact in the same transaction.

One batch is one transaction (the request's):

    1  validate every event (`events.parse`), and what its meters read (`meters.data_problems`);
       resolve its customer and tenant from the customer's snapshot (`check/snapshot.py`:
       warm, no I/O) — a bad event is rejected by index, the good ones go on
    2  drop repeats inside the batch (the first copy of a (source, id) wins)
    3  INSERT the ids into `usage_event_ids` … ON CONFLICT DO NOTHING RETURNING: only the
       ids this transaction added are new; the others were accepted before (duplicates)
    4  INSERT the new events into `usage_events` (monthly partitions, created beforehand)
    5  INSERT unique values into `usage_uniques` … ON CONFLICT DO NOTHING RETURNING, and
       UPSERT the hourly counters by what 4 and 5 added; a new event with a negative quantity
       for a `corrections: true` meter (the only place one gets past step 1) queues an audit
       record, `usage.corrected`, appended with the commit
    6  commit (the request dependency), then answer

An id is never marked seen unless its event and counters commit with it, and a replay —
sequential or concurrent — finds the id taken (a concurrent one waits on the first
transaction's uncommitted key, then does nothing), so totals never move. Rows go in sorted
by key so concurrent batches lock counters and ids in the same order (no deadlocks).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from allotment.audit import service as audit
from allotment.check.model import Snapshot
from allotment.kit.clock import isoformat
from allotment.policy.catalog import Catalog, Meter
from allotment.usage import partitions
from allotment.usage.events import Event, Problem, Window, parse
from allotment.usage.meters import (
    CounterKey,
    Delta,
    Reading,
    by_type,
    corrections,
    data_problems,
    deltas,
)

SnapshotOf = Callable[[str], Awaitable[Snapshot | None]]

_IDS = text(
    "INSERT INTO usage_event_ids (source, id, customer_id, time, received_at) "
    "SELECT * FROM unnest(CAST(:source AS text[]), CAST(:id AS text[]), "
    "CAST(:customer AS bigint[]), CAST(:time AS timestamptz[]), CAST(:received AS timestamptz[])) "
    "ORDER BY 1, 2 ON CONFLICT DO NOTHING RETURNING source, id"
)
_EVENTS = text(
    "INSERT INTO usage_events (customer_id, tenant, type, source, id, time, data, extensions, "
    "received_at) SELECT c, t, ty, s, i, tm, d::jsonb, x::jsonb, :received FROM unnest("
    "CAST(:customer AS bigint[]), CAST(:tenant AS text[]), CAST(:type AS text[]), "
    "CAST(:source AS text[]), CAST(:id AS text[]), CAST(:time AS timestamptz[]), "
    "CAST(:data AS text[]), CAST(:ext AS text[])) AS u(c, t, ty, s, i, tm, d, x)"
)
_UNIQUES = text(
    "INSERT INTO usage_uniques (customer_id, meter, month, tenant, value, first_hour) "
    "SELECT * FROM unnest(CAST(:customer AS bigint[]), CAST(:meter AS text[]), "
    "CAST(:month AS timestamptz[]), CAST(:tenant AS text[]), CAST(:value AS text[]), "
    "CAST(:hour AS timestamptz[])) ORDER BY 1, 2, 3, 4, 5 "
    "ON CONFLICT DO NOTHING RETURNING customer_id, tenant, meter, first_hour"
)
_COUNTERS = text(
    "INSERT INTO usage_counters (customer_id, meter, hour, tenant, kind, value, events) "
    "SELECT * FROM unnest(CAST(:customer AS bigint[]), CAST(:meter AS text[]), "
    "CAST(:hour AS timestamptz[]), CAST(:tenant AS text[]), CAST(:kind AS text[]), "
    "CAST(:value AS numeric[]), CAST(:events AS bigint[])) ORDER BY 1, 2, 3, 4 "
    "ON CONFLICT (customer_id, meter, hour, tenant) DO UPDATE SET "
    "value = CASE WHEN usage_counters.kind = 'max' "
    "THEN GREATEST(usage_counters.value, EXCLUDED.value) "
    "ELSE usage_counters.value + EXCLUDED.value END, "
    "events = usage_counters.events + EXCLUDED.events"
)


@dataclass
class Outcome:
    accepted: int = 0
    duplicates: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)
    customers: set[str] = field(default_factory=set)  # keys whose counters moved

    def reject(self, index: int, errors: list[Problem]) -> None:
        self.rejected.append({"index": index, "errors": errors})


_meters_by_digest: dict[str, dict[str, tuple[Meter, ...]]] = {}


def meters_of(catalog: Catalog | None) -> dict[str, tuple[Meter, ...]]:
    """The catalog's meters by event type, worked out once per policy content (digest)."""
    if catalog is None:
        return {}
    found = _meters_by_digest.get(catalog.digest)
    if found is None:
        found = _meters_by_digest[catalog.digest] = by_type(catalog.meters.values())
    return found


async def ingest(
    session: AsyncSession,
    *,
    raw_events: Sequence[Any],
    snapshot_of: SnapshotOf,
    window: Window,
    engine: AsyncEngine,
    actor: str,
) -> Outcome:
    outcome = Outcome()
    valid: list[tuple[Reading, dict[str, tuple[Meter, ...]]]] = []
    seen: set[tuple[str, str]] = set()
    snapshots: dict[str, Snapshot | None] = {}
    for index, raw in enumerate(raw_events):
        parsed = parse(raw, window)
        if not isinstance(parsed, Event):
            outcome.reject(index, parsed)
            continue
        if parsed.subject not in snapshots:
            snapshots[parsed.subject] = await snapshot_of(parsed.subject)
        snapshot = snapshots[parsed.subject]
        if snapshot is None or not snapshot.known or snapshot.customer_id is None:
            outcome.reject(
                index, [{"path": "subject", "message": f"no customer '{parsed.subject}'"}]
            )
            continue
        if parsed.tenant is not None and parsed.tenant not in snapshot.holdings.tenants:
            outcome.reject(
                index,
                [{"path": "tenant", "message": f"no tenant '{parsed.tenant}' for this customer"}],
            )
            continue
        meters = meters_of(snapshot.catalog)
        problems = data_problems(parsed, meters.get(parsed.type, ()))
        if problems:
            outcome.reject(index, problems)
            continue
        key = (parsed.source, parsed.id)
        if key in seen:
            outcome.duplicates += 1
            continue
        seen.add(key)
        valid.append((Reading(snapshot.customer_id, parsed.tenant, parsed), meters))
    if not valid:
        return outcome
    new = await claim(session, [reading for reading, _ in valid], window.now, engine)
    fresh = [(r, m) for r, m in valid if (r.event.source, r.event.id) in new]
    outcome.accepted = len(fresh)
    outcome.duplicates += len(valid) - len(fresh)
    outcome.customers = {r.event.subject for r, _ in fresh}
    await store(session, fresh, window.now)
    audit_corrections(session, fresh, actor=actor)
    return outcome


def audit_corrections(
    session: AsyncSession, fresh: list[tuple[Reading, dict[str, tuple[Meter, ...]]]], *, actor: str
) -> None:
    """One audit record per negative quantity a `corrections: true` meter took, appended in
    this transaction: a correction lowers a total, so who sent it is kept (docs/usage.md)."""
    for reading, meters in fresh:
        event = reading.event
        for meter, _ in corrections(reading, meters.get(event.type, ())):
            audit.record(
                session,
                actor=actor,
                action="usage.corrected",
                target_type="customer",
                target_key=event.subject,
                after={
                    "source": event.source,
                    "id": event.id,
                    "meter": meter.name,
                    "quantity": event.data[meter.property],
                    "time": isoformat(event.time),
                },
            )


async def store(
    session: AsyncSession,
    fresh: list[tuple[Reading, dict[str, tuple[Meter, ...]]]],
    received: datetime,
) -> None:
    """Write events whose ids this transaction claimed, and count them."""
    if fresh:
        await _insert_events(session, [r for r, _ in fresh], received)
        await _count(session, fresh)


async def claim(
    session: AsyncSession, readings: list[Reading], received: datetime, engine: AsyncEngine
) -> set[tuple[str, str]]:
    """Claim the readings' (source, id) in this transaction: the ids that were new."""
    await partitions.ensure(engine, {reading.event.time for reading in readings})
    return await _claim_ids(session, readings, received)


async def _claim_ids(
    session: AsyncSession, readings: list[Reading], received: datetime
) -> set[tuple[str, str]]:
    result = await session.execute(
        _IDS,
        {
            "source": [r.event.source for r in readings],
            "id": [r.event.id for r in readings],
            "customer": [r.customer_id for r in readings],
            "time": [r.event.time for r in readings],
            "received": [received] * len(readings),
        },
    )
    return {(row.source, row.id) for row in result}


async def _insert_events(
    session: AsyncSession, readings: list[Reading], received: datetime
) -> None:
    await session.execute(
        _EVENTS,
        {
            "customer": [r.customer_id for r in readings],
            "tenant": [r.tenant for r in readings],
            "type": [r.event.type for r in readings],
            "source": [r.event.source for r in readings],
            "id": [r.event.id for r in readings],
            "time": [r.event.time for r in readings],
            "data": [
                None if r.event.data is None else orjson.dumps(r.event.data).decode()
                for r in readings
            ],
            "ext": [
                orjson.dumps(dict(r.event.extensions)).decode() if r.event.extensions else None
                for r in readings
            ],
            "received": received,
        },
    )


async def _count(
    session: AsyncSession, fresh: list[tuple[Reading, dict[str, tuple[Meter, ...]]]]
) -> None:
    counters: dict[CounterKey, Delta] = {}
    kinds: dict[CounterKey, str] = {}
    uniques: dict[Any, datetime] = {}
    # Customers may follow different catalogs: group readings by their meter map.
    groups: dict[int, tuple[dict[str, tuple[Meter, ...]], list[Reading]]] = {}
    for reading, meters in fresh:
        groups.setdefault(id(meters), (meters, []))[1].append(reading)
    for meters, readings in groups.values():
        found, found_uniques = deltas(readings, meters)
        for key, delta in found.items():
            if key in counters:  # the same counter under two catalogs: merge
                counters[key].value += delta.value
                counters[key].events += delta.events
            else:
                counters[key] = delta
            kinds[key] = "max" if delta.is_max else "add"
        uniques.update(found_uniques)
    if uniques:
        ordered = sorted(uniques.items())
        added = await session.execute(
            _UNIQUES,
            {
                "customer": [k[0] for k, _ in ordered],
                "meter": [k[2] for k, _ in ordered],
                "month": [k[3] for k, _ in ordered],
                "tenant": [k[1] for k, _ in ordered],
                "value": [k[4] for k, _ in ordered],
                "hour": [hour for _, hour in ordered],
            },
        )
        for row in added:
            key = (row.customer_id, row.tenant, row.meter, row.first_hour)
            if key not in counters:
                counters[key] = Delta()
                kinds[key] = "add"
            counters[key].value += Decimal(1)
    if not counters:
        return
    ordered_counters = sorted(
        counters.items(), key=lambda item: (item[0][0], item[0][2], item[0][3], item[0][1])
    )
    await session.execute(
        _COUNTERS,
        {
            "customer": [k[0] for k, _ in ordered_counters],
            "meter": [k[2] for k, _ in ordered_counters],
            "hour": [k[3] for k, _ in ordered_counters],
            "tenant": [k[1] for k, _ in ordered_counters],
            "kind": [kinds[k] for k, _ in ordered_counters],
            "value": [d.value for _, d in ordered_counters],
            "events": [d.events for _, d in ordered_counters],
        },
    )
