"""Events that count nowhere are reported: `unmetered` (no meter reads the type) and
`conflicts` (an accepted (source, id) sent again with another payload; the first copy stays).
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from allotment.db import session_scope
from allotment.kit.clock import isoformat, utcnow
from tests.factories.usage import event, send

UNMETERED = "allotment_events_unmetered_total"
CONFLICTS = "allotment_events_conflicts_total"


async def _counter(client: httpx.AsyncClient, name: str) -> float:
    response = await client.get("/metrics")
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name == name:
                return sample.value
    return 0.0


async def _total(client: httpx.AsyncClient, headers: dict[str, str], meter: str) -> Decimal:
    now = utcnow()
    response = await client.get(
        "/v1/customers/acme/usage",
        params={
            "meter": meter,
            "from": isoformat(now - timedelta(days=10)),
            "to": isoformat(now + timedelta(hours=1)),
            "granularity": "month",
        },
        headers=headers,
    )
    assert response.status_code == 200, response.text
    return Decimal(response.json()["total"])


async def _stored(app: Any, source: str, event_id: str) -> list[Any]:
    async with session_scope(app.state.sessionmaker) as session:
        rows = await session.execute(
            text("SELECT type, data FROM usage_events WHERE source = :s AND id = :i"),
            {"s": source, "i": event_id},
        )
        return [tuple(row) for row in rows]


async def test_a_batch_reports_the_events_no_meter_reads(
    app: Any, client: httpx.AsyncClient, backend: dict[str, str], metered: str
) -> None:
    before = await _counter(client, UNMETERED)
    now = utcnow()
    batch = [
        event("m1", time=now),  # api.call: api_calls reads it
        event("u1", type="page.viewed", time=now, data={"path": "/"}),
        event("bad", subject="ghost", type="page.viewed"),  # rejected, not unmetered
        event("u2", type="app.logout", time=now),
        event("m1", time=now),  # a duplicate: neither accepted nor unmetered
    ]
    body = (await send(client, backend, batch)).json()
    assert body["accepted"] == 3 and body["duplicates"] == 1
    assert [r["index"] for r in body["rejected"]] == [2]
    assert body["unmetered"] == [
        {"index": 1, "type": "page.viewed"},
        {"index": 3, "type": "app.logout"},
    ]
    assert body["conflicts"] == []
    assert await _stored(app, "tests", "u1") == [("page.viewed", {"path": "/"})]  # still stored
    assert await _counter(client, UNMETERED) == before + 2
    # Sent again, they are duplicates: not accepted, so not unmetered either.
    again = (await send(client, backend, batch)).json()
    assert again["accepted"] == 0 and again["unmetered"] == []
    assert await _counter(client, UNMETERED) == before + 2


async def test_a_single_unmetered_event_is_accepted_and_says_so(
    client: httpx.AsyncClient, backend: dict[str, str], metered: str
) -> None:
    response = await send(client, backend, event("one", type="page.viewed"))
    assert response.status_code == 200, response.text
    assert response.json() == {
        "accepted": 1,
        "duplicates": 0,
        "rejected": [],
        "unmetered": [{"index": 0, "type": "page.viewed"}],
        "conflicts": [],
    }


async def test_an_id_reused_with_another_payload_is_a_conflict_and_the_first_copy_stays(
    app: Any,
    client: httpx.AsyncClient,
    backend: dict[str, str],
    finance: dict[str, str],
    metered: str,
) -> None:
    at = utcnow() - timedelta(minutes=5)
    first = event("c1", time=at, data={"count": 5})
    assert (await send(client, backend, first)).json()["accepted"] == 1
    before = await _counter(client, CONFLICTS)
    batch = [
        event("c1", time=at, data={"count": 5}),  # 0: the same payload, a duplicate
        event("c1", time=at, data={"count": 500}),  # 1: another quantity
        event("c1", time=at + timedelta(seconds=1), data={"count": 5}),  # 2: another time
        event("c1", type="export.created", time=at),  # 3: another type
        {**event("c1", time=at, data={"count": 5}), "tenant": None},  # 4: tenant null = none
        event("c2", data={"count": 1}),  # 5: new
        event("c2", data={"count": 2}),  # 6: a repeat in the batch, another payload
        event("c2", data={"count": 1}),  # 7: a repeat in the batch, the same payload
    ]
    batch[7]["time"] = batch[5]["time"]
    body = (await send(client, backend, batch)).json()
    assert body["accepted"] == 1  # c2
    assert body["duplicates"] == 3  # 0, 4, 7
    assert body["conflicts"] == [
        {"index": 1, "source": "tests", "id": "c1"},
        {"index": 2, "source": "tests", "id": "c1"},
        {"index": 3, "source": "tests", "id": "c1"},
        {"index": 6, "source": "tests", "id": "c2"},
    ]
    assert body["rejected"] == [] and body["unmetered"] == []
    assert await _counter(client, CONFLICTS) == before + 4
    assert await _total(client, finance, "api_calls") == 6  # 5 (first c1) + 1 (first c2)
    assert await _total(client, finance, "exports") == 0
    assert await _stored(app, "tests", "c1") == [("api.call", {"count": 5})]


async def test_a_single_conflicting_event_is_a_409(
    client: httpx.AsyncClient, backend: dict[str, str], finance: dict[str, str], metered: str
) -> None:
    original = event("s1", source="gateway/eu-1", data={"count": 2})
    assert (await send(client, backend, original)).json()["accepted"] == 1
    clash = await send(client, backend, {**original, "data": {"count": 3}})
    assert clash.status_code == 409, clash.text
    assert clash.headers["content-type"].startswith("application/problem+json")
    problem = clash.json()
    assert problem["type"].endswith("/event-conflict")
    assert "gateway/eu-1" in problem["detail"] and "s1" in problem["detail"]
    replay = await send(client, backend, original)
    assert replay.status_code == 200 and replay.json()["duplicates"] == 1
    assert await _total(client, finance, "api_calls") == 2


async def test_an_event_sent_without_a_time_and_retried_is_a_duplicate(
    client: httpx.AsyncClient, backend: dict[str, str], finance: dict[str, str], metered: str
) -> None:
    """Its time is when it was received, so each copy gets another; the digest takes the
    time as sent (none), so a retry is the same event."""
    timeless = {k: v for k, v in event("nt", data={"count": 4}).items() if k != "time"}
    assert (await send(client, backend, timeless)).json()["accepted"] == 1
    again = await send(client, backend, timeless)
    assert again.status_code == 200, again.text
    assert again.json()["duplicates"] == 1 and again.json()["conflicts"] == []
    clash = await send(client, backend, {**timeless, "data": {"count": 5}})
    assert clash.status_code == 409
    assert await _total(client, finance, "api_calls") == 4


async def test_ids_stored_without_a_digest_count_as_duplicates(
    app: Any, client: httpx.AsyncClient, backend: dict[str, str], metered: str
) -> None:
    """Ids accepted before migration 0013 have no digest: a repeat cannot be told from a
    conflict, so it is taken for a duplicate, as before."""
    assert (await send(client, backend, event("old", data={"count": 1}))).json()["accepted"] == 1
    async with session_scope(app.state.sessionmaker) as session:
        await session.execute(text("UPDATE usage_event_ids SET digest = NULL WHERE id = 'old'"))
    body = (await send(client, backend, event("old", data={"count": 9}))).json()
    assert body["duplicates"] == 1 and body["conflicts"] == []


async def test_an_idempotent_replay_answers_the_same_unmetered_and_conflicts(
    client: httpx.AsyncClient, backend: dict[str, str], metered: str
) -> None:
    await send(client, backend, event("k1", data={"count": 1}))
    headers = {**backend, "Idempotency-Key": "ingest-1"}
    batch = [event("k1", data={"count": 2}), event("k2", type="page.viewed")]
    first = await send(client, headers, batch)
    again = await send(client, headers, batch)
    assert first.status_code == again.status_code == 200
    assert again.headers.get("idempotent-replayed") == "true"
    assert again.content == first.content
    assert first.json()["conflicts"] == [{"index": 0, "source": "tests", "id": "k1"}]
    assert first.json()["unmetered"] == [{"index": 1, "type": "page.viewed"}]


def _with_number(events: list[dict[str, Any]], numbers: list[str]) -> bytes:
    """The batch as JSON, each event's `count` written as the given number text (1e3)."""
    import orjson

    body = orjson.dumps([{**e, "data": {"count": f"@{i}@"}} for i, e in enumerate(events)])
    for i, number in enumerate(numbers):
        body = body.replace(f'"@{i}@"'.encode(), number.encode())
    return body


async def _send_numbers(
    client: httpx.AsyncClient, backend: dict[str, str], event_id: str, at: Any, numbers: list[str]
) -> dict[str, Any]:
    body = _with_number([event(event_id, time=at) for _ in numbers], numbers)
    headers = {**backend, "Content-Type": "application/cloudevents-batch+json"}
    response = await client.post("/v1/events", content=body, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def test_equal_numbers_make_a_retry_a_duplicate_whatever_their_spelling(
    client: httpx.AsyncClient, backend: dict[str, str], finance: dict[str, str], metered: str
) -> None:
    at = utcnow() - timedelta(minutes=5)
    assert (await _send_numbers(client, backend, "n1", at, ["1000"]))["accepted"] == 1
    body = await _send_numbers(client, backend, "n1", at, ["1e3", "1000.0", "1E+3", "1000.5"])
    assert body["duplicates"] == 3
    assert body["conflicts"] == [{"index": 3, "source": "tests", "id": "n1"}]
    assert await _total(client, finance, "api_calls") == 1000


async def test_an_id_stored_with_the_older_digest_still_takes_a_retry_of_the_same_bytes(
    app: Any, client: httpx.AsyncClient, backend: dict[str, str], metered: str
) -> None:
    """Before numbers were compared by value, the digest was of the data as parsed (2.0 a
    float): an id stored then keeps that digest, and the same bytes retried after the
    upgrade are still a duplicate; another number is still a conflict. (Another spelling of
    the same number, 2, cannot be told from the older digest: a conflict, as before.)"""
    from allotment.usage.events import Window, digest, parse

    at = utcnow() - timedelta(minutes=5)
    assert (await _send_numbers(client, backend, "old2", at, ["2.0"]))["accepted"] == 1
    window = Window(now=utcnow(), late=timedelta(days=1), future=timedelta(hours=1))
    parsed = parse({**event("old2", time=at), "data": {"count": 2.0}}, window)
    older = digest(parsed, legacy=True)  # type: ignore[arg-type]
    assert older != digest(parsed)  # type: ignore[arg-type]
    async with session_scope(app.state.sessionmaker) as session:
        await session.execute(
            text("UPDATE usage_event_ids SET digest = :d WHERE id = 'old2'"), {"d": older}
        )
    body = await _send_numbers(client, backend, "old2", at, ["2.0", "3"])
    assert body["duplicates"] == 1
    assert body["conflicts"] == [{"index": 1, "source": "tests", "id": "old2"}]


def test_by_value_keeps_data_without_floats_as_it_is() -> None:
    from allotment.usage.events import by_value

    flat = {"count": 5, "model": "m", "ok": True, "none": None}
    assert by_value(flat) is flat  # no float: the digest is the one stored before
    nested = {"count": 5, "tags": ["a", 1, True], "deep": {"n": None}}
    assert by_value(nested) == nested
    assert by_value({"a": [1.0, 2.5, {"b": -0.0}], "c": 1e300}) == {
        "a": [1, 2.5, {"b": 0}],
        "c": 1e300,  # too large for a 64-bit integer: stays a float
    }


async def test_data_that_is_not_an_object_is_reported_at_data(
    client: httpx.AsyncClient, backend: dict[str, str], metered: str
) -> None:
    for data in ([5], 5, "five"):
        refused = await send(client, backend, event("arr", data=data))
        assert refused.status_code == 422, refused.text
        errors = refused.json()["errors"]
        assert [e["path"] for e in errors] == ["data"], errors
        assert errors[0]["message"].startswith("must be an object"), errors
