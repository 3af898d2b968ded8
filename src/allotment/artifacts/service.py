"""Issuing a signed artifact: the customer's entitlements as `Checker.entitlements_of`
decides them, the versions they were read at, optionally bound to one live instance, signed
with the active key.

The artifact's `exp` is `iat + ttl`, never past the end of the contract in force (a trial
ending tomorrow gets no 30-day artifact), and `grace_until` is `exp` plus the grace of the
customer's plan (its `grace`), or the deployment's (`ALLOTMENT_ARTIFACT_GRACE_S`) where the plan
has none; none past a contract's end. Before signing, issuing raises
the key's `signed_until` to `grace_until` — the statement that also tells whether the key is
still the active one (signing/keyring.py) — so the key set never drops a key while an
artifact it signed is valid; the audit record and the lifecycle event
`allotment.artifact.issued` are written in the issuing transaction, so the audit log has an
artifact exactly when it was handed out.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg_pool import AsyncConnectionPool
from sqlalchemy.ext.asyncio import AsyncSession

from allotment.artifacts.schemas import TYP
from allotment.check.service import Checker
from allotment.db import HotPoolUnavailable, driver, hot_connection
from allotment.errors import Conflict, NotFound, ServiceUnavailable
from allotment.instances import history as instances
from allotment.kit import jsonx
from allotment.kit.clock import isoformat, utcnow
from allotment.kit.ids import new_id
from allotment.signing import service as signing
from allotment.signing.keyring import KeyRing
from allotment.usage import lifecycle

ACTION = "artifact.issued"  # the lifecycle event allotment.artifact.issued
_ATTEMPTS = 3  # keys rotated under a request this many times in a row: give up (503)


class InstanceNotLive(Conflict):
    type = "instance-not-live"
    title = "No live instance"


@dataclass(frozen=True)
class Issued:
    token: str
    kid: str
    claims: dict[str, Any]


def _numeric(moment: datetime) -> int:
    """A JWT NumericDate: whole seconds since the epoch."""
    return int(moment.timestamp())


def _instant(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


async def issue(
    session: AsyncSession,
    *,
    checker: Checker,
    keyring: KeyRing,
    customer: str,
    ttl: timedelta,
    fingerprint: str | None,
    actor: str,
    issuer: str,
    grace: timedelta = timedelta(0),
    now: datetime | None = None,
    hot_pool: AsyncConnectionPool | None = None,
    hot_wait_s: float = 0.25,
) -> Issued:
    now = now or utcnow()
    entitlements, snapshot = await checker.entitlements_of(customer, now)
    if not snapshot.known or snapshot.customer_id is None:
        raise NotFound(f"No customer {customer!r}.")
    if entitlements["stale"]:
        raise ServiceUnavailable("The customer's entitlements cannot be read fresh; retry.")
    contract = snapshot.contract
    catalog = snapshot.catalog
    plan = catalog.plans.get(contract.plan) if contract is not None and catalog else None
    if plan is not None and plan.grace is not None:
        grace = plan.grace  # the plan's own grace wins over the deployment's
    issued_at = _numeric(now)
    expires = issued_at + int(ttl.total_seconds())
    grace_until = expires + int(grace.total_seconds())
    if contract is not None and contract.ends_at is not None and contract.ends_at > now:
        ends = max(_numeric(contract.ends_at), issued_at + 1)
        # Never past the term it carries, and no grace beyond it: the grace covers an
        # unreachable service, not a contract that is over.
        expires = min(expires, ends)
        grace_until = max(expires, min(grace_until, ends))

    claims: dict[str, Any] = {
        "iss": issuer,
        "sub": customer,
        "iat": issued_at,
        "nbf": issued_at,
        "exp": expires,
        "jti": new_id("art"),
        "grace_until": grace_until,
        "policy_version": snapshot.policy_version,
        "contract_revision": contract.revision if contract is not None else None,
        "state_version": snapshot.state_version,
        "contract": entitlements["contract"],
        "features": entitlements["features"],
        "limits": entitlements["limits"],
        "credits": entitlements["credits"],
    }
    if fingerprint is not None:
        claims["instance"] = await _bound(session, snapshot.customer_id, customer, fingerprint, now)

    signer = None
    for _ in range(_ATTEMPTS):
        candidate = await keyring.signer(now)
        until = _instant(grace_until)
        if await _claim(session, hot_pool, hot_wait_s, kid=candidate.kid, until=until):
            signer = candidate
            break
        keyring.clear()  # rotated or retired since this worker read the keys
    if signer is None:
        raise ServiceUnavailable("The signing keys kept changing while issuing; retry.")
    token = signer.sign(jsonx.dumps(claims), typ=TYP)
    record = {
        "customer": customer,
        "kid": signer.kid,
        "jti": claims["jti"],
        "iat": isoformat(_instant(issued_at)),
        "exp": isoformat(_instant(expires)),
        "grace_until": isoformat(_instant(grace_until)),
        "fingerprint": fingerprint,
    }
    lifecycle.record(
        session,
        actor=actor,
        action=ACTION,
        target_type="artifact",
        target_key=f"{customer}/{claims['jti']}",
        customer_id=snapshot.customer_id,
        after=record,
        time=now,
    )
    return Issued(token, signer.kid, claims)


async def _claim(
    session: AsyncSession,
    hot_pool: AsyncConnectionPool | None,
    wait_s: float,
    *,
    kid: str,
    until: datetime,
) -> bool:
    """Raise the key's `signed_until` to the artifact's `grace_until`, durably, before it is
    signed; False when the key is no longer the active one. In its own autocommit statement
    on the hot pool when one is free (the key's row is then locked for that statement only,
    not until the issuing transaction commits, so concurrent issues do not queue on it),
    else in the issuing transaction. Should that transaction fail, the key is merely
    published a little longer than needed."""
    if hot_pool is not None:
        try:
            async with hot_connection(hot_pool, wait_s=wait_s) as pg:
                return await signing.extend(pg, kid=kid, until=until) == "active"
        except HotPoolUnavailable:
            pass
    return await signing.extend(await driver(session), kid=kid, until=until) == "active"


async def _bound(
    session: AsyncSession, customer_id: int, customer: str, fingerprint: str, now: datetime
) -> dict[str, Any]:
    """The live instance the artifact is bound to; 409 when the fingerprint holds no live
    lease."""
    row = await instances.live(session, customer_id=customer_id, fingerprint=fingerprint, now=now)
    if row is None:
        raise InstanceNotLive(
            f"Customer {customer!r} has no live instance with fingerprint {fingerprint!r}: "
            f"register it (POST /v1/customers/{customer}/instances), or renew its lease, first.",
            extra={"fingerprint": fingerprint},
        )
    return {
        "fingerprint": row.fingerprint,
        "id": row.id,
        "kind": row.kind,
        "environment": row.environment,
        "tenant": row.tenant,
        "registered_at": isoformat(row.registered_at),
        "lease_expires_at": isoformat(row.lease_expires_at),
    }
