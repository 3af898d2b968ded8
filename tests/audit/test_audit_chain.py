from __future__ import annotations

import asyncio
from typing import Any

import httpx
from sqlalchemy import text

from allotment.db import session_scope
from tests.factories.customers import create_customer


async def _sql(app: Any, statement: str, **params: Any) -> None:
    async with session_scope(app.state.sessionmaker) as session:
        await session.execute(text(statement), params)


async def _verify(client: httpx.AsyncClient, headers: dict[str, str]) -> dict[str, Any]:
    response = await client.get("/v1/audit/verify", headers=headers)
    assert response.status_code == 200
    return response.json()  # type: ignore[no-any-return]


async def test_mutation_writes_audit_record_with_before_and_after(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    await create_customer(client, admin, key="acme", name="Acme")
    patched = await client.patch(
        "/v1/customers/acme", json={"name": "Acme Inc"}, headers={**admin, "X-Request-Id": "rq-1"}
    )
    assert patched.status_code == 200
    records = (await client.get("/v1/audit?target=customer:acme", headers=admin)).json()["items"]
    assert [r["action"] for r in records] == ["customer.updated", "customer.created"]
    update = records[0]
    assert update["before"]["name"] == "Acme" and update["after"]["name"] == "Acme Inc"
    assert update["actor"].startswith("api_key:key_")
    assert update["request_id"] == "rq-1"
    assert update["prev_hash"] == records[1]["hash"]


async def test_failed_mutation_writes_no_audit_record(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    await create_customer(client, admin, key="acme")
    await client.post("/v1/customers", json={"key": "acme", "name": "dup"}, headers=admin)
    records = (await client.get("/v1/audit?target=customer:acme", headers=admin)).json()["items"]
    assert len(records) == 1


async def test_chain_verifies_and_detects_an_edited_row(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    for key in ("a1", "a2", "a3"):
        await create_customer(client, admin, key=key)
    # records: 1 = the admin key (factory), 2..4 = customers
    assert (await _verify(client, admin))["ok"] is True
    await _sql(
        app, "UPDATE audit_log SET after = CAST(:v AS json) WHERE id = 3", v='{"name":"forged"}'
    )
    result = await _verify(client, admin)
    assert result["ok"] is False
    assert {
        "id": 3,
        "problem": "content does not match its hash (the record was edited)",
    } in result["problems"]


async def test_chain_detects_a_deleted_middle_row(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    for key in ("a1", "a2", "a3"):
        await create_customer(client, admin, key=key)
    await _sql(app, "DELETE FROM audit_log WHERE id = 2")
    result = await _verify(client, admin)
    assert result["ok"] is False
    assert result["problems"][0]["id"] == 2
    assert "missing" in result["problems"][0]["problem"]


async def test_chain_detects_a_deleted_last_row(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    await create_customer(client, admin, key="a1")
    await _sql(app, "DELETE FROM audit_log WHERE id = (SELECT max(id) FROM audit_log)")
    result = await _verify(client, admin)
    assert result["ok"] is False
    assert "missing" in result["problems"][0]["problem"]


async def test_chain_detects_a_rehashed_row(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    """A forger who recomputes a row's own hash still breaks the link to the next row."""
    from allotment.audit.service import content_hash

    for key in ("a1", "a2"):
        await create_customer(client, admin, key=key)
    async with session_scope(app.state.sessionmaker) as session:
        row = (await session.execute(text("SELECT * FROM audit_log WHERE id = 2"))).mappings().one()
        forged = content_hash(
            row["prev_hash"],
            id=2,
            at=row["at"],
            actor="api_key:forger",
            action=row["action"],
            target_type=row["target_type"],
            target_key=row["target_key"],
            before=row["before"],
            after=row["after"],
            request_id=row["request_id"],
        )
        await session.execute(
            text("UPDATE audit_log SET actor = 'api_key:forger', hash = :h WHERE id = 2"),
            {"h": forged},
        )
    result = await _verify(client, admin)
    assert result["ok"] is False
    assert result["problems"][0]["id"] == 3


async def test_fifty_concurrent_creations_leave_one_unbroken_chain(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    responses = await asyncio.gather(
        *(
            client.post("/v1/customers", json={"key": f"c{i}", "name": f"C{i}"}, headers=admin)
            for i in range(50)
        )
    )
    assert [r.status_code for r in responses] == [201] * 50
    result = await _verify(client, admin)
    assert result["ok"] is True, result["problems"]
    assert result["records_checked"] == 51 and result["head_id"] == 51


async def test_audit_filters_by_actor_action_and_time(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    await create_customer(client, admin, key="acme")
    everything = (await client.get("/v1/audit", headers=admin)).json()["items"]
    actor = everything[0]["actor"]
    by_actor = (await client.get("/v1/audit", params={"actor": actor}, headers=admin)).json()
    assert [r["target_key"] for r in by_actor["items"]] == ["acme"]
    by_action = (
        await client.get("/v1/audit", params={"action": "api_key.created"}, headers=admin)
    ).json()
    assert len(by_action["items"]) == 1
    future = (
        await client.get("/v1/audit", params={"since": "2999-01-01T00:00:00Z"}, headers=admin)
    ).json()
    assert future["items"] == []
