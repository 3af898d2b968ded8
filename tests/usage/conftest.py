from __future__ import annotations

import httpx
import pytest

from tests.factories.contracts import create_contract
from tests.factories.customers import create_customer
from tests.factories.policies_for_contracts import publish_policy
from tests.factories.usage import metered_document


@pytest.fixture
async def metered(client: httpx.AsyncClient, admin: dict[str, str]) -> str:
    """acme on `team` under the demo catalog plus meters of every aggregation."""
    await publish_policy(client, admin, metered_document())
    await create_customer(client, admin, key="acme")
    await create_contract(client, admin, customer="acme", plan="team")
    return "acme"
