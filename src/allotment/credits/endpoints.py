"""Credit wallets: record a grant or top-up, read the balance and its ledger."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from allotment.auth.principal import Principal
from allotment.credits import service as credits
from allotment.credits.schemas import CreditGrantCreate, CreditGrantRead, WalletRead
from allotment.deps import SessionDep, require
from allotment.kit.clock import QueryInstant, utcnow
from allotment.kit.idempotency import IdempotencyDep
from allotment.kit.identifiers import CustomerKey

router = APIRouter(tags=["credits"])

# Credits are money: written by admin (as contracts are), read by finance or the customer.
Admin = Annotated[Principal, require()]
Reader = Annotated[Principal, require("finance", customer_param="key")]
AsOf = Annotated[
    QueryInstant | None,
    Query(
        description="The instant the wallet is read at (RFC 3339, with an offset), not in the "
        "future: only grants recorded by then count. Default: now, to the second."
    ),
]


@router.post("/v1/customers/{key}/credits", status_code=201, response_model=CreditGrantRead)
async def grant_credits(
    key: CustomerKey,
    body: CreditGrantCreate,
    principal: Admin,
    session: SessionDep,
    idempotency: IdempotencyDep,
) -> Response:
    """Record a grant of credits (a top-up, or free credits), valid from `granted_at` to
    `expires_at`."""
    read = await credits.grant(session, customer_key=key, data=body, actor=principal.actor)
    return await idempotency.respond(read, status=201)


@router.get("/v1/customers/{key}/credits", response_model=WalletRead)
async def read_credits(
    key: CustomerKey, principal: Reader, session: SessionDep, as_of: AsOf = None
) -> WalletRead:
    """The balance at `as_of`, each grant with what it has left or lost to expiry, and every
    month's charge and the draws that paid it."""
    return await credits.wallet(session, customer_key=key, as_of=as_of, now=utcnow())
