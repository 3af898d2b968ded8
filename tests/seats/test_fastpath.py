"""The named-seat fast path (seats/fastpath.py): what it serves, that it answers as the route
does, and every case it must hand to the route instead.

The route's own assignment is replaced by a spy: a request the spy sees went through the
route; one it does not see was served by the middleware in one autocommit statement.
"""

from __future__ import annotations

import hashlib
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from allotment.db import session_scope
from allotment.seats import direct, known
from tests.factories.seats import amend_seats, assign, check


class RouteSpy:
    """The subjects whose assignment reached the route's endpoint, in order."""

    def __init__(self) -> None:
        self.subjects: list[str] = []


@pytest.fixture
def route(monkeypatch: pytest.MonkeyPatch) -> RouteSpy:
    spy = RouteSpy()
    original = direct.assign_any

    async def spied(session: Any, **fields: Any) -> direct.Assignment:
        spy.subjects.append(fields["subject"])
        return await original(session, **fields)

    monkeypatch.setattr("allotment.seats.endpoints.direct.assign_any", spied)
    return spy


async def rows(app: Any, sql: str, **params: Any) -> list[Any]:
    async with session_scope(app.state.sessionmaker) as session:
        return list((await session.execute(text(sql), params)).all())


async def test_a_known_customer_is_served_without_the_route_and_fully_recorded(
    app: Any,
    client: httpx.AsyncClient,
    backend: dict[str, str],
    team: str,
    route: RouteSpy,
    finance: dict[str, str],
) -> None:
    assert (await assign(client, backend, "ann")).status_code == 201  # learns the limits
    assert route.subjects == ["ann"] and known.knows("acme")
    bob = await assign(client, backend, "bob")
    assert bob.status_code == 201, bob.text
    assert route.subjects == ["ann"]  # bob never reached the route
    # The same three records the general path writes, in the same transaction; the audit
    # record and the event name bob by pseudonym (docs/privacy.md).
    ref = app.state.pseudonyms.of("acme", "bob")
    audit = await rows(
        app, "SELECT actor, action, target_key, after FROM audit_log WHERE target_key = :k",
        k=f"acme/{ref}",
    )  # fmt: skip
    assert [(a.action, a.target_key) for a in audit] == [("seat.assigned", f"acme/{ref}")]
    assert audit[0].after["id"] == bob.json()["id"] and audit[0].after["since"].endswith("Z")
    events = await rows(
        app, "SELECT type, data FROM usage_events WHERE data->>'subject' = :s", s=ref
    )  # fmt: skip
    assert [e.type for e in events] == ["allotment.seat.assigned"]
    assert events[0].data == audit[0].after
    counts = await rows(app, "SELECT members, guests FROM seat_counts")
    assert [(c.members, c.guests) for c in counts] == [(2, 0)]
    verified = await client.get("/v1/audit/verify", headers=finance)
    assert verified.json()["ok"] is True, verified.text
    # The check on this worker sees the new seat at once (the cache was told after commit).
    assert (await check(client, backend, "editor", subject="bob"))["allowed"] is True


async def test_it_answers_as_the_route_does(
    client: httpx.AsyncClient, backend: dict[str, str], team: str, route: RouteSpy
) -> None:
    by_route = (await assign(client, backend, "ann")).json()
    by_fast_path = (await assign(client, backend, "bob")).json()
    assert route.subjects == ["ann"]
    assert by_route.keys() == by_fast_path.keys()
    assert {k: v for k, v in by_fast_path.items() if k not in ("id", "subject", "since")} == {
        k: v for k, v in by_route.items() if k not in ("id", "subject", "since")
    }
    again = await assign(client, backend, "ann")  # held: 200 with the same seat
    assert again.status_code == 200 and again.json() == by_route
    assert route.subjects == ["ann"]
    differently = await assign(client, backend, "ann", type="guest")
    assert differently.status_code == 409
    assert differently.json()["type"].endswith("/seat-held-differently")
    assert route.subjects == ["ann"]


async def test_refusals_from_the_fast_path_carry_the_pool_state(
    client: httpx.AsyncClient, backend: dict[str, str], team: str, route: RouteSpy
) -> None:
    for n in range(12):  # 10 seats and 2 burst seats
        assert (await assign(client, backend, f"u{n}")).status_code == 201
    refused = await assign(client, backend, "u12")
    assert refused.status_code == 409, refused.text
    body = refused.json()
    assert body["reason"] == "seat_limit_reached" and body["limit"] == 10 and body["held"] == 12
    assert route.subjects == ["u0"]
    unknown_tenant = await assign(client, backend, "t1", tenant="nowhere")
    assert unknown_tenant.status_code == 422
    assert unknown_tenant.json()["errors"][0]["path"] == "tenant"


async def test_what_the_fast_path_hands_to_the_route(
    app: Any,
    client: httpx.AsyncClient,
    backend: dict[str, str],
    team: str,
    route: RouteSpy,
    admin: dict[str, str],
    finance: dict[str, str],
) -> None:
    await assign(client, backend, "ann")
    # A malformed Idempotency-Key: the route's 400.
    too_long = {**backend, "Idempotency-Key": "k" * 256}
    malformed = await client.post(
        "/v1/customers/acme/seats", json={"subject": "x"}, headers=too_long
    )
    assert malformed.status_code == 400 and "1 to 255 characters" in malformed.json()["detail"]
    # A body that does not validate: the route words the 422 (the same as for a customer
    # the process does not know yet).
    bad = await client.post("/v1/customers/acme/seats", json={"subjekt": "x"}, headers=backend)
    known.clear()
    bad_unknown = await client.post(
        "/v1/customers/acme/seats", json={"subjekt": "x"}, headers=backend
    )
    assert bad.status_code == bad_unknown.status_code == 422
    assert bad.json()["errors"] == bad_unknown.json()["errors"]
    await assign(client, backend, "relearn")
    # Limits the database calls stale (the contract was amended): the route decides, with
    # the new limits, and remembers them.
    await amend_seats(client, admin, limit=20)
    amended = await assign(client, backend, "after-amendment")
    assert amended.status_code == 201
    assert route.subjects[-1] == "after-amendment"
    limits = known.get("acme")
    assert limits is not None and limits.seats.limit == 20
    assert (await assign(client, backend, "fast-again")).status_code == 201
    assert route.subjects[-1] == "after-amendment"
    # Wrong or missing key: refused by the same guard, before anything is read.
    unauthorised = await client.post("/v1/customers/acme/seats", json={"subject": "z"})
    assert unauthorised.status_code == 401
    forbidden = await client.post(
        "/v1/customers/acme/seats", json={"subject": "z"}, headers=finance
    )
    assert forbidden.status_code == 403
    assert route.subjects[-1] == "after-amendment"


def _secret_hash(headers: dict[str, str]) -> str:
    return hashlib.sha256(headers["Authorization"].removeprefix("Bearer ").encode()).hexdigest()


async def test_idempotency_keys_on_the_fast_path(
    app: Any,
    client: httpx.AsyncClient,
    backend: dict[str, str],
    team: str,
    route: RouteSpy,
    finance: dict[str, str],
) -> None:
    seats = "/v1/customers/acme/seats"
    # Stored by the route (the customer not yet known), replayed by the fast path.
    by_route = await client.post(seats, json={"subject": "ann"}, headers=_keyed("k-ann", backend))
    assert by_route.status_code == 201 and route.subjects == ["ann"] and known.knows("acme")
    replayed = await client.post(seats, json={"subject": "ann"}, headers=_keyed("k-ann", backend))
    assert replayed.status_code == 201 and replayed.content == by_route.content
    assert replayed.headers["Idempotent-Replayed"] == "true"
    # Served by the fast path, then replayed byte for byte; never a second effect.
    first = await client.post(seats, json={"subject": "kay"}, headers=_keyed("k1", backend))
    again = await client.post(seats, json={"subject": "kay"}, headers=_keyed("k1", backend))
    assert first.status_code == again.status_code == 201 and again.content == first.content
    assert (
        again.headers["Idempotent-Replayed"] == "true"
        and "Idempotent-Replayed" not in first.headers
    )
    assert route.subjects == ["ann"]
    stored = await rows(app, "SELECT status, body FROM idempotency_keys WHERE key = 'k1'")
    assert [(r.status, bytes(r.body)) for r in stored] == [(201, first.content)]
    kay = f"acme/{app.state.pseudonyms.of('acme', 'kay')}"  # audited by pseudonym
    audited = await rows(app, "SELECT id FROM audit_log WHERE target_key = :k", k=kay)
    assert len(audited) == 1
    # The same key for another request: 422, nothing assigned.
    other = await client.post(seats, json={"subject": "ivy"}, headers=_keyed("k1", backend))
    assert other.status_code == 422 and other.json()["type"].endswith("/idempotency-key-reused")
    # A key whose first request still runs (its lock held): 409, nothing assigned.
    key_id = (
        await rows(app, "SELECT id FROM api_keys WHERE secret_hash = :h", h=_secret_hash(backend))
    )[0].id
    async with app.state.hot_pool.connection() as holder:
        # The key's lock, as the route and the fast path take it (one definition, 0014).
        await holder.execute("BEGIN")
        await holder.execute("SELECT allotment_idempotency_lock(%s, 'k-busy')", (key_id,))
        busy = await client.post(seats, json={"subject": "bo"}, headers=_keyed("k-busy", backend))
        await holder.execute("ROLLBACK")
    assert busy.status_code == 409 and busy.json()["type"].endswith("/idempotency-in-flight")
    assert [r.subject for r in await rows(app, "SELECT subject FROM seats ORDER BY subject")] == [
        "ann",
        "kay",
    ]
    # A refusal stores nothing: the same key runs again once there is room.
    for n in range(10):  # 10 seats and 2 burst seats: fill them
        await assign(client, backend, f"u{n}")
    full = await client.post(seats, json={"subject": "late"}, headers=_keyed("k-late", backend))
    assert full.status_code == 409 and full.json()["reason"] == "seat_limit_reached"
    await client.delete("/v1/customers/acme/seats/u0", headers=backend)
    retried = await client.post(seats, json={"subject": "late"}, headers=_keyed("k-late", backend))
    assert retried.status_code == 201 and "Idempotent-Replayed" not in retried.headers
    assert route.subjects == ["ann"]
    # The keyed path appends the audit record in the committing query: the chain holds.
    audited = await rows(app, "SELECT target_key FROM audit_log WHERE action = 'seat.assigned'")
    assert sorted(a.target_key for a in audited) == sorted(
        f"acme/{app.state.pseudonyms.of('acme', s)}"
        for s in ["ann", "kay", "late", *(f"u{n}" for n in range(10))]
    )
    verified = await client.get("/v1/audit/verify", headers=finance)
    assert verified.json()["ok"] is True, verified.text


def _keyed(key: str, headers: dict[str, str]) -> dict[str, str]:
    return {**headers, "Idempotency-Key": key}


async def test_a_customer_gone_since_its_limits_were_read_gets_the_routes_404(
    app: Any, client: httpx.AsyncClient, backend: dict[str, str], team: str, route: RouteSpy
) -> None:
    await assign(client, backend, "ann")
    await rows(app, "UPDATE customers SET key = 'acme-renamed' WHERE key = 'acme' RETURNING id")
    gone = await assign(client, backend, "bob")
    assert gone.status_code == 404, gone.text
    assert route.subjects == ["ann", "bob"]


async def test_a_nul_in_the_subject_is_a_422_and_writes_nothing(
    app: Any, client: httpx.AsyncClient, backend: dict[str, str], team: str, route: RouteSpy
) -> None:
    await assign(client, backend, "ann")
    nul = await assign(client, backend, "a\u0000b")
    assert nul.status_code == 422, nul.text
    keyed = await client.post(
        "/v1/customers/acme/seats", json={"subject": "a\u0000b"}, headers=_keyed("k", backend)
    )
    assert keyed.status_code == 422, keyed.text
    assert [r.n for r in await rows(app, "SELECT count(*) AS n FROM seats")] == [1]
    assert route.subjects == ["ann"]
