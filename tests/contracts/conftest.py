from __future__ import annotations

import httpx
import pytest

from tests.factories.customers import create_customer
from tests.factories.policies_for_contracts import demo_document, publish_policy


@pytest.fixture
async def policy(client: httpx.AsyncClient, admin: dict[str, str]) -> int:
    """The demo catalog, published; its version."""
    return await publish_policy(client, admin, demo_document())


@pytest.fixture
async def acme(client: httpx.AsyncClient, admin: dict[str, str], policy: int) -> str:
    await create_customer(client, admin, key="acme")
    return "acme"
