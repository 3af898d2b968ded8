"""The service's own lifecycle events, in the same stream (and schema) as product events.

    type                               emitted by
    allotment.seat.assigned|released   seats/service.py
    allotment.session.opened|closed|expired          seats/sessions.py, seats/tasks.py
    allotment.instance.registered|deregistered|expired  instances/service.py, …/tasks.py
    allotment.contract.created|amended|terminated    contracts/service.py (record)
    allotment.policy.published|rolled_back           policy/moves.py (the pointer move)
    allotment.artifact.issued                        artifacts/service.py (a signed artifact)

Source `allotment`; `subject` is the customer's key (none for policy events); `data` holds the
changed object as its audit record has it. A consuming check is recorded by its usage event
itself (source `allotment:consume`, the meter's type, `data.feature` and `data.decision_id`).

`emit()` queues; the queued events are written just before commit (`db.before_commit`), in
the transaction of the change they describe, so they exist exactly when the change does.
Lifecycle events are not metered: they describe changes, not billable use.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from allotment.audit import service as audit
from allotment.db import before_commit, driver
from allotment.kit.clock import utcnow
from allotment.kit.ids import new_id
from allotment.usage import partitions

SOURCE = "allotment"
_QUEUE = "lifecycle_events"

_WRITE = (
    "WITH claimed AS (INSERT INTO usage_event_ids (source, id, customer_id, time, received_at) "
    "SELECT %s, i, c, tm, tm FROM unnest(%s::text[], %s::bigint[], %s::timestamptz[]) "
    "AS u(i, c, tm)) "
    "INSERT INTO usage_events (customer_id, tenant, type, source, id, time, data, received_at) "
    "SELECT c, t, ty, %s, i, tm, d::jsonb, tm FROM unnest(%s::bigint[], %s::text[], "
    "%s::text[], %s::text[], %s::timestamptz[], %s::text[]) AS u(c, t, ty, i, tm, d)"
)


def emit(
    session: AsyncSession,
    *,
    type: str,
    customer_id: int | None,
    data: Any,
    tenant: str | None = None,
    time: datetime | None = None,
) -> None:
    """Queue `allotment.<type>` for this transaction."""
    queue: list[dict[str, Any]] = session.info.setdefault(_QUEUE, [])
    queue.append(
        {
            "id": new_id("evt"),
            "type": f"allotment.{type}",
            "customer": customer_id,
            "tenant": tenant,
            "time": time or utcnow(),
            "data": orjson.dumps(data).decode(),
        }
    )
    before_commit(session, _write, key=_QUEUE)


async def _write(session: AsyncSession) -> None:
    queue: list[dict[str, Any]] = session.info.pop(_QUEUE, [])
    if not queue:
        return
    engine = session.bind
    await partitions.ensure(engine, {event["time"] for event in queue})  # type: ignore[arg-type]
    ids = [e["id"] for e in queue]
    customers = [e["customer"] for e in queue]
    times = [e["time"] for e in queue]
    pg = await driver(session)  # one statement for both tables: this runs in every change
    await pg.execute(
        _WRITE,
        (
            SOURCE,
            ids,
            customers,
            times,
            SOURCE,
            customers,
            [e["tenant"] for e in queue],
            [e["type"] for e in queue],
            ids,
            times,
            [e["data"] for e in queue],
        ),
    )


def record(
    session: AsyncSession,
    *,
    actor: str,
    action: str,
    target_type: str,
    target_key: str,
    customer_id: int | None,
    after: Any,
    before: Any = None,
    tenant: str | None = None,
    time: datetime | None = None,
) -> None:
    """A change, twice: its audit record (who, before, after) and its lifecycle event
    (`allotment.<action>`, `data` = after)."""
    audit.record(
        session,
        actor=actor,
        action=action,
        target_type=target_type,
        target_key=target_key,
        before=before,
        after=after,
    )
    emit(session, type=action, customer_id=customer_id, data=after, tenant=tenant, time=time)


_ERASE = text(
    "UPDATE usage_events SET data = jsonb_set(data, '{subject}', to_jsonb(CAST(:ref AS text))) "
    "WHERE customer_id = :c AND source = 'allotment' AND data ->> 'subject' = :s "
    "AND data ->> 'subject' <> :ref"
)


async def erase_subject(session: AsyncSession, *, customer_id: int, subject: str, ref: str) -> int:
    """Lifecycle events written with the raw subject (before pseudonyms: migration 0023)
    take its pseudonym; newer ones already hold it. Lifecycle events are not metered."""
    result = await session.execute(_ERASE, {"c": customer_id, "s": subject, "ref": ref})
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
