"""POST /v1/events: validation by index, exactly-once counting, and the usage read API."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from decimal import Decimal
from typing import Any

import httpx

from allotment.kit.clock import isoformat, utcnow
from tests.factories.usage import event, send


async def _usage(
    client: httpx.AsyncClient, headers: dict[str, str], meter: str, **params: Any
) -> dict[str, Any]:
    now = utcnow()
    query = {
        "meter": meter,
        "from": isoformat(now - timedelta(days=40)),
        "to": isoformat(now + timedelta(days=1)),
        "granularity": "month",
        **params,
    }
    response = await client.get("/v1/customers/acme/usage", params=query, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def test_one_event_is_accepted_then_a_duplicate(
    client: httpx.AsyncClient, backend: dict[str, str], finance: dict[str, str], metered: str
) -> None:
    sent = event("e1", data={"count": 5})
    first = await send(client, backend, sent)
    assert first.status_code == 200, first.text
    nothing: dict[str, list[Any]] = {"rejected": [], "unmetered": [], "conflicts": []}
    assert first.json() == {"accepted": 1, "duplicates": 0, **nothing}
    again = await send(client, backend, sent)
    assert again.json() == {"accepted": 0, "duplicates": 1, **nothing}
    usage = await _usage(client, finance, "api_calls")
    assert Decimal(usage["total"]) == 5 and usage["buckets"][0]["events"] == 1


async def test_a_batch_reports_each_bad_event_by_index_and_accepts_the_rest(
    client: httpx.AsyncClient, backend: dict[str, str], metered: str
) -> None:
    now = utcnow()
    batch = [
        event("ok-1", time=now),
        {"specversion": "0.3", "id": "", "source": "tests", "type": "api.call"},  # 1
        event("ghost", subject="ghost"),  # 2
        event("future", time=now + timedelta(hours=1)),  # 3
        event("ancient", time=now - timedelta(days=30)),  # 4
        event("no-count", data={"other": 1}),  # 5
        event("bad-count", data={"count": "many"}),  # 6
        event("tenant", tenant="nope"),  # 7
        event("ok-1", time=now),  # 8: a repeat inside the batch
        event("Bad_Ext", weird_attr=1),  # 9
        event("ok-2", type="something.unmetered", data={"any": "thing"}),
        "not an object",  # 11
    ]
    response = await send(client, backend, batch)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["accepted"] == 2 and body["duplicates"] == 1 and body["conflicts"] == []
    assert body["unmetered"] == [{"index": 10, "type": "something.unmetered"}]
    rejected = {r["index"]: [e["path"] for e in r["errors"]] for r in body["rejected"]}
    assert rejected == {
        1: ["specversion", "id", "subject"],
        2: ["subject"],
        3: ["time"],
        4: ["time"],
        5: ["data.count"],
        6: ["data.count"],
        7: ["tenant"],
        9: ["weird_attr"],
        11: [""],
    }


async def test_single_bad_event_is_a_422_and_bad_bodies_are_clear(
    client: httpx.AsyncClient, backend: dict[str, str], metered: str
) -> None:
    bad = await send(client, backend, event("x", subject="ghost"))
    assert bad.status_code == 422 and bad.json()["errors"][0]["path"] == "subject"
    junk = await client.post(
        "/v1/events", content=b"{not json", headers={**backend, "Content-Type": "application/json"}
    )
    assert junk.status_code == 400
    too_many = await send(client, backend, [event(f"n{i}") for i in range(1001)])
    assert too_many.status_code == 413


async def test_every_aggregation_counts_exactly(
    client: httpx.AsyncClient, backend: dict[str, str], finance: dict[str, str], metered: str
) -> None:
    batch = [
        event("l1", type="app.login", data={"user": "ann"}),
        event("l2", type="app.login", data={"user": "bob"}),
        event("l3", type="app.login", data={"user": "ann"}),
        event("j1", type="jobs.running", data={"n": 3}),
        event("j2", type="jobs.running", data={"n": 7}),
        event("j3", type="jobs.running", data={"n": 5}),
        event("s1", type="storage.used", data={"gb": 1.5}),
        event("s2", type="storage.used", data={"gb": 2.25}),
        event("x1", type="export.created"),
        event("x2", type="export.created"),
    ]
    assert (await send(client, backend, batch)).json()["accepted"] == 10
    later = [
        event("l4", type="app.login", data={"user": "bob"}),
        event("l5", type="app.login", data={"user": "cy"}),
        event("j4", type="jobs.running", data={"n": 6}),
    ]
    assert (await send(client, backend, later)).json()["accepted"] == 3
    totals = {
        meter: Decimal((await _usage(client, finance, meter))["total"])
        for meter in ("logins", "peak_jobs", "storage", "exports")
    }
    assert totals == {
        "logins": Decimal(3),
        "peak_jobs": Decimal(7),
        "storage": Decimal("3.75"),
        "exports": Decimal(2),
    }


def _mixed(i: int, now: Any) -> dict[str, Any]:
    """Event i of a mix feeding every aggregation (see tests/factories/usage.py), within the
    last three hours but never before this month (unique counts are per month)."""
    month = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    at = max(now - timedelta(minutes=i % 170), month)
    kind = i % 5
    if kind == 0:
        return event(f"r{i}", time=at, data={"count": i % 7 + 1})
    if kind == 1:
        return event(f"r{i}", type="export.created", time=at)
    if kind == 2:
        return event(f"r{i}", type="app.login", time=at, data={"user": f"u{i % 97}"})
    if kind == 3:
        return event(f"r{i}", type="jobs.running", time=at, data={"n": i % 1000})
    return event(f"r{i}", type="storage.used", time=at, data={"gb": (i % 13) / 4})


async def test_10000_events_sent_three_times_concurrently_give_exact_totals(
    client: httpx.AsyncClient, backend: dict[str, str], finance: dict[str, str], metered: str
) -> None:
    now = utcnow()
    events = [_mixed(i, now) for i in range(10_000)]
    # Worked out from the mix, not by the code under test:
    expected = {
        "api_calls": sum(Decimal(i % 7 + 1) for i in range(0, 10_000, 5)),
        "exports": Decimal(len(range(1, 10_000, 5))),
        "logins": Decimal(len({i % 97 for i in range(2, 10_000, 5)})),
        "peak_jobs": Decimal(max(i % 1000 for i in range(3, 10_000, 5))),
        "storage": sum(Decimal(i % 13) / 4 for i in range(4, 10_000, 5)),
    }
    batches = [events[i : i + 1000] for i in range(0, 10_000, 1000)]
    # Three copies of every batch, from concurrent requests, in an interleaved order.
    sent = [
        send(client, backend, batch)
        for copy in range(3)
        for batch in batches[copy:] + batches[:copy]
    ]
    responses = await asyncio.gather(*sent)
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses][:2]
    assert sum(r.json()["accepted"] for r in responses) == 10_000
    assert sum(r.json()["duplicates"] for r in responses) == 20_000
    for meter, total in expected.items():
        for granularity in ("hour", "day", "month"):
            usage = await _usage(client, finance, meter, granularity=granularity)
            assert Decimal(usage["total"]) == total, (meter, granularity)
    hourly = await _usage(client, finance, "api_calls", granularity="hour")
    assert sum(b["events"] for b in hourly["buckets"]) == 2000


async def test_usage_read_rules(
    client: httpx.AsyncClient, backend: dict[str, str], finance: dict[str, str], metered: str
) -> None:
    unknown = await client.get(
        "/v1/customers/acme/usage",
        params={"meter": "nope", "from": "2026-01-01T00:00:00Z", "to": "2026-02-01T00:00:00Z"},
        headers=finance,
    )
    assert unknown.status_code == 422 and unknown.json()["errors"][0]["path"] == "query.meter"
    backwards = await client.get(
        "/v1/customers/acme/usage",
        params={"meter": "exports", "from": "2026-02-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"},
        headers=finance,
    )
    assert backwards.status_code == 422
    forbidden = await client.get(
        "/v1/customers/acme/usage",
        params={"meter": "exports", "from": "2026-01-01T00:00:00Z", "to": "2026-02-01T00:00:00Z"},
        headers=backend,
    )
    assert forbidden.status_code == 403


async def test_every_required_attribute_is_named_when_missing(
    client: httpx.AsyncClient, backend: dict[str, str], metered: str
) -> None:
    full = event("req-1")
    for attribute in ("specversion", "id", "source", "type", "subject"):
        broken = {k: v for k, v in full.items() if k != attribute}
        response = await send(client, backend, broken)
        assert response.status_code == 422, (attribute, response.text)
        assert attribute in [e["path"] for e in response.json()["errors"]]
    naive = await send(client, backend, {**full, "time": "2026-11-01T00:00:00"})
    assert naive.status_code == 422 and naive.json()["errors"][0]["path"] == "time"
