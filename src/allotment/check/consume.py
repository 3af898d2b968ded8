"""`POST /v1/check {…, consume: n}`: decide and consume in one transaction, race-proof.

    1  the snapshot (as any check), and the feature's meter; consume needs a `sum` meter (n
       units, as `data[property] = n`) or a `count` meter (one event: n must be 1)
    2  lock the customer's row: consumes of one customer run one at a time, so none can
       read the counters between another's read and commit (contracts/pools.py explains the
       same lock for seats)
    3  read the meter's use from the counters, exactly, under the lock (check/meter_use.py load)
    4  evaluate with that use and `consume` (gates.meter: a hard limit is never passed); an
       allowed answer's `limit.used` already counts the `consume`, a refused one's does not
    5  allowed: record a usage event — source `allotment:consume`, id = the decision id —
       through the same claim/insert/count path as POST /v1/events (usage/service.py)
    6  commit, then answer

The decision id is derived from the `Idempotency-Key` when there is one (else random), so a
retried consume maps to the same event id: replayed from the stored response while the key
lives, and deduplicated by (source, id) after that. Either way it never counts twice.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncSession

from allotment.check import credit_use, evaluator
from allotment.check.meter_use import load, yearly_since
from allotment.check.service import Checker
from allotment.check.values import CheckRequest, Snapshot
from allotment.contracts import pools
from allotment.db import after_commit
from allotment.errors import ServiceUnavailable, ValidationFailed
from allotment.kit.clock import utcnow
from allotment.kit.ids import new_id
from allotment.usage import service as usage
from allotment.usage.events import Event, digest
from allotment.usage.meters import Reading

SOURCE = "allotment:consume"


def decision_id(principal_key: str, idempotency_key: str | None) -> str:
    if idempotency_key is None:
        return new_id("dec")
    digest = hashlib.sha256(f"{principal_key}\n{idempotency_key}".encode()).hexdigest()
    return f"dec_c{digest[:32]}"


def _refuse(message: str) -> ValidationFailed:
    return ValidationFailed(message, errors=[{"path": "consume", "message": message}])


async def consume(
    session: AsyncSession,
    *,
    checker: Checker,
    request: CheckRequest,
    decision: str,
    engine: Any,
) -> bytes:
    now = utcnow()
    snapshot, stale = await checker.snapshot(request.customer, now)
    if snapshot is None or stale:
        # Consuming needs the counters, hence PostgreSQL: never answer (and never store under
        # an Idempotency-Key) a decision that was not made by consuming.
        raise ServiceUnavailable("The store is unavailable; nothing was consumed. Retry shortly.")
    feature = None
    if snapshot.catalog is not None:
        feature = snapshot.catalog.features.get(request.feature)
    if feature is None or not snapshot.known or snapshot.customer_id is None:
        # An unknown customer or feature: the evaluator denies it, nothing to consume.
        verdict = evaluator.evaluate(snapshot, request, now, gates=checker.gates)
        assert not verdict.allowed
        document = checker.document(request, verdict, snapshot, stale, now, decision_id=decision)
        return orjson.dumps(document)
    if feature.meter is None:
        raise _refuse(f"feature '{feature.name}' has no meter to consume from")
    meter = snapshot.catalog.meters[feature.meter]  # type: ignore[union-attr]
    if meter.aggregation not in ("sum", "count"):
        raise _refuse(f"meter '{meter.name}' ({meter.aggregation}) cannot be consumed from")
    if meter.aggregation == "count" and request.consume != 1:
        raise _refuse(f"meter '{meter.name}' counts events: consume 1 at a time")
    if meter.filter is not None or meter.multiplier is not None:
        # The recorded event would be filtered or scaled: `consume: n` would not move the
        # meter by n, which is what the decision promises (docs/usage.md#consume).
        raise _refuse(
            f"meter '{meter.name}' has a filter or a multiplier: consume from a plain meter"
        )
    await pools.customer_id(session, customer_key=request.customer, lock=True)
    now = utcnow()  # after the lock: judge the period by the time the counters are read
    totals = await load(
        session, customer_id=snapshot.customer_id, now=now, since=yearly_since(snapshot, now)
    )
    wallet = None
    if checker.wallets is not None and credit_use.needs(snapshot):
        wallet = await checker.wallets.get(snapshot, now)  # a spent wallet refuses it too
    request = replace(request, usage=totals, wallet=wallet)
    verdict = evaluator.evaluate(snapshot, request, now, gates=checker.gates)
    if verdict.allowed:
        await _record(session, snapshot, request, meter, decision, now, engine)
        if checker.usage is not None:
            after_commit(session, lambda: checker.usage.forget(request.customer))  # type: ignore[union-attr]
    document = checker.document(request, verdict, snapshot, stale, now, decision_id=decision)
    if verdict.allowed:
        document["consumed"] = request.consume
    return orjson.dumps(document)


async def _record(
    session: AsyncSession,
    snapshot: Snapshot,
    request: CheckRequest,
    meter: Any,
    decision: str,
    now: datetime,
    engine: Any,
) -> None:
    data = {meter.property: request.consume} if meter.aggregation == "sum" else {}
    event = Event(
        source=SOURCE,
        id=decision,
        type=meter.event_type,
        subject=request.customer,
        time=now,
        data={**data, "feature": request.feature, "decision_id": decision},
        tenant=request.tenant,
        extensions={},
    )
    reading = Reading(snapshot.customer_id, request.tenant, event)  # type: ignore[arg-type]
    claimed = await usage.claim(session, [reading], now, engine, digests=[digest(event)])
    if claimed:
        await usage.store(
            session,
            [(reading, usage.meters_of(snapshot.catalog))],
            now,
            snapshots={reading.customer_id: snapshot},
        )
