"""`allotment demo`: seed the demo catalog, customers with contracts, and an admin key, once.

Running it again finds the seed in place and changes nothing (the key's secret is shown
only when it is created; `allotment api-keys create` mints another).

    customer   plan        kind          what it shows
    acme       enterprise  standard      SSO, SCIM, the agent, a soft API limit, an add-on
    globex     team        educational   a discount and an expiry; region eu
    initech    starter     trial         a 14-day trial (exports denied by a rule)
    umbrella   floating    pilot         concurrent seats, a pilot discount
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from allotment.auth import service as api_keys
from allotment.auth.models import ApiKey
from allotment.contracts import service as contracts
from allotment.contracts.models import Contract
from allotment.contracts.schemas import ContractCreate
from allotment.customers import service as customers
from allotment.customers.models import Customer
from allotment.customers.schemas import CustomerCreate
from allotment.kit.clock import utcnow
from allotment.policy import demo_policy, moves
from allotment.policy import service as policies

DEMO_KEY_NAME = "demo-admin"
ACTOR = "cli:demo"

DEMO_CUSTOMERS = [
    CustomerCreate(
        key="acme", name="Acme Corporation", attributes={"segment": "enterprise", "region": "us"}
    ),
    CustomerCreate(
        key="globex", name="Globex", attributes={"segment": "education", "region": "eu"}
    ),
    CustomerCreate(key="initech", name="Initech", attributes={"segment": "smb", "region": "us"}),
    CustomerCreate(
        key="umbrella", name="Umbrella", attributes={"segment": "pilot", "region": "us"}
    ),
]


def _contracts() -> dict[str, ContractCreate]:
    now = utcnow().replace(microsecond=0)
    month_ago = now - timedelta(days=30)
    return {
        "acme": ContractCreate(
            plan="enterprise",
            kind="standard",
            starts_at=month_ago,
            attributes={"region": "us"},
            addons=["priority_support"],
        ),
        "globex": ContractCreate(
            plan="team",
            kind="educational",
            starts_at=month_ago,
            ends_at=now + timedelta(days=335),
            discount_percent=Decimal(50),
            attributes={"region": "eu"},
            addons=["audit_pack"],
        ),
        "initech": ContractCreate(
            plan="starter", kind="trial", starts_at=now, ends_at=now + timedelta(days=14)
        ),
        "umbrella": ContractCreate(
            plan="floating",
            kind="pilot",
            starts_at=now - timedelta(days=7),
            ends_at=now + timedelta(days=83),
            discount_percent=Decimal(20),
        ),
    }


@dataclass
class DemoResult:
    published_version: int | None
    created_customers: list[str]
    admin_key: str | None


async def seed(session: AsyncSession) -> DemoResult:
    published = None
    pointer = await policies.pointer(session)
    if pointer.active_version is None:
        draft, _ = await policies.create_draft(
            session, text=demo_policy(), media_type="application/yaml", actor=ACTOR
        )
        await moves.publish(session, version=draft.version, actor=ACTOR)
        published = draft.version
    existing = set((await session.execute(select(Customer.key))).scalars())
    with_contracts = set(
        (
            await session.execute(
                select(Customer.key).join(Contract, Contract.customer_id == Customer.id)
            )
        ).scalars()
    )
    created = []
    terms = _contracts()
    for customer in DEMO_CUSTOMERS:
        if customer.key not in existing:
            await customers.create(session, data=customer, actor=ACTOR)
            created.append(customer.key)
        if customer.key not in with_contracts:
            await contracts.create(
                session, customer_key=customer.key, data=terms[customer.key], actor=ACTOR
            )
    has_key = (
        await session.execute(select(ApiKey.id).where(ApiKey.name == DEMO_KEY_NAME).limit(1))
    ).first()
    secret = None
    if not has_key:
        _, secret = await api_keys.create(
            session, name=DEMO_KEY_NAME, scopes=["admin"], actor=ACTOR
        )
    return DemoResult(published_version=published, created_customers=created, admin_key=secret)
