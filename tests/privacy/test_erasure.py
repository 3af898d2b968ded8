"""Erasing a subject (docs/privacy.md): afterwards no table, log line or Redis key holds it;
invoices and usage totals read as before; the audit chain verifies; the same subject taken
on again gets the same pseudonym and counts stay right."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import structlog
from sqlalchemy import text

from allotment.app import create_app
from allotment.db import session_scope
from allotment.kit import logs
from tests.factories.auth import create_key
from tests.factories.contracts import create_contract
from tests.factories.customers import create_customer
from tests.factories.licensing import licensing_document
from tests.factories.policies_for_contracts import publish_policy
from tests.factories.seats import assign, check, register
from tests.factories.usage import event, metered_document, send

SUBJECT = "zq-erase/Mé ωx"  # distinctive: found only where it really is
_COLUMNS = (
    "SELECT table_name, column_name, data_type FROM information_schema.columns c "
    "JOIN pg_class k ON k.relname = c.table_name AND k.relkind IN ('r', 'p') "
    "WHERE table_schema = 'public' AND data_type IN ('text', 'json', 'jsonb', "
    "'character varying', 'bytea', 'ARRAY')"
)


async def _holders(app: Any, needle: str) -> list[str]:
    """Every text, json or bytea column of every table with a row holding `needle`."""
    found = []
    async with session_scope(app.state.sessionmaker) as session:
        columns = (await session.execute(text(_COLUMNS))).all()
        for table, column, kind in columns:
            holds = (
                f"position(convert_to(:n, 'UTF8') IN \"{column}\") > 0"
                if kind == "bytea"
                else f'strpos(CAST("{column}" AS text), :n) > 0'
            )
            query = text(f'SELECT 1 FROM "{table}" WHERE {holds} LIMIT 1')
            hit = await session.execute(query, {"n": needle})
            if hit.first() is not None:
                found.append(f"{table}.{column}")
    return found


async def _redis_holders(app: Any, needle: str) -> list[str]:
    redis = app.state.redis
    hits = []
    raw = needle.encode()
    # Every key of this deployment (the test Redis outlives runs, each with its namespace).
    async for key in redis.scan_iter(match=f"{app.state.settings.redis_namespace}*", count=1000):
        kind = (await redis.type(key)).decode()
        values: list[bytes] = [key]
        if kind == "string":
            values.append(await redis.get(key) or b"")
        elif kind == "stream":
            for _, fields in await redis.xrange(key):
                values.extend(fields.values())
        elif kind == "hash":
            values.extend((await redis.hgetall(key)).values())
        if any(raw in v or orjson.dumps(needle)[1:-1] in v for v in values):
            hits.append(key.decode())
    return hits


async def _reads(client: httpx.AsyncClient, finance: dict[str, str], as_of: str) -> list[bytes]:
    contract = (await client.get("/v1/customers/acme/contracts", headers=finance)).json()
    period = as_of[:7]
    bodies = []
    for item in contract["items"]:
        invoice = await client.get(
            f"/v1/contracts/{item['id']}/invoice-preview",
            params={"period": period, "as_of": as_of},
            headers=finance,
        )
        assert invoice.status_code == 200, invoice.text
        bodies.append(invoice.content)
    usage = await client.get(
        "/v1/customers/acme/usage",
        params={"meter": "api_calls", "as_of": as_of},
        headers=finance,
    )
    assert usage.status_code == 200, usage.text
    return [*bodies, usage.content]


async def test_erasure_leaves_the_subject_nowhere_and_every_total_as_it_was(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str], stores: Any
) -> None:
    del client  # its fixture emptied the tables; this test runs its own app, logging INFO
    capturing = create_app(stores.settings(log_level="INFO"))
    try:
        with structlog.testing.capture_logs(
            processors=[structlog.contextvars.merge_contextvars]
        ) as captured:
            async with capturing.router.lifespan_context(capturing):
                transport = httpx.ASGITransport(app=capturing)
                async with httpx.AsyncClient(transport=transport, base_url="http://t") as api:
                    await _scenario(capturing, api)
    finally:
        logs.configure("WARNING")
    lines = orjson.dumps(captured, default=str)
    assert SUBJECT.encode() not in lines and orjson.dumps(SUBJECT)[1:-1] not in lines
    assert any(e.get("route", "").endswith("/erase") for e in captured)


async def _scenario(app: Any, api: httpx.AsyncClient) -> None:
    admin = await create_key(app, scopes=["admin"])
    finance = await create_key(app, scopes=["finance"])
    backend = await create_key(app, scopes=["check"])
    await publish_policy(api, admin, metered_document())
    await create_customer(api, admin)
    await create_contract(api, admin)
    ref = app.state.pseudonyms.of("acme", SUBJECT)
    # The subject everywhere it may go: a seat (fast path after the first), a release and a
    # new seat, a denied and an allowed check (the decision log), usage, an idempotent call.
    assert (await assign(api, backend, "other")).status_code == 201
    assert (await assign(api, backend, SUBJECT)).status_code == 201
    path = f"/v1/customers/acme/seats/{SUBJECT}"
    assert (await api.delete(path, headers=backend)).status_code == 204
    keyed = {**backend, "Idempotency-Key": "k-1"}
    again = await api.post(
        "/v1/customers/acme/seats", json={"subject": SUBJECT, "type": "member"}, headers=keyed
    )
    assert again.status_code == 201, again.text
    await check(api, backend, "editor", subject=SUBJECT)
    await check(api, backend, "editor", subject="nobody-" + SUBJECT)  # denied: names it
    await send(api, backend, [event(f"e{i}") for i in range(3)])
    await app.state.checker.decisions.flush()
    assert "seats.subject" in await _holders(app, SUBJECT)  # kept until erased

    as_of = datetime.now(UTC).isoformat()
    before = await _reads(api, finance, as_of)
    erase = f"/v1/customers/acme/subjects/{SUBJECT}/erase"
    response = await api.post(erase, headers=admin)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["subject_ref"] == ref and body["seats_released"] == 1
    assert body["responses_forgotten"] == 1 and body["found"] is True
    assert body["rows_pseudonymized"] == body["pseudonymized"]["seats"] == 2  # two seat rows
    await app.state.checker.decisions.flush()
    await app.state.bus.flush()
    assert await _holders(app, SUBJECT) == []
    assert await _holders(app, "nobody-" + SUBJECT) == []  # denied checks log pseudonyms
    # The cached snapshot listed it as a holder: the invalidation deletes it (in the
    # background, after the commit).
    for _ in range(100):
        if not await _redis_holders(app, SUBJECT):
            break
        await asyncio.sleep(0.02)
    assert await _redis_holders(app, SUBJECT) == []
    assert await _reads(api, finance, as_of) == before
    verified = (await api.get("/v1/audit/verify", headers=finance)).json()
    assert verified["ok"] is True, verified["problems"]

    # Idempotent: nothing more to do, the same answer's pseudonym.
    second = (await api.post(erase, headers=admin)).json()
    assert (second["subject_ref"], second["seats_released"], second["rows_pseudonymized"]) == (
        ref,
        0,
        0,
    )
    assert (await api.post("/v1/customers/nope/subjects/x/erase", headers=admin)).status_code == 404

    # A retry of the keyed assignment neither replays the erased answer nor re-creates the
    # seat: its key's answer is a tombstone that does not name the subject.
    retried = await api.post(
        "/v1/customers/acme/seats", json={"subject": SUBJECT, "type": "member"}, headers=keyed
    )
    assert retried.status_code == 409, retried.text
    assert retried.headers["content-type"] == "application/problem+json"
    assert retried.json()["type"].endswith("/idempotency-key-erased")
    assert SUBJECT not in retried.text

    # Taken on again: the same pseudonym in the audit trail, and counted once.
    assert (await assign(api, backend, SUBJECT)).status_code == 201
    async with session_scope(app.state.sessionmaker) as session:
        targets = (
            (
                await session.execute(
                    text("SELECT target_key FROM audit_log WHERE action LIKE 'seat.%' ORDER BY id")
                )
            )
            .scalars()
            .all()
        )
        members = (await session.execute(text("SELECT members FROM seat_counts"))).scalar_one()
    assert targets.count(f"acme/{ref}") == 5  # assigned, released, assigned, erased, again
    assert members == 2  # "other" and the subject again
    seats = (await api.get("/v1/customers/acme/seats", headers=finance)).json()["items"]
    assert sorted(s["subject"] for s in seats) == sorted(["other", SUBJECT])


async def _licensed_acme(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    """acme on `licensed`: two devices per seat."""
    await publish_policy(client, admin, licensing_document())
    await create_customer(client, admin, key="acme")
    await create_contract(client, admin, plan="licensed", quantities={"seats": 5, "instances": 5})


async def test_erasure_ends_devices_and_sessions_and_keeps_their_rows_by_pseudonym(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str], backend: dict[str, str]
) -> None:
    # Devices: two under the subject's seat, one of someone else's.
    await _licensed_acme(client, admin)
    assert (await assign(client, backend, SUBJECT)).status_code == 201
    assert (await assign(client, backend, "other")).status_code == 201
    for fingerprint, holder in (("d1", SUBJECT), ("d2", SUBJECT), ("d3", "other")):
        made = await register(client, backend, fingerprint, subject=holder)
        assert made.status_code == 201, made.text
    erased = await client.post(f"/v1/customers/acme/subjects/{SUBJECT}/erase", headers=admin)
    assert erased.status_code == 200, erased.text
    assert (erased.json()["seats_released"], erased.json()["devices_ended"]) == (1, 2)
    assert await _holders(app, SUBJECT) == []
    live = (await client.get("/v1/customers/acme/instances", headers=admin)).json()["items"]
    assert [i["fingerprint"] for i in live] == ["d3"]  # the other holder's device stays

    # Sessions: a concurrent-seat customer (the demo policy's `floating` plan).
    await publish_policy(client, admin, metered_document(), force=True)
    await create_customer(client, admin, key="globex")
    await create_contract(client, admin, customer="globex", plan="floating")
    opened = await client.post(
        "/v1/customers/globex/sessions", json={"subject": SUBJECT}, headers=backend
    )
    assert opened.status_code == 201, opened.text
    erased = await client.post(f"/v1/customers/globex/subjects/{SUBJECT}/erase", headers=admin)
    assert erased.status_code == 200, erased.text
    assert erased.json()["sessions_closed"] == erased.json()["pseudonymized"]["sessions"] == 1
    ref = app.state.pseudonyms.of("globex", SUBJECT)
    assert erased.json()["subject_ref"] == ref != app.state.pseudonyms.of("acme", SUBJECT)
    assert await _holders(app, SUBJECT) == []
    async with session_scope(app.state.sessionmaker) as session:
        ended = (await session.execute(text("SELECT subject, end_reason FROM seat_sessions"))).all()
    assert [tuple(r) for r in ended] == [(ref, "closed")]


async def test_the_erasure_answer_counts_exactly_what_it_rewrote_and_says_if_found(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str], backend: dict[str, str]
) -> None:
    # docs/privacy.md's example: one seat, two devices; then a past seat of the same subject.
    await _licensed_acme(client, admin)
    subject = "ann%2Fb@Example.com"  # a literal "%": sent percent-encoded as "%25"
    sent = subject.replace("%", "%25")
    assert (await assign(client, backend, subject)).status_code == 201
    assert (
        await client.delete(f"/v1/customers/acme/seats/{sent}", headers=backend)
    ).status_code == 204
    assert (await assign(client, backend, subject)).status_code == 201
    for fingerprint in ("d1", "d2"):
        assert (await register(client, backend, fingerprint, subject=subject)).status_code == 201
    # Not this subject: another case, or its "%2F" decoded to "/": found false, nothing done.
    for other in (sent.replace("Example", "example"), subject):
        missed = await client.post(f"/v1/customers/acme/subjects/{other}/erase", headers=admin)
        assert missed.status_code == 200, missed.text
        body = missed.json()
        assert body["found"] is False and body["rows_pseudonymized"] == 0, body
        assert body["seats_released"] == body["devices_ended"] == 0
    erased = await client.post(f"/v1/customers/acme/subjects/{sent}/erase", headers=admin)
    assert erased.status_code == 200, erased.text
    body = erased.json()
    assert body["found"] is True and (body["seats_released"], body["devices_ended"]) == (1, 2)
    assert body["pseudonymized"] == {
        "seats": 2,
        "sessions": 0,
        "devices": 2,
        "decision_records": 0,
        "events": 0,
    }
    assert body["rows_pseudonymized"] == 4
    # Again, or by the pseudonym itself: nothing holds the subject any more.
    for again in (sent, body["subject_ref"]):
        repeat = await client.post(f"/v1/customers/acme/subjects/{again}/erase", headers=admin)
        assert repeat.status_code == 200, repeat.text
        assert repeat.json()["found"] is False and repeat.json()["rows_pseudonymized"] == 0
        assert set(repeat.json()["pseudonymized"].values()) == {0}
