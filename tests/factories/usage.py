"""Usage events through the API, and a policy with a meter of every aggregation."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx

from allotment.kit.clock import isoformat, utcnow
from tests.factories.policies_for_contracts import demo_document

BATCH = "application/cloudevents-batch+json"


def metered_document() -> dict[str, Any]:
    """The demo catalog plus meters of every aggregation on event types of their own."""
    document = demo_document()
    document["meters"].update(
        {
            "logins": {
                "event_type": "app.login",
                "aggregation": "unique_count",
                "property": "user",
            },
            "peak_jobs": {"event_type": "jobs.running", "aggregation": "max", "property": "n"},
            "storage": {"event_type": "storage.used", "aggregation": "sum", "property": "gb"},
        }
    )
    return document


def event(
    event_id: str,
    *,
    type: str = "api.call",
    subject: str = "acme",
    source: str = "tests",
    time: datetime | None = None,
    data: Any = None,
    **extra: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "specversion": "1.0",
        "id": event_id,
        "source": source,
        "type": type,
        "subject": subject,
        "time": isoformat(time or utcnow()),
        **extra,
    }
    body["data"] = {"count": 1} if data is None and type == "api.call" else data
    if body["data"] is None:
        del body["data"]
    return body


async def send(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    events: list[dict[str, Any]] | dict[str, Any],
) -> httpx.Response:
    if isinstance(events, list):
        import orjson

        return await client.post(
            "/v1/events",
            content=orjson.dumps(events),
            headers={**headers, "Content-Type": BATCH},
        )
    return await client.post("/v1/events", json=events, headers=headers)


async def ingest_at(app: Any, events: list[dict[str, Any]], *, received: datetime) -> Any:
    """Ingest `events` through the service as if received at `received` (any instant; the
    late window opened wide), for tests that place events and their arrival exactly. Returns
    the service's Outcome."""
    from datetime import timedelta

    from allotment.db import session_scope
    from allotment.usage import service
    from allotment.usage.events import Window

    checker = app.state.checker

    async def snapshot_of(key: str) -> Any:
        return (await checker.snapshot(key, utcnow()))[0]

    async with session_scope(app.state.sessionmaker) as session:
        return await service.ingest(
            session,
            raw_events=events,
            snapshot_of=snapshot_of,
            window=Window(now=received, late=timedelta(days=3650), future=timedelta(days=3650)),
            engine=app.state.engine,
            actor="test",
        )
