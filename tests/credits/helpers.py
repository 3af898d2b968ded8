"""Shared by the credit wallet tests: a pay-as-you-go plan, grants, usage placed in a month."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx
from sqlalchemy import text

from allotment.db import session_scope
from tests.factories.contracts import iso
from tests.factories.usage import event, ingest_at

# 0.01 a call, nothing included: 1,000 calls cost 10.00.
PAYG: dict[str, Any] = {
    "features": ["api"],
    "limits": {"api_calls": {"limit": 10_000_000, "period": "month"}},
    "price": {"meters": {"api_calls": {"tiers": [{"unit": "0.01"}]}}},
}


async def sql(app: Any, statement: str, **params: Any) -> None:
    async with session_scope(app.state.sessionmaker) as session:
        await session.execute(text(statement), params)


async def grant(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    amount: str,
    *,
    customer: str = "acme",
    expect: int = 201,
    **fields: Any,
) -> dict[str, Any]:
    body = {
        "amount": amount,
        **{k: iso(v) if isinstance(v, datetime) else v for k, v in fields.items()},
    }
    response = await client.post(f"/v1/customers/{customer}/credits", json=body, headers=admin)
    assert response.status_code == expect, response.text
    return response.json()  # type: ignore[no-any-return]


async def recorded_at(app: Any, moment: datetime) -> None:
    """Everything recorded so far (the policy's activation, contracts and their revisions,
    grants) as if recorded at `moment`, so a wallet or preview read as of a later past
    instant sees it."""
    for table, column in (
        ("policy_activations", "at"),
        ("contracts", "created_at"),
        ("contract_revisions", "created_at"),
        ("credit_grants", "created_at"),
    ):
        await sql(app, f"UPDATE {table} SET {column} = :t", t=moment)


async def use(app: Any, event_id: str, calls: int, at: datetime) -> None:
    """`calls` API calls at `at`, received then (so a wallet read as of a later instant
    counts them)."""
    outcome = await ingest_at(app, [event(event_id, time=at, data={"count": calls})], received=at)
    assert outcome.accepted == 1, outcome


async def wallet(
    client: httpx.AsyncClient, headers: dict[str, str], *, customer: str = "acme", **params: Any
) -> dict[str, Any]:
    query = {k: iso(v) if isinstance(v, datetime) else v for k, v in params.items()}
    response = await client.get(f"/v1/customers/{customer}/credits", params=query, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]
