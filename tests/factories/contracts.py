from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import text

from allotment.db import session_scope
from allotment.kit.clock import isoformat


def iso(moment: datetime) -> str:
    return isoformat(moment)


def days_from_now(days: float) -> str:
    return iso(datetime.now(UTC) + timedelta(days=days))


async def create_contract(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    *,
    customer: str = "acme",
    plan: str = "team",
    kind: str = "standard",
    starts_at: str | None = None,
    expect: int = 201,
    **fields: Any,
) -> dict[str, Any]:
    """POST a contract (starting a day ago unless told); asserts the status, returns the body."""
    body: dict[str, Any] = {
        "plan": plan,
        "kind": kind,
        "starts_at": starts_at or days_from_now(-1),
        **fields,
    }
    response = await client.post(f"/v1/customers/{customer}/contracts", json=body, headers=headers)
    assert response.status_code == expect, response.text
    return response.json()  # type: ignore[no-any-return]


def error_paths(problem: httpx.Response | dict[str, Any]) -> list[str]:
    """The `path` of each error of a 422 problem document, in order."""
    body = problem.json() if isinstance(problem, httpx.Response) else problem
    return [e["path"] for e in body["errors"]]


async def state_version(app: Any, key: str = "acme") -> int:
    """The customer's state version (allotment.invalidation), read straight from the table."""
    async with session_scope(app.state.sessionmaker) as session:
        found = await session.execute(
            text("SELECT state_version FROM customers WHERE key = :k"), {"k": key}
        )
        return int(found.scalar_one())


async def customer_id(app: Any, key: str = "acme") -> int:
    async with session_scope(app.state.sessionmaker) as session:
        found = await session.execute(text("SELECT id FROM customers WHERE key = :k"), {"k": key})
        return int(found.scalar_one())
