"""GET /v1/stream over real HTTP (tests/stream/conftest.py): what arrives, for whom, on resume.

Writes go through the session app (the `client` fixture, in process), another instance of
the app on the same PostgreSQL and Redis namespace: its changes reach the served stream the
way another worker's do, through the journal.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any

import httpx

from allotment.invalidation import CUSTOMER_TOPIC, POLICY_TOPIC, make_bus
from allotment.kit.bus import Bus, Journal
from allotment.stream import ids
from tests.check.servers import eventually
from tests.factories.auth import create_key
from tests.factories.contracts import create_contract, state_version
from tests.factories.customers import create_customer
from tests.factories.policies_for_contracts import demo_document, publish_policy
from tests.stream.conftest import HEARTBEAT_S, Served, serve
from tests.stream.support import Listener, amend


def _content(event: Any) -> tuple[str, dict[str, Any]]:
    """The event without its commit time (which differs from run to run)."""
    data = dict(event.json())
    data.pop("committed_at", None)
    return event.event, data


def _positions(events: list[Any]) -> list[tuple[str, ids.Position]]:
    parsed = [ids.parse(e.id) for e in events]
    assert None not in parsed, [e.id for e in events]
    return parsed  # type: ignore[return-value]


async def _world(client: httpx.AsyncClient, admin: dict[str, str]) -> dict[str, Any]:
    """The demo policy; acme and globex, each on a team contract."""
    version = await publish_policy(client, admin, demo_document())
    contracts = {}
    for key in ("acme", "globex"):
        await create_customer(client, admin, key=key, name=key.title())
        contracts[key] = await create_contract(client, admin, customer=key, plan="team")
    return {"version": version, "contracts": contracts}


async def test_an_amendment_a_publish_and_a_rollback_reach_a_connected_client(
    app: Any, served: Served, client: httpx.AsyncClient, admin: dict[str, str], backend: Any
) -> None:
    world = await _world(client, admin)
    async with Listener(served.stream, backend) as stream:
        opening = stream.opening
        assert opening is not None and opening.retry == 1000
        assert ids.parse(opening.id) is not None  # a fresh stream learns where it starts

        await amend(client, admin, world["contracts"]["acme"], 12)
        changed = await stream.next("customer.changed", customer="acme")
        assert changed.json()["state_version"] == await state_version(app, "acme")

        document = demo_document()
        document["plans"]["team"]["features"] += ["sso", "audit_log"]
        version = await publish_policy(client, admin, document)
        published = await stream.next("policy.published", version=version)
        assert published.json()["rollback"] is False

        rolled = await client.post(
            "/v1/policies/rollback", json={"to_version": world["version"]}, headers=admin
        )
        assert rolled.status_code == 200, rolled.text
        back = await stream.next("policy.published", version=world["version"])
        assert back.json()["rollback"] is True

    events = [changed, published, back]
    positions = _positions(events)
    assert len({epoch for epoch, _ in positions}) == 1
    assert [at for _, at in positions] == sorted({at for _, at in positions})  # increasing
    lags = [
        round(stream.received_at[stream.events.index(e)] - _seconds(e.json()["committed_at"]), 3)
        for e in events
    ]
    print("commit -> stream client (s):", lags)


def _seconds(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


async def test_customers_created_and_deleted_and_seats_assigned_are_announced(
    app: Any, served: Served, client: httpx.AsyncClient, admin: dict[str, str], backend: Any
) -> None:
    await publish_policy(client, admin, demo_document())
    async with Listener(served.stream, backend) as stream:
        await create_customer(client, admin, key="initech", name="Initech")
        created = await stream.next("customer.changed", customer="initech")
        assert created.json()["state_version"] == 0  # a new customer's first state

        assert (await client.delete("/v1/customers/initech", headers=admin)).status_code == 204
        seen = len(stream.events)
        deleted = await stream.next("customer.changed", after=seen, customer="initech")
        assert deleted.json()["state_version"] is None  # no customer, no version

        await create_customer(client, admin, key="acme")
        await create_contract(client, admin, customer="acme", plan="team")
        version = await state_version(app, "acme")
        await stream.next("customer.changed", customer="acme", state_version=version)
        seen = len(stream.events)
        for subject in ("ann@acme", "bob@acme"):  # the general path, then the fast path
            seat = await client.post(
                "/v1/customers/acme/seats", json={"subject": subject}, headers=admin
            )
            assert seat.status_code == 201, seat.text
        await stream.until(
            lambda events: (
                len([e for e in events[seen:] if e.json().get("customer") == "acme"]) >= 2
            )
        )
        # The assignment is one SQL statement that bumps the version without returning it.
        assert all(
            e.json()["state_version"] is None
            for e in stream.events[seen:]
            if e.json().get("customer") == "acme"
        )


def _reworded() -> dict[str, Any]:
    """The demo catalog with one description changed: a new version that changes nothing a
    customer holds (publishing the version already active is refused)."""
    document = demo_document()
    document["plans"]["team"]["description"] = "The plan most customers buy, reworded."
    return document


async def test_a_filtered_stream_gets_its_customer_and_the_policy_only(
    app: Any, served: Served, client: httpx.AsyncClient, admin: dict[str, str], backend: Any
) -> None:
    world = await _world(client, admin)
    acme_key = await create_key(app, scopes=["customer:acme"])
    async with (
        Listener(served.stream, backend) as everyone,
        Listener(served.stream, backend, params={"customer": "acme"}) as by_check_key,
        Listener(served.stream, acme_key, params={"customer": "acme"}) as by_own_key,
    ):
        await amend(client, admin, world["contracts"]["globex"], 13)
        await amend(client, admin, world["contracts"]["acme"], 14)
        version = await publish_policy(client, admin, _reworded())
        for stream in (everyone, by_check_key, by_own_key):
            await stream.next("policy.published", version=version)
        await everyone.next("customer.changed", customer="globex")
        for stream in (by_check_key, by_own_key):
            customers = [e.json()["customer"] for e in stream.named("customer.changed")]
            assert customers == ["acme"], stream.summary()
            assert stream.named("resync") == []


async def test_scopes_and_bad_requests_are_problems(
    app: Any, served: Served, client: httpx.AsyncClient, admin: dict[str, str], backend: Any
) -> None:
    acme_key = await create_key(app, scopes=["customer:acme"])
    finance = await create_key(app, scopes=["finance"])
    cases = [
        (acme_key, {"customer": "globex"}, 403),  # another customer
        (acme_key, {}, 403),  # a customer key must name its own customer
        (finance, {}, 403),
        ({}, {}, 401),
        (backend, [("customer", "acme"), ("customer", "globex")], 400),  # which one?
        (backend, {"customer": "Not A Key"}, 422),
    ]
    async with httpx.AsyncClient(timeout=10) as http:
        for headers, params, status in cases:
            response = await http.get(served.stream, headers=headers, params=params)
            assert response.status_code == status, (params, response.text)
            assert response.headers["content-type"] == "application/problem+json"
            assert response.json()["status"] == status
        refused = await http.get(served.stream, headers=acme_key)
        assert "?customer=<key>" in refused.json()["detail"]


async def test_heartbeats_arrive_as_comments(served: Served, backend: Any) -> None:
    seen: list[str] = []
    async with (
        httpx.AsyncClient(timeout=10) as http,
        http.stream("GET", served.stream, headers=backend) as response,
    ):
        assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert response.headers["cache-control"] == "no-store"
        started = time.monotonic()
        async for line in response.aiter_lines():
            seen.append(line)
            if seen.count(": heartbeat") >= 2:
                break
            assert time.monotonic() - started < 10 * HEARTBEAT_S + 5, seen
    assert seen[0] == "retry: 1000"


async def test_a_resumed_stream_gets_exactly_what_it_missed_in_order(
    served: Served, client: httpx.AsyncClient, admin: dict[str, str], backend: Any
) -> None:
    world = await _world(client, admin)
    contracts = dict(world["contracts"])
    async with Listener(served.stream, backend) as first:
        contracts["acme"] = await amend(client, admin, contracts["acme"], 11)
        last = await first.next("customer.changed", customer="acme")
    # Disconnected: six changes go by, two customers and a publish interleaved.
    async with Listener(served.stream, backend) as witness:  # to know what went by
        for limit in (21, 22, 23):
            contracts["acme"] = await amend(client, admin, contracts["acme"], limit)
            contracts["globex"] = await amend(client, admin, contracts["globex"], limit)
            if limit == 22:
                await publish_policy(client, admin, _reworded())
        missed = await witness.until(lambda events: len(events) >= 7)
    assert [e.event for e in missed].count("customer.changed") == 6

    async with Listener(served.stream, backend, last_event_id=last.id) as resumed:
        await resumed.until(lambda events: len(events) >= len(missed))
        await asyncio.sleep(0.5)  # and nothing more (nothing twice)
        assert [_content(e) for e in resumed.events] == [_content(e) for e in missed]
        assert [e.id for e in resumed.events] == [e.id for e in missed]
        assert last.id not in [e.id for e in resumed.events]
        # ... then live.
        contracts["acme"] = await amend(client, admin, contracts["acme"], 30)
        live = await resumed.next("customer.changed", after=len(missed), customer="acme")

    # A client that cannot set headers says it in the query; a filtered one gets its own.
    params = {"last_event_id": last.id, "customer": "globex"}
    async with Listener(served.stream, backend, params=params) as by_query:
        globex = [e for e in missed if e.json().get("customer", "globex") == "globex"]
        await by_query.until(lambda events: len(events) >= len(globex))
        await asyncio.sleep(0.3)
        assert [e.id for e in by_query.events] == [e.id for e in globex]

    # The header wins over the query (EventSource reconnects with the URL of its first
    # connect and the newest id in the header).
    params = {"last_event_id": "stale-garbage"}
    async with Listener(served.stream, backend, params=params, last_event_id=missed[-2].id) as both:
        await both.until(lambda events: len(events) >= 2)
        await asyncio.sleep(0.3)
        assert [e.id for e in both.events] == [missed[-1].id, live.id]


async def test_ids_it_cannot_resume_from_get_resync_then_live(
    served: Served, client: httpx.AsyncClient, admin: dict[str, str], backend: Any
) -> None:
    world = await _world(client, admin)
    async with Listener(served.stream, backend) as first:
        contract = await amend(client, admin, world["contracts"]["acme"], 11)
        real = (await first.next("customer.changed", customer="acme")).id
    parsed = ids.parse(real)
    assert parsed is not None
    epoch, at = parsed
    other_epoch = ("0" if epoch[0] != "0" else "1") + epoch[1:]
    cases = {
        "malformed": "not-an-id",
        "epoch": ids.event_id(other_epoch, at),
        "unknown": ids.event_id(epoch, (at[0] + 10**9, 0)),  # past the journal's end
    }
    for reason, last_event_id in cases.items():
        async with Listener(served.stream, backend, last_event_id=last_event_id) as stream:
            resync = await stream.next("resync")
            assert resync.json() == {"reason": reason}
            assert stream.events[0] is resync  # first, before anything live
            assert ids.parse(resync.id) is not None  # resume from here next time
            contract = await amend(client, admin, contract, contract["seats"]["limit"] + 1)
            await stream.next("customer.changed", customer="acme")

    # Too old: the journal was trimmed past it (a bus whose journal keeps about 100).
    trimming = _trimming_bus(served)
    for n in range(400):
        payload = f"trim-{n} {time.time():.6f}"
        await trimming.publish(CUSTOMER_TOPIC, payload, data={"customer": f"trim-{n}"})
    await trimming.flush()
    assert await served.app.state.redis.xlen(served.hub.journal.key) < 400
    async with Listener(served.stream, backend, last_event_id=real) as stream:
        resync = await stream.next("resync")
        assert resync.json() == {"reason": "trimmed"}
        assert stream.events[0] is resync
        await amend(client, admin, contract, contract["seats"]["limit"] + 1)
        await stream.next("customer.changed", customer="acme")


def _trimming_bus(served: Served) -> Bus:
    journal = served.hub.journal
    return Bus(
        served.app.state.redis,
        channel=f"{journal.key}:trimming-test",  # no worker listens: the journal only
        journal=Journal(
            key=journal.key,
            epoch_key=journal.epoch_key,
            topics=frozenset({CUSTOMER_TOPIC, POLICY_TOPIC}),
            maxlen=100,
        ),
    )


async def test_a_client_that_goes_away_is_forgotten_at_once(served: Served, backend: Any) -> None:
    hub = served.hub
    before_tasks = len(asyncio.all_tasks())
    before_gauge = await _metric(served, "allotment_stream_clients")
    for _ in range(200):  # each on a connection of its own, closed when it hangs up
        async with (
            httpx.AsyncClient(timeout=10) as http,
            http.stream("GET", served.stream, headers=backend) as response,
        ):
            assert response.status_code == 200
            async for _chunk in response.aiter_raw():
                break  # the opening block: registered; now hang up

    async def forgotten() -> bool:
        return not hub.clients

    await eventually(forgotten, within=5)
    assert len(hub.clients) == 0
    assert await _metric(served, "allotment_stream_clients") == before_gauge
    await asyncio.sleep(0.2)
    assert len(asyncio.all_tasks()) <= before_tasks + 2  # no writer or watcher left behind


async def test_metrics_count_clients_events_and_resyncs(
    served: Served, client: httpx.AsyncClient, admin: dict[str, str], backend: Any
) -> None:
    world = await _world(client, admin)
    events = 'allotment_stream_events_total{event="customer.changed"}'
    malformed = 'allotment_stream_resyncs_total{reason="malformed"}'
    before = {name: await _metric(served, name) for name in (events, malformed)}
    async with (
        Listener(served.stream, backend) as a,
        Listener(served.stream, backend, last_event_id="garbage") as b,
    ):
        assert await _metric(served, "allotment_stream_clients") >= 2
        await amend(client, admin, world["contracts"]["acme"], 15)
        for stream in (a, b):
            await stream.next("customer.changed", customer="acme")
    assert await _metric(served, events) >= before[events] + 2
    assert await _metric(served, malformed) == before[malformed] + 1


async def _metric(served: Served, sample: str) -> float:
    async with httpx.AsyncClient(timeout=10) as http:
        text = (await http.get(f"{served.url}/metrics")).text
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        if name == sample:
            return float(value)
    return 0.0


async def test_a_stream_ends_after_its_longest_life_and_resumes(
    stores: Any, client: httpx.AsyncClient, admin: dict[str, str], backend: Any
) -> None:
    world = await _world(client, admin)
    async with serve(stores, stream_max_s=2.0) as short:
        async with Listener(short.stream, backend) as stream:
            contract = await amend(client, admin, world["contracts"]["acme"], 16)
            last = await stream.next("customer.changed", customer="acme")
            await asyncio.wait_for(stream.ended.wait(), 10)  # ended by the server
        await amend(client, admin, contract, 17)
        async with Listener(short.stream, backend, last_event_id=last.id) as again:
            missed = await again.next("customer.changed", customer="acme")
            assert missed.json()["state_version"] > last.json()["state_version"]
            assert again.named("resync") == []


async def test_the_cli_bus_journals_too(stores: Any, served: Served, backend: Any) -> None:
    """A change announced by a process that is not a worker (the CLI's bus, made by
    invalidation.make_bus) reaches streams like any other."""
    from redis.asyncio import Redis

    redis = Redis.from_url(stores.redis_url)
    bus = make_bus(redis, stores.settings())
    try:
        async with Listener(served.stream, backend) as stream:
            await bus.publish(POLICY_TOPIC, "99 0", data={"version": 7, "rollback": True})
            await bus.flush()
            event = await stream.next("policy.published", version=7)
            assert event.json()["rollback"] is True
    finally:
        await redis.aclose()
