"""Ingesting usage events exactly once, and keeping the counters exact in the same transaction.

One batch is one transaction (the request's):

    1  validate every event (`events.parse`), and what its meters read (`meters.data_problems`);
       resolve its customer and tenant from the customer's snapshot (`check/snapshot.py`:
       warm, no I/O) — a bad event is rejected by index, the good ones go on
    2  set repeats inside the batch aside (the first copy of a (source, id) wins); every
       valid event carries its digest (`events.digest`: type, subject, time, tenant, data)
    3  INSERT the ids, with their digests, into `usage_event_ids` … ON CONFLICT DO NOTHING
       RETURNING: only the ids this transaction added are new. When some were taken, ONE
       select reads their stored digests; then each taken id and each repeat is a duplicate
       (the same digest as the copy that won, or a stored NULL: claimed before 0013) or a
       conflict (another payload: reported by index, never stored, the first copy stays)
    4  INSERT the new events into `usage_events` (monthly partitions, created beforehand)
    5  INSERT unique values into `usage_uniques` … ON CONFLICT DO NOTHING RETURNING, and
       UPSERT the hourly counters by what 4 and 5 added; a new event with a negative quantity
       for a `corrections: true` meter (the only place one gets past step 1) queues an audit
       record, `usage.corrected`, appended with the commit
    6  fire the alerts the new counts crossed (usage/watch.py: one select, and only when a
       watched meter moved)
    7  commit (the request dependency), then answer; new events of a type no meter of the
       customer's policy reads are stored and reported as `unmetered`

An id is never marked seen unless its event and counters commit with it, and a replay —
sequential or concurrent — finds the id taken (a concurrent one waits on the first
transaction's uncommitted key, then does nothing), so totals never move. Rows go in sorted
by key so concurrent batches lock counters and ids in the same order (no deadlocks).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from allotment.audit import service as audit
from allotment.check.values import Snapshot
from allotment.kit.clock import isoformat
from allotment.policy.catalog import Catalog, Meter
from allotment.usage import partitions
from allotment.usage.events import Event, Problem, Window, digest, matches, parse
from allotment.usage.meters import (
    CounterKey,
    Delta,
    Reading,
    by_type,
    corrections,
    data_problems,
    deltas,
)
from allotment.usage.watch import watch

SnapshotOf = Callable[[str], Awaitable[Snapshot | None]]

_IDS = text(
    "INSERT INTO usage_event_ids (source, id, customer_id, time, received_at, digest) "
    "SELECT * FROM unnest(CAST(:source AS text[]), CAST(:id AS text[]), "
    "CAST(:customer AS bigint[]), CAST(:time AS timestamptz[]), CAST(:received AS timestamptz[]), "
    "CAST(:digest AS bytea[])) ORDER BY 1, 2 ON CONFLICT DO NOTHING RETURNING source, id"
)
_DIGESTS = text(
    "SELECT e.source, e.id, e.digest FROM usage_event_ids e "
    "JOIN unnest(CAST(:source AS text[]), CAST(:id AS text[])) AS u(s, i) "
    "ON e.source = u.s AND e.id = u.i"
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


EventKey = tuple[str, str]  # (source, id)


@dataclass(slots=True)  # not frozen: built once per event, and a frozen __init__ costs more
class Candidate:
    """A valid event of the batch, at its index, with its customer's meters by type."""

    index: int
    key: EventKey
    reading: Reading
    meters: dict[str, tuple[Meter, ...]]
    digest: bytes  # events.digest: what it says


@dataclass
class Outcome:
    accepted: int = 0
    duplicates: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)
    unmetered: list[dict[str, Any]] = field(default_factory=list)  # accepted, no meter reads
    conflicts: list[dict[str, Any]] = field(default_factory=list)  # id taken, other payload
    customers: set[str] = field(default_factory=set)  # keys whose counters moved

    def reject(self, index: int, errors: list[Problem]) -> None:
        self.rejected.append({"index": index, "errors": errors})

    def settle(self, copies: list[Candidate], winners: Mapping[EventKey, bytes | None]) -> None:
        """Copies of ids already taken (stored, or earlier in the batch): each a duplicate,
        or a conflict when it says something other than the copy that won."""
        for copy in sorted(copies, key=lambda c: c.index):
            if conflicts_with(winners.get(copy.key), copy.reading.event, copy.digest):
                event = copy.reading.event
                self.conflicts.append({"index": copy.index, "source": event.source, "id": event.id})
            else:
                self.duplicates += 1


_meters_by_digest: dict[str, dict[str, tuple[Meter, ...]]] = {}


def meters_of(catalog: Catalog | None) -> dict[str, tuple[Meter, ...]]:
    """The catalog's meters by event type, worked out once per policy content (digest)."""
    if catalog is None:
        return {}
    found = _meters_by_digest.get(catalog.digest)
    if found is None:
        found = _meters_by_digest[catalog.digest] = by_type(catalog.meters.values())
    return found


@dataclass
class Screened:
    """A batch after step 1 and 2: what was rejected (in `outcome`), the first copy of each
    valid (source, id), the later copies, and each first copy's digest."""

    outcome: Outcome
    firsts: list[Candidate]
    repeats: list[Candidate]
    sent: dict[EventKey, bytes]
    snapshots: dict[str, Snapshot | None]  # each customer's, by key (the alerts watch them)


async def screen(raw_events: Sequence[Any], *, snapshot_of: SnapshotOf, window: Window) -> Screened:
    """Steps 1 and 2: no writes. The broker path (usage/broker.py) publishes `firsts`."""
    outcome = Outcome()
    firsts: list[Candidate] = []  # the first copy of each (source, id) in the batch
    repeats: list[Candidate] = []  # later copies of one
    sent: dict[EventKey, bytes] = {}  # the first copy's digest
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
        reading = Reading(snapshot.customer_id, parsed.tenant, parsed)
        candidate = Candidate(index, key, reading, meters, digest(parsed))
        if key in sent:
            repeats.append(candidate)
            continue
        sent[key] = candidate.digest
        firsts.append(candidate)
    return Screened(outcome, firsts, repeats, sent, snapshots)


def unmetered(fresh: Sequence[Candidate]) -> list[dict[str, Any]]:
    """The new events no meter of their customer's policy reads, by index."""
    return [
        {"index": c.index, "type": c.reading.event.type}
        for c in fresh
        if not c.meters.get(c.reading.event.type)
    ]


async def ingest(
    session: AsyncSession,
    *,
    raw_events: Sequence[Any],
    snapshot_of: SnapshotOf,
    window: Window,
    engine: AsyncEngine,
    actor: str,
) -> Outcome:
    screened = await screen(raw_events, snapshot_of=snapshot_of, window=window)
    outcome, firsts, repeats, sent = (
        screened.outcome,
        screened.firsts,
        screened.repeats,
        screened.sent,
    )
    if not firsts:  # nothing valid, so no repeats either
        return outcome
    new = await claim(
        session,
        [c.reading for c in firsts],
        window.now,
        engine,
        digests=[c.digest for c in firsts],
    )
    fresh = [c for c in firsts if c.key in new]
    taken = [c for c in firsts if c.key not in new]
    # What each repeat is compared with: the copy that won, stored earlier (NULL: claimed
    # before digests were kept) or the batch's first. One lookup, and only for taken ids.
    winners: dict[EventKey, bytes | None] = dict(sent)
    if taken:
        winners.update(await stored_digests(session, [c.key for c in taken]))
    outcome.settle(taken + repeats, winners)
    outcome.accepted = len(fresh)
    outcome.unmetered = unmetered(fresh)
    outcome.customers = {c.reading.event.subject for c in fresh}
    counted = [(c.reading, c.meters) for c in fresh]
    watched = {
        s.customer_id: s for s in screened.snapshots.values() if s is not None and s.customer_id
    }
    await store(session, counted, window.now, snapshots=watched)
    audit_corrections(session, counted, actor=actor)
    return outcome


def conflicts_with(stored: bytes | None, event: Event, sent: bytes) -> bool:
    """A copy of an accepted (source, id) conflicts when it says something else; an id
    stored without a digest (before migration 0013) cannot tell, and is a duplicate. An id
    stored before numbers were compared by value holds the older digest form, also matched
    (`events.matches`)."""
    return stored is not None and not matches(stored, event, sent)


async def stored_digests(
    session: AsyncSession, keys: list[EventKey]
) -> dict[EventKey, bytes | None]:
    """The digests stored with these (source, id), in one query."""
    rows = await session.execute(
        _DIGESTS, {"source": [k[0] for k in keys], "id": [k[1] for k in keys]}
    )
    return {(row.source, row.id): row.digest for row in rows}


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
    *,
    snapshots: Mapping[int, Snapshot],
) -> None:
    """Write events whose ids this transaction claimed, count them, and fire the alerts the
    counts crossed (`watch.watch`: the customers' snapshots by id say what is watched)."""
    if fresh:
        await _insert_events(session, [r for r, _ in fresh], received)
        counters = await _count(session, fresh)
        await watch(session, snapshots=snapshots, counters=counters, now=received)


async def claim(
    session: AsyncSession,
    readings: list[Reading],
    received: datetime,
    engine: AsyncEngine,
    *,
    digests: Sequence[bytes],
) -> set[EventKey]:
    """Claim the readings' (source, id) in this transaction, storing each event's digest
    (`events.digest`, in the same order): the ids that were new."""
    await partitions.ensure(engine, {reading.event.time for reading in readings})
    return await _claim_ids(session, readings, received, digests)


async def _claim_ids(
    session: AsyncSession, readings: list[Reading], received: datetime, digests: Sequence[bytes]
) -> set[EventKey]:
    result = await session.execute(
        _IDS,
        {
            "source": [r.event.source for r in readings],
            "id": [r.event.id for r in readings],
            "customer": [r.customer_id for r in readings],
            "time": [r.event.time for r in readings],
            "received": [received] * len(readings),
            "digest": list(digests),
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
) -> dict[CounterKey, Delta]:
    """Upsert the counters the readings move; what each moved by."""
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
        return counters
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
    return counters
