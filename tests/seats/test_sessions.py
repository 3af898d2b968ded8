"""Concurrent (floating) seats: sessions are leases counted against the seat limit."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from allotment.db import session_scope
from allotment.kit.clock import utcnow
from allotment.seats import sessions as sessions_service
from allotment.worker import run_once
from tests.factories.contracts import create_contract
from tests.factories.customers import create_customer
from tests.factories.policies_for_contracts import demo_document, publish_policy
from tests.factories.seats import assign, check


@pytest.fixture
async def floating(client: httpx.AsyncClient, admin: dict[str, str]) -> str:
    """acme on the demo `floating` plan, limited to 2 concurrent seats (session TTL 30m)."""
    await publish_policy(client, admin, demo_document())
    await create_customer(client, admin, key="acme")
    await create_contract(client, admin, customer="acme", plan="floating", seats={"limit": 2})
    return "acme"


async def _open(client: httpx.AsyncClient, headers: dict[str, str], subject: str) -> httpx.Response:
    return await client.post(
        "/v1/customers/acme/sessions", json={"subject": subject}, headers=headers
    )


async def test_sessions_are_capped_by_live_count_and_free_on_close(
    client: httpx.AsyncClient, backend: dict[str, str], floating: str
) -> None:
    first = await _open(client, backend, "ann")
    assert first.status_code == 201, first.text
    body = first.json()
    assert body["id"].startswith("ses_") and body["subject"] == "ann"
    assert body["expires_at"] > body["opened_at"]
    assert (await _open(client, backend, "bob")).status_code == 201
    full = await _open(client, backend, "cy")
    assert full.status_code == 409
    problem = full.json()
    assert problem["reason"] == "seat_limit_reached" and problem["limit"] == 2
    assert problem["held"] == 2 and problem["frees_at"] == body["expires_at"]
    assert (await check(client, backend, "editor", subject="ann"))["allowed"] is True
    assert (await check(client, backend, "editor", subject="cy"))["reason"] == "seat_required"

    closed = await client.delete(f"/v1/sessions/{body['id']}", headers=backend)
    assert closed.status_code == 204
    assert (await check(client, backend, "editor", subject="ann"))["reason"] == "seat_required"
    assert (await _open(client, backend, "cy")).status_code == 201
    again = await client.delete(f"/v1/sessions/{body['id']}", headers=backend)
    assert again.status_code == 410 and again.json()["reason"] == "closed"


async def test_heartbeat_renews_and_unknown_sessions_are_404(
    client: httpx.AsyncClient, backend: dict[str, str], floating: str
) -> None:
    opened = (await _open(client, backend, "ann")).json()
    renewed = await client.post(f"/v1/sessions/{opened['id']}/heartbeat", headers=backend)
    assert renewed.status_code == 200, renewed.text
    assert renewed.json()["expires_at"] >= opened["expires_at"]
    missing = await client.post("/v1/sessions/ses_nope/heartbeat", headers=backend)
    assert missing.status_code == 404 and missing.json()["type"].endswith("/session-not-found")


async def test_named_seats_and_sessions_do_not_mix(
    client: httpx.AsyncClient, backend: dict[str, str], floating: str
) -> None:
    member = await assign(client, backend, "ann")
    assert member.status_code == 409 and member.json()["type"].endswith("/wrong-seat-model")


async def test_an_expired_session_frees_its_seat_without_the_reaper(
    app: Any, client: httpx.AsyncClient, backend: dict[str, str], floating: str
) -> None:
    maker = app.state.sessionmaker
    start = utcnow()
    async with session_scope(maker) as session:
        for subject in ("ann", "bob"):
            await sessions_service.open_session(
                session, customer_key="acme", subject=subject, tenant=None, actor="test", now=start
            )
    later = start + timedelta(minutes=31)  # past the 30m TTL; nothing reaped yet
    async with session_scope(maker) as session:
        row = await sessions_service.open_session(
            session, customer_key="acme", subject="cy", tenant=None, actor="test", now=later
        )
    assert row.subject == "cy"
    # The reaper then ends the two lapsed sessions at their expiry, not at reaping time.
    done = await run_once(maker, now=later)
    assert done["sessions_expired"] == 2
    async with session_scope(maker) as session:
        ended = (
            await session.execute(
                text(
                    "SELECT subject, ended_at = expires_at AS at_expiry, end_reason "
                    "FROM seat_sessions WHERE ended_at IS NOT NULL ORDER BY subject"
                )
            )
        ).all()
    assert [(r.subject, r.at_expiry, r.end_reason) for r in ended] == [
        ("ann", True, "expired"),
        ("bob", True, "expired"),
    ]
