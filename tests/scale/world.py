"""The set-up the scale-out tests share: acme on the team plan of the metered policy."""

from __future__ import annotations

from typing import Any

import httpx

from tests.factories.auth import create_key
from tests.factories.contracts import create_contract
from tests.factories.customers import create_customer
from tests.factories.policies_for_contracts import publish_policy
from tests.factories.usage import metered_document


async def acme_on_team(app: Any, client: httpx.AsyncClient) -> dict[str, str]:
    """Publish the metered policy, create acme on plan `team`; an admin key's headers."""
    admin = await create_key(app, scopes=["admin"])
    await publish_policy(client, admin, metered_document())
    await create_customer(client, admin, key="acme")
    await create_contract(client, admin, customer="acme", plan="team")
    return admin
