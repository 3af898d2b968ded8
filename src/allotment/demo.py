"""`allotment demo`: seed demo customers and an admin API key, once.

Running it again finds the seed in place and changes nothing (the key's secret is shown
only when it is created; `allotment api-keys create` mints another).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from allotment.auth import service as api_keys
from allotment.auth.models import ApiKey
from allotment.customers import service as customers
from allotment.customers.models import Customer
from allotment.customers.schemas import CustomerCreate

DEMO_KEY_NAME = "demo-admin"
ACTOR = "cli:demo"

DEMO_CUSTOMERS = [
    CustomerCreate(
        key="acme", name="Acme Corporation", attributes={"segment": "enterprise", "region": "us"}
    ),
    CustomerCreate(
        key="globex", name="Globex", attributes={"segment": "mid-market", "region": "eu"}
    ),
    CustomerCreate(key="initech", name="Initech", attributes={"segment": "smb", "region": "us"}),
]


@dataclass
class DemoResult:
    created_customers: list[str]
    admin_key: str | None


async def seed(session: AsyncSession) -> DemoResult:
    existing = set((await session.execute(select(Customer.key))).scalars())
    created = []
    for customer in DEMO_CUSTOMERS:
        if customer.key not in existing:
            await customers.create(session, data=customer, actor=ACTOR)
            created.append(customer.key)
    has_key = (
        await session.execute(select(ApiKey.id).where(ApiKey.name == DEMO_KEY_NAME).limit(1))
    ).first()
    secret = None
    if not has_key:
        _, secret = await api_keys.create(
            session, name=DEMO_KEY_NAME, scopes=["admin"], actor=ACTOR
        )
    return DemoResult(created_customers=created, admin_key=secret)
