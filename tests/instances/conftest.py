from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.factories.auth import create_key
from tests.factories.contracts import create_contract
from tests.factories.customers import create_customer
from tests.factories.policies_for_contracts import demo_document, publish_policy


@pytest.fixture
async def backend(app: Any) -> dict[str, str]:
    """A product backend's key (`check` scope)."""
    return await create_key(app, scopes=["check"])


@pytest.fixture
async def team(client: httpx.AsyncClient, admin: dict[str, str]) -> str:
    """acme on the demo `team` plan: 10 seats, burst 2 for 72h, 5 guests, 3 instance weight."""
    await publish_policy(client, admin, demo_document())
    await create_customer(client, admin, key="acme")
    await create_contract(client, admin, customer="acme", plan="team")
    return "acme"
