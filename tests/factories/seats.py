"""Seats, sessions and instances through the API."""

from __future__ import annotations

from typing import Any

import httpx


async def assign(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    subject: str,
    *,
    customer: str = "acme",
    type: str = "member",
    tenant: str | None = None,
) -> httpx.Response:
    body: dict[str, Any] = {"subject": subject, "type": type}
    if tenant is not None:
        body["tenant"] = tenant
    return await client.post(f"/v1/customers/{customer}/seats", json=body, headers=headers)


async def register(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    fingerprint: str,
    *,
    customer: str = "acme",
    kind: str = "vm",
    **fields: Any,
) -> httpx.Response:
    body = {"fingerprint": fingerprint, "kind": kind, **fields}
    return await client.post(f"/v1/customers/{customer}/instances", json=body, headers=headers)


async def check(
    client: httpx.AsyncClient, headers: dict[str, str], feature: str, **fields: Any
) -> dict[str, Any]:
    body = {"customer": fields.pop("customer", "acme"), "feature": feature, **fields}
    response = await client.post("/v1/check", json=body, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def amend_seats(
    client: httpx.AsyncClient, admin: dict[str, str], *, customer: str = "acme", **seats: Any
) -> dict[str, Any]:
    """Amend the customer's only contract's seat terms at once."""
    contracts = await client.get(f"/v1/customers/{customer}/contracts", headers=admin)
    contract = contracts.json()["items"][0]
    response = await client.patch(
        f"/v1/contracts/{contract['id']}",
        json={"seats": seats},
        headers={**admin, "If-Match": str(contract["revision"])},
    )
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]
