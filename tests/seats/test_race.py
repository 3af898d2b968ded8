"""Allocation caps under a real race: 64 HTTP clients against real uvicorn processes.

Two `uvicorn allotment.app:create_app --factory` processes share this test worker's
PostgreSQL database, so racing requests meet only at the pool lock in PostgreSQL (the
customer's row, `contracts.pools.lock`), never in one process's memory. Each race opens 64
`httpx.AsyncClient`s (each connected before the start signal, half to each process) that
drain one queue of distinct requests together. Meanwhile a sampler polls the tables over
its own connection and records what PostgreSQL shows as live.

Each race asserts that:
  - exactly the cap is granted (201), the rest are refused with 409 and the right `reason`,
    and nothing else (no 5xx, no other 4xx) comes back;
  - every refusal is justified by the count the server reported (`held`): a request is
    never refused while the pool had room for it;
  - the sampled live count never exceeded the cap, over many samples taken while requests
    were in flight;
  - afterwards the table holds exactly the granted rows (same subjects / fingerprints).

Setup (policy, customer, contract, tenants, API keys) goes through the in-process app,
which writes to the same database.
"""

from __future__ import annotations

import asyncio
import collections
import re
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from allotment.db import libpq_url
from tests.check.servers import Worker, free_port
from tests.factories.auth import create_key
from tests.factories.contracts import create_contract
from tests.factories.customers import create_customer
from tests.factories.policies_for_contracts import demo_document, publish_policy

CLIENTS = 64
ATTEMPTS = 2 * CLIENTS  # distinct requests per race, several times any cap
WORKERS = 2

# What PostgreSQL shows as live, per customer (what the service counts under the lock).
LIVE_MEMBERS = (
    "SELECT count(*) FROM seats s JOIN customers c ON c.id = s.customer_id "
    "WHERE c.key = %(customer)s AND s.type = 'member' AND s.released_at IS NULL"
)
LIVE_MEMBERS_BY_TENANT = (
    "SELECT count(*), "
    "count(*) FILTER (WHERE s.tenant = 'eu'), count(*) FILTER (WHERE s.tenant = 'us') "
    "FROM seats s JOIN customers c ON c.id = s.customer_id "
    "WHERE c.key = %(customer)s AND s.type = 'member' AND s.released_at IS NULL"
)
LIVE_WEIGHT = (
    "SELECT coalesce(sum(i.weight), 0) FROM instances i JOIN customers c ON c.id = i.customer_id "
    "WHERE c.key = %(customer)s AND i.ended_at IS NULL AND i.lease_expires_at > now()"
)
LIVE_SESSIONS = (
    "SELECT count(*) FROM seat_sessions s JOIN customers c ON c.id = s.customer_id "
    "WHERE c.key = %(customer)s AND s.ended_at IS NULL AND s.expires_at > now()"
)

# One TLS context for every client (none is used over plain HTTP, but httpx builds one per
# client otherwise, which costs more than the race itself).
_TLS = ssl.create_default_context()

_TROUBLE = re.compile(r"Traceback|ERROR|CRITICAL|deadlock|exception", re.IGNORECASE)


# -- the servers, shared by the module (setup writes go through the in-process app) ------------


@dataclass
class Servers:
    workers: list[Worker]
    database_url: str
    read_upto: dict[Path, int] = field(default_factory=dict)

    def new_log_lines(self) -> str:
        """What the workers logged since the last call (they log at WARNING and above)."""
        text = ""
        for worker in self.workers:
            content = worker.log_path.read_text(errors="replace")
            text += content[self.read_upto.get(worker.log_path, 0) :]
            self.read_upto[worker.log_path] = len(content)
        return text

    def assert_healthy(self) -> None:
        for worker in self.workers:
            assert worker.proc.poll() is None, worker.log_path.read_text()
        logged = self.new_log_lines()
        found = _TROUBLE.search(logged)
        assert found is None, f"the workers logged trouble:\n{logged[:3000]}"


@pytest.fixture(scope="module")
async def servers(stores: Any, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Servers]:
    logs = tmp_path_factory.mktemp("race-workers")
    workers = [Worker(stores.env(), free_port(), logs / f"worker-{n}.log") for n in range(WORKERS)]
    try:
        await asyncio.gather(*(worker.wait_ready() for worker in workers))
        running = Servers(workers, libpq_url(stores.database_url))
        running.new_log_lines()  # start-up chatter is not the race's
        yield running
    finally:
        for worker in workers:
            worker.terminate()


@pytest.fixture
async def live(servers: Servers, client: httpx.AsyncClient) -> AsyncIterator[Servers]:
    """The servers, after the `client` fixture emptied the tables; checks their logs after."""
    servers.new_log_lines()
    yield servers
    servers.assert_healthy()


@pytest.fixture
async def backend(app: Any, client: httpx.AsyncClient) -> dict[str, str]:
    return await create_key(app, scopes=["check"])


async def _customer(
    client: httpx.AsyncClient, admin: dict[str, str], key: str, plan: str, **terms: Any
) -> None:
    await create_customer(client, admin, key=key, name=key.title())
    await create_contract(client, admin, customer=key, plan=plan, **terms)


@pytest.fixture
async def policy(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    await publish_policy(client, admin, demo_document())


# -- the race ---------------------------------------------------------------------------------


@dataclass
class Outcome:
    results: list[tuple[dict[str, Any], httpx.Response]]
    samples: list[tuple[Any, ...]]  # from before the start signal until after the last response
    seconds: float

    def status(self, code: int) -> list[tuple[dict[str, Any], httpx.Response]]:
        return [(body, response) for body, response in self.results if response.status_code == code]

    def statuses(self) -> collections.Counter[int]:
        return collections.Counter(response.status_code for _, response in self.results)

    def peak(self, column: int = 0) -> int:
        return max(int(sample[column]) for sample in self.samples)

    def only(self, *codes: int) -> None:
        unexpected = [
            (body, response.status_code, response.text)
            for body, response in self.results
            if response.status_code not in codes
        ]
        assert not unexpected, f"{len(unexpected)} unexpected responses, e.g. {unexpected[:3]}"


async def _sample(
    database_url: str,
    query: str,
    params: dict[str, Any],
    sampling: asyncio.Event,
    stop: asyncio.Event,
    into: list[tuple[float, tuple[Any, ...]]],
) -> None:
    """Run `query` (autocommit: each sample sees what is committed) until `stop`."""
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        while not stop.is_set():
            row = await (await conn.execute(query, params)).fetchone()  # type: ignore[arg-type]
            assert row is not None
            into.append((time.perf_counter(), tuple(row)))
            sampling.set()
            await asyncio.sleep(0.001)


async def race(
    servers: Servers,
    headers: dict[str, str],
    path: str,
    bodies: list[dict[str, Any]],
    *,
    sample: str,
    customer: str,
) -> Outcome:
    """POST every body to `path` from CLIENTS clients at once, sampling `sample` meanwhile."""
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    results: list[tuple[dict[str, Any], httpx.Response]] = []
    go, sampling, stop = asyncio.Event(), asyncio.Event(), asyncio.Event()
    connected = 0
    all_connected = asyncio.Event()

    async def one_client(n: int) -> None:
        nonlocal connected
        worker = servers.workers[n % len(servers.workers)]
        async with httpx.AsyncClient(
            base_url=worker.base_url, headers=headers, timeout=30, verify=_TLS
        ) as h:
            assert (await h.get("/healthz")).status_code == 200  # the connection is open
            connected += 1
            if connected == CLIENTS:
                all_connected.set()
            await go.wait()
            while True:
                try:
                    body = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                results.append((body, await h.post(path, json=body)))

    samples: list[tuple[float, tuple[Any, ...]]] = []
    sampler = asyncio.create_task(
        _sample(servers.database_url, sample, {"customer": customer}, sampling, stop, samples)
    )
    clients = [asyncio.create_task(one_client(n)) for n in range(CLIENTS)]
    try:
        await asyncio.wait_for(all_connected.wait(), timeout=30)
        await asyncio.wait_for(sampling.wait(), timeout=30)  # polling before the start
        started = time.perf_counter()
        go.set()
        await asyncio.gather(*clients)
        ended = time.perf_counter()
    finally:
        stop.set()
        for task in clients:
            task.cancel()
        await asyncio.gather(*clients, return_exceptions=True)
        await sampler
    during = [values for at, values in samples if started <= at <= ended]
    assert len(results) == len(bodies)
    # Fewer than this and the sampler proved nothing about the race's intermediate states.
    assert len(during) >= 10, f"only {len(during)} samples in {ended - started:.3f}s"
    outcome = Outcome(results, [values for _, values in samples], ended - started)
    print(
        f"{path}: {len(bodies)} requests in {outcome.seconds:.2f}s, {dict(outcome.statuses())}, "
        f"{len(during)} samples during the race, values seen {sorted(set(during))}"
    )
    return outcome


async def _rows(servers: Servers, query: str, **params: Any) -> list[tuple[Any, ...]]:
    async with await psycopg.AsyncConnection.connect(servers.database_url, autocommit=True) as c:
        return list(await (await c.execute(query, params)).fetchall())  # type: ignore[arg-type]


# -- named seats ------------------------------------------------------------------------------


async def test_64_clients_assign_exactly_the_limit_and_the_burst(
    live: Servers,
    client: httpx.AsyncClient,
    admin: dict[str, str],
    backend: dict[str, str],
    policy: None,
) -> None:
    """team: 10 seats + 2 burst. 128 distinct subjects race: exactly 12 seats, exactly two of
    them over the limit in one burst episode; every refusal saw the pool at its ceiling."""
    await _customer(client, admin, "acme", "team")
    bodies = [{"subject": f"user-{n:03d}", "type": "member"} for n in range(ATTEMPTS)]
    outcome = await race(
        live, backend, "/v1/customers/acme/seats", bodies, sample=LIVE_MEMBERS, customer="acme"
    )

    outcome.only(201, 409)
    granted, refused = outcome.status(201), outcome.status(409)
    assert len(granted) == 12 and len(refused) == ATTEMPTS - 12
    assert outcome.peak() <= 12
    for _, response in refused:
        problem = response.json()
        assert response.headers["content-type"].startswith("application/problem+json")
        assert problem["reason"] == "seat_limit_reached", problem
        assert (problem["pool"], problem["limit"], problem["held"]) == ("seats", 10, 12), problem
    over = [response.json() for _, response in granted if response.json()["over_limit"]]
    assert sorted(seat["burst"]["extra_left"] for seat in over) == [0, 1]
    assert len({seat["burst"]["ends_at"] for seat in over}) == 1  # one window, both seats

    rows = await _rows(
        live,
        "SELECT s.subject, s.over_limit FROM seats s JOIN customers c ON c.id = s.customer_id "
        "WHERE c.key = 'acme' AND s.type = 'member' AND s.released_at IS NULL",
    )
    assert sorted(subject for subject, _ in rows) == sorted(b["subject"] for b, _ in granted)
    assert sum(1 for _, over_limit in rows if over_limit) == 2
    episodes = await _rows(live, "SELECT ended_at FROM seat_bursts")
    assert episodes == [(None,)]  # exactly one episode, open


async def test_64_clients_assigning_the_same_subject_make_one_seat(
    live: Servers,
    client: httpx.AsyncClient,
    admin: dict[str, str],
    backend: dict[str, str],
    policy: None,
) -> None:
    await _customer(client, admin, "acme", "team")
    bodies = [{"subject": "ann", "type": "member"} for _ in range(CLIENTS * 2)]
    outcome = await race(
        live, backend, "/v1/customers/acme/seats", bodies, sample=LIVE_MEMBERS, customer="acme"
    )

    outcome.only(200, 201)
    assert outcome.statuses()[201] == 1
    assert outcome.peak() <= 1
    assert len({response.json()["id"] for _, response in outcome.results}) == 1
    rows = await _rows(live, "SELECT subject, released_at FROM seats")
    assert rows == [("ann", None)]


async def test_64_clients_fill_a_tenant_quota_exactly(
    live: Servers,
    client: httpx.AsyncClient,
    admin: dict[str, str],
    backend: dict[str, str],
    policy: None,
) -> None:
    await _customer(client, admin, "acme", "team")
    made = await client.post(
        "/v1/customers/acme/tenants", json={"key": "eu", "quotas": {"seats": 3}}, headers=admin
    )
    assert made.status_code == 201, made.text
    bodies = [{"subject": f"eu-{n:03d}", "tenant": "eu"} for n in range(ATTEMPTS)]
    outcome = await race(
        live,
        backend,
        "/v1/customers/acme/seats",
        bodies,
        sample=LIVE_MEMBERS_BY_TENANT,
        customer="acme",
    )

    outcome.only(201, 409)
    granted, refused = outcome.status(201), outcome.status(409)
    assert len(granted) == 3
    assert outcome.peak(0) <= 3 and outcome.peak(1) <= 3
    for _, response in refused:
        problem = response.json()
        assert problem["reason"] == "tenant_quota_reached", problem
        assert (problem["tenant"], problem["limit"], problem["held"]) == ("eu", 3, 3), problem
    rows = await _rows(live, "SELECT subject, tenant FROM seats WHERE released_at IS NULL")
    assert sorted(rows) == sorted((b["subject"], "eu") for b, _ in granted)


async def test_tenants_and_the_shared_pool_race_together(
    live: Servers,
    client: httpx.AsyncClient,
    admin: dict[str, str],
    backend: dict[str, str],
    policy: None,
) -> None:
    """Two tenants (quotas 3 and 4) and untenanted members race for the same 10 + 2 seats:
    the pool ends exactly full, each tenant within its quota, and each refusal names the
    bound that was really reached."""
    await _customer(client, admin, "acme", "team")
    for tenant, seats in (("eu", 3), ("us", 4)):
        made = await client.post(
            "/v1/customers/acme/tenants",
            json={"key": tenant, "quotas": {"seats": seats}},
            headers=admin,
        )
        assert made.status_code == 201, made.text
    tenants = ["eu", "us", None]
    bodies = [
        {"subject": f"m-{n:03d}", **({"tenant": t} if (t := tenants[n % 3]) else {})}
        for n in range(ATTEMPTS)
    ]
    outcome = await race(
        live,
        backend,
        "/v1/customers/acme/seats",
        bodies,
        sample=LIVE_MEMBERS_BY_TENANT,
        customer="acme",
    )

    outcome.only(201, 409)
    assert outcome.peak(0) <= 12 and outcome.peak(1) <= 3 and outcome.peak(2) <= 4
    granted = collections.Counter(body.get("tenant") for body, _ in outcome.status(201))
    # An untenanted attempt is refused only when the pool is at its ceiling, and there are
    # more of them (ATTEMPTS / 3) than seats, so the pool always ends exactly full.
    assert sum(granted.values()) == 12
    assert granted["eu"] <= 3 and granted["us"] <= 4
    for body, response in outcome.status(409):
        problem = response.json()
        if problem["reason"] == "tenant_quota_reached":
            assert problem["tenant"] == body["tenant"], problem
            assert problem["held"] == problem["limit"] == {"eu": 3, "us": 4}[body["tenant"]]
        else:
            assert problem["reason"] == "seat_limit_reached", problem
            assert problem["held"] == 12, problem
    live_rows = await _rows(
        live, "SELECT tenant, count(*) FROM seats WHERE released_at IS NULL GROUP BY tenant"
    )
    assert dict(live_rows) == {tenant: n for tenant, n in granted.items() if n}


# -- instances --------------------------------------------------------------------------------


async def test_64_clients_register_exactly_the_instance_weight_cap(
    live: Servers,
    client: httpx.AsyncClient,
    admin: dict[str, str],
    backend: dict[str, str],
    policy: None,
) -> None:
    """Weight cap 20, all vms (weight 1): exactly 20 registered."""
    await _customer(client, admin, "acme", "team", instances={"limit": 20})
    bodies = [{"fingerprint": f"vm-{n:03d}", "kind": "vm"} for n in range(ATTEMPTS)]
    outcome = await race(
        live, backend, "/v1/customers/acme/instances", bodies, sample=LIVE_WEIGHT, customer="acme"
    )

    outcome.only(201, 409)
    granted, refused = outcome.status(201), outcome.status(409)
    assert len(granted) == 20
    assert outcome.peak() <= 20
    for _, response in refused:
        problem = response.json()
        assert problem["reason"] == "instance_limit_reached", problem
        assert (problem["limit"], problem["held"], problem["weight"]) == (20, 20, 1), problem
    rows = await _rows(live, "SELECT fingerprint FROM instances WHERE ended_at IS NULL")
    assert sorted(f for (f,) in rows) == sorted(b["fingerprint"] for b, _ in granted)


async def test_64_clients_register_mixed_weights_never_past_the_cap(
    live: Servers,
    client: httpx.AsyncClient,
    admin: dict[str, str],
    backend: dict[str, str],
    policy: None,
) -> None:
    """Weight cap 21, clusters (4) and vms (1) interleaved: the live weight never passes 21,
    the granted weights are what the table holds, and a refusal always means the kind did
    not fit the weight the server counted (so a vm is refused only at exactly 21)."""
    await _customer(client, admin, "acme", "team", instances={"limit": 21})
    weights = {"vm": 1, "cluster": 4}
    bodies = [
        {"fingerprint": f"i-{n:03d}", "kind": "cluster" if n % 4 == 0 else "vm"}
        for n in range(ATTEMPTS)
    ]
    outcome = await race(
        live, backend, "/v1/customers/acme/instances", bodies, sample=LIVE_WEIGHT, customer="acme"
    )

    outcome.only(201, 409)
    granted = outcome.status(201)
    granted_weight = sum(weights[body["kind"]] for body, _ in granted)
    assert outcome.peak() <= 21
    # vms outnumber the cap, and a vm is refused only at 21, so the pool ends exactly full.
    assert granted_weight == 21
    for body, response in granted:
        assert response.json()["weight"] == weights[body["kind"]]
    for body, response in outcome.status(409):
        problem = response.json()
        assert problem["reason"] == "instance_limit_reached", problem
        assert problem["weight"] == weights[body["kind"]] and problem["limit"] == 21, problem
        assert problem["held"] <= 21 < problem["held"] + problem["weight"], problem
    rows = await _rows(live, "SELECT fingerprint, weight FROM instances WHERE ended_at IS NULL")
    assert sorted(rows) == sorted((b["fingerprint"], weights[b["kind"]]) for b, _ in granted)


async def test_64_clients_registering_one_fingerprint_make_one_instance(
    live: Servers,
    client: httpx.AsyncClient,
    admin: dict[str, str],
    backend: dict[str, str],
    policy: None,
) -> None:
    await _customer(client, admin, "acme", "team")
    bodies = [{"fingerprint": "host-1", "kind": "vm"} for _ in range(CLIENTS * 2)]
    outcome = await race(
        live, backend, "/v1/customers/acme/instances", bodies, sample=LIVE_WEIGHT, customer="acme"
    )

    outcome.only(200, 201)
    assert outcome.statuses()[201] == 1
    assert outcome.peak() <= 1
    assert len({response.json()["id"] for _, response in outcome.results}) == 1
    rows = await _rows(live, "SELECT fingerprint, ended_at FROM instances")
    assert rows == [("host-1", None)]


# -- concurrent (floating) seats --------------------------------------------------------------


async def test_64_clients_open_exactly_the_concurrent_seat_limit(
    live: Servers,
    client: httpx.AsyncClient,
    admin: dict[str, str],
    backend: dict[str, str],
    policy: None,
) -> None:
    await _customer(client, admin, "acme", "floating")
    bodies = [{"subject": f"user-{n:03d}"} for n in range(ATTEMPTS)]
    outcome = await race(
        live, backend, "/v1/customers/acme/sessions", bodies, sample=LIVE_SESSIONS, customer="acme"
    )

    outcome.only(201, 409)
    granted, refused = outcome.status(201), outcome.status(409)
    assert len(granted) == 5
    assert outcome.peak() <= 5
    for _, response in refused:
        problem = response.json()
        assert problem["reason"] == "seat_limit_reached", problem
        assert (problem["limit"], problem["held"]) == (5, 5), problem
    rows = await _rows(live, "SELECT subject FROM seat_sessions WHERE ended_at IS NULL")
    assert sorted(s for (s,) in rows) == sorted(b["subject"] for b, _ in granted)


CONSUMED = (
    "SELECT coalesce(sum(value), 0) FROM usage_counters u JOIN customers c "
    "ON c.id = u.customer_id WHERE c.key = %(customer)s AND u.meter = 'api_calls'"
)


async def test_64_clients_consume_exactly_up_to_a_hard_limit(
    live: Servers,
    client: httpx.AsyncClient,
    admin: dict[str, str],
    backend: dict[str, str],
    policy: None,
) -> None:
    # api_calls limited to 50 (hard); 128 consumes of 1 or 2 units race for it.
    limit = [{"meter": "api_calls", "limit": 50, "reason": "race"}]
    await _customer(client, admin, "acme", "team", overrides=limit)
    bodies = [{"customer": "acme", "feature": "api", "consume": 1 + n % 2} for n in range(ATTEMPTS)]
    outcome = await race(live, backend, "/v1/check", bodies, sample=CONSUMED, customer="acme")

    outcome.only(200)
    allowed = [(b, r) for b, r in outcome.results if r.json()["allowed"]]
    denied = [r.json() for _, r in outcome.results if not r.json()["allowed"]]
    consumed = sum(b["consume"] for b, _ in allowed)
    assert consumed <= 50 and outcome.peak() <= 50
    assert {d["reason"] for d in denied} <= {"usage_limit_reached"}
    # Nobody was refused while its units still fitted: every denial saw used + n > 50.
    for d, body in ((r.json(), b) for b, r in outcome.results if not r.json()["allowed"]):
        assert d["limit"]["used"] + body["consume"] > 50, d
    # Every allowed consume is counted exactly once: the counters hold exactly their sum, and
    # there is one usage event per allowed decision, keyed by its decision id.
    [(total,)] = await _rows(live, CONSUMED, customer="acme")
    assert total == consumed
    ids = await _rows(live, "SELECT id FROM usage_event_ids WHERE source = 'allotment:consume'")
    assert sorted(i for (i,) in ids) == sorted(r.json()["decision_id"] for _, r in allowed)
