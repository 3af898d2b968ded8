from __future__ import annotations

from typing import Any

import httpx


async def create_customer(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    *,
    key: str = "acme",
    name: str = "Acme",
    attributes: dict[str, Any] | None = None,
) -> dict[str, Any]:
    response = await client.post(
        "/v1/customers",
        json={"key": key, "name": name, "attributes": attributes or {}},
        headers=headers,
    )
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]
