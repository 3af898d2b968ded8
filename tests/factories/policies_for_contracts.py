"""Publish a policy through the API, for tests that need a catalog to build contracts on."""

from __future__ import annotations

from functools import cache
from typing import Any

import httpx
import yaml

from allotment.policy import compile_policy, demo_policy, load
from allotment.policy.catalog import Catalog


def demo_document() -> dict[str, Any]:
    """The demo catalog (plans starter, team, enterprise, floating; add-ons; meters)."""
    return yaml.safe_load(demo_policy())  # type: ignore[no-any-return]


@cache
def demo_catalog() -> Catalog:
    """The demo catalog compiled in process, for the pure tests (no database)."""
    result = load(demo_policy(), "application/yaml")
    assert result.document is not None
    return compile_policy(result.document)


async def publish_policy(
    client: httpx.AsyncClient, headers: dict[str, str], document: dict, *, force: bool = False
) -> int:
    """Store `document` as a draft and publish it, so that it is the active version;
    returns its version. A document already stored and active is left so (publishing the
    active version is refused: docs/policy.md).

    `force`: publish even though live contracts would be orphaned (docs/policy.md)."""
    created = await client.post("/v1/policies", json=document, headers=headers)
    assert created.status_code in (200, 201), created.text
    version = int(created.json()["version"])
    published = await client.post(
        f"/v1/policies/{version}/publish",
        params={"force": "true"} if force else {},
        headers=headers,
    )
    if published.status_code == 409 and published.json()["type"].endswith("/policy-already-active"):
        return version
    assert published.status_code == 200, published.text
    return version
